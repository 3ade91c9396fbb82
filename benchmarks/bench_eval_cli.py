"""``bevsimdet evaluate`` vs a plain devkit ``DetectionEval`` script, both timed as whole processes.

What a user runs, side by side on the same files: a new Python process that imports, reads the
tables, the results file, computes the metric and writes ``metrics_summary.json``-style output.

* devkit: ``NuScenes(version, dataroot)`` + ``DetectionEval(...).main(render_curves=False)``.
* bevsimdet cold: ``bevsimdet evaluate ... --no-cache`` (reads the tables every time).
* bevsimdet warm: ``bevsimdet evaluate ...`` with its GT cache file present (the second and later
  evaluations of a split, e.g. every epoch of a training run or every results file of a sweep).

Worlds are annotation-only nuScenes table sets from :func:`bevsimdet.eval.synthetic.write_tables`
(same table layout as ``bevsimdet simulate``: per keyframe a LIDAR_TOP keyframe, 9 sweeps and 6
camera frames, each with an ego pose): the 10 v1.0-mini scenes x 20 keyframes (``mini_val`` =
40 samples), and 150 ``val`` scenes x 40 keyframes under v1.0-trainval (6000 samples, the size of
the real val split). ``--real-tables F`` instead writes F x 850 trainval scenes (train and val) with
the sensor tables at nuScenes' real size (76 sample_data and ego_pose rows a keyframe, see
``write_tables(sensor_tables=True)``) and evaluates val. Predictions: the ground truth perturbed
with 60% recall plus 10 false positives per sample. Runs are interleaved (devkit, cold, warm, devkit, ...); figures are medians.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEVKIT_SCRIPT = '''
import sys
from nuscenes import NuScenes
from nuscenes.eval.common.config import config_factory
from nuscenes.eval.detection.evaluate import DetectionEval
root, version, split, results, out = sys.argv[1:6]
nusc = NuScenes(version=version, dataroot=root, verbose=False)
DetectionEval(nusc, config_factory("detection_cvpr_2019"), results, split, out, verbose=False).main(
    plot_examples=0, render_curves=False)
'''


def _world(root: Path, version: str, split: str, samples: int, scenes: int | None = None, real_tables: float | None = None) -> dict:
    """``real_tables``: the fraction of all 850 trainval scenes (train and val) to write, with the
    sensor tables at nuScenes' real size (76 sample_data and ego_pose rows a keyframe: LiDAR
    sweeps, camera sweeps, radars), instead of ``scenes`` val scenes with 16 rows a keyframe."""
    from bevsimdet.eval import synthetic
    from bevsimdet.eval.gt import load_gt
    from bevsimdet.eval.results import write_results
    from bevsimdet.eval.tables import split_scenes

    names = split_scenes()
    chosen = sorted(names["mini_train"] + names["mini_val"]) if version == "v1.0-mini" else names[split][:scenes]
    extra: dict = {}
    if real_tables is not None:
        chosen = names["train"][: round(700 * real_tables)] + names["val"][: round(150 * real_tables)]
        extra = dict(sensor_tables=True, camera_sweeps=5, radar_sweeps=5)
    counts = synthetic.write_tables(root, version, {n: samples for n in chosen}, seed=0,
                                    actors_per_scene=90 if version == "v1.0-mini" else 60, **extra)
    gt = load_gt(root, version, split, cache=False)
    model = synthetic.PredictionModel(recall=0.6, false_positives=10.0, fp_range=50.0)
    results = synthetic.random_predictions(np.random.default_rng(0), gt, model)
    write_results(root / "results.json", results)
    return {"samples": gt.num_samples, "annotations": counts["annotations"], "sample_data": counts["sample_data"], "GT boxes": len(gt.boxes),
            "predictions": sum(map(len, results.values()))}


def _timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall s, CPU s of the child) of one process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed: {r.stderr.strip().splitlines()[-1:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _compare(root: Path, version: str, split: str, repeats: int, tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # as on a user's machine
    env.update(OMP_NUM_THREADS="1", BEVSIMDET_CACHE_DIR=str(tmp / "cache"))
    script = tmp / "devkit_eval.py"
    script.write_text(DEVKIT_SCRIPT)
    exe = Path(sys.executable).with_name("bevsimdet")
    ours = [str(exe)] if exe.exists() else [sys.executable, "-m", "bevsimdet"]
    args = ["--dataroot", str(root), "--version", version, "--split", split, "--results", str(root / "results.json")]
    runs = {
        "devkit": [sys.executable, str(script), str(root), version, split, str(root / "results.json"), str(tmp / "dk")],
        "cold": [*ours, "evaluate", *args, "--out", str(tmp / "cold.json"), "--no-cache"],
        "warm": [*ours, "evaluate", *args, "--out", str(tmp / "warm.json")],
    }
    for cmd in runs.values():  # warm-up: bytecode caches, page cache, and the GT cache for "warm"
        _timed(cmd, env)
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
    for _ in range(repeats):
        for name, cmd in runs.items():
            times[name].append(_timed(cmd, env))
    dk = json.loads((tmp / "dk" / "metrics_summary.json").read_text())
    diff = 0.0
    for name in ("cold", "warm"):
        m = json.loads((tmp / f"{name}.json").read_text())
        diff = max(diff, abs(m["mean_ap"] - dk["mean_ap"]), abs(m["nd_score"] - dk["nd_score"]))
    wall = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
    return {
        "devkit s": wall["devkit"], "bevsimdet cold s": wall["cold"], "bevsimdet warm s": wall["warm"],
        "speed-up cold": wall["devkit"] / wall["cold"], "speed-up warm": wall["devkit"] / wall["warm"],
        "CPU s devkit / cold / warm": f"{cpu['devkit']:.2f} / {cpu['cold']:.2f} / {cpu['warm']:.2f}",
        "max abs mAP/NDS diff": diff,
    }


def run(quick: bool, real_tables: float | None = None, repeats: int = 3) -> dict:
    """``real_tables``: only the case of a trainval world with real-sized sensor tables, at that
    fraction of the 850 scenes (1.0: the whole of nuScenes trainval's table sizes)."""
    cases = [("mini_val of v1.0-mini (10 x 20 keyframes)", "v1.0-mini", "mini_val", 20, None, 5 if not quick else 2, None)]
    if real_tables is not None:
        n = round(850 * real_tables)
        cases = [(f"val of v1.0-trainval, {n} of 850 scenes x 40 keyframes, real-sized sensor tables", "v1.0-trainval", "val", 40, None, repeats, real_tables)]
    elif quick:
        cases.append(("val of v1.0-trainval, 30 scenes x 40 keyframes", "v1.0-trainval", "val", 40, 30, 1, None))
    else:
        cases.append(("val of v1.0-trainval, 150 scenes x 40 keyframes", "v1.0-trainval", "val", 40, 150, 3, None))
    rows = []
    for title, version, split, samples, scenes, repeats, fraction in cases:
        tmp = Path(tempfile.mkdtemp(prefix="bench_eval_cli_"))
        try:
            sizes = _world(tmp / "world", version, split, samples, scenes, fraction)
            rows.append({"split": title, **sizes, "repeats": repeats, **_compare(tmp / "world", version, split, repeats, tmp)})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return {
        "title": "bevsimdet evaluate vs a devkit DetectionEval script, whole processes",
        "rows": rows,
        "notes": [
            "Each figure is one whole process (python start-up, imports, tables, results file, metric, output file), "
            "median of the interleaved repeats after one warm-up run of each; wall seconds unless marked CPU.",
            "devkit: NuScenes(...) + DetectionEval(...).main(render_curves=False); cold: bevsimdet evaluate --no-cache; "
            "warm: bevsimdet evaluate with the split's GT cache file present (bevsimdet.eval.cache).",
            "Targets: >= 3x on the mini split, >= 20x on the trainval-sized split. OMP_NUM_THREADS=1; "
            "annotation-only worlds from bevsimdet.eval.synthetic.write_tables (the simulator's table layout).",
            "On a shared machine the CPU seconds are the steadier comparison (wall time waits for the other jobs).",
        ],
    }


if __name__ == "__main__":
    # --real-tables F: the trainval world at fraction F of the 850 scenes with real-sized
    # sample_data / ego_pose tables (the tables the devkit and a cold `evaluate` read)
    fraction = float(sys.argv[sys.argv.index("--real-tables") + 1]) if "--real-tables" in sys.argv else None
    reps = int(sys.argv[sys.argv.index("--repeats") + 1]) if "--repeats" in sys.argv else 3
    print(json.dumps(run(quick="--quick" in sys.argv, real_tables=fraction, repeats=reps), indent=2, default=str))
