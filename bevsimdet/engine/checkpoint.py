"""Training checkpoints: one safetensors file per checkpoint, no pickle anywhere.

The file layout and the reading of model weights live one floor down in :mod:`bevsimdet.weights`
(models load pretrained and teacher weights from there without importing the engine); this module
writes checkpoints and restores the whole training state (optimizer, scheduler, scaler, EMA).

Files are written atomically (temporary file + rename), so a crash never leaves a half-written
checkpoint behind. :func:`load_checkpoint` also reads plain weight files (``.pt``/``.pth`` holding
a dict of tensors) through ``torch.load(weights_only=True)``, e.g. pretrained weights.

A run directory keeps ``checkpoints/latest.safetensors`` (always the newest), step-numbered
``step_0000100.safetensors`` files (the last ``keep`` of them) and ``best.safetensors`` (best
validation metric); see :class:`CheckpointManager`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from bevsimdet.io import atomic_path
from bevsimdet.weights import (
    CHECKPOINT_SUFFIX,
    FORMAT_VERSION,
    META_KEY,
    CheckpointError,
    check_state_compatible,
    model_weights,
    read_checkpoint,
    section,
    unwrap,
)
from bevsimdet.weights import names as _names

_STEP_RE = re.compile(r"^step_(\d+)\.safetensors$")


# --------------------------------------------------------------------------------------------
# saving


def _flat_tensors(prefix: str, state: Mapping[str, Tensor], out: dict[str, Tensor], seen: set[int]) -> None:
    for name, t in state.items():
        t = t.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        if t.numel() and ptr in seen:  # safetensors refuses tensors sharing memory (tied weights)
            t = t.clone()
        elif t.numel():
            seen.add(ptr)
        out[f"{prefix}/{name}"] = t


def _split_optimizer_state(sd: dict) -> tuple[dict[str, Tensor], dict]:
    """Optimizer state_dict -> (flat tensors, JSON-able rest)."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if isinstance(val, Tensor):
                tensors[f"{idx}/{key}"] = val
            else:
                scalars.setdefault(str(idx), {})[key] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: Any | None = None,
    ema: Any | None = None,
    step: int = 0,
    config: dict | None = None,
    trainer_state: dict | None = None,
) -> Path:
    """Write a checkpoint atomically. ``scheduler``/``scaler``/``ema`` need ``state_dict()``;
    the scheduler's and scaler's must be JSON-able, the EMA's a dict of tensors."""
    path = Path(path)
    tensors: dict[str, Tensor] = {}
    seen: set[int] = set()
    _flat_tensors("model", unwrap(model).state_dict(), tensors, seen)
    meta: dict[str, Any] = {"format": FORMAT_VERSION, "step": int(step), "config": config, "trainer": trainer_state or {}}
    if ema is not None:
        _flat_tensors("ema", ema.state_dict(), tensors, seen)
    if optimizer is not None:
        opt_tensors, meta["optimizer"] = _split_optimizer_state(optimizer.state_dict())
        _flat_tensors("optim", opt_tensors, tensors, seen)
    if scheduler is not None:
        meta["scheduler"] = scheduler.state_dict()
    if scaler is not None:
        meta["scaler"] = scaler.state_dict()
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})
    return path


# --------------------------------------------------------------------------------------------
# loading


