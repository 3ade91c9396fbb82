"""Weight files: the on-disk checkpoint format and reading model weights from it (no pickle).

This is the floor below both ``models/`` (pretrained backbones, the frozen teacher) and
``engine/`` (training checkpoints, resume), so models never import the training engine.

Layout of a ``*.safetensors`` checkpoint:

* tensors ``model/<name>`` (the model's ``state_dict``), ``ema/<name>`` (EMA weights, if any),
  ``optim/<param index>/<state key>`` (optimizer state tensors);
* one metadata entry ``bevsimdet`` holding JSON: format version, step, the resolved config, the
  optimizer's param groups and non-tensor state, the scheduler / grad-scaler / trainer state.

:func:`read_checkpoint` also reads bare safetensors weight files and plain weight files
(``.pt``/``.pth`` holding a dict of tensors) through ``torch.load(weights_only=True)``, e.g.
pretrained weights. Writing checkpoints (and restoring optimizer state) lives in
:mod:`bevsimdet.engine.checkpoint`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn

from bevsimdet.errors import UserError

FORMAT_VERSION = 1
META_KEY = "bevsimdet"
CHECKPOINT_SUFFIX = ".safetensors"


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable, or does not fit the model/config being used."""


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


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


def section(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The tensors under ``<prefix>/``, with the prefix removed."""
    p = prefix + "/"
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


def names(keys: list[str], limit: int = 4) -> str:
    """``a, b, c, d, ... (+n)``: a short list of keys for one-line error messages."""
    shown = ", ".join(keys[:limit])
    return shown + (f", ... (+{len(keys) - limit})" if len(keys) > limit else "")


def state_mismatches(state: Mapping[str, Tensor], own: Mapping[str, Tensor]) -> tuple[list[str], list[str], list[str]]:
    """Sorted keys of ``own`` missing from ``state``, keys of ``state`` not in ``own``, and shared
    keys whose shapes differ."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    return missing, unexpected, shapes


def check_state_compatible(state: Mapping[str, Tensor], model: nn.Module, path: object) -> None:
    """Raise a one-line CheckpointError naming missing / unexpected / mis-shaped keys."""
    own = unwrap(model).state_dict()
    missing, unexpected, shapes = state_mismatches(state, own)
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} keys ({names(missing)})")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} keys ({names(unexpected)})")
    if shapes:
        detail = [f"{k}: checkpoint {list(state[k].shape)} vs model {list(own[k].shape)}" for k in shapes]
        parts.append(f"{len(shapes)} shape mismatches ({names(detail, 2)})")
    raise CheckpointError(
        f"checkpoint {path} does not fit this model: " + "; ".join(parts),
        fix="use the config the checkpoint was trained with (its run's config.yaml)",
    )


def model_weights(tensors: Mapping[str, Tensor], prefer_ema: bool = False) -> dict[str, Tensor]:
    """The model's weights in a checkpoint's tensors: ``ema/*`` with ``prefer_ema`` when the file
    has them, else ``model/*``."""
    ema = section(tensors, "ema")
    return ema if (prefer_ema and ema) else section(tensors, "model")


def load_weights(path: str | os.PathLike, model: nn.Module, prefer_ema: bool = False) -> dict:
    """Load a checkpoint's (or weight file's) model weights into ``model``; return its metadata.

    ``prefer_ema`` loads the EMA weights when the file has them (for evaluation). Incompatible
    weights raise :class:`CheckpointError` before the model changes."""
    tensors, meta = read_checkpoint(path)
    weights = model_weights(tensors, prefer_ema)
    check_state_compatible(weights, model, path)
    unwrap(model).load_state_dict(weights, strict=True)
    return meta


# --------------------------------------------------------------------------------------------
# starting a model from (part of) another model's weights


def _under(key: str, prefix: str) -> bool:
    """``key`` lies in module ``prefix`` ("" is the whole model)."""
    return prefix == "" or key == prefix or key.startswith(prefix + ".")


def _rename(key: str, prefix: str, to: str) -> str:
    rest = key[len(prefix):].lstrip(".") if prefix else key
    return ".".join(p for p in (to, rest) if p)


