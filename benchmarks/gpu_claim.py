"""The camera-only baseline vs the BEVSimDet student over several seeds at a longer schedule, on one
GPU, inside a fixed wall-clock budget (a lent GPU machine gives minutes, not hours).

    python benchmarks/gpu_claim.py --teacher TEACHER.safetensors --out OUT [--budget-s 520]
        [--seeds 5 6 7] [--world-seed DEMO_SEED] [--target-steps 1500] [--batch 8] [--teacher-run]

1. writes the demo world (``bevsimdet simulate``, the demo's sizes and seed) and its info files;
2. starts every run at once (``demo_camera`` and ``demo_student`` per seed, and with
   ``--teacher-run`` a ``demo_fusion`` teacher at 1.2x the steps, as in the demo) for a short probe
   that measures the step rate of each under the same contention, then stops them;
3. restarts them with the largest step count (a multiple of 100, at most ``--target-steps``) that
   lets the slowest finish inside the budget, validating 3 times (learning curves);
4. every few seconds packs the runs' logs into ``OUT/runs.tar.gz`` and the table so far into
   ``OUT/summary.md`` / ``summary.json`` (so a run cut off by the budget still reports).

The demo trains 600 steps of batch 2 (1200 samples); the default here, 1500 steps of batch 8, is
10x that many samples at the demo's learning rate. The teacher is the demo's (trained on the same
world seed on the CPU); docs/history.md has the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from bevsimdet.eval.metrics import SUMMARY_KEYS

REPO = Path(__file__).resolve().parents[1]
KEYS = (*SUMMARY_KEYS, "depth_within1", "depth_within1_obj")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def read_log(run: Path) -> list[dict]:
    path = run / "log.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            pass
    return rows


class Run:
    def __init__(self, name: str, kind: str, seed: int, work: Path):
        self.name, self.kind, self.seed, self.dir = name, kind, seed, work / name
        self.proc: subprocess.Popen | None = None

    def start(self, args: argparse.Namespace, dataroot: Path, steps: int, val_interval: int) -> None:
        config = {"camera": "configs/demo_camera.yaml", "student": "configs/demo_student.yaml",
                  "teacher": "configs/demo_fusion.yaml"}[self.kind]
        cmd = [sys.executable, "-m", "bevsimdet", "distill" if self.kind == "student" else "train", str(REPO / config),
               "--dataroot", str(dataroot), "--work-dir", str(self.dir), "--no-progress"]
        if self.kind == "student":
            cmd += ["--teacher", str(args.teacher)]
        sets = [f"seed={self.seed}", f"train.max_steps={steps}", f"train.val_interval={val_interval}",
                f"train.batch_size={args.batch}", f"train.num_workers={args.workers_per_run}",
                f"train.checkpoint_interval={max(steps, 1)}", "train.keep_checkpoints=1", "train.log_interval=5",
                f"train.schedule.warmup_steps={args.warmup}", *args.set]
        for s in sets:
            cmd += ["--set", s]
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        with open(self.dir.parent / f"{self.name}.out", "w") as out:
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rate(self) -> float | None:
        """Steps per second over the logged train rows after the first (start-up excluded)."""
        rows = [r for r in read_log(self.dir) if r.get("kind") == "train"]
        if len(rows) < 3:
            return None
        a, b = rows[1], rows[-1]
        return (b["step"] - a["step"]) / max(b["time"] - a["time"], 1e-6) or None

    def vals(self) -> list[dict]:
        return [r for r in read_log(self.dir) if r.get("kind") == "val"]


def summary(runs: list[Run], info: dict) -> tuple[str, dict]:
    data = {"info": info, "runs": {}}
    for r in runs:
        vals = r.vals()
        train = [x for x in read_log(r.dir) if x.get("kind") == "train"]
        data["runs"][r.name] = {"kind": r.kind, "seed": r.seed, "last_step": train[-1]["step"] if train else 0,
                                "returncode": r.proc.poll() if r.proc else None,
                                "val": [{k: v.get(k) for k in ("step", *KEYS)} for v in vals]}
    lines = [f"# GPU long run ({info.get('gpu', '?')})", "", "```", json.dumps(info, indent=1), "```", "",
             "| run | last step | val step | " + " | ".join(KEYS) + " |", "|---|---|---|" + "---|" * len(KEYS)]
    for name, d in data["runs"].items():
        v = d["val"][-1] if d["val"] else {}
        cells = [f"{v[k]:.4f}" if isinstance(v.get(k), (int, float)) else "-" for k in KEYS]
        lines.append(f"| {name} | {d['last_step']} | {v.get('step', '-')} | " + " | ".join(cells) + " |")
    lines += ["", "mean ± std over seeds at the last validation all runs of a kind reached:", ""]
    for kind in ("camera", "student", "teacher"):
        group = [d for d in data["runs"].values() if d["kind"] == kind and d["val"]]
        if not group:
            continue
        step = min(d["val"][-1]["step"] for d in group)
        at = [next(v for v in d["val"] if v["step"] == step) for d in group if any(v["step"] == step for v in d["val"])]
        cells = []
        for k in ("mAP", "NDS", "mATE", "mAOE", "mAVE", "depth_within1"):
            xs = [a[k] for a in at if isinstance(a.get(k), (int, float))]
            if xs:
                sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
                cells.append(f"{k} {statistics.mean(xs):.4f} ± {sd:.4f}")
        lines.append(f"- {kind} (n={len(at)}, step {step}): " + ", ".join(cells))
    return "\n".join(lines) + "\n", data


def pack(out: Path, work: Path, runs: list[Run], info: dict) -> None:
    text, data = summary(runs, info)
    for name, content in (("summary.md", text), ("summary.json", json.dumps(data, indent=1))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(content)
        tmp.replace(out / name)
    tmp = out / ".runs.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        for r in runs:
            for f in ("log.jsonl", "metrics.json", "config.yaml", "curves.png"):
                if (r.dir / f).is_file():
                    tar.add(r.dir / f, arcname=f"{r.name}/{f}")
            if (work / f"{r.name}.out").is_file():
                tar.add(work / f"{r.name}.out", arcname=f"{r.name}/stdout.txt")
    tmp.replace(out / "runs.tar.gz")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/gpu_claim"))
    p.add_argument("--budget-s", type=float, default=520.0, help="wall clock for everything, this script's start to end")
    p.add_argument("--seeds", type=int, nargs="+", default=[5, 6, 7])
    from bevsimdet.demo import DEMO_SEED

    p.add_argument("--world-seed", type=int, default=DEMO_SEED, help="the world of the --teacher (default: the demo's)")
    p.add_argument("--samples-per-scene", type=int, default=40)
    p.add_argument("--target-steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--workers-per-run", type=int, default=2)
    p.add_argument("--probe-s", type=float, default=120.0, help="longest probe")
    p.add_argument("--teacher-run", action="store_true", help="also train a demo_fusion teacher at 1.2x the steps")
    p.add_argument("--set", action="append", default=[], help="extra config override for every run")
    args = p.parse_args()
    t0 = time.time()
    deadline = t0 + args.budget_s
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    import torch

    info: dict = {"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                  "torch": torch.__version__, "cpus": os.cpu_count(), "batch": args.batch, "seeds": args.seeds,
                  "world_seed": args.world_seed}
    log(f"device: {info['gpu']}, torch {torch.__version__}, {os.cpu_count()} CPUs")

    from bevsimdet.config import load_config
    from bevsimdet.data.dataset import ensure_infos
    from bevsimdet.data.sim import simulate

    dataroot = args.work / "world"
    simulate(dataroot, version="v1.0-mini", scenes=10, samples_per_scene=args.samples_per_scene, seed=args.world_seed,
             image_scale=0.25, progress=False, workers=max(1, (os.cpu_count() or 2) - 2))
    cfg = load_config(REPO / "configs/demo_camera.yaml", [f"data.dataroot={dataroot}"])
    for split in (cfg.data.train_split, cfg.data.val_split):
        ensure_infos(cfg.data, split, progress=False)
    import hashlib

    ann = dataroot / "v1.0-mini" / "sample_annotation.json"
    info["annotations_sha1"] = hashlib.sha1(ann.read_bytes()).hexdigest()[:12]  # same world as the teacher's?
    info["world_s"] = round(time.time() - t0, 1)
    log(f"world and infos: {info['world_s']} s")

    runs = [Run(f"camera_s{s}", "camera", s, args.work) for s in args.seeds]
    runs += [Run(f"student_s{s}", "student", s, args.work) for s in args.seeds]
    if args.teacher_run:
        runs.append(Run(f"teacher_s{args.world_seed}", "teacher", args.world_seed, args.work))

    # probe: all runs at once, as they will run
    for r in runs:
        r.start(args, dataroot, 100000, 100000)
    # until every run has logged a few steps (then 15 s more for a steadier rate), or --probe-s
    probe_end, measured = time.time() + args.probe_s, None
    while time.time() < probe_end and all(r.running() for r in runs):
        if measured is None and all(r.rate() for r in runs):
            measured = time.time()
        if measured is not None and time.time() > measured + 15:
            break
        time.sleep(2)
    rates = {r.name: r.rate() for r in runs}
    for r in runs:
        r.stop()
    info["probe_rates"] = {k: (round(v, 3) if v else None) for k, v in rates.items()}
    log(f"probe step rates (steps/s): {info['probe_rates']}")
    broken = [r.name for r in runs if rates[r.name] is None]
    if broken:
        for r in broken:
            tail = (args.work / f"{r}.out").read_text()[-3000:]
            log(f"{r} logged no steps in the probe:\n{tail}")
        shutil.copy(args.work / f"{broken[0]}.out", args.out / "probe_failure.txt")
        pack(args.out, args.work, runs, info)
        sys.exit(1)  # fail fast: device minutes are scarce

    # the step count the slowest run can finish: start-up (~15 s), 3 validations (~15 s each), packing
    slack = 90.0
    left = deadline - time.time() - slack
    scale = {"camera": 1.0, "student": 1.0, "teacher": 1.2}
    fits = [left * rates[r.name] / scale[r.kind] * 0.9 for r in runs if rates[r.name]]
    steps = max(int(min([args.target_steps, *fits]) // 150 * 150), 150)  # 1.2x and thirds stay whole
    info.update(steps=steps, teacher_steps=int(steps * 1.2), samples_per_run=steps * args.batch,
                demo_multiple=round(steps * args.batch / 1200, 2))
    log(f"training {steps} steps x batch {args.batch} ({info['demo_multiple']}x the demo's samples); {left:.0f} s left")
    for r in runs:
        n = int(steps * scale[r.kind])
        r.start(args, dataroot, n, max(n // 3, 1))
    t_train = time.time()
    while any(r.running() for r in runs) and time.time() < deadline - 10:
        time.sleep(10)
        info["train_s"] = round(time.time() - t_train, 1)
        pack(args.out, args.work, runs, info)
        log(" ".join(f"{r.name}:{(read_log(r.dir) or [{}])[-1].get('step', 0)}" for r in runs))
    for r in runs:
        r.stop()
    info["train_s"] = round(time.time() - t_train, 1)
    info["total_s"] = round(time.time() - t0, 1)
    pack(args.out, args.work, runs, info)
    print(summary(runs, info)[0])


if __name__ == "__main__":
    main()
