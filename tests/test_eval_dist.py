"""Results gathered across DDP ranks to one rank (gloo, two CPU processes)."""

from __future__ import annotations

import json
import socket

import torch.distributed as dist
import torch.multiprocessing as mp

from bevsimdet.eval.dist import gather_results


def _worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        # Rank 1 repeats sample "b" (as a padding distributed sampler does) and has more data.
        local = {"a": [{"detection_score": 0.5}], "b": []} if rank == 0 else {"c": [{"x": "é" * 1000}] * 3, "b": [{"y": 1}]}
        merged = gather_results(local)
        to_one = gather_results(local, dst=1)
        with open(f"{out_dir}/{rank}.json", "w") as f:
            json.dump([list(merged.items()) if merged is not None else None, list(to_one.items()) if to_one is not None else None], f)
    finally:
        dist.destroy_process_group()


def test_gather_results_gloo(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    want = [["a", [{"detection_score": 0.5}]], ["b", []], ["c", [{"x": "é" * 1000}] * 3]]
    # only the destination rank receives (and decodes) the merged results
    assert json.loads((tmp_path / "0.json").read_text()) == [want, None]
    assert json.loads((tmp_path / "1.json").read_text()) == [None, want]


def test_gather_results_without_process_group():
    res = {"a": []}
    out = gather_results(res)
    assert out == res and out is not res
