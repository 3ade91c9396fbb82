"""Readers of the sensor files that refuse damaged ones: camera images and LiDAR point files.

An incomplete download or extraction must stop a run (or, with ``data.skip_bad_samples``, skip
the sample) instead of being trained on, so every reader raises a one-line
:class:`~bevsimdet.errors.DataError` naming the file and the fix when

* a JPEG (``.jpg``/``.jpeg``) does not start with the start-of-image marker ``FF D8 FF`` (an empty
  file, a PNG renamed ``.jpg``, an HTML error page) or does not end with the end-of-image marker
  ``FF D9`` (a truncated file). NUL bytes after ``FF D9`` are accepted as padding: some writers
  pad to a block size, and a truncated file that a pre-allocating downloader filled with zeros
  still lacks the marker before its zeros;
* the decoder fails (cv2 returns no image);
* the decoded size differs from the one the caller expects (the ``sample_data`` width/height);
* a point file is empty or its byte size is not a whole number of ``load_dim`` float32 points
  (``np.fromfile`` would silently drop a torn tail), or it holds a NaN or an infinity.

The checks cost next to nothing beside decoding: two marker comparisons on bytes already read,
one ``fstat`` and one ``isfinite`` pass. Not caught here: damage in the middle of a JPEG's
compressed data that leaves both markers intact (libjpeg only prints a warning and fills in
what is missing; ``bevsimdet prepare --verify`` catches those warnings) and a point file cut at
an exact point boundary (nuScenes stores no point count).

This module imports no torch, so ``prepare --verify`` workers start fast.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bevsimdet.errors import DataError

SKIP_HINT = "restore the file (re-run `bevsimdet simulate` / re-extract nuScenes) or set data.skip_bad_samples: true"
JPEG_SUFFIXES = (".jpg", ".jpeg")
JPEG_SOI = b"\xff\xd8\xff"
JPEG_EOI = b"\xff\xd9"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def jpeg_problem(data: bytes) -> str | None:
    """Why the bytes of a ``.jpg`` file are not a whole JPEG (None if the markers are right)."""
    if not data:
        return "is empty (0 bytes)"
    if data[:3] != JPEG_SOI:
        if data[:8] == PNG_MAGIC:
            return "is a PNG, not a JPEG"
        return "is not a JPEG (no start-of-image marker)"
    body = data.rstrip(b"\0") if data[-1:] == b"\0" else data  # rstrip copies: only when padded
    if body[-2:] != JPEG_EOI:
        return f"is truncated ({len(data)} bytes, no end-of-image marker)"
    return None


def decode_image(data: bytes, path: str | Path, *, size: tuple[int, int] | None = None, fix: str = SKIP_HINT) -> np.ndarray:
    """H x W x 3 uint8 RGB of an encoded image (``path`` names it in errors and its suffix says
    whether the JPEG markers are checked); ``size`` (H, W): the size it must have."""
    import cv2

    path = Path(path)
    problem = jpeg_problem(data) if path.suffix.lower() in JPEG_SUFFIXES else ("is empty (0 bytes)" if not data else None)
    if problem is not None:
        raise DataError(f"image {path} {problem}", fix=fix)
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"image {path} is corrupt (cannot be decoded)", fix=fix)
    if size is not None and tuple(image.shape[:2]) != tuple(size):
        raise DataError(f"image {path} is {image.shape[0]}x{image.shape[1]} (HxW), its record says {size[0]}x{size[1]}", fix=fix)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_image(path: str | Path, *, size: tuple[int, int] | None = None, fix: str = SKIP_HINT) -> np.ndarray:
    """H x W x 3 uint8 RGB of an image file, or a one-line :class:`DataError` naming it (see the
    module docstring for what is refused)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"image {path} is missing", fix=fix) from None
    except OSError as e:  # a folder, no permission, an I/O error of a damaged disk
        raise DataError(f"image {path} cannot be read ({e.strerror or type(e).__name__})", fix=fix) from None
    return decode_image(data, path, size=size, fix=fix)


def point_size_problem(nbytes: int, load_dim: int) -> str | None:
    """Why a point file of ``nbytes`` bytes cannot hold whole ``load_dim``-float32 points."""
    if nbytes == 0:
        return "is empty (0 bytes)"
    stride = 4 * load_dim
    if nbytes % stride:
        return f"is corrupt ({nbytes} bytes is not a whole number of {load_dim}-float32 points of {stride} bytes)"
    return None


def read_points(path: str | Path, load_dim: int, *, fix: str = SKIP_HINT) -> np.ndarray:
    """P x ``load_dim`` float32 of a nuScenes ``.pcd.bin`` file (every channel finite), or a
    one-line :class:`DataError` naming it."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            nbytes = os.fstat(f.fileno()).st_size
            problem = point_size_problem(nbytes, load_dim)
            if problem is not None:
                raise DataError(f"point file {path} {problem}", fix=fix)
            points = np.empty((nbytes // (4 * load_dim), load_dim), dtype=np.float32)
            got = f.readinto(memoryview(points).cast("B"))
    except FileNotFoundError:
        raise DataError(f"point file {path} is missing", fix=fix) from None
    except OSError as e:
        raise DataError(f"point file {path} cannot be read ({e.strerror or type(e).__name__})", fix=fix) from None
    if got != nbytes:  # the file shrank while being read
        raise DataError(f"point file {path} is corrupt (read {got} of {nbytes} bytes)", fix=fix)
    if not np.isfinite(points).all():
        raise DataError(f"point file {path} is corrupt (non-finite values)", fix=fix)
    return points


SWEEP_MIN_RANGE = 1.0  # m: sweep returns this close to the sensor hit the car itself (as mmdet3d)


def read_sweep(path: str | Path, sensor2ego: np.ndarray, lag: float, load_dim: int, *, fix: str = SKIP_HINT) -> np.ndarray:
    """P x 5 float32 (x, y, z in the keyframe ego frame, intensity, ``lag``: the dataset's point
    layout, ``batch.POINT_DIM``) of one LiDAR file; a sweep (``lag > 0``) loses its returns within
    :data:`SWEEP_MIN_RANGE` of the sensor. The dataset and the GT database both read points here."""
    pts = read_points(path, load_dim, fix=fix)[:, :4]
    if lag > 0:
        pts = pts[np.hypot(pts[:, 0], pts[:, 1]) >= SWEEP_MIN_RANGE]
    out = np.empty((len(pts), 5), dtype=np.float32)
    out[:, :3] = pts[:, :3] @ sensor2ego[:3, :3].T.astype(np.float32) + sensor2ego[:3, 3].astype(np.float32)
    out[:, 3] = pts[:, 3]
    out[:, 4] = lag
    return out


__all__ = ["SKIP_HINT", "JPEG_SUFFIXES", "jpeg_problem", "decode_image", "read_image", "point_size_problem", "read_points", "read_sweep", "SWEEP_MIN_RANGE"]
