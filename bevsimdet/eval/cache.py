"""A cache of evaluation ground truth, so repeated evaluations of a split skip the JSON tables.

One ``.npz`` file per (table folder, version, split), holding named arrays (those of a
:class:`~bevsimdet.eval.gt.GroundTruth`, see ``GroundTruth.to_arrays``) and the key they were made
for. The cache knows keys and arrays only: :func:`~bevsimdet.eval.gt.load_gt` uses it, never the
other way round. The key names the cache
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
from typing import Mapping, Sequence

import numpy as np

from bevsimdet.eval.tables import EVAL_TABLES

FORMAT = 1  # bump when load_gt's output for the same tables changes
_KEY = "key"  # the array holding the key itself


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


def read(key: dict) -> dict[str, np.ndarray] | None:
    """The arrays cached for ``key``, or ``None`` (no file, another key, unreadable)."""
    if any(v is None for v in key["tables"].values()):
        return None
    path = _path(key)
    try:
        with np.load(path, allow_pickle=False) as z:
            if json.loads(str(z[_KEY])) != key:
                return None
            return {name: z[name] for name in z.files if name != _KEY}
    except (OSError, ValueError, KeyError, EOFError):
        return None


def write(key: dict, arrays: Mapping[str, np.ndarray]) -> Path | None:
    """Store ``arrays`` under ``key`` (atomically) and remove stale files of the same split;
    returns the path, or ``None`` when the cache folder is not writable."""
    from bevsimdet.io import atomic_path

    if any(v is None for v in key["tables"].values()):
        return None
    path = _path(key)
    try:
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **{_KEY: np.array(json.dumps(key))}, **arrays)
        stem = path.name.rsplit("-", 1)[0]
        for old in path.parent.glob(f"{stem}-*.npz"):
            if old != path:
                old.unlink(missing_ok=True)
    except OSError:
        return None
    return path


__all__ = ["cache_dir", "cache_key", "read", "write"]
