"""Info files at nuScenes trainval scale: JSON (one parsed document) vs columnar (memory-mapped arrays).

The world is tables-only: :func:`bevsimdet.eval.synthetic.write_tables` with ``sensor_tables``
writes every nuScenes table at the real dataset's proportions (official v1.0-trainval scene
names, 40 keyframes a scene, per keyframe a LIDAR_TOP keyframe + 9 sweeps, 6 camera keyframes +
5 camera sweeps each, 5 radars x 6 frames: 76 sample_data/ego_pose rows, ~37 annotations) but
no image or point file. ``bevsimdet prepare`` reads only the tables, and none of the figures here
read a sensor file, so none depends on images or points: info size, prepare time, load time and
memory are functions of the number of keyframes, sweeps and boxes.

Measured per format, each in a fresh process: ``load_infos`` of the train split (the
NuScenesDataset built on it, as ``build_dataset`` does), then a torch DataLoader with 4 workers
(fork) in which every worker walks **all** samples of the split the way the dataset does before
reading files (``samples[i]``, ``gt_of``, ``files_of``), as every worker does over a few shuffled
epochs. Memory per process from ``/proc/<pid>/smaps_rollup`` (PSS: shared pages divided among the
processes sharing them; Private: pages only this process holds) and ``VmHWM`` (peak RSS) of
``/proc/<pid>/status``, minus the same process in a run with an empty info file (the
interpreter, torch and the loader themselves).

    python benchmarks/bench_infos.py --fraction 0.1 --out /tmp/infos_bench   # 85 scenes, 3,400 keyframes
    python benchmarks/bench_infos.py --fraction 1.0 --out /tmp/infos_bench   # the full 850 scenes

With ``--fraction`` below 1 the trainval figures are extrapolated linearly in the number of
keyframes, and labelled so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

FULL_TRAIN_KEYFRAMES = 28130  # nuScenes v1.0-trainval train split (700 scenes)
WORKERS = 4


def _mem() -> dict:
    """This process's memory (MB): smaps_rollup fields and the peak RSS."""
    out = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":")[0], line.split()[1]
        if key in ("Rss", "Pss", "Pss_Anon", "Pss_File", "Private_Clean", "Private_Dirty", "Anonymous"):
            out[key] = int(value) / 1024
    out["Private"] = out.pop("Private_Clean") + out.pop("Private_Dirty")
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            out["HWM"] = int(line.split()[1]) / 1024
    return out


def child(path: str, dataroot: str) -> None:
    """One measurement process: load, then 4 forked loader workers each walk every sample."""
    import torch
    from torch.utils.data import DataLoader, Dataset

    from bevsimdet.data.dataset import NuScenesDataset
    from bevsimdet.data.infos import save_columnar

    if path == "none":  # the baseline: the same process with an empty info file
        path = str(Path(dataroot) / "empty.cols")
        save_columnar(path, "v1.0-trainval", "train", 9, [])
    before = _mem()
    t0 = time.perf_counter()
    ds = NuScenesDataset(path, dataroot, sweeps=9, load_points=True, skip_bad_samples=False)
    load_s = time.perf_counter() - t0
    after_load = _mem()

    class Walk(Dataset):
        def __len__(self) -> int:
            return WORKERS

        def __getitem__(self, k: int) -> dict:
            t = time.perf_counter()
            n = 0
            for i in range(len(ds)):
                info = ds.samples[i]
                boxes, labels = ds.gt_of(info)
                n += len(boxes) + len(ds.files_of(info)) + len(info.cams)
            return {"pid": os.getpid(), "walk_s": time.perf_counter() - t, "items": n, "mem": _mem()}

    loader = DataLoader(Walk(), batch_size=None, num_workers=WORKERS, collate_fn=lambda x: x,
                        multiprocessing_context="fork")
    workers = list(loader)
    assert len({w["pid"] for w in workers}) == WORKERS
    del torch
    print(json.dumps({"samples": len(ds), "load_s": load_s, "before": before, "after_load": after_load,
                      "main_end": _mem(), "workers": workers}))