@dataclass
class InitReport:
    """What starting a model from other weights did, by model key (sorted lists).

    * ``loaded``: model keys filled from the source.
    * ``missing``: model keys under a mapped prefix whose source key does not exist.
    * ``unexpected``: source keys under a mapped source prefix that no model key took.
    * ``shape_mismatched``: model keys whose source tensor has another shape (left as they were).
    * ``untouched``: how many model keys lie outside every mapped prefix (left as they were).
    """

    source: str
    prefix_map: dict[str, str]
    strict: bool
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatched: list[str] = field(default_factory=list)
    untouched: int = 0

    @property
    def problems(self) -> str:
        """The mismatches on one line ("" when there are none)."""
        parts = [f"{what} {len(keys)} keys ({names(keys)})" for what, keys in
                 (("missing", self.missing), ("unexpected", self.unexpected), ("shape-mismatched", self.shape_mismatched)) if keys]
        return "; ".join(parts)

    def summary(self) -> str:
        return (f"init from {self.source}: loaded {len(self.loaded)} tensors, missing {len(self.missing)}, unexpected {len(self.unexpected)}, "
                f"shape-mismatched {len(self.shape_mismatched)}, {self.untouched} outside the mapped prefixes left as built")

    def to_json(self) -> dict:
        return {
            "source": self.source, "prefix_map": self.prefix_map, "strict": self.strict, "loaded": self.loaded,
            "missing": self.missing, "unexpected": self.unexpected, "shape_mismatched": self.shape_mismatched, "untouched": self.untouched,
        }


def map_weights(source: Mapping[str, Tensor], own: Mapping[str, Tensor], prefix_map: Mapping[str, str], name: str = "weights",
                strict: bool = True) -> tuple[dict[str, Tensor], InitReport]:
    """The tensors of ``source`` that fill ``own`` (a model's ``state_dict``), and the report.

    ``prefix_map`` maps *model* prefixes to *source* prefixes (module names, "" for the whole
    model; a trailing dot is ignored); each model key takes the longest model prefix it lies
    under, so one source module can fill several model modules (the teacher's camera LSS fills
    both student view transforms). An empty map is ``{"": ""}``: every key from the same name.
    """
    pm = {str(k).rstrip("."): str(v).rstrip(".") for k, v in (prefix_map or {"": ""}).items()}
    report = InitReport(source=name, prefix_map=dict(prefix_map or {}), strict=strict)
    taken: dict[str, Tensor] = {}
    asked: set[str] = set()
    for key in own:
        hits = [m for m in pm if _under(key, m)]
        if not hits:
            report.untouched += 1
            continue
        model_prefix = max(hits, key=len)
        src = _rename(key, model_prefix, pm[model_prefix])
        asked.add(src)
        if src not in source:
            report.missing.append(key)
        elif tuple(source[src].shape) != tuple(own[key].shape):
            report.shape_mismatched.append(key)
        else:
            taken[key] = source[src]
            report.loaded.append(key)
    report.unexpected = [k for k in source if k not in asked and any(_under(k, p) for p in pm.values())]
    for keys in (report.loaded, report.missing, report.unexpected, report.shape_mismatched):
        keys.sort()
    return taken, report


def init_model(model: nn.Module, source: Mapping[str, Tensor], prefix_map: Mapping[str, str], *, strict: bool, name: str) -> InitReport:
    """Copy the mapped ``source`` tensors into ``model`` (see :func:`map_weights`); the rest of
    the model stays as built. With ``strict`` any missing / unexpected / mis-shaped key raises a
    one-line :class:`CheckpointError` before the model changes; without, those keys are skipped."""
    own = unwrap(model).state_dict()
    taken, report = map_weights(source, own, prefix_map, name, strict)
    if strict and report.problems:
        raise CheckpointError(f"{name} does not fit the mapped parts of this model: {report.problems}",
                              fix="fix train.init_from.prefix_map, or set train.init_from.strict: false to load what fits")
    unwrap(model).load_state_dict(taken, strict=False)  # copies into the model's own tensors
    return report


def init_from_checkpoint(model: nn.Module, path: str | os.PathLike, prefix_map: Mapping[str, str], *, strict: bool) -> InitReport:
    """:func:`init_model` from a checkpoint's (or weight file's) model weights, EMA ones when the
    file has them (as the teacher is loaded)."""
    tensors, _ = read_checkpoint(path)
    return init_model(model, model_weights(tensors, prefer_ema=True), prefix_map, strict=strict, name=str(path))


__all__ = [
    "CHECKPOINT_SUFFIX",
    "CheckpointError",
    "InitReport",
    "init_from_checkpoint",
    "init_model",
    "map_weights",
    "FORMAT_VERSION",
    "META_KEY",
    "check_state_compatible",
    "state_mismatches",
    "load_weights",
    "model_weights",
    "read_checkpoint",
    "section",
    "unwrap",
]
