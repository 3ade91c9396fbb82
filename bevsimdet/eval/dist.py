"""Merging per-rank results under ``torch.distributed`` (any backend, gloo included)."""

from __future__ import annotations

import json
from typing import Mapping


def gather_results(results: Mapping[str, list[dict]], dst: int = 0) -> dict[str, list[dict]] | None:
    """Every rank's ``results`` merged on rank ``dst``; ``None`` on the other ranks.

    Only ``dst`` receives and decodes the payloads: with an all-gather every rank would hold and
    parse the whole split's results, which nobody but the scoring rank needs. Samples appear in
    rank order (rank 0's first), each once: a sample seen by several ranks (a distributed sampler
    pads the last batch by repeating samples) keeps its first copy. Without an initialised process
    group this returns a copy of ``results``. The payload travels as UTF-8 JSON in uint8 tensors,
    so nothing is pickled.
    """
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return dict(results)
    # NCCL only moves CUDA tensors; gloo and others take CPU ones.
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    here = dist.get_rank() == dst
    payload = torch.frombuffer(bytearray(json.dumps(results).encode("utf-8")), dtype=torch.uint8).to(device)
    # gather needs equal-sized tensors: every rank learns the longest payload (one int each), pads
    # to it and sends its bytes to dst alone
    size = torch.tensor([payload.numel()], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[: payload.numel()] = payload
    chunks = [torch.zeros_like(padded) for _ in sizes] if here else None
    dist.gather(padded, chunks, dst=dst)
    if not here:
        return None
    merged: dict[str, list[dict]] = {}
    for chunk, n in zip(chunks, sizes):
        part = json.loads(bytes(chunk[: int(n.item())].cpu().numpy()).decode("utf-8"))
        for token, boxes in part.items():
            merged.setdefault(token, boxes)
    return merged