def _run_child(path: str, dataroot: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, __file__, "--child", path, str(dataroot)], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(fraction: float, out: Path, prepare_workers: int = 2, log=print) -> dict:
    """Write the world at ``fraction`` of the 850 scenes under ``out``, build both formats and
    measure them; the raw figures (also written to ``out/bench_infos.json``)."""
    from bevsimdet.data.infos import create_infos
    from bevsimdet.eval import synthetic
    from bevsimdet.eval.tables import split_scenes

    names = split_scenes()
    chosen = names["train"][: round(700 * fraction)] + names["val"][: round(150 * fraction)]
    root = out / "world"
    t = time.perf_counter()
    counts = synthetic.write_tables(root, "v1.0-trainval", {n: 40 for n in chosen}, seed=0, actors_per_scene=60,
                                    sweeps=9, sensor_tables=True, camera_sweeps=5, radar_sweeps=5)
    world_s = time.perf_counter() - t
    table_mb = sum(f.stat().st_size for f in (root / "v1.0-trainval").glob("*.json")) / 2**20
    log(f"world: {len(chosen)} scenes, {counts} ({table_mb:.0f} MB of tables) in {world_s:.1f} s")

    res: dict = {"fraction": fraction, "scenes": len(chosen), "world": counts, "world_s": world_s, "tables_mb": table_mb, "formats": {}}
    for fmt in ("json", "columnar"):
        t = time.perf_counter()
        paths = create_infos(root, "v1.0-trainval", out_dir=out / fmt, workers=prepare_workers, progress=False,
                             force=True, fmt=fmt)
        prep_s = time.perf_counter() - t
        size = {s: p.stat().st_size / 2**20 for s, p in paths.items()}
        log(f"{fmt}: prepare {prep_s:.1f} s, sizes {size}")
        res["formats"][fmt] = {"prepare_s": prep_s, "size_mb": size, "path": str(paths["train"])}
    res["baseline"] = _run_child("none", root)
    for fmt in ("json", "columnar"):
        res["formats"][fmt]["run"] = _run_child(res["formats"][fmt]["path"], root)
    (out / "bench_infos.json").write_text(json.dumps(res, indent=1))
    return res


def rows_of(res: dict) -> list[dict]:
    """One row per format: measured figures, and the trainval extrapolation when a fraction ran."""
    base, rows = res["baseline"], []
    for fmt, f in res["formats"].items():
        r = f["run"]
        scale = FULL_TRAIN_KEYFRAMES / r["samples"]

        def d(m: dict, b: dict, key: str) -> float:
            return m[key] - b[key]

        main_pss = d(r["main_end"], base["main_end"], "Pss")
        w_pss = [d(x["mem"], y["mem"], "Pss") for x, y in zip(r["workers"], base["workers"])]
        w_priv = [d(x["mem"], y["mem"], "Private") for x, y in zip(r["workers"], base["workers"])]
        w_hwm = [d(x["mem"], y["mem"], "HWM") for x, y in zip(r["workers"], base["workers"])]
        row = {
            "format": fmt, "train keyframes": r["samples"], "prepare s (train+val)": f["prepare_s"],
            "file MB": f["size_mb"]["train"], "load s": r["load_s"],
            "main PSS MB": main_pss, "main peak RSS MB": d(r["main_end"], base["main_end"], "HWM"),
            "worker PSS MB (max of 4)": max(w_pss), "worker private MB (max)": max(w_priv),
            "worker peak RSS MB (max)": max(w_hwm), "PSS MB, 5 processes": main_pss + sum(w_pss),
            "walk of all samples s (worker)": max(x["walk_s"] for x in r["workers"]),
        }
        if res["fraction"] < 1:
            row.update({"x to trainval": scale, "trainval file MB (extrap.)": f["size_mb"]["train"] * scale,
                        "trainval load s (extrap.)": r["load_s"] * scale,
                        "trainval PSS MB per process (extrap.)": max([main_pss, *w_pss]) * scale,
                        "trainval PSS MB, 5 processes (extrap.)": (main_pss + sum(w_pss)) * scale})
        rows.append(row)
    return rows


def run(quick: bool, fraction: float | None = None, out: Path | None = None) -> dict:
    import shutil
    import tempfile

    fraction = fraction if fraction is not None else (0.01 if quick else 0.1)
    tmp = out or Path(tempfile.mkdtemp(prefix="bench_infos_"))
    try:
        res = measure(fraction, tmp, log=lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        if out is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return {
        "title": f"Info files at trainval scale: JSON vs columnar ({res['scenes']} of 850 scenes x 40 keyframes, tables only)",
        "rows": rows_of(res),
        "notes": [
            f"World: bevsimdet.eval.synthetic.write_tables(sensor_tables=True), {res['world']['sample_data']} sample_data rows "
            f"({res['tables_mb']:.0f} MB of tables, written in {res['world_s']:.1f} s); no image or point file exists or is read.",
            "Each format in a fresh process: load_infos + NuScenesDataset of the train split, then a DataLoader with 4 forked "
            "workers that each walk all samples (samples[i], gt_of, files_of). Memory from /proc/<pid>/smaps_rollup "
            "(PSS, private) and VmHWM, minus the same processes with an empty info file.",
            "prepare: 2 worker processes. 'extrap.' columns scale linearly in keyframes to the 28,130 of trainval's train split.",
        ],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fraction", type=float, default=0.1, help="fraction of the 850 trainval scenes (1.0: all)")
    p.add_argument("--out", type=Path, default=Path("/tmp/bevsimdet_infos_bench"))
    p.add_argument("--child", nargs=2, metavar=("INFOS", "DATAROOT"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(*a.child)
        return
    print(json.dumps(run(False, a.fraction, a.out), indent=1))


if __name__ == "__main__":
    main()
