"""Training step time of the demo configs on a simulated world, float32 against the fast mode,
interleaved in one run; and, with ``--profile``, where one step's time goes and its FLOPs.

    python benchmarks/bench_train_step.py --dataroot /tmp/w [--threads 2] [--steps 20] [--quick]
        [--config configs/demo_camera.yaml ...] [--set model.image.frozen_stages=3 ...]
        [--modes fp32,fast] [--profile]

A *step* is what the trainer does per optimizer update: forward under the mode's autocast (the
student's frozen teacher included), backward, gradient clipping, AdamW update. Every mode has its
own model, objective and optimizer built from the same seed, and the modes take turns on the same
batch (the first mode alternates), so a load that comes and goes on a shared machine hits both
alike: the ratio of their medians is fair even when the absolute times are not. Data loading is
timed once per batch, outside the modes.

Modes are config overrides (:data:`MODES`): ``fp32`` is the step before issue 23 (float32, NCHW,
the head's plain per-branch loop), ``fast`` turns on ``train.amp`` (bf16 autocast where the CPU
has native bf16, else float32: engine.precision), ``train.channels_last`` and the fused head;
``fused`` and ``cl`` are the steps in between. Students are timed against a randomly initialised teacher of
``--teacher-config`` (the teacher's cost does not depend on its weights).

``--profile`` times each part of one step with forward hooks (frozen encoder stages, trainable
encoder, neck, depth net, BEV pooling, LiDAR encoder, fuser, decoder, head, the teacher, loss and
target assignment) plus backward, optimizer and data, as medians over the timed steps, and counts
the step's FLOPs (torch.utils.flop_counter: convolutions and matmuls, forward and backward).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bevsimdet.config import load_config
from bevsimdet.data.dataset import build_dataset
from bevsimdet.data.loader import build_dataloader
from bevsimdet.engine.build import build_optimizer
from bevsimdet.engine.checkpoint import save_checkpoint
from bevsimdet.engine.objective import run_objective
from bevsimdet.engine.precision import AmpPlan, plan_amp, to_channels_last
from bevsimdet.engine.train import detection_objective
from bevsimdet.models.build import build_detector

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = ("configs/demo_fusion.yaml", "configs/demo_camera.yaml", "configs/demo_student.yaml")
MODES: dict[str, list[str]] = {
    "fp32": ["train.amp=false", "train.channels_last=false"],  # + the plain head branches: the step before issue 23
    "fused": ["train.amp=false", "train.channels_last=false"],  # float32, NCHW, the fused head
    "cl": ["train.amp=false", "train.channels_last=true"],  # float32, channels-last, the fused head
    "fast": ["train.amp=true", "train.amp_dtype=bfloat16", "train.channels_last=true", "distill.teacher_amp=bfloat16"],
}
BEFORE = {"fp32"}  # modes run as before issue 23: the head's plain per-branch loop, no frozen stages shared with the teacher


class Setup:
    """One mode's model, objective and optimizer, and its step times. (A plain class: `bevsimdet
    bench` loads this file without registering it as a module, which dataclasses need.)"""

    def __init__(self, name: str, model: nn.Module, objective: Any, optimizer: torch.optim.Optimizer, plan: AmpPlan, grad_clip: float | None):
        self.name, self.model, self.objective, self.optimizer, self.plan, self.grad_clip = name, model, objective, optimizer, plan, grad_clip
        self.times: list[float] = []


def build_setup(path: Path, dataroot: str, overrides: list[str], mode: str, teacher_config: Path, device: str, tmp: str) -> tuple[Setup, Any]:
    cfg = load_config(path, [f"data.dataroot={dataroot}", *overrides, *MODES[mode]])
    torch.manual_seed(0)
    model = build_detector(cfg.model).train().to(device)
    if hasattr(model, "head"):
        model.head.fused = mode not in BEFORE
    if cfg.train.channels_last:
        to_channels_last(model)
    if cfg.model.type == "student":
        from bevsimdet.distill.run import distillation_objective_factory

        tcfg = load_config(teacher_config, [f"data.dataroot={dataroot}", *overrides])
        ckpt = Path(tmp) / "teacher.safetensors"
        if not ckpt.exists():
            torch.manual_seed(1)
            save_checkpoint(ckpt, model=build_detector(tcfg.model))
        objective = distillation_objective_factory(tcfg, ckpt)(cfg, model)
        if mode in BEFORE:
            for m in (model, getattr(objective.teacher, "detector", objective.teacher)):
                m.image_encoder.backbone.frozen_share = None
        elif not getattr(model.image_encoder.backbone, "frozen_share", None):
            # a random teacher's frozen stages differ from the student's ImageNet ones; a trained
            # demo teacher's do not (both frozen at ImageNet's), so time the sharing it gets
            from bevsimdet.distill.run import share_teacher_frozen_stages

            teacher = getattr(objective.teacher, "detector", objective.teacher)
            teacher.image_encoder.backbone.load_state_dict(model.image_encoder.backbone.state_dict())
            assert share_teacher_frozen_stages(model, objective.teacher)
    else:
        objective = detection_objective(cfg, model)
    plan = plan_amp(device, cfg.train.amp, getattr(torch, cfg.train.amp_dtype))
    return Setup(mode, model, objective, build_optimizer(cfg.train, model), plan, cfg.train.grad_clip), cfg


def train_step(s: Setup, batch: Any) -> torch.Tensor:
    """What Trainer._train_step + the update do for one micro-batch (no gradient scaler on the CPU)."""
    with s.plan.autocast():
        loss = run_objective(s.objective, s.model, batch).loss
    loss.backward()
    params = [p for g in s.optimizer.param_groups for p in g["params"] if p.grad is not None]
    torch.nn.utils.clip_grad_norm_(params, s.grad_clip or math.inf)
    s.optimizer.step()
    s.optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def batches(cfg: Any, device: str):
    loader = build_dataloader(build_dataset(cfg.data, cfg.data.train_split, train=True), cfg.train.batch_size,
                              shuffle=True, seed=0, num_workers=0)
    while True:  # a small world has fewer batches than warm-up + timed steps
        for b in loader:
            yield b


def time_config(path: Path, dataroot: str, overrides: list[str], steps: int, warmup: int, teacher_config: Path,
                device: str = "cpu", modes: tuple[str, ...] = ("fp32", "fast")) -> dict:
    """Median step time of each mode, interleaved on the same batches; ``ratio`` = first / last mode."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)  # kernels run asynchronously
    with tempfile.TemporaryDirectory() as tmp:
        built = [build_setup(path, dataroot, overrides, m, teacher_config, device, tmp) for m in modes]
    setups = [s for s, _ in built]
    it = batches(built[0][1], device)
    data = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        batch = next(it).to(device)
        data.append(time.perf_counter() - t0)
        order = setups if i % 2 == 0 else setups[::-1]
        for s in order:
            sync()
            t1 = time.perf_counter()
            train_step(s, batch)
            sync()
            s.times.append(time.perf_counter() - t1)
    med = {s.name: statistics.median(s.times[warmup:]) for s in setups}
    out = {"config": built[0][1].name, "data_s": statistics.median(data[warmup:]), "s": med,
           "amp": {s.name: str(s.plan.dtype).replace("torch.", "") if s.plan.enabled else "float32" for s in setups},
           "notes": sorted({s.plan.note for s in setups if s.plan.note})}
    if len(setups) > 1:
        out["ratio"] = med[setups[0].name] / med[setups[-1].name]
    return out


# ------------------------------------------------------------------------------------------------
# profile


def _parts(model: nn.Module, prefix: str = "") -> dict[str, tuple[nn.Module, nn.Module | None]]:
    """name -> (module whose forward starts the part, module whose forward ends it; None: the same)."""
    parts: dict[str, tuple[nn.Module, nn.Module | None]] = {}
    for name, child in model.named_children():
        backbone = getattr(child, "backbone", None)
        if name == "image_encoder" and backbone is not None and hasattr(backbone, "_frozen_modules") and backbone._frozen_modules():
            parts[prefix + "image backbone (frozen stages)"] = (backbone, backbone._frozen_modules()[-1])
            parts[prefix + "image backbone (all stages)"] = (backbone, None)
            parts[prefix + "image neck"] = (child.neck, None)
        elif hasattr(child, "depthnet"):
            parts[prefix + f"{name} (all)"] = (child, None)
            parts[prefix + f"{name}: depth net"] = (child.depthnet, None)
            parts[prefix + f"{name}: BEV downsample"] = (child.bev_out, None)
        elif isinstance(child, nn.ModuleDict) and len(child) == 0:
            continue
        else:
            parts[prefix + name] = (child, None)
    return parts


class PartTimer:
    """Forward wall time of named parts of a model, by forward pre-hooks and hooks."""

    def __init__(self, parts: dict[str, tuple[nn.Module, nn.Module | None]]):
        self.times: dict[str, list[float]] = defaultdict(list)
        self._start: dict[str, float] = {}
        self._handles = []
        for name, (first, last) in parts.items():
            self._handles.append(first.register_forward_pre_hook(lambda m, a, n=name: self._start.__setitem__(n, time.perf_counter())))
            self._handles.append((last or first).register_forward_hook(lambda m, a, o, n=name: self._stop(n)))

    def _stop(self, name: str) -> None:
        if name in self._start:
            self.times[name].append(time.perf_counter() - self._start.pop(name))

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def profile_config(path: Path, dataroot: str, overrides: list[str], steps: int, warmup: int, teacher_config: Path,
                   mode: str = "fp32", device: str = "cpu") -> dict:
    """Median seconds per part of one step of ``mode``, and the step's FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    with tempfile.TemporaryDirectory() as tmp:
        s, cfg = build_setup(path, dataroot, overrides, mode, teacher_config, device, tmp)
    it = batches(cfg, device)
    parts = _parts(s.model)
    teacher = getattr(s.objective, "teacher", None)
    if teacher is not None:
        parts["teacher forward (all)"] = (teacher, None)
        parts.update(_parts(getattr(teacher, "detector", teacher), "teacher: "))
    parts["model forward (all)"] = (s.model, None)
    timer = PartTimer(parts)
    rows: dict[str, list[float]] = defaultdict(list)
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        batch = next(it).to(device)
        t1 = time.perf_counter()
        with s.plan.autocast():
            loss = run_objective(s.objective, s.model, batch).loss
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        params = [p for g in s.optimizer.param_groups for p in g["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, s.grad_clip or math.inf)
        s.optimizer.step()
        s.optimizer.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        if i >= warmup:
            for k, v in (("data", t1 - t0), ("forward + loss (all)", t2 - t1), ("backward", t3 - t2), ("clip + AdamW", t4 - t3), ("step (no data)", t4 - t1)):
                rows[k].append(v)
    fwd = {k: v[warmup:] for k, v in timer.times.items()}
    timer.close()
    med = {k: statistics.median(v) for k, v in {**rows, **fwd}.items() if v}
    med["loss + targets (forward + loss - model - teacher)"] = med["forward + loss (all)"] - med["model forward (all)"] - med.get("teacher forward (all)", 0.0)
    # FLOPs of one step (forward with the teacher, backward); the optimizer's elementwise work is not counted
    batch = next(it).to(device)
    counter = FlopCounterMode(display=False)
    with counter:
        with s.plan.autocast():
            loss = run_objective(s.objective, s.model, batch).loss
        loss.backward()
    s.optimizer.zero_grad(set_to_none=True)
    return {"config": cfg.name, "mode": mode, "s": med, "gflop": counter.get_total_flops() / 1e9}


def peak_gflops(threads: int) -> tuple[float, str]:
    """fp32 FMA peak of ``threads`` cores at the clock /proc/cpuinfo reports (in a VM often the
    nominal one; a boosting core runs faster): 2 FMA pipes x (512 or 256)-bit lanes x 2."""
    flags, mhz = "", 0.0
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = line
            if line.startswith("cpu MHz") and not mhz:
                mhz = float(line.split(":")[1])
    lanes = 16 if "avx512f" in flags else 8
    ghz = mhz / 1000 if mhz else float("nan")
    return threads * ghz * 2 * lanes * 2, f"{threads} cores x {ghz:.2f} GHz x 2 FMA pipes x {lanes} fp32 lanes x 2 FLOP"


# ------------------------------------------------------------------------------------------------


def run(quick: bool, threads: int = 2) -> dict:
    """For `bevsimdet bench`: a small world (10 scenes x 4 keyframes; quick: 2 each at a tenth of
    the image size), the three demo configs, fp32 and fast interleaved, 2 threads."""
    from bevsimdet.data.sim import simulate

    torch.set_num_threads(threads)
    steps, warmup = (2, 1) if quick else (15, 5)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        simulate(tmp, version="v1.0-mini", scenes=10, samples_per_scene=2 if quick else 4, seed=0,
                 image_scale=0.1 if quick else 0.25, progress=False, force=True)
        overrides = ["train.num_workers=0"]
        for c in DEFAULT_CONFIGS:
            r = time_config(REPO / c, tmp, overrides, steps, warmup, REPO / DEFAULT_CONFIGS[0])
            rows.append({"config": r["config"], "threads": threads, "s/step fp32": round(r["s"]["fp32"], 3),
                         "s/step fast": round(r["s"]["fast"], 3), "speed-up": round(r["ratio"], 2),
                         "fast amp": r["amp"]["fast"], "data s/batch": round(r["data_s"], 3)})
    return {"title": "Training step time (demo configs)", "rows": rows,
            "notes": [f"median of {steps} steps after {warmup} warm-up steps, batch 2, fp32 and fast modes interleaved on the same batches",
                      "fast: train.amp (bf16 where the CPU has it natively) + train.channels_last; students include the frozen teacher's forward pass"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataroot", required=True, help="a simulated world (bevsimdet simulate + prepare)")
    ap.add_argument("--config", action="append", default=None, help="repeatable; default: the demo teacher, baseline and student")
    ap.add_argument("--teacher-config", default=str(REPO / "configs/demo_fusion.yaml"))
    ap.add_argument("--set", action="append", default=[], help="config override for every config and mode, e.g. model.image.frozen_stages=3")
    ap.add_argument("--modes", default="fp32,fast", help=f"comma-separated, of {sorted(MODES)}; the ratio is first / last")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="CI-sized: 2 timed steps after 1 warm-up")
    ap.add_argument("--profile", action="store_true", help="also: seconds per part of a step, FLOPs and GFLOP/s, per mode")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (data is still loaded on the CPU, in the main process)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    steps, warmup = (2, 1) if args.quick else (args.steps, args.warmup)
    modes = tuple(m.strip() for m in args.modes.split(","))
    configs = [Path(c) for c in (args.config or [str(REPO / c) for c in DEFAULT_CONFIGS])]
    overrides = ["train.num_workers=0", *args.set]
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, {args.threads} threads; "
          f"median of {steps} steps after {warmup} warm-up, modes interleaved")
    print("\n| config | " + " | ".join(f"{m} s/step" for m in modes) + " | speed-up | fast autocast | data s/batch |\n|---|" + "---|" * (len(modes) + 3))
    for c in configs:
        r = time_config(c, args.dataroot, overrides, steps, warmup, Path(args.teacher_config), args.device, modes)
        cells = " | ".join(f"{r['s'][m]:.3f}" for m in modes)
        print(f"| {r['config']} | {cells} | {r.get('ratio', 1.0):.2f}x | {r['amp'][modes[-1]]} | {r['data_s']:.3f} |", flush=True)
        for n in r["notes"]:
            print(f"  note: {n}")
    if args.profile:
        peak, how = peak_gflops(args.threads)
        print(f"\npeak fp32: {peak:.0f} GFLOP/s ({how})")
        for m in modes:
            profs = [profile_config(c, args.dataroot, overrides, steps, warmup, Path(args.teacher_config), m, args.device) for c in configs]
            names = list(dict.fromkeys(k for p in profs for k in p["s"]))
            print(f"\nmode {m}: median seconds per part of a step (forward parts nest: '(all)' rows hold the rows below them)\n")
            print("| part | " + " | ".join(p["config"] for p in profs) + " |\n|---|" + "---|" * len(profs))
            for k in names:
                print(f"| {k} | " + " | ".join(f"{p['s'][k]:.3f}" if k in p["s"] else "-" for p in profs) + " |")
            print("| GFLOP per step (forward + backward) | " + " | ".join(f"{p['gflop']:.1f}" for p in profs) + " |")
            print("| achieved GFLOP/s (GFLOP / step without data) | " + " | ".join(f"{p['gflop'] / p['s']['step (no data)']:.1f}" for p in profs) + " |")
            print(f"| share of the {peak:.0f} GFLOP/s peak | " + " | ".join(f"{100 * p['gflop'] / p['s']['step (no data)'] / peak:.0f} %" for p in profs) + " |", flush=True)


if __name__ == "__main__":
    main()
