"""Placeholder sensor files for a tables-only world, so that a training run can read any sample.

``bevsimdet simulate --tables-only`` writes nuScenes tables at the real dataset's size but no
image or point file (rendering 34k keyframes would take hours). :func:`write_placeholder_files`
gives every ``sample_data`` row a file: per camera size one valid JPEG (uniform grey, of the
row's ``width`` x ``height``), one small LiDAR ``.pcd.bin`` (finite points, a whole number of
5-float records, a ring around the ego within any model's range) and one radar ``.pcd`` (a PCD
v0.7 header, no point), each written once and hard-linked to every path that needs it (a copy
where a link fails, e.g. across file systems or past a file system's link limit). They pass the
integrity checks of :mod:`bevsimdet.data.files`. What a model learns or scores on such a world
does not depend on the pictures: they carry no information; the placeholders exist to measure
start-up, memory and throughput at scale.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from bevsimdet.errors import DataError
from bevsimdet.io import atomic_write_bytes, load_json
from bevsimdet.progress import progress_bar

LOAD_DIM = 5  # x, y, z, intensity, ring index: nuScenes' .pcd.bin record
_RADAR_PCD = (b"# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\n"
              b"COUNT 1 1 1\nWIDTH 0\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 0\nDATA binary\n")


def placeholder_jpeg(width: int, height: int) -> bytes:
    """A uniform mid-grey JPEG of ``width`` x ``height``."""
    ok, buf = cv2.imencode(".jpg", np.full((height, width, 3), 128, np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 75])
    if not ok:  # pragma: no cover - OpenCV always encodes a plain array
        raise RuntimeError("OpenCV could not encode a JPEG")
    return buf.tobytes()


def placeholder_points(n: int = 2048) -> bytes:
    """``n`` x 5 float32 points on rings 5-40 m around the sensor (finite, whole records)."""
    i = np.arange(n, dtype=np.float32)
    angle = i * np.float32(2 * np.pi / 256)
    radius = 5.0 + 35.0 * (i % 8) / 7
    points = np.stack([radius * np.cos(angle), radius * np.sin(angle), -1.5 + 0.1 * (i % 32) / 32,
                       np.full(n, 0.5), i % 32], axis=1).astype(np.float32)
    return points.tobytes()


def write_placeholder_files(dataroot: str | Path, version: str, *, progress: bool = True) -> dict:
    """A file for every ``sample_data`` row of ``dataroot/version`` that lacks one (see the module
    docstring); returns counts: ``links``, ``copies``, ``kept`` (rows whose file already existed),
    ``sources`` (files written)."""
    root = Path(dataroot)
    table = root / version / "sample_data.json"
    try:
        rows = load_json(table)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {table}: {e}", fix="write the tables first (bevsimdet simulate --tables-only)") from None
    store = root / ".placeholders"
    store.mkdir(parents=True, exist_ok=True)
    sources: dict[tuple, Path] = {}
    counts = {"links": 0, "copies": 0, "kept": 0, "sources": 0}

    def source(kind: tuple) -> Path:
        path = sources.get(kind)
        if path is None:
            name = "_".join(map(str, kind))
            path = store / f"{name}.{counts['sources']}"  # a fresh inode each time (see the link limit)
            data = (placeholder_jpeg(kind[1], kind[2]) if kind[0] == "jpg" else _RADAR_PCD if kind[0] == "pcd"
                    else placeholder_points())
            atomic_write_bytes(path, data)
            sources[kind] = path
            counts["sources"] += 1
        return path

    made: set[Path] = set()
    for row in progress_bar(rows, allowed=progress, total=len(rows), desc="placeholder files", unit="file"):
        name = row.get("filename") or ""
        if not name:
            continue
        path = root / name
        if name.endswith(".pcd.bin"):
            kind: tuple = ("pcd.bin",)
        elif name.endswith(".pcd"):
            kind = ("pcd",)
        elif name.lower().endswith((".jpg", ".jpeg")):
            if int(row.get("width") or 0) <= 0 or int(row.get("height") or 0) <= 0:
                raise DataError(f"{table}: row {row.get('token')} is a JPEG without width/height",
                                fix="write the tables with bevsimdet simulate --tables-only")
            kind = ("jpg", int(row["width"]), int(row["height"]))
        else:
            raise DataError(f"{table}: no placeholder for file type of {name}", fix="only .jpg, .pcd.bin and .pcd rows are supported")
        if path.exists():
            counts["kept"] += 1
            continue
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        try:
            os.link(source(kind), path)
            counts["links"] += 1
        except OSError as e:
            if e.errno == errno.EMLINK:  # this inode has as many links as the file system allows
                sources.pop(kind)
                try:
                    os.link(source(kind), path)
                    counts["links"] += 1
                    continue
                except OSError:
                    pass
            shutil.copyfile(source(kind), path)
            counts["copies"] += 1
    return counts


__all__ = ["LOAD_DIM", "placeholder_jpeg", "placeholder_points", "write_placeholder_files"]
