"""The GT database: every annotated object's LiDAR points of the training split, for GT-paste.

This plays the role of mmdet3d's ``nuscenes_dbinfos_train.pkl`` + ``nuscenes_gt_database/`` in a
safe, versioned format (JSON + safetensors, no pickle). ``<info_dir>/gt_database_<split>/`` holds::

    index.json                    schema_version, box_convention, version, split, max_sweeps,
                                  load_dim, classes, data file name, build id, the info file's
                                  fingerprint, objects per class, sample tokens
    objects-<build>.safetensors   boxes K x 9 float64 (the object's box in its own sample's keyframe
                                  ego frame), labels K, sample_index K, counts K x (S + 1) (points
                                  per sweep index), offsets K + 1 (rows of ``points``), points
                                  P x 5 float32 (x, y, z in the box frame, intensity, time lag),
                                  sweep P uint8 (0 = keyframe, k = the k-th stored sweep)

Points are loaded exactly as the dataset loads them (:func:`bevsimdet.data.files.read_sweep`:
keyframe and all ``max_sweeps`` stored sweeps, in the keyframe ego frame, with their time lag). A
point belongs to an object when it lies in the object's box *at the point's time*: the box moved
back by velocity x time lag (:func:`points_in_moving_boxes`), so a moving object keeps the trail
its sweeps draw, and the box frame of a point is that moved box (x along the length, y along the
width, origin at its centre). One database serves every ``data.sweeps`` / ``data.sweep_stride``:
the paste keeps the sweep indices the dataset loads. The data file's name carries its build id,
and ``index.json`` is written last, so a crash mid-build leaves the previous database intact.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bevsimdet.data.classes import CLASS_TO_LABEL, CLASSES
from bevsimdet.data.infos import BOX_CONVENTION, SampleInfo, load_infos
from bevsimdet.errors import DataError
from bevsimdet.geometry.boxes import points_in_boxes

SCHEMA_VERSION = 1
INDEX = "index.json"
REBUILD = "rebuild it with `bevsimdet prepare --dataroot D --version V --gt-database --force`"


def gt_database_dir(info_dir: str | Path, split: str) -> Path:
    return Path(info_dir) / f"gt_database_{split}"


# --------------------------------------------------------------------------------------------
# geometry of moving boxes


def moved_centres(boxes: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """M x 9 boxes, P lags (s) -> P x M x 3 centres of every box ``lag`` seconds earlier."""
    vel = np.concatenate([boxes[:, 7:9], np.zeros((len(boxes), 1))], axis=1)  # M x 3
    return boxes[None, :, 0:3] - lags[:, None, None] * vel[None]


def moving_box_members(points: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
    """P x 5 points (x, y, z, intensity, time lag), M x 9 boxes -> for each box the indices
    (ascending) of the points in (or on) it moved back by its velocity x the point's time lag."""
    points = np.asarray(points).reshape(-1, points.shape[-1])
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 9)
    if not len(points):
        return [np.zeros(0, np.int64) for _ in boxes]
    # only the points in a square as wide as the box's reach can belong to it: a sample with
    # sweeps has ~3e5 points, and the exact test on all of them for every box costs seconds
    x, y = points[:, 0], points[:, 1]
    max_lag = float(points[:, 4].max())
    out = []
    for b in boxes:
        reach = np.hypot(b[3], b[4]) / 2 + np.hypot(b[7], b[8]) * max_lag + 1e-3
        idx = np.flatnonzero((np.abs(x - b[0]) <= reach) & (np.abs(y - b[1]) <= reach))
        p = points[idx].astype(np.float64)
        d = p[:, 0:3] - b[0:3]
        d[:, 0] += b[7] * p[:, 4]
        d[:, 1] += b[8] * p[:, 4]
        c, s = np.cos(b[6]), np.sin(b[6])
        inside = (np.abs(d[:, 0] * c + d[:, 1] * s) <= b[4] / 2) & (np.abs(-d[:, 0] * s + d[:, 1] * c) <= b[3] / 2) & (np.abs(d[:, 2]) <= b[5] / 2)
        out.append(idx[inside])
    return out


