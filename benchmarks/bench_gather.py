"""Validation results across ranks: gathered to rank 0 only vs all-gathered to every rank.

Two gloo CPU processes each hold half of a synthetic split's nuScenes results (``--samples``
sample tokens, ``--boxes`` result boxes each, the fields ``detections_to_results`` writes). Per
rank: seconds in the call and the growth of peak resident memory (``ru_maxrss``) it caused, for
``bevsimdet.eval.dist.gather_results`` (to rank 0) and for ``engine.dist.all_gather_json`` (what
every rank received before: the whole split, parsed on every rank).

    python benchmarks/bench_gather.py --samples 6019 --boxes 100
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch.distributed as dist
import torch.multiprocessing as mp


def _results(rank: int, world: int, samples: int, boxes: int) -> dict[str, list[dict]]:
    box = {"translation": [601.123, 1642.456, 1.234], "size": [1.9, 4.5, 1.6], "rotation": [0.71, 0.0, 0.0, 0.7],
           "velocity": [0.1, -0.2], "detection_name": "car", "detection_score": 0.4567, "attribute_name": "vehicle.moving"}
    return {f"{i:032x}": [{**box, "sample_token": f"{i:032x}"} for _ in range(boxes)] for i in range(rank, samples, world)}


METHODS = ("gather to rank 0", "all-gather to every rank")


def _worker(rank: int, port: int, method: str, args: argparse.Namespace, out: str) -> None:
    from bevsimdet.engine.dist import all_gather_json
    from bevsimdet.eval.dist import gather_results

    fn = gather_results if method == METHODS[0] else all_gather_json
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    local = _results(rank, 2, args.samples, args.boxes)
    dist.barrier()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    fn(local)
    row = (time.perf_counter() - t0, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
    with open(f"{out}.{rank}", "w") as f:
        json.dump(row, f)
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(samples: int, boxes: int) -> list[dict]:
    """One row per method: seconds and peak-RSS growth on each of the 2 ranks."""
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for i, method in enumerate(METHODS):  # a fresh pair of processes each: peaks do not hide each other
            out = f"{tmp}/{i}"
            # fork: `bevsimdet bench` loads this file outside sys.modules, so spawn could not find _worker
            mp.start_processes(_worker, args=(_free_port(), method, argparse.Namespace(samples=samples, boxes=boxes), out),
                               nprocs=2, join=True, start_method="fork")
            (t0, m0), (t1, m1) = (json.loads(Path(f"{out}.{r}").read_text()) for r in range(2))
            rows.append({"method": method, "rank 0 s": round(t0, 2), "rank 0 peak RSS +MiB": round(m0), "rank 1 s": round(t1, 2), "rank 1 peak RSS +MiB": round(m1)})
    return rows


def run(quick: bool) -> dict:
    """``bevsimdet bench`` entry: a val-sized split (6019 samples x 50 boxes), 1000 x 20 with quick."""
    samples, boxes = (1000, 20) if quick else (6019, 50)
    payload = len(json.dumps(_results(0, 1, samples, boxes))) / 2**20
    return {"title": "Validation results across 2 gloo processes: gathered to rank 0 vs all-gathered",
            "rows": measure(samples, boxes),
            "notes": [f"{samples} samples x {boxes} boxes ({payload:.0f} MiB of JSON), half on each rank; "
                      "peak RSS growth during the call (benchmarks/bench_gather.py)"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=6019)
    ap.add_argument("--boxes", type=int, default=50)
    args = ap.parse_args()
    payload = len(json.dumps(_results(0, 1, args.samples, args.boxes))) / 2**20
    print(f"{args.samples} samples x {args.boxes} boxes ({payload:.0f} MiB of JSON), 2 gloo processes")
    rows = measure(args.samples, args.boxes)
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for row in rows:
        print("| " + " | ".join(str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    sys.exit(main())
