"""YAML configs with inheritance, validated against typed dataclasses.

A config file is a YAML mapping. ``_base_: parent.yaml`` (a path relative to the file, or a
list of them, merged left to right) makes the file a leaf that overrides only a few keys of its
parent(s). After merging, every key is checked against the dataclass schema below; an unknown
key is an error naming the key and the file that set it. The resolved config is written into
every run directory (:func:`dump_config`), so a run can be reproduced from that one file.

Each area owns the schema of its section: ``data/config.py``, ``models/config.py``,
``engine/config.py``, ``distill/config.py`` and ``eval/config.py``. This module assembles them, so
it sits on the floor above every area (``tests/test_layering.py``): the areas read the sections
they are given and never import the combined schema; the commands load it and pass it down.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from bevsimdet.data.config import DataConfig
from bevsimdet.distill.config import DistillConfig
from bevsimdet.engine.config import TrainConfig
from bevsimdet.errors import ConfigError
from bevsimdet.eval.config import EvalConfig
from bevsimdet.models.config import ModelConfig

BASE_KEY = "_base_"
CLI_SOURCE = "<command line>"


@dataclasses.dataclass
class Config:
    """The whole resolved configuration of one run."""

    name: str = "unnamed"
    seed: int = 0
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    distill: DistillConfig = dataclasses.field(default_factory=DistillConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)


# --------------------------------------------------------------------------------------------
# loading and merging


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}", fix="pass a path to a YAML file under configs/")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        problem = str(getattr(e, "problem", None) or e).splitlines()[0]  # one line, as every UserError
        raise ConfigError(f"invalid YAML in {path}{where}: {problem}") from None
    except (UnicodeDecodeError, RecursionError) as e:  # binary junk, absurdly deep nesting
        raise ConfigError(f"{path} is not a readable YAML text file ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a YAML mapping at the top level, got {type(data).__name__}")
    return data


def _merge(dst: dict, src: dict, sources: dict, source: str, prefix: str = "") -> None:
    """Recursively merge ``src`` into ``dst``; record in ``sources`` which file set each key."""
    for key, value in src.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge(dst[key], value, sources, source, dotted + ".")
        else:
            dst[key] = value
            sources[dotted] = source
            if isinstance(value, dict):
                for sub in _flatten_keys(value, dotted + "."):
                    sources[sub] = source


def _flatten_keys(d: dict, prefix: str) -> list[str]:
    out = []
    for k, v in d.items():
        out.append(prefix + str(k))
        if isinstance(v, dict):
            out.extend(_flatten_keys(v, prefix + str(k) + "."))
    return out


def load_raw(path: str | Path, _stack: tuple[Path, ...] = ()) -> tuple[dict, dict]:
    """Load one YAML file with its ``_base_`` chain. Returns (merged dict, key -> source file)."""
    path = Path(path).resolve()
    if path in _stack:
        chain = " -> ".join(str(p) for p in (*_stack, path))
        raise ConfigError(f"config inheritance cycle: {chain}")
    data = _read_yaml(path)
    bases = data.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{BASE_KEY} in {path} must be a file name or a list of them, got {bases!r}")
    merged: dict = {}
    sources: dict = {}
    for base in bases:
        base_path = (path.parent / base).resolve()
        if not base_path.is_file():
            raise ConfigError(f"_base_ '{base}' of {path} not found", fix=f"expected {base_path}")
        bdata, bsources = load_raw(base_path, (*_stack, path))
        _merge(merged, bdata, sources, "")
        sources.update(bsources)
    _merge(merged, data, sources, str(path))
    return merged, sources


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``a.b.c=value`` (value parsed as YAML, so ``1e-3``, ``[1, 2]`` and ``true`` work)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.path=value, e.g. train.lr=1e-3")
    key, value = text.split("=", 1)
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def _nest(key: str, value: Any) -> dict:
    out: dict = {}
    cur = out
    parts = key.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load, merge and validate a config. ``path=None`` gives the defaults."""
    merged, sources = load_raw(path) if path is not None else ({}, {})
    for text in overrides:
        key, value = parse_override(text)
        _merge(merged, _nest(key, value), sources, CLI_SOURCE)
    return from_dict(Config, merged, sources)


def from_dict(cls: type, data: dict, sources: dict | None = None, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types are ConfigErrors."""
    sources = sources or {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config key '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {data!r}"
            + _where(sources, prefix.rstrip("."))
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            valid = ", ".join(sorted(fields))
            raise ConfigError(
                f"unknown config key '{dotted}'" + _where(sources, dotted),
                fix=f"valid keys of '{prefix.rstrip('.') or '<root>'}' are: {valid}",
            )
        kwargs[key] = _convert(hints[key], value, sources, dotted)
    return cls(**kwargs)


def _where(sources: dict, dotted: str) -> str:
    src = sources.get(dotted)
    return f" in {src}" if src else ""


def _convert(tp: Any, value: Any, sources: dict, dotted: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    bad = ConfigError(f"config key '{dotted}' has invalid value {value!r} (expected {_type_name(tp)})" + _where(sources, dotted))
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, sources, dotted)
            except ConfigError:
                continue
        raise bad
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"config key '{dotted}' must be one of {list(args)}, got {value!r}" + _where(sources, dotted))
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, sources, dotted + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise bad
            return tuple(_convert(a, v, sources, f"{dotted}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        inner = args[0] if args else Any
        seq = [_convert(inner, v, sources, f"{dotted}[{i}]") for i, v in enumerate(value)]
        return tuple(seq) if origin is tuple else seq
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        vt = args[1] if len(args) == 2 else Any
        return {k: _convert(vt, v, sources, f"{dotted}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


# --------------------------------------------------------------------------------------------
# writing


def config_to_dict(cfg: Any) -> dict:
    """The config as plain data (what checkpoints store and ``config.yaml`` holds)."""
    from bevsimdet.io import plain

    return plain(cfg)


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML; loading it back gives an equal Config. The training engine
    writes ``config.yaml`` the same way (``engine.train.save_run_config``) without this module."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def save_config(cfg: Config, path: str | Path) -> None:
    from bevsimdet.io import atomic_write_text

    atomic_write_text(path, dump_config(cfg))


def teacher_config_from(checkpoint: str | Path, config: str | Path | None = None) -> Config:
    """A teacher's resolved config: from ``config`` (a YAML path) when given, else the one stored
    in the teacher's checkpoint by the training engine."""
    from bevsimdet.weights import read_checkpoint

    if config is not None:
        return load_config(config)
    stored = read_checkpoint(checkpoint)[1].get("config")
    if stored is None:
        raise ConfigError(f"teacher checkpoint {checkpoint} carries no config", fix="pass --teacher-config (the YAML the teacher was trained with)")
    return from_dict(Config, stored, {}, "")