def points_in_moving_boxes(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """P x 5 points (x, y, z, intensity, time lag), M x 9 boxes -> P x M bool: the point lies in
    (or on) the box moved back by its velocity x the point's time lag."""
    members = moving_box_members(points, boxes)
    out = np.zeros((len(points), len(members)), dtype=bool)
    for j, idx in enumerate(members):
        out[idx, j] = True
    return out


def points_in_moving_boxes_reference(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Plain loop: each point against each box shifted to the point's time (geometry's points_in_boxes)."""
    out = np.zeros((len(points), len(boxes)), dtype=bool)
    for i, p in enumerate(np.asarray(points, dtype=np.float64)):
        for j, b in enumerate(np.asarray(boxes, dtype=np.float64)):
            moved = b.copy()
            moved[0:2] -= b[7:9] * p[4]
            out[i, j] = points_in_boxes(p[None, 0:3], moved[None])[0, 0]
    return out


def to_box_frame(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    """P x 5 ego points of one 9-vector box -> P x 5 with xyz in the box frame at each point's time."""
    out = np.array(points, dtype=np.float32, copy=True)
    d = points[:, 0:3].astype(np.float64) - moved_centres(box[None], points[:, 4].astype(np.float64))[:, 0]
    c, s = np.cos(box[6]), np.sin(box[6])
    out[:, 0] = d[:, 0] * c + d[:, 1] * s
    out[:, 1] = -d[:, 0] * s + d[:, 1] * c
    out[:, 2] = d[:, 2]
    return out


def from_box_frame(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_box_frame`: P x 5 box-frame points -> ego points of ``box``."""
    out = np.array(points, dtype=np.float32, copy=True)
    c, s = np.cos(box[6]), np.sin(box[6])
    x, y = points[:, 0].astype(np.float64), points[:, 1].astype(np.float64)
    centre = moved_centres(np.asarray(box, dtype=np.float64)[None], points[:, 4].astype(np.float64))[:, 0]
    out[:, 0] = x * c - y * s + centre[:, 0]
    out[:, 1] = x * s + y * c + centre[:, 1]
    out[:, 2] = points[:, 2] + centre[:, 2]
    return out


# --------------------------------------------------------------------------------------------
# building


def sample_objects(dataroot: Path, info: SampleInfo, load_dim: int) -> dict[str, np.ndarray]:
    """The objects of one sample with at least one point: boxes, labels, per-sweep counts and
    their points in the box frame (object by object, sweep by sweep)."""
    from bevsimdet.data.files import read_sweep

    files = [(info.lidar_path, info.lidar2ego, 0.0)] + [(w.path, w.sensor2ego, w.time_lag) for w in info.sweeps]
    sweeps = [read_sweep(dataroot / p, t, lag, load_dim) for p, t, lag in files]
    points = np.concatenate(sweeps)
    sweep = np.concatenate([np.full(len(p), k, dtype=np.uint8) for k, p in enumerate(sweeps)])
    keep = [i for i, n in enumerate(info.gt.names) if n in CLASS_TO_LABEL]
    boxes = info.gt.boxes[keep].reshape(-1, 9)
    out_boxes, labels, counts, pts, sws = [], [], [], [], []
    for j, (i, idx) in enumerate(zip(keep, moving_box_members(points, boxes))):
        if not len(idx):
            continue
        out_boxes.append(boxes[j])
        labels.append(CLASS_TO_LABEL[info.gt.names[i]])
        counts.append(np.bincount(sweep[idx], minlength=len(files)).astype(np.int64))
        pts.append(to_box_frame(points[idx], boxes[j]))
        sws.append(sweep[idx])
    return {
        "boxes": np.array(out_boxes, dtype=np.float64).reshape(-1, 9),
        "labels": np.array(labels, dtype=np.int64),
        "counts": counts,
        "points": np.concatenate(pts) if pts else np.zeros((0, 5), np.float32),
        "sweep": np.concatenate(sws) if sws else np.zeros(0, np.uint8),
    }


_WORKER: dict[str, Any] = {}  # what a forked worker inherits: the infos, dataroot and load_dim


def _worker_job(i: int) -> tuple[int, dict[str, np.ndarray]]:
    return i, sample_objects(_WORKER["dataroot"], _WORKER["infos"].samples[i], _WORKER["load_dim"])


def _fingerprint(info_path: Path, load_dim: int) -> dict:
    st = info_path.stat()
    return {"info_file": info_path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "load_dim": load_dim}


def create_gt_database(
    info_path: str | Path,
    dataroot: str | Path,
    out_dir: str | Path | None = None,
    *,
    load_dim: int = 5,
    workers: int = 2,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Build the GT database of one info file (normally the training split's); returns its folder
    (default ``gt_database_<split>`` next to the info file). Nothing is rebuilt when the folder's
    index was made from the same info file (size, mtime) and ``load_dim`` unless ``force``; a
    damaged database is reported by its reader, not silently replaced (``force`` rebuilds it)."""
    from safetensors.numpy import save_file

    from bevsimdet.io import atomic_path, atomic_write_json
    from bevsimdet.progress import progress_bar

    info_path, dataroot = Path(info_path), Path(dataroot)
    infos = load_infos(info_path)
    out = Path(out_dir) if out_dir is not None else gt_database_dir(info_path.parent, infos.split)
    fingerprint = _fingerprint(info_path, load_dim)
    if not force and (out / INDEX).is_file():
        try:
            index = json.loads((out / INDEX).read_bytes())
        except (OSError, ValueError, RecursionError):
            index = load_gt_database(out)  # raises its one-line error: a damaged database is reported, not replaced
        if isinstance(index, dict) and index.get("fingerprint") == fingerprint:
            return out  # up to date (its reader checks the files)

    n = len(infos.samples)
    if not n:
        raise DataError(f"info file {info_path} has no samples to build a GT database from", fix="build it from the training split's info file")
    results: list[dict[str, np.ndarray] | None] = [None] * n
    bar = progress_bar(total=n, desc=f"GT database {infos.split}", unit="sample", allowed=progress)
    try:
        if workers > 1 and n > 1 and "fork" in multiprocessing.get_all_start_methods():
            _WORKER.update(infos=infos, dataroot=dataroot, load_dim=load_dim)
            try:
                # fork shares the parsed info file with the workers instead of re-reading it
                with multiprocessing.get_context("fork").Pool(min(workers, n)) as pool:
                    for i, objects in pool.imap_unordered(_worker_job, range(n), chunksize=4):
                        results[i] = objects
                        bar.update(1)
            finally:
                _WORKER.clear()
        else:
            for i, info in enumerate(infos.samples):
                results[i] = sample_objects(dataroot, info, load_dim)
                bar.update(1)
    finally:
        bar.close()

    width = infos.max_sweeps + 1
    counts = [np.pad(c, (0, width - len(c))) for r in results for c in r["counts"]]
    num = np.array([int(c.sum()) for c in counts], dtype=np.int64)
    arrays = {
        "boxes": np.concatenate([r["boxes"] for r in results]).reshape(-1, 9),
        "labels": np.concatenate([r["labels"] for r in results]).astype(np.int64),
        "sample_index": np.concatenate([np.full(len(r["labels"]), i, np.int64) for i, r in enumerate(results)]),
        "counts": np.stack(counts).astype(np.int64) if counts else np.zeros((0, width), np.int64),
        "offsets": np.concatenate([[0], np.cumsum(num)]).astype(np.int64),
        "points": np.concatenate([r["points"] for r in results]).astype(np.float32).reshape(-1, 5),
        "sweep": np.concatenate([r["sweep"] for r in results]).astype(np.uint8),
    }
    build = uuid.uuid4().hex[:12]
    data_name = f"objects-{build}.safetensors"
    with atomic_path(out / data_name) as tmp:
        save_file(arrays, str(tmp), metadata={"build_id": build, "schema_version": str(SCHEMA_VERSION)})
    index = {
        "schema_version": SCHEMA_VERSION,
        "box_convention": BOX_CONVENTION,
        "version": infos.version,
        "split": infos.split,
        "max_sweeps": infos.max_sweeps,
        "load_dim": load_dim,
        "classes": list(CLASSES),
        "data_file": data_name,
        "build_id": build,
        "fingerprint": fingerprint,
        "objects_per_class": {c: int((arrays["labels"] == k).sum()) for k, c in enumerate(CLASSES)},
        "sample_tokens": [s.token for s in infos.samples],
    }
    atomic_write_json(out / INDEX, index, indent=1)
    for old in out.glob("objects-*.safetensors"):  # earlier builds, now unreferenced
        if old.name != data_name:
            old.unlink(missing_ok=True)
    return out


# --------------------------------------------------------------------------------------------
# reading


@dataclass
class GTDatabase:
    """A loaded GT database (K objects, S stored sweeps): the per-object arrays in memory, the
    points read object by object from the data file (memory-mapped, opened once per process).

    ``boxes`` K x 9 (source keyframe ego frame), ``labels`` K, ``counts`` K x (S + 1) points per
    sweep index, ``offsets`` K + 1 rows of the object's points in the data file.
    """

    path: Path
    data_file: Path
    split: str
    version: str
    max_sweeps: int
    load_dim: int
    boxes: np.ndarray
    labels: np.ndarray
    counts: np.ndarray
    offsets: np.ndarray
    sample_tokens: list[str]
    sample_index: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict:
        # a data loader worker started by spawn reopens the data file itself
        return {k: v for k, v in self.__dict__.items() if k not in ("_handle", "_pid")}

    def _points_file(self) -> Any:
        from safetensors import safe_open

        if getattr(self, "_pid", None) != os.getpid():
            try:
                self._handle = safe_open(str(self.data_file), framework="np")
            except Exception as e:  # safetensors raises its own SafetensorError
                raise DataError(f"GT database file {self.data_file} is corrupt ({_first_line(e)})", fix=REBUILD) from None
            self._pid = os.getpid()
        return self._handle

    def points_of(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Object ``i``'s points: P x 5 float32 in its box frame, and their P sweep indices."""
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        f = self._points_file()
        points, sweep = f.get_slice("points")[a:b], f.get_slice("sweep")[a:b]
        if not np.isfinite(points).all():
            raise DataError(f"GT database file {self.data_file} is corrupt (non-finite points of object {i})", fix=REBUILD)
        return points, sweep


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def load_gt_database(path: str | Path) -> GTDatabase:
    """Read and check a GT database folder; any missing, corrupt, truncated or foreign file is a
    one-line :class:`DataError` naming the file and how to rebuild it."""
    from safetensors import safe_open

    path = Path(path)
    index_path = path / INDEX
    if not index_path.is_file():
        raise DataError(f"GT database {path} does not exist (no {INDEX})", fix="build it with `bevsimdet prepare --dataroot D --version V --gt-database`")
    try:
        index = json.loads(index_path.read_bytes())
    except (OSError, ValueError, RecursionError) as e:
        raise DataError(f"GT database index {index_path} is corrupt ({type(e).__name__})", fix=REBUILD) from None
    if not isinstance(index, dict) or "schema_version" not in index:
        raise DataError(f"{index_path} is not a bevsimdet GT database index (no schema_version)", fix=REBUILD)
    if index["schema_version"] != SCHEMA_VERSION:
        raise DataError(f"GT database index {index_path} has schema version {index['schema_version']!r}, this bevsimdet reads {SCHEMA_VERSION}", fix=REBUILD)
    if index.get("box_convention") != BOX_CONVENTION:
        raise DataError(f"GT database index {index_path} uses box convention {index.get('box_convention')!r}, expected {BOX_CONVENTION!r}", fix=REBUILD)
    if index.get("classes") != list(CLASSES):
        raise DataError(f"GT database index {index_path} has other class labels than this bevsimdet", fix=REBUILD)
    try:
        data_file = path / str(index["data_file"])
        split, version, build = str(index["split"]), str(index["version"]), str(index["build_id"])
        max_sweeps, load_dim = int(index["max_sweeps"]), int(index["load_dim"])
        tokens = [str(t) for t in index["sample_tokens"]]
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"GT database index {index_path} is malformed ({type(e).__name__}: {e})", fix=REBUILD) from None
    if not data_file.is_file():
        raise DataError(f"GT database file {data_file} is missing", fix=REBUILD)

    def bad(problem: str) -> DataError:
        return DataError(f"GT database file {data_file} is corrupt ({problem})", fix=REBUILD)

    try:
        with safe_open(str(data_file), framework="np") as f:
            if (f.metadata() or {}).get("build_id") != build:
                raise bad(f"it is not the build {build} that {index_path} names")
            names = set(f.keys())
            need = {"boxes", "labels", "counts", "offsets", "sample_index", "points", "sweep"}
            if not need <= names:
                raise bad(f"missing {', '.join(sorted(need - names))}")
            arrays = {k: f.get_tensor(k) for k in need - {"points", "sweep"}}
            p_shape, s_shape = f.get_slice("points").get_shape(), f.get_slice("sweep").get_shape()
    except DataError:
        raise
    except Exception as e:  # safetensors' SafetensorError (truncated file, bad header, ...)
        raise bad(_first_line(e)) from None
    k = len(arrays["labels"])
    boxes, counts, offsets = arrays["boxes"], arrays["counts"], arrays["offsets"]
    if boxes.shape != (k, 9) or counts.shape != (k, max_sweeps + 1) or offsets.shape != (k + 1,) or arrays["sample_index"].shape != (k,):
        raise bad("object arrays of inconsistent shapes")
    if list(p_shape) != [int(offsets[-1]) if k else 0, 5] or list(s_shape) != [p_shape[0]]:
        raise bad(f"points {p_shape} do not match the object offsets")
    if offsets[0] != 0 or np.any(np.diff(offsets) != counts.sum(1)) or np.any(counts < 0):
        raise bad("object offsets do not match the point counts")
    if not np.isfinite(boxes).all() or np.any((arrays["labels"] < 0) | (arrays["labels"] >= len(CLASSES))):
        raise bad("non-finite boxes or unknown labels")
    if k and (arrays["sample_index"].min() < 0 or arrays["sample_index"].max() >= len(tokens)):
        raise bad("sample indices beyond the index's sample tokens")
    return GTDatabase(
        path=path, data_file=data_file, split=split, version=version, max_sweeps=max_sweeps, load_dim=load_dim,
        boxes=boxes.astype(np.float64), labels=arrays["labels"].astype(np.int64), counts=counts.astype(np.int64),
        offsets=offsets.astype(np.int64), sample_tokens=tokens, sample_index=arrays["sample_index"].astype(np.int64),
    )


__all__ = [
    "GTDatabase",
    "create_gt_database",
    "from_box_frame",
    "gt_database_dir",
    "load_gt_database",
    "moving_box_members",
    "points_in_moving_boxes",
    "points_in_moving_boxes_reference",
    "to_box_frame",
]