def config_diff(a: Any, b: Any, prefix: str) -> list[str]:
    """Dotted names of the leaves that differ between two plain configs (dicts compared key by key)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += config_diff(a.get(k), b.get(k), f"{prefix}.{k}")
        return out
    return [] if a == b else [prefix]


def check_config_compatible(stored: dict | None, current: dict, path: object, sections: tuple[str, ...] = ("model",)) -> None:
    """Raise if the config sections that shape the weights differ between checkpoint and run."""
    if not stored:
        return
    diff = [k for s in sections for k in config_diff(stored.get(s), current.get(s), s)]
    if diff:
        raise CheckpointError(
            f"checkpoint {path} was trained with a different config: {_names(diff, 6)} {'differs' if len(diff) == 1 else 'differ'}",
            fix="resume with the run's own config.yaml or start a new --work-dir",
        )


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: Mapping[str, Tensor], meta: dict, path: object) -> None:
    saved = meta.get("optimizer")
    if saved is None:
        raise CheckpointError(f"checkpoint {path} has no optimizer state", fix="resume from a training checkpoint, not a weights file")
    if len(saved["param_groups"]) != len(optimizer.param_groups) or any(
        len(s["params"]) != len(g["params"]) for s, g in zip(saved["param_groups"], optimizer.param_groups)
    ):
        raise CheckpointError(f"checkpoint {path}: optimizer parameter groups differ from this run's (train.lr_mult or the model changed)")
    state: dict[int, dict[str, Any]] = {}
    for key, val in section(tensors, "optim").items():
        idx, name = key.split("/", 1)
        state.setdefault(int(idx), {})[name] = val
    for idx, scalars in saved["scalars"].items():
        state.setdefault(int(idx), {}).update(scalars)
    groups = []
    for s, g in zip(saved["param_groups"], optimizer.param_groups):
        # JSON turns tuples (Adam betas) into lists; keep the optimizer's own types
        groups.append({k: tuple(v) if isinstance(g.get(k), tuple) else v for k, v in s.items()})
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: Any | None = None,
    ema: Any | None = None,
    prefer_ema: bool = False,
) -> dict:
    """Load a checkpoint into the given objects and return its metadata (``step``, ``config``,
    ``trainer``, ...). ``prefer_ema`` loads the EMA weights into ``model`` when the file has them
    (for evaluation). Incompatible weights raise :class:`CheckpointError` before anything changes."""
    tensors, meta = read_checkpoint(path)
    weights = model_weights(tensors, prefer_ema)
    ema_weights = section(tensors, "ema")
    check_state_compatible(weights, model, path)
    unwrap(model).load_state_dict(weights, strict=True)
    if ema is not None:
        ema.load_state_dict(ema_weights or weights)
    if optimizer is not None:
        _load_optimizer(optimizer, tensors, meta, path)
    if scheduler is not None and "scheduler" in meta:
        scheduler.load_state_dict(meta["scheduler"])
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    return meta


# --------------------------------------------------------------------------------------------
# the checkpoints/ folder of a run


class CheckpointManager:
    """``latest``, step-numbered (the last ``keep``) and ``best`` checkpoints in one folder."""

    def __init__(self, directory: str | os.PathLike, keep: int = 3):
        self.dir = Path(directory)
        self.keep = max(int(keep), 0)

    @property
    def latest(self) -> Path:
        return self.dir / f"latest{CHECKPOINT_SUFFIX}"

    @property
    def best(self) -> Path:
        return self.dir / f"best{CHECKPOINT_SUFFIX}"

    def step_path(self, step: int) -> Path:
        return self.dir / f"step_{step:07d}{CHECKPOINT_SUFFIX}"

    def step_files(self) -> list[Path]:
        files = [p for p in self.dir.glob(f"step_*{CHECKPOINT_SUFFIX}") if _STEP_RE.match(p.name)]
        return sorted(files, key=lambda p: int(_STEP_RE.match(p.name).group(1)))

    def save(self, step: int, **objects: Any) -> Path:
        """Write ``step_N`` and point ``latest`` at it; prune old step files. Returns ``latest``."""
        target = self.step_path(step)
        save_checkpoint(target, step=step, **objects)
        self._alias(target, self.latest)
        files = self.step_files()
        for old in files[: max(len(files) - self.keep, 0)]:
            old.unlink(missing_ok=True)
        return self.latest

    def mark_best(self) -> Path:
        """Make ``best`` a copy of the current ``latest``."""
        self._alias(self.latest, self.best)
        return self.best

    @staticmethod
    def _alias(src: Path, dst: Path) -> None:
        """Atomically make ``dst`` the same file as ``src`` (a hard link, or a copy where links fail)."""
        with atomic_path(dst) as tmp:
            tmp.unlink()
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)


__all__ = [
    "CheckpointError",
    "CheckpointManager",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "check_state_compatible",
    "check_config_compatible",
    "unwrap",
]
