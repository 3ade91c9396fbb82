"""A cache of evaluation ground truth, so repeated evaluations of a split skip the JSON tables.

One ``.npz`` file per (table folder, version, split), holding the arrays of a
:class:`~bevsimdet.eval.gt.GroundTruth` and the key it was made for. The key names the cache
format, the absolute table folder, the version, the split's scene names and, for every table
:func:`~bevsimdet.eval.tables.read_eval_tables` reads, its size, mtime (ns) and inode: rewriting
or replacing any of them (``bevsimdet simulate --force``, a new download) makes a new key, and
the stale file is removed when the new one is written.

Files are written atomically and read with ``allow_pickle=False``; a file that is unreadable or
made for another key is ignored (and rebuilt). The folder is ``$BEVSIMDET_CACHE_DIR`` if set,
else ``$XDG_CACHE_HOME/bevsimdet/eval-gt`` (``~/.cache/bevsimdet/eval-gt``); when it cannot be
written evaluation simply runs without the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from bevsimdet.eval.boxes import BoxSet
from bevsimdet.eval.gt import GroundTruth
from bevsimdet.eval.tables import EVAL_TABLES

FORMAT = 1  # bump when load_gt's output for the same tables changes
_FIELDS = ("sample", "label", "translation", "size", "rotation", "velocity", "attribute", "score", "num_pts")


def cache_dir() -> Path:
    env = os.environ.get("BEVSIMDET_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bevsimdet" / "eval-gt"


def cache_key(folder: Path, version: str, split: str, scene_names: Sequence[str]) -> dict:
    """What a cached GT must have been made from (see the module docstring)."""
    stats = {}
    for name in EVAL_TABLES:
        try:
            st = (folder / f"{name}.json").stat()
        except OSError:
            stats[name] = None  # reading the tables will report it
            continue
        stats[name] = [st.st_size, st.st_mtime_ns, st.st_ino]
    scenes = hashlib.sha256("\n".join(scene_names).encode()).hexdigest()
    return {"format": FORMAT, "folder": str(Path(folder).resolve()), "version": version, "split": split,
            "scenes": scenes, "tables": stats}


def _path(key: dict) -> Path:
    place = hashlib.sha256(json.dumps([key["folder"], key["version"], key["split"]]).encode()).hexdigest()[:16]
    full = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"gt-{key['split']}-{place}-{full}.npz"


def read(key: dict) -> GroundTruth | None:
    """The cached GT for ``key``, or ``None`` (no file, another key, unreadable)."""
    if any(v is None for v in key["tables"].values()):
        return None
    path = _path(key)
    try:
        with np.load(path, allow_pickle=False) as z:
            if json.loads(str(z["key"])) != key:
                return None
            boxes = BoxSet(**{f: z[f"boxes.{f}"] for f in _FIELDS})
            racks = BoxSet(**{f: z[f"racks.{f}"] for f in _FIELDS})
            tokens = tuple(z["sample_tokens"].tolist())
            ego = z["ego_translation"]
    except (OSError, ValueError, KeyError, EOFError):
        return None
    return GroundTruth(tokens, ego, boxes, racks, version=key["version"], split=key["split"])


def write(key: dict, gt: GroundTruth) -> Path | None:
    """Store ``gt`` under ``key`` (atomically) and remove stale files of the same split; returns
    the path, or ``None`` when the cache folder is not writable."""
    from bevsimdet.io import atomic_path

    if any(v is None for v in key["tables"].values()):
        return None
    path = _path(key)
    arrays = {"key": np.array(json.dumps(key)), "sample_tokens": np.array(gt.sample_tokens, dtype=str),
              "ego_translation": gt.ego_translation}
    for prefix, boxes in (("boxes", gt.boxes), ("racks", gt.racks)):
        arrays.update({f"{prefix}.{f}": getattr(boxes, f) for f in _FIELDS})
    try:
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        stem = path.name.rsplit("-", 1)[0]
        for old in path.parent.glob(f"{stem}-*.npz"):
            if old != path:
                old.unlink(missing_ok=True)
    except OSError:
        return None
    return path


__all__ = ["cache_dir", "cache_key", "read", "write"]
