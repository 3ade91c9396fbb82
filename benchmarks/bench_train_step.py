"""Training step time of the demo configs on a simulated world: the median wall time of one
optimizer step (forward, backward, update; the distillation teacher included) and of one step with
its data loading, after a few warm-up steps.

    python benchmarks/bench_train_step.py --dataroot data/sim-mini [--threads 2] [--steps 20]
        [--config configs/demo_camera.yaml ...] [--set model.image.frozen_stages=3 ...]

Students are timed against a randomly initialised teacher of ``--teacher-config`` (the teacher's
cost does not depend on its weights). Training runs take tens of minutes on 2 CPU cores, so this
measures steps, not runs; docs/benchmarks.md has both.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bevsimdet.config import load_config
from bevsimdet.data.dataset import build_dataset
from bevsimdet.data.loader import build_dataloader
from bevsimdet.engine.build import build_optimizer
from bevsimdet.engine.checkpoint import save_checkpoint
from bevsimdet.engine.objective import run_objective
from bevsimdet.engine.train import detection_objective
from bevsimdet.models.build import build_detector

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = ("configs/demo_fusion.yaml", "configs/demo_camera.yaml", "configs/demo_student.yaml")


def time_config(path: Path, dataroot: str, overrides: list[str], steps: int, warmup: int, teacher_config: Path,
                device: str = "cpu") -> dict:
    cfg = load_config(path, [f"data.dataroot={dataroot}", *overrides])
    torch.manual_seed(0)
    model = build_detector(cfg.model).train().to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)  # kernels run asynchronously
    with tempfile.TemporaryDirectory() as tmp:
        if cfg.model.type == "student":
            from bevsimdet.distill.run import distillation_objective_factory

            tcfg = load_config(teacher_config, [f"data.dataroot={dataroot}", *overrides])
            ckpt = save_checkpoint(Path(tmp) / "teacher.safetensors", model=build_detector(tcfg.model))
            objective = distillation_objective_factory(tcfg, ckpt)(cfg, model)
        else:
            objective = detection_objective(cfg, model)
    optimizer = build_optimizer(cfg.train, model)
    loader = build_dataloader(build_dataset(cfg.data, cfg.data.train_split, train=True), cfg.train.batch_size,
                              shuffle=True, seed=0, num_workers=cfg.train.num_workers)
    def forever():  # a small world has fewer batches than warm-up + timed steps
        while True:
            yield from loader

    it = forever()
    compute, total = [], []
    for _ in range(warmup + steps):
        t0 = time.perf_counter()
        batch = next(it).to(device)
        sync()
        t1 = time.perf_counter()
        loss = run_objective(objective, model, batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        t2 = time.perf_counter()
        compute.append(t2 - t1)
        total.append(t2 - t0)
    return {"config": cfg.name, "compute_s": statistics.median(compute[warmup:]), "with_data_s": statistics.median(total[warmup:])}


def run(quick: bool, threads: int = 2) -> dict:
    """For `bevsimdet bench`: a small world (10 scenes x 4 keyframes; quick: 2 each at a tenth of
    the image size), the three demo configs, 2 threads."""
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
            rows.append({"config": r["config"], "threads": threads, "s/step": round(r["compute_s"], 3),
                         "s/step with data": round(r["with_data_s"], 3)})
    return {"title": "Training step time (demo configs)", "rows": rows,
            "notes": [f"median of {steps} steps after {warmup} warm-up steps, batch 2, data loaded in the main process",
                      "students include the frozen teacher's forward pass"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataroot", required=True, help="a simulated world (bevsimdet simulate / make demo)")
    ap.add_argument("--config", action="append", default=None, help="repeatable; default: the demo teacher, baseline and student")
    ap.add_argument("--teacher-config", default=str(REPO / "configs/demo_fusion.yaml"))
    ap.add_argument("--set", action="append", default=[], help="config override for every config, e.g. model.image.frozen_stages=3")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (data is still loaded on the CPU, in the main process)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"| config | overrides | threads | s/step (compute) | s/step (with data loading) |\n|---|---|---|---|---|")
    for c in args.config or [str(REPO / c) for c in DEFAULT_CONFIGS]:
        r = time_config(Path(c), args.dataroot, args.set, args.steps, args.warmup, Path(args.teacher_config), args.device)
        print(f"| {r['config']} | {' '.join(args.set) or '-'} | {args.threads} | {r['compute_s']:.3f} | {r['with_data_s']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
