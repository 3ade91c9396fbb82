"""The training loop, generic over model, objective, data loader, optimizer and scheduler.

One *step* is one optimizer update; it consumes ``accum_steps`` micro-batches. The data stream is
the concatenation of epochs; each epoch's batch order is fixed by ``(seed, epoch)`` and the
position in the stream (epoch, micro-batch index) is saved in every checkpoint, so a resumed run
sees exactly the batches the uninterrupted run would have seen. All global RNGs are re-seeded
from ``(seed, rank, step)`` at the start of every step, so randomness inside the model and the
(single-process) data pipeline is reproduced on resume as well.

Exact resume also assumes the dataset's own randomness is either drawn from the global RNGs in
the main process (``num_workers=0``) or derived from ``(seed, epoch, index)``, as bevsimdet's
data loader does; a dataset whose workers draw from their own RNGs gets the same samples after a
resume but possibly different augmentations.
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from bevsimdet.engine import dist
from bevsimdet.engine.checkpoint import CheckpointManager, load_checkpoint
from bevsimdet.engine.ema import ModelEMA
from bevsimdet.engine.objective import Objective, diagnostics_interval, run_objective
from bevsimdet.engine.precision import plan_amp, say
from bevsimdet.engine.runlog import RunLogger
from bevsimdet.errors import DataError, UserError
from bevsimdet.io import atomic_write_json

Validator = Callable[[nn.Module], Mapping[str, float | str]]  # numbers, plus text labels


class NonFiniteLossError(UserError):
    """The loss (or the gradient norm) became NaN/inf; training stopped before the bad update."""


@dataclass
class FitResult:
    step: int
    checkpoint: Path | None  # latest checkpoint written (main rank), None on other ranks
    interrupted: bool = False  # stopped early by SIGTERM/SIGINT (a checkpoint was saved first)
    metrics: dict[str, float] = field(default_factory=dict)  # last validation


def step_seed(seed: int, rank: int, step: int, stream: int = 0) -> int:
    """A well-mixed 32-bit seed for (seed, rank, step); ``stream`` separates independent uses."""
    return int(np.random.SeedSequence([seed, rank, stream, step]).generate_state(1)[0])


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Optimises ``objective`` over batches of ``loader``.

    Args:
        model: the bare model, already on ``device`` (wrapped in DDP here when distributed).
        objective: see :mod:`bevsimdet.engine.objective`; it calls the (possibly wrapped) model.
        loader: a map-style DataLoader yielding objects with ``.to(device)`` (e.g. ``Batch``).
        optimizer / scheduler: the scheduler needs ``step()``, ``get_last_lr()`` and a JSON-able
            ``state_dict()`` (see :class:`bevsimdet.engine.schedules.StepScheduler`).
        work_dir: receives ``checkpoints/``, ``log.jsonl``, ``tensorboard/`` and ``metrics.json``.
        max_steps: optimizer steps to train for in total (a resumed run continues up to it).
        validate: called on every rank with the bare model (EMA weights if enabled), returns
            metrics (on the main rank at least); run every ``val_interval`` steps and at the end.
        config: the resolved config as a dict, stored in every checkpoint.
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        loader: DataLoader,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        *,
        work_dir: str | Path,
        max_steps: int,
        accum_steps: int = 1,
        grad_clip: float | None = None,
        amp: bool = False,  # CUDA: autocast in amp_dtype; CPU: bf16 if native, else float32 (engine.precision)
        amp_dtype: torch.dtype = torch.float16,
        ema_decay: float | None = None,
        validate: Validator | None = None,
        val_interval: int = 0,
        best_metric: str = "NDS",
        log_interval: int = 10,
        checkpoint_interval: int = 100,
        keep_checkpoints: int = 3,
        device: torch.device | str = "cpu",
        seed: int = 0,
        config: dict | None = None,
        find_unused_parameters: bool = False,
        progress: bool = True,
        tensorboard: bool = True,
        barrier_timeout_s: float = 1800.0,
    ):
        if accum_steps < 1 or max_steps < 1:
            raise ValueError("accum_steps and max_steps must be >= 1")
        self.device = torch.device(device)
        self.model = model
        self.ddp = dist.is_dist()
        if self.ddp:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model: nn.Module = nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused_parameters)
        else:
            self.train_model = model
        self.objective = objective
        self.loader = loader
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.work_dir = Path(work_dir)
        self.max_steps = int(max_steps)
        self.accum_steps = int(accum_steps)
        self.grad_clip = grad_clip
        # CUDA: amp_dtype as given; CPU: bf16 where the CPU has it natively, else float32 (one line)
        self.amp_plan = plan_amp(self.device, amp, amp_dtype)
        if dist.is_main():
            say(self.amp_plan.note)
        self.use_amp = self.amp_plan.enabled
        self.amp_dtype = self.amp_plan.dtype or amp_dtype
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_plan.needs_scaler)
        self.ema = ModelEMA(model, ema_decay) if ema_decay else None
        self.validate = validate
        self.val_interval = int(val_interval)
        self.best_metric = best_metric
        self.log_interval = max(int(log_interval), 1)
        self.checkpoint_interval = max(int(checkpoint_interval), 1)
        self.ckpt = CheckpointManager(self.work_dir / "checkpoints", keep_checkpoints)
        self.seed = int(seed)
        self.config = config
        self.progress = progress
        self.tensorboard = tensorboard
        self.barrier_timeout_s = barrier_timeout_s
        # position in the data stream and bookkeeping, all saved in checkpoints
        self.step = 0
        self.epoch = 0
        self.micro = 0  # micro-batches of `epoch` already consumed
        self.best: float | None = None
        self.metrics: dict[str, float | str] = {}
        self.stop_signal: int | None = None  # set by SIGTERM/SIGINT: stop and save at the next step
        self._saved_step = -1

    # ----------------------------------------------------------------------------------------
    # state

    def trainer_state(self) -> dict:
        return {"epoch": self.epoch, "micro": self.micro, "best": self.best, "best_metric": self.best_metric, "metrics": self.metrics}

    def save(self) -> Path | None:
        """Checkpoint the current state (main rank); returns the ``latest`` path."""
        self._saved_step = self.step
        if not dist.is_main():
            return None
        return self.ckpt.save(
            self.step,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler if self.scaler.is_enabled() else None,
            ema=self.ema,
            config=self.config,
            trainer_state=self.trainer_state(),
        )

    def resume(self, path: str | Path) -> int:
        """Restore weights, optimizer, scheduler, scaler, EMA and data position. Returns the step."""
        meta = load_checkpoint(path, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler, ema=self.ema)
        state = meta.get("trainer", {})
        self.step = int(meta.get("step", 0))
        self.epoch = int(state.get("epoch", 0))
        self.micro = int(state.get("micro", 0))
        self.best = state.get("best")
        self.metrics = dict(state.get("metrics") or {})
        self._saved_step = self.step
        return self.step

    # ----------------------------------------------------------------------------------------
    # data

    def _epoch_loader(self, epoch: int, skip: int) -> DataLoader:
        """This epoch's batches after the first ``skip``; the caller fixes the RNG state."""
        src = self.loader
        # a DistributedSampler (or a custom batch sampler) reshuffles per epoch via set_epoch
        for s in {id(x): x for x in (src.sampler, src.batch_sampler, getattr(src.batch_sampler, "sampler", None))}.values():
            if hasattr(s, "set_epoch"):
                s.set_epoch(epoch)
        order = [list(b) for b in src.batch_sampler]
        return DataLoader(
            src.dataset,
            batch_sampler=order[skip:],
            num_workers=src.num_workers,
            collate_fn=src.collate_fn,
            pin_memory=src.pin_memory,
            worker_init_fn=src.worker_init_fn,
            timeout=src.timeout,
            **({"prefetch_factor": src.prefetch_factor} if src.num_workers > 0 else {}),
        )

    def _stream(self) -> Iterator[Any]:
        """Micro-batches from the saved position onwards, across epochs, forever."""
        while True:
            # the shuffle order and the worker seeds depend on (seed, epoch) only, and drawing them
            # leaves the global RNG (re-seeded every step) untouched
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(step_seed(self.seed, dist.rank(), self.epoch, stream=1))
                it = iter(self._epoch_loader(self.epoch, self.micro))
            fetched = False
            for batch in it:
                fetched = True
                self.micro += 1
                yield batch
            if not fetched and self.micro == 0:
                raise DataError(f"the training data loader is empty (epoch {self.epoch})", fix="check the training split and train.batch_size")
            self.epoch += 1
            self.micro = 0

    # ----------------------------------------------------------------------------------------
    # signals

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.stop_signal = signum

    @contextlib.contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    # ----------------------------------------------------------------------------------------
    # the loop

    def _autocast(self) -> contextlib.AbstractContextManager:
        return self.amp_plan.autocast()

    def _train_step(self, stream: Iterator[Any], diagnose: bool = False) -> tuple[Tensor, dict[str, Tensor], Tensor, float, dict[str, float]]:
        """One optimizer update's forward/backward passes. Returns (loss, terms, grad norm, data s,
        the objective's diagnostics of the first micro-batch when ``diagnose``)."""
        loss_sum = torch.zeros((), device=self.device)
        terms_sum: dict[str, Tensor] = {}
        diagnostics: dict[str, float] = {}
        data_time = 0.0
        for i in range(self.accum_steps):
            t0 = time.perf_counter()
            batch = next(stream).to(self.device)
            data_time += time.perf_counter() - t0
            last = i == self.accum_steps - 1
            sync = contextlib.nullcontext() if (last or not self.ddp) else self.train_model.no_sync()
            with sync:
                with self._autocast():
                    res = run_objective(self.objective, self.train_model, batch, diagnose=diagnose and i == 0)
                    diagnostics.update(res.diagnostics)
                # mean-reduced losses: averaging micro-batch losses equals the loss of the joint batch
                self.scaler.scale(res.loss / self.accum_steps).backward()
            loss_sum += res.loss.detach().float() / self.accum_steps
            for k, v in res.terms.items():
                terms_sum[k] = terms_sum.get(k, 0.0) + v.detach().float() / self.accum_steps
        self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        max_norm = self.grad_clip if self.grad_clip else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm) if params else torch.zeros((), device=self.device)
        return loss_sum, terms_sum, grad_norm, data_time, diagnostics

    def _check_finite(self, loss: Tensor, terms: dict[str, Tensor], grad_norm: Tensor, stop: bool) -> bool:
        """Agree across ranks on (non-finite?, stop requested?); raise on non-finite."""
        bad_grad = not self.scaler.is_enabled() and not bool(torch.isfinite(grad_norm))
        bad, stop = dist.any_across_ranks([not bool(torch.isfinite(loss)) or bad_grad, stop])
        if bad:
            self.optimizer.zero_grad(set_to_none=True)
            values = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
            kept = f"last good checkpoint: {self.ckpt.latest} (step {self._saved_step})" if self._saved_step >= 0 and self.ckpt.latest.exists() else "no checkpoint was written yet"
            raise NonFiniteLossError(
                f"non-finite loss at step {self.step + 1} (loss={float(loss):.4g}, grad_norm={float(grad_norm):.4g}; {values}); "
                f"stopped before updating the weights; {kept}",
                fix="lower train.lr, set train.grad_clip, or check the data; resume with --resume",
            )
        return stop

    def _run_validation(self) -> dict[str, float]:
        if self.validate is None:
            return {}
        ctx = self.ema.applied_to(self.model) if self.ema is not None else contextlib.nullcontext(self.model)
        was_training = self.model.training
        with ctx as m:
            m.eval()
            with torch.no_grad():
                # a label (e.g. the evaluator's "diagnostic") stays text; every number is a float
                metrics = {k: v if isinstance(v, str) else float(v) for k, v in dict(self.validate(m)).items()}
        self.model.train(was_training)
        return metrics

    def _plot_curves(self) -> None:
        """Redraw ``curves.png``: this run's validation metrics against steps so far."""
        from bevsimdet.engine.curves import plot_curves, read_val_rows

        name = str((self.config or {}).get("name") or self.work_dir.name)
        plot_curves({name: read_val_rows(self.work_dir / "log.jsonl")}, self.work_dir / "curves.png", title=f"{name}: validation during training")

    def _validate_and_checkpoint(self, logger: RunLogger) -> None:
        """Validate (if there is a validator), checkpoint, and point ``best`` at it when it improved."""
        metrics = self._run_validation()
        if metrics:
            self.metrics = metrics
            logger.log("val", self.step, metrics)
            if dist.is_main():
                atomic_write_json(self.work_dir / "metrics.json", {"step": self.step, **metrics}, indent=2)
                self._plot_curves()
        value = metrics.get(self.best_metric)
        improved = value is not None and (self.best is None or value > self.best)
        if improved:
            self.best = value
        self.save()
        if improved and dist.is_main():
            self.ckpt.mark_best()

    def fit(self) -> FitResult:
        """Train from the current state (fresh, or after :meth:`resume`) up to ``max_steps``."""
        main = dist.is_main()
        logger = RunLogger(self.work_dir, active=main, tensorboard=self.tensorboard)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        stream = self._stream()
        bar = None
        from bevsimdet.progress import enabled, progress_bar

        if main and enabled(self.progress):
            bar = progress_bar(total=self.max_steps, initial=self.step, desc="train", unit="step")
        interrupted = False
        try:
            with self._signal_handlers():
                while self.step < self.max_steps:
                    t0 = time.perf_counter()
                    seed_all(step_seed(self.seed, dist.rank(), self.step))
                    diag_every = diagnostics_interval(self.objective)
                    diagnose = main and diag_every > 0 and (self.step + 1) % diag_every == 0
                    loss, terms, grad_norm, data_time, diagnostics = self._train_step(stream, diagnose)
                    stop = self._check_finite(loss, terms, grad_norm, self.stop_signal is not None)
                    lr = self.scheduler.get_last_lr()[0]  # the LR of this update (first param group)
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.scheduler.step()
                    self.step += 1
                    if self.ema is not None:
                        self.ema.update(self.model, self.step)
                    values = {"loss": float(loss), **{k: float(v) for k, v in terms.items()}}
                    if bar is not None:
                        bar.set_postfix({k: f"{v:.3g}" for k, v in values.items()}, refresh=False)
                        bar.update(1)
                    if self.step % self.log_interval == 0 or self.step == self.max_steps:
                        logger.log("train", self.step, {
                            **values, "lr": lr, "grad_norm": float(grad_norm),
                            "epoch": self.epoch, "time_per_step": time.perf_counter() - t0, "data_time": data_time,
                        })
                    if diagnostics:  # the objective's own row (e.g. gradient shares), never part of the loss
                        logger.log(getattr(self.objective, "diagnostics_kind", "diagnostics"), self.step, diagnostics)
                    if stop:
                        interrupted = True
                        break
                    if self.val_interval and self.step % self.val_interval == 0 and self.step < self.max_steps:
                        self._validate_and_checkpoint(logger)
                    elif self.step % self.checkpoint_interval == 0:
                        self.save()
                if interrupted:
                    self.save()
                else:
                    self._validate_and_checkpoint(logger)
                dist.barrier(self.barrier_timeout_s)
        finally:
            if bar is not None:
                bar.close()
            logger.close()
        return FitResult(step=self.step, checkpoint=self.ckpt.latest if main else None, interrupted=interrupted, metrics=dict(self.metrics))


__all__ = ["Trainer", "FitResult", "NonFiniteLossError", "Validator", "step_seed", "seed_all"]
