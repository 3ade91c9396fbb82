"""Opening a nuScenes-format dataroot with the official devkit, with one-line errors."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

from bevsimdet.errors import DataError

VERSIONS = ("v1.0-mini", "v1.0-trainval", "v1.0-test")
# The tables ``nuscenes.NuScenes`` reads (its ``table_names``).
TABLES = (
    "category",
    "attribute",
    "visibility",
    "instance",
    "sensor",
    "calibrated_sensor",
    "ego_pose",
    "log",
    "scene",
    "sample",
    "sample_data",
    "sample_annotation",
    "map",
)
SIMULATE_HINT = "make one with `bevsimdet simulate --out DIR` or point --dataroot at a nuScenes download"


def check_dataroot(dataroot: str | Path, version: str) -> Path:
    """The version folder of ``dataroot`` after checking every table file is there."""
    root = Path(dataroot)
    if not root.is_dir():
        raise DataError(f"dataroot {root} does not exist", fix=SIMULATE_HINT)
    folder = root / version
    if not folder.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("v1.0-"))
        have = f" (found: {', '.join(found)})" if found else ""
        raise DataError(f"no '{version}' table folder in {root}{have}", fix="pass the --version that this dataroot holds")
    for table in TABLES:
        path = folder / f"{table}.json"
        if not path.is_file():
            raise DataError(f"nuScenes table {path} is missing", fix="re-extract the dataset's metadata (or re-run `bevsimdet simulate`)")
    return folder


def open_nuscenes(dataroot: str | Path, version: str) -> Any:
    """``nuscenes.NuScenes(version, dataroot)`` (quiet), or a :class:`DataError` naming the bad table."""
    folder = check_dataroot(dataroot, version)
    from nuscenes import NuScenes

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    except (ValueError, KeyError, TypeError, AssertionError) as e:
        for table in TABLES:
            path = folder / f"{table}.json"
            try:
                json.loads(path.read_text())
            except ValueError as bad:
                raise DataError(f"nuScenes table {path} is not valid JSON ({bad})", fix="re-extract or re-simulate the dataset") from None
        raise DataError(f"cannot index the nuScenes tables in {folder}: {type(e).__name__}: {e}", fix="the tables are inconsistent; re-extract or re-simulate the dataset") from None


def split_scenes(version: str) -> dict[str, list[str]]:
    """The devkit's scene-name splits of ``version``: mini -> mini_train/mini_val, trainval ->
    train/val, test -> test."""
    from nuscenes.utils.splits import create_splits_scenes

    splits = create_splits_scenes(verbose=False)
    names = {"v1.0-mini": ("mini_train", "mini_val"), "v1.0-trainval": ("train", "val"), "v1.0-test": ("test",)}
    if version not in names:
        raise DataError(f"unknown nuScenes version '{version}'", fix=f"use one of {', '.join(VERSIONS)}")
    return {s: list(splits[s]) for s in names[version]}
