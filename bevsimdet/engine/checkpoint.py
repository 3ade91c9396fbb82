"""Checkpoints: one safetensors file per checkpoint, no pickle anywhere.

Layout of a ``*.safetensors`` checkpoint:

* tensors ``model/<name>`` (the model's ``state_dict``), ``ema/<name>`` (EMA weights, if any),
  ``optim/<param index>/<state key>`` (optimizer state tensors);
* one metadata entry ``bevsimdet`` holding JSON: format version, step, the resolved config, the
  optimizer's param groups and non-tensor state, the scheduler / grad-scaler / trainer state.

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

from bevsimdet.errors import UserError
from bevsimdet.io import atomic_path

FORMAT_VERSION = 1
META_KEY = "bevsimdet"
CHECKPOINT_SUFFIX = ".safetensors"
_STEP_RE = re.compile(r"^step_(\d+)\.safetensors$")


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable, or does not fit the model/config being used."""


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


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


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict]:
    """(tensors, metadata) of a checkpoint; a ``.pt``/``.pth`` weight file gives ``model/*`` only."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}", fix="pass an existing .safetensors file (e.g. <work-dir>/checkpoints/latest.safetensors)")
    if path.suffix in (".pt", ".pth"):
        return _read_torch_weights(path), {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = (f.metadata() or {}).get(META_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several types for truncated/corrupt files
        raise CheckpointError(f"cannot read checkpoint {path}: {str(e).splitlines()[0]}", fix="the file is corrupt or not a safetensors checkpoint; use another one") from None
    if raw_meta is None:  # a bare safetensors weight file (e.g. exported elsewhere): weights only
        if not any(k.startswith("model/") for k in tensors):
            tensors = {f"model/{k}": v for k, v in tensors.items()}
        return tensors, {}
    meta = json.loads(raw_meta)
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format {meta.get('format')}, this version reads {FORMAT_VERSION}")
    return tensors, meta


def _read_torch_weights(path: Path) -> dict[str, Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read weights {path}: {str(e).splitlines()[0]}", fix="only plain tensor dicts are accepted (no pickled objects)") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"weights file {path} is not a dict of tensors")
    return {f"model/{k}": v for k, v in obj.items()}


def _section(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    p = prefix + "/"
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


def _names(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... (+{len(keys) - limit})" if len(keys) > limit else "")


def check_state_compatible(state: Mapping[str, Tensor], model: nn.Module, path: object) -> None:
    """Raise a one-line CheckpointError naming missing / unexpected / mis-shaped keys."""
    own = unwrap(model).state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} keys ({_names(missing)})")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} keys ({_names(unexpected)})")
    if shapes:
        detail = [f"{k}: checkpoint {list(state[k].shape)} vs model {list(own[k].shape)}" for k in shapes]
        parts.append(f"{len(shapes)} shape mismatches ({_names(detail, 2)})")
    raise CheckpointError(
        f"checkpoint {path} does not fit this model: " + "; ".join(parts),
        fix="use the config the checkpoint was trained with (its run's config.yaml)",
    )


def _config_diff(a: Any, b: Any, prefix: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _config_diff(a.get(k), b.get(k), f"{prefix}.{k}")
        return out
    return [] if a == b else [prefix]


def check_config_compatible(stored: dict | None, current: dict, path: object, sections: tuple[str, ...] = ("model",)) -> None:
    """Raise if the config sections that shape the weights differ between checkpoint and run."""
    if not stored:
        return
    diff = [k for s in sections for k in _config_diff(stored.get(s), current.get(s), s)]
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
    for key, val in _section(tensors, "optim").items():
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
    weights = _section(tensors, "model")
    ema_weights = _section(tensors, "ema")
    if prefer_ema and ema_weights:
        weights = ema_weights
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
