"""A toy regression problem for the training engine, and the tests that train on it.

The other ``test_engine_*`` files import the toy from here. Run as a script, this file trains the
toy in a subprocess (used by the kill/resume and the torchrun tests):
``python tests/test_engine_toy.py --work-dir W --max-steps N [--resume] [--sleep S]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from bevsimdet.engine import dist
from bevsimdet.engine.build import build_optimizer, build_scheduler
from bevsimdet.engine.config import TrainConfig
from bevsimdet.engine.trainer import Trainer

W_TRUE = torch.tensor([1.5, -2.0, 0.5, 1.0])


@dataclass
class ToyBatch:
    x: Tensor  # B x 4
    y: Tensor  # B

    def to(self, device: torch.device | str) -> "ToyBatch":
        return ToyBatch(self.x.to(device), self.y.to(device))


class ToyDataset(Dataset):
    def __init__(self, n: int = 10, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ W_TRUE + 0.5 + 0.01 * torch.randn(n, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.x[i], self.y[i]


def collate(items: list[tuple[Tensor, Tensor]]) -> ToyBatch:
    return ToyBatch(torch.stack([a for a, _ in items]), torch.stack([b for _, b in items]))


class ToyModel(nn.Module):
    """``hidden=0``: a single linear layer; otherwise backbone MLP (with dropout) + head."""

    def __init__(self, hidden: int = 8, dropout: float = 0.0):
        super().__init__()
        if hidden:
            self.backbone = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Dropout(dropout))
            self.head = nn.Linear(hidden, 1)
        else:
            self.backbone = nn.Identity()
            self.head = nn.Linear(4, 1)

    def forward(self, batch: ToyBatch) -> Tensor:
        return self.head(self.backbone(batch.x)).squeeze(-1)


class ToyObjective:
    """MSE + L1 terms. ``nan_after`` calls -> NaN loss; ``sleep`` s per call; ``signal_at`` call -> SIGTERM to self."""

    def __init__(self, nan_after: int | None = None, sleep: float = 0.0, signal_at: int | None = None):
        self.weights = {"mse": 1.0, "l1": 0.5}
        self.calls = 0
        self.nan_after = nan_after
        self.sleep = sleep
        self.signal_at = signal_at

    def terms(self, model: nn.Module, batch: ToyBatch) -> tuple[dict[str, Tensor], Tensor]:
        self.calls += 1
        if self.sleep:
            time.sleep(self.sleep)
        if self.signal_at is not None and self.calls == self.signal_at:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGTERM)
        pred = model(batch)
        err = pred - batch.y
        terms = {"mse": (err**2).mean(), "l1": err.abs().mean()}
        if self.nan_after is not None and self.calls > self.nan_after:
            terms["mse"] = terms["mse"] * float("nan")
        return terms, pred


def toy_loader(batch_size: int, n: int = 10, shuffle: bool = True, seed: int = 0, num_workers: int = 0) -> DataLoader:
    ds = ToyDataset(n)
    sampler = DistributedSampler(ds, num_replicas=dist.world_size(), rank=dist.rank(), shuffle=shuffle, seed=seed)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=collate, num_workers=num_workers)


def make_trainer(
    work_dir: Path,
    *,
    max_steps: int,
    batch_size: int = 2,
    accum_steps: int = 1,
    hidden: int = 8,
    dropout: float = 0.1,
    n: int = 10,
    shuffle: bool = True,
    num_workers: int = 0,
    objective: ToyObjective | None = None,
    train: TrainConfig | None = None,
    **kwargs,
) -> Trainer:
    torch.manual_seed(0)
    model = ToyModel(hidden, dropout)
    cfg = train or TrainConfig(lr=1e-2, grad_clip=None)
    opt = build_optimizer(cfg, model)
    sched = build_scheduler(cfg, opt, max_steps)
    kwargs.setdefault("progress", False)
    kwargs.setdefault("tensorboard", False)
    return Trainer(
        model, objective or ToyObjective(), toy_loader(batch_size, n, shuffle, num_workers=num_workers), opt, sched,
        work_dir=work_dir, max_steps=max_steps, accum_steps=accum_steps, seed=0,
        grad_clip=cfg.grad_clip, ema_decay=cfg.ema_decay, **kwargs,
    )


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------------
# tests


def toy_mse(model: nn.Module) -> dict[str, float]:
    data = ToyDataset(10)
    with torch.no_grad():
        mse = float(((model(ToyBatch(data.x, data.y)) - data.y) ** 2).mean())
    return {"NDS": -mse, "mse": mse}


def test_loss_decreases_and_run_dir_is_complete(tmp_path):
    t = make_trainer(tmp_path, max_steps=40, dropout=0.0, validate=toy_mse, log_interval=5, checkpoint_interval=20, tensorboard=True,
                     train=TrainConfig(lr=0.05, grad_clip=10.0))
    before = toy_mse(t.model)["mse"]
    res = t.fit()
    assert res.step == 40 and not res.interrupted
    assert res.metrics["mse"] < 0.2 * before
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train_rows] == list(range(5, 45, 5))
    assert {"loss", "mse", "l1", "lr", "grad_norm", "time_per_step"} <= train_rows[0].keys()
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]
    assert rows[-1]["kind"] == "val" and rows[-1]["step"] == 40
    assert json.loads((tmp_path / "metrics.json").read_text())["step"] == 40
    ck = tmp_path / "checkpoints"
    assert {p.name for p in ck.iterdir()} == {"latest.safetensors", "best.safetensors", "step_0000020.safetensors", "step_0000040.safetensors"}
    assert any((tmp_path / "tensorboard").iterdir())


def test_grad_accumulation_matches_larger_batch(tmp_path):
    common = dict(max_steps=2, hidden=0, dropout=0.0, n=4, shuffle=False)
    big = make_trainer(tmp_path / "a", batch_size=2, accum_steps=1, **common)
    small = make_trainer(tmp_path / "b", batch_size=1, accum_steps=2, **common)
    big.fit()
    small.fit()
    for (k, a), b in zip(big.model.state_dict().items(), small.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k


def test_exact_resume(tmp_path):
    # 10 samples, batch 2, accum 2: steps straddle epoch boundaries; dropout exercises the RNG
    kw = dict(accum_steps=2, checkpoint_interval=1, train=TrainConfig(lr=1e-2, grad_clip=1.0, ema_decay=None))
    straight = make_trainer(tmp_path / "straight", max_steps=6, **kw)
    straight.fit()
    first = make_trainer(tmp_path / "split", max_steps=6, **kw)
    first.max_steps = 3  # stop half-way through the same 6-step schedule
    first.fit()
    resumed = make_trainer(tmp_path / "split", max_steps=6, **kw)
    assert resumed.resume(tmp_path / "split" / "checkpoints" / "latest.safetensors") == 3
    assert (resumed.epoch, resumed.micro) == (1, 1)
    resumed.fit()
    assert state_equal(straight.model.state_dict(), resumed.model.state_dict())
    sa, sb = straight.optimizer.state_dict(), resumed.optimizer.state_dict()
    for idx in sa["state"]:
        assert state_equal(sa["state"][idx], sb["state"][idx])
    assert sa["param_groups"] == sb["param_groups"]
    assert straight.scheduler.state_dict() == resumed.scheduler.state_dict()


def test_worker_processes_give_the_same_run(tmp_path):
    a = make_trainer(tmp_path / "a", max_steps=4, num_workers=0)
    b = make_trainer(tmp_path / "b", max_steps=4, num_workers=1)
    a.fit()
    b.fit()
    assert state_equal(a.model.state_dict(), b.model.state_dict())


def test_ema_weights_are_used_for_validation_and_saved(tmp_path):
    seen = []
    t = make_trainer(tmp_path, max_steps=5, validate=lambda m: seen.append({k: v.clone() for k, v in m.state_dict().items()}) or {"NDS": 0.0},
                     train=TrainConfig(lr=1e-2, ema_decay=0.9))
    t.fit()
    assert state_equal(seen[-1], t.ema.state_dict())
    assert not state_equal(seen[-1], t.model.state_dict())  # live weights restored after validation
    fresh = make_trainer(tmp_path / "x", max_steps=5, train=TrainConfig(lr=1e-2, ema_decay=0.9))
    fresh.resume(tmp_path / "checkpoints" / "latest.safetensors")
    assert state_equal(fresh.ema.state_dict(), t.ema.state_dict())


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    from bevsimdet.engine.checkpoint import read_checkpoint
    from bevsimdet.engine.trainer import NonFiniteLossError

    t = make_trainer(tmp_path, max_steps=10, objective=ToyObjective(nan_after=5), checkpoint_interval=2)
    try:
        t.fit()
        raise AssertionError("expected NonFiniteLossError")
    except NonFiniteLossError as e:
        msg = str(e)
    assert "non-finite loss at step 6" in msg and "latest.safetensors (step 4)" in msg and "\n" not in msg
    tensors, meta = read_checkpoint(tmp_path / "checkpoints" / "latest.safetensors")
    assert meta["step"] == 4 and all(torch.isfinite(v).all() for v in tensors.values())
    assert t.step == 5  # the bad update was never applied
    assert all(torch.isfinite(p).all() for p in t.model.parameters())


def test_sigterm_saves_checkpoint_and_returns(tmp_path):
    t = make_trainer(tmp_path, max_steps=20, objective=ToyObjective(signal_at=3), checkpoint_interval=100)
    res = t.fit()
    assert res.interrupted and res.step == 3
    from bevsimdet.engine.checkpoint import read_checkpoint

    assert read_checkpoint(res.checkpoint)[1]["step"] == 3


# ------------------------------------------------------------------------------------------------
# script entry (subprocess tests)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work-dir", type=Path, required=True)
    ap.add_argument("--max-steps", type=int, default=8)
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--gather-timeout", type=float, default=0.0, help="DDP: also test a gather that one rank skips")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    dist.init_distributed(torch.device("cpu"), timeout_s=30)
    t = make_trainer(args.work_dir, max_steps=args.max_steps, objective=ToyObjective(sleep=args.sleep), checkpoint_interval=1, accum_steps=2)
    if args.resume:
        t.resume(args.work_dir / "checkpoints" / "latest.safetensors")
    res = t.fit()
    sums = [float(p.detach().double().sum()) for p in t.model.parameters()]
    # payloads of different sizes per rank exercise the padding in all_gather_json
    everyone = dist.all_gather_json({"sums": sums, "pad": "x" * 1000 * dist.rank()})
    if dist.is_main():
        (args.work_dir / "result.json").write_text(json.dumps({"step": res.step, "sums": [e["sums"] for e in everyone]}))
    if args.gather_timeout:
        if dist.rank() == 1:
            time.sleep(args.gather_timeout * 3)  # never joins the barrier below
        else:
            start = time.time()
            try:
                dist.barrier(timeout_s=args.gather_timeout)
                outcome = "returned"
            except RuntimeError as e:
                outcome = f"error after {time.time() - start:.1f}s: {str(e).splitlines()[0]}"
            (args.work_dir / "barrier.txt").write_text(outcome)
    dist.destroy_distributed()
    return 143 if res.interrupted else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
