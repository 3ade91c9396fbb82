"""Multi-process helpers: torchrun initialisation, rank queries, and collectives that time out.

A plain ``python -m bevsimdet train ...`` is a single process and every helper here degrades to a
no-op. Under ``torchrun --nproc_per_node N -m bevsimdet train ...`` the launcher sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR``/``MASTER_PORT``; :func:`init_distributed`
reads them and joins the process group (NCCL on CUDA, gloo on CPU).

Every collective runs under the process group's timeout (``train.dist_timeout_s``), so a rank
that died or diverged makes the others fail with a message instead of hanging forever.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks this process's GPU (``cuda:LOCAL_RANK``) when CUDA is available, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            from bevsimdet.errors import ConfigError

            raise ConfigError("train.device is 'cuda' but no CUDA device is available", fix="use --set train.device=auto")
        return torch.device("cuda", local_rank())
    return torch.device(name)


def init_distributed(device: torch.device, timeout_s: float = 1800.0) -> bool:
    """Join the torchrun process group if the environment describes one. Returns True if distributed."""
    if env_world_size() <= 1 or is_dist():
        return is_dist()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return True


def destroy_distributed() -> None:
    if is_dist():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier(timeout_s: float | None = None) -> None:
    """Wait for all ranks. On gloo a missing rank is named in the error after ``timeout_s``."""
    if not is_dist():
        return
    if dist.get_backend() == "gloo" and timeout_s is not None:
        dist.monitored_barrier(timeout=timedelta(seconds=timeout_s))
    else:
        dist.barrier()


def any_across_ranks(flags: list[bool]) -> list[bool]:
    """Element-wise logical OR of per-rank flags (one small all-reduce)."""
    if not is_dist():
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def all_gather_json(obj: Any) -> list[Any]:
    """Gather one JSON-serialisable object from every rank, in rank order (no pickle involved)."""
    if not is_dist():
        return [obj]
    dev = _comm_device()
    payload = torch.frombuffer(bytearray(json.dumps(obj).encode("utf-8")), dtype=torch.uint8).to(dev)
    sizes = [torch.zeros(1, dtype=torch.long, device=dev) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([payload.numel()], dtype=torch.long, device=dev))
    longest = max(int(s.item()) for s in sizes)
    padded = torch.zeros(longest, dtype=torch.uint8, device=dev)
    padded[: payload.numel()] = payload
    chunks = [torch.empty(longest, dtype=torch.uint8, device=dev) for _ in range(world_size())]
    dist.all_gather(chunks, padded)
    return [json.loads(c[: int(s.item())].cpu().numpy().tobytes().decode("utf-8")) for c, s in zip(chunks, sizes)]


def broadcast_json(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s object on every rank."""
    if not is_dist():
        return obj
    return all_gather_json(obj if rank() == src else None)[src]


__all__ = [
    "env_world_size",
    "is_dist",
    "rank",
    "world_size",
    "local_rank",
    "is_main",
    "select_device",
    "init_distributed",
    "destroy_distributed",
    "barrier",
    "any_across_ranks",
    "all_gather_json",
    "broadcast_json",
]
