"""Training-engine overhead: the Trainer vs a bare AdamW loop, and checkpoint save/load speed.

The model is an MLP on random data, so the figures isolate what the engine adds per step (RNG
re-seeding, finiteness checks, grad-norm, logging, the data-position bookkeeping) from model cost.
Checkpoints hold weights plus AdamW state (3x the weights) in one safetensors file.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset


class _Batch:
    # a plain class: `bevsimdet bench` loads this file without registering it in sys.modules,
    # which dataclasses under postponed annotations need
    def __init__(self, x: Tensor, y: Tensor):
        self.x, self.y = x, y

    def to(self, device: torch.device) -> "_Batch":
        return _Batch(self.x.to(device), self.y.to(device))


class _Objective:
    weights = {"mse": 1.0}

    def terms(self, model: nn.Module, batch: _Batch) -> tuple[dict[str, Tensor], Tensor]:
        out = model(batch.x)
        return {"mse": ((out - batch.y) ** 2).mean()}, out


def _mlp(width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1))


def _loader(n: int, batch: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(n, 256, generator=g), torch.randn(n, 1, generator=g))
    return DataLoader(ds, batch_size=batch, shuffle=True, collate_fn=lambda items: _Batch(torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])))


def _bare_loop(steps: int, width: int, batch: int) -> float:
    model = _mlp(width)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    obj = _Objective()
    it = iter(_loader(steps * batch, batch))
    t0 = time.perf_counter()
    for _ in range(steps):
        b = next(it)
        terms, _ = obj.terms(model, b)
        terms["mse"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 35.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - t0) / steps


def _trainer_loop(steps: int, width: int, batch: int, work_dir: Path) -> float:
    from bevsimdet.engine.build import build_optimizer, build_scheduler
    from bevsimdet.engine.config import TrainConfig
    from bevsimdet.engine.trainer import Trainer

    model = _mlp(width)
    cfg = TrainConfig(lr=1e-3)
    opt = build_optimizer(cfg, model)
    t = Trainer(model, _Objective(), _loader(steps * batch, batch), opt, build_scheduler(cfg, opt, steps),
                work_dir=work_dir, max_steps=steps, grad_clip=35.0, log_interval=10, checkpoint_interval=10**9,
                progress=False, tensorboard=False)
    t0 = time.perf_counter()
    t.fit()  # includes the one final checkpoint
    return (time.perf_counter() - t0) / steps


def _checkpoint_times(width: int, work_dir: Path) -> tuple[float, float, float]:
    from bevsimdet.engine.checkpoint import load_checkpoint, save_checkpoint

    model = _mlp(width)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 256)).sum().backward()
    opt.step()  # materialise the AdamW state
    path = work_dir / "c.safetensors"
    t0 = time.perf_counter()
    save_checkpoint(path, model=model, optimizer=opt, step=1)
    save_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    load_checkpoint(path, model=model, optimizer=opt)
    load_s = time.perf_counter() - t0
    return path.stat().st_size / 2**20, save_s, load_s


def run(quick: bool) -> dict:
    steps, repeats = (50, 3) if quick else (200, 5)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for width, batch in ((64, 8), (1024, 64)):
            bare = statistics.median(_bare_loop(steps, width, batch) for _ in range(repeats))
            ours = statistics.median(_trainer_loop(steps, width, batch, Path(tmp) / f"r{width}_{i}") for i in range(repeats))
            rows.append({"case": f"MLP width {width}, batch {batch}, {steps} steps", "bare loop ms/step": 1e3 * bare,
                         "Trainer ms/step": 1e3 * ours, "overhead ms/step": 1e3 * (ours - bare)})
        width = 1024 if quick else 2048
        mb, save_s, load_s = _checkpoint_times(width, Path(tmp))
        rows.append({"case": f"checkpoint of MLP width {width} + AdamW state ({mb:.0f} MiB)",
                     "save s": save_s, "load s": load_s, "save MiB/s": mb / save_s, "load MiB/s": mb / load_s})
    return {
        "title": "Training engine overhead (CPU)",
        "rows": rows,
        "notes": ["Trainer time includes writing one final checkpoint; medians of repeated runs.",
                  "Run alone with `bevsimdet bench --only engine`."],
    }
