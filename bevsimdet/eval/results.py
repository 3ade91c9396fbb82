"""Detections <-> the official nuScenes detection submission format.

A submission is ``{"meta": {"use_camera": ..., ...}, "results": {sample_token: [box, ...]}}``;
a box is ``{"sample_token", "translation" [3], "size" [3] (w, l, h), "rotation" [4] (w, x, y, z),
"velocity" [2], "detection_name", "detection_score", "attribute_name"}`` in global coordinates.
"""

from __future__ import annotations

import json
from itertools import chain, repeat
from operator import itemgetter, methodcaller
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from bevsimdet.errors import UserError
from bevsimdet.eval.boxes import ATTRIBUTE_TO_INDEX, DETECTION_NAMES, NAME_TO_INDEX, BoxSet
from bevsimdet.io import load_json, paused_gc

MAX_PER_SAMPLE = 500
DEFAULT_META = {"use_camera": True, "use_lidar": False, "use_radar": False, "use_map": False, "use_external": False}
BOX_KEYS = ("sample_token", "translation", "size", "rotation", "velocity", "detection_name", "detection_score",
            "attribute_name")
NUMERIC_KEYS = (("translation", 3), ("size", 3), ("rotation", 4), ("velocity", 2), ("detection_score", 0))


class ResultsError(UserError):
    """A results file or mapping that is not a valid nuScenes detection submission."""


def detections_to_results(
    dets: Sequence[Any],
    metas: Sequence[Any],
    *,
    bev_augs: Any = None,
    max_per_sample: int = MAX_PER_SAMPLE,
) -> dict[str, list[dict]]:
    """Per-sample boxes in the official format, from post-processed detections.

    ``dets``: one :class:`bevsimdet.models.output.Detections` per sample (boxes M x 9 in the
    augmented ego frame, see :mod:`bevsimdet.data.batch`); ``metas``: the matching
    :class:`bevsimdet.data.batch.SampleMeta`; ``bev_augs``: B x 4 x 4 ego -> augmented-ego
    matrices to undo (``None`` = identity). Keeps the ``max_per_sample`` best-scoring boxes.
    """
    from bevsimdet.data.classes import CLASSES, DEFAULT_ATTRIBUTES, MOVING_SPEED

    if len(dets) != len(metas):
        raise ValueError(f"{len(dets)} detections for {len(metas)} sample metas")
    out: dict[str, list[dict]] = {}
    for i, (det, meta) in enumerate(zip(dets, metas)):
        boxes = _to_numpy(det.boxes).reshape(-1, 9)
        scores = _to_numpy(det.scores).reshape(-1)
        labels = _to_numpy(det.labels).reshape(-1).astype(np.int64)
        keep = np.argsort(-scores, kind="stable")[:max_per_sample]
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        if bev_augs is not None:
            boxes = undo_bev_aug(boxes, np.linalg.inv(_to_numpy(bev_augs[i]).reshape(4, 4)))
        centre, quat, vel = ego_to_global(boxes, np.asarray(meta.ego2global, dtype=np.float64))
        moving = np.hypot(boxes[:, 7], boxes[:, 8]) > MOVING_SPEED
        names = [CLASSES[k] for k in labels.tolist()]
        out[meta.sample_token] = [
            {
                "sample_token": meta.sample_token,
                "translation": centre[j].tolist(),
                "size": boxes[j, 3:6].tolist(),
                "rotation": quat[j].tolist(),
                "velocity": vel[j].tolist(),
                "detection_name": name,
                "detection_score": float(scores[j]),
                "attribute_name": DEFAULT_ATTRIBUTES[name][0 if moving[j] else 1],
            }
            for j, name in enumerate(names)
        ]
    return out


def undo_bev_aug(boxes: np.ndarray, inv_aug: np.ndarray) -> np.ndarray:
    """Map M x 9 boxes through ``inv_aug`` (4 x 4, augmented ego -> ego; rotation, flip, scale)."""
    lin, shift = inv_aug[:3, :3], inv_aug[:3, 3]
    scale = abs(np.linalg.det(lin)) ** (1 / 3)
    heading = np.stack([np.cos(boxes[:, 6]), np.sin(boxes[:, 6]), np.zeros(len(boxes))], axis=1) @ lin.T
    vel = np.concatenate([boxes[:, 7:9], np.zeros((len(boxes), 1))], axis=1) @ lin.T
    out = boxes.copy()
    out[:, 0:3] = boxes[:, 0:3] @ lin.T + shift
    out[:, 3:6] = boxes[:, 3:6] * scale
    out[:, 6] = np.arctan2(heading[:, 1], heading[:, 0])
    out[:, 7:9] = vel[:, :2]
    return out


def ego_to_global(boxes: np.ndarray, ego2global: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """M x 9 ego-frame boxes -> global centres M x 3, quaternions M x 4 (w, x, y, z), velocities M x 2.

    Equals the devkit's ``Box.rotate(q)`` then ``Box.translate(t)`` with the ego pose.
    """
    from pyquaternion import Quaternion

    rot, shift = ego2global[:3, :3], ego2global[:3, 3]
    w1, x1, y1, z1 = Quaternion(matrix=rot, atol=1e-6).elements
    c, s = np.cos(boxes[:, 6] / 2), np.sin(boxes[:, 6] / 2)
    # Hamilton product q_pose * q_yaw, with q_yaw = (cos(yaw/2), 0, 0, sin(yaw/2)).
    quat = np.stack([w1 * c - z1 * s, x1 * c + y1 * s, y1 * c - x1 * s, z1 * c + w1 * s], axis=1)
    vel = np.concatenate([boxes[:, 7:9], np.zeros((len(boxes), 1))], axis=1) @ rot.T
    return boxes[:, 0:3] @ rot.T + shift, quat, vel[:, :2]


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# files


def write_results(path: str | Path, results: Mapping[str, list[dict]], meta: Mapping[str, Any] | None = None) -> None:
    """Write a submission file atomically (``meta`` defaults to camera-only)."""
    from bevsimdet.io import atomic_write_json

    atomic_write_json(path, {"meta": dict(meta if meta is not None else DEFAULT_META), "results": dict(results)})


def load_results(
    path: str | Path,
    *,
    sample_tokens: Sequence[str] | None = None,
    max_per_sample: int = MAX_PER_SAMPLE,
) -> dict[str, Any]:
    """Read and validate a submission file; returns ``{"meta": ..., "results": ...}``.

    With ``sample_tokens`` the results must cover exactly those samples. Problems raise
    :class:`ResultsError` with a one-line message naming the file.
    """
    return _read_submission(path, sample_tokens, max_per_sample)[0]


def load_submission(
    path: str | Path,
    *,
    sample_tokens: Sequence[str],
    max_per_sample: int = MAX_PER_SAMPLE,
) -> tuple[dict[str, Any], BoxSet]:
    """``(meta, boxes)`` of a submission file, validated and converted in one pass (what
    ``bevsimdet evaluate`` scores): :func:`load_results` then :func:`results_to_boxes`."""
    data, boxes = _read_submission(path, sample_tokens, max_per_sample)
    return data["meta"], boxes


def _read_submission(path: str | Path, sample_tokens: Sequence[str] | None, max_per_sample: int) -> tuple[dict, BoxSet]:
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"results file not found: {path}", fix="pass the JSON written by `bevsimdet infer` or a submission file")
    try:
        data = load_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path} is not valid JSON ({e})") from None
    except RecursionError:
        raise ResultsError(f"{path} is not a submission: its JSON is nested too deeply",
                           fix="pass the JSON written by `bevsimdet infer` or a submission file") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise ResultsError(f"{path} must be a JSON object with a 'results' object (sample token -> list of boxes)",
                           fix="see the nuScenes detection submission format")
    if not isinstance(data.get("meta"), dict):
        raise ResultsError(f"{path} has no 'meta' object", fix='add "meta": {"use_camera": true, ...}')
    with paused_gc():  # the conversion allocates as much again as the parse
        boxes = results_to_boxes(data["results"], sample_tokens if sample_tokens is not None else list(data["results"]),
                                 max_per_sample=max_per_sample, source=str(path))
    return data, boxes


def results_to_boxes(
    results: Mapping[str, Any],
    sample_tokens: Sequence[str],
    *,
    max_per_sample: int = MAX_PER_SAMPLE,
    source: str = "results",
) -> BoxSet:
    """Validate ``results`` and convert it to a :class:`BoxSet` indexed by ``sample_tokens``.

    Boxes keep the order of ``results`` (samples in mapping order, boxes in list order), which is
    the order the devkit breaks score ties by.
    """
    if isinstance(results, Mapping) and isinstance(results.get("results"), Mapping) and "meta" in results:
        results = results["results"]  # a whole submission
    if not isinstance(results, Mapping):
        raise ResultsError(f"{source}: results must map sample tokens to lists of boxes, got {type(results).__name__}")
    index = {t: i for i, t in enumerate(sample_tokens)}
    missing = [t for t in sample_tokens if t not in results]
    if missing:
        raise ResultsError(f"{source}: {len(missing)} of {len(index)} samples have no entry (first: {missing[0]})",
                           fix="write every sample of the split, with an empty list where nothing was detected")
    extra = [t for t in results if t not in index]
    if extra:
        raise ResultsError(f"{source}: {len(extra)} samples are not in the evaluated split (first: {extra[0]})",
                           fix="evaluate on the split the results were made for (--split)")
    flat: list[Any] = []
    sample: list[int] = []
    for token, boxes in results.items():
        if not isinstance(boxes, list):
            raise ResultsError(f"{source}: results['{token}'] must be a list of boxes, got {type(boxes).__name__}")
        if len(boxes) > max_per_sample:
            raise ResultsError(f"{source}: sample {token} has {len(boxes)} boxes, more than {max_per_sample}",
                               fix=f"keep the {max_per_sample} highest-scoring boxes per sample")
        flat.extend(boxes)
        sample.extend([index[token]] * len(boxes))
    tokens = list(index)

    def where(i: int) -> str:
        return f"{source}: box {i - sample.index(sample[i])} of sample {tokens[sample[i]]}"

    # Checks run at C speed (map/itemgetter over all boxes); the slow scan that names the
    # offending box only runs once something is wrong.
    required = set(BOX_KEYS)
    if not (set(map(type, flat)) <= {dict} and all(map(required.issubset, flat))):
        i = next(j for j, b in enumerate(flat) if not (isinstance(b, dict) and required <= b.keys()))
        if not isinstance(flat[i], dict):
            raise ResultsError(f"{where(i)} must be a JSON object, got {type(flat[i]).__name__}")
        lacking = ", ".join(k for k in BOX_KEYS if k not in flat[i])
        raise ResultsError(f"{where(i)} lacks {lacking}", fix="see the nuScenes submission format")
    box_tokens = list(map(itemgetter("sample_token"), flat))
    expected = [tokens[s] for s in sample]
    if box_tokens != expected:
        i = next(j for j, (a, b) in enumerate(zip(box_tokens, expected)) if a != b)
        raise ResultsError(f"{where(i)} says sample_token {box_tokens[i]!r}", fix="list each box under its own sample token")
    labels = _lookup(NAME_TO_INDEX, list(map(itemgetter("detection_name"), flat)), -1)
    if -1 in labels:
        i = labels.index(-1)
        raise ResultsError(f"{where(i)} has unknown detection_name {flat[i]['detection_name']!r}",
                           fix=f"use one of: {', '.join(DETECTION_NAMES)}")
    attrs = _lookup(ATTRIBUTE_TO_INDEX, list(map(itemgetter("attribute_name"), flat)), -2)
    if -2 in attrs:
        i = attrs.index(-2)
        raise ResultsError(f"{where(i)} has unknown attribute_name {flat[i]['attribute_name']!r}",
                           fix="use a nuScenes attribute name or ''")
    cols = _vector_columns(flat, where)
    cols["detection_score"] = _numeric_column(flat, "detection_score", 0, where)
    return BoxSet.from_columns(
        sample=sample, label=labels, translation=cols["translation"], size=cols["size"], rotation=cols["rotation"],
        velocity=cols["velocity"], attribute=attrs, score=cols["detection_score"],
        num_pts=np.fromiter(map(methodcaller("get", "num_pts", -1), flat), dtype=np.int64, count=len(flat)),
    )


def _lookup(table: Mapping[str, int], names: list[Any], missing: int) -> list[int]:
    """``table[name]`` for each name, ``missing`` for unknown ones, including non-strings."""
    try:
        return list(map(table.get, names, repeat(missing)))
    except TypeError:  # an unhashable name (a list or object): the slow path, only for bad files
        return [table.get(n, missing) if isinstance(n, str) else missing for n in names]


def _vector_columns(flat: list[dict], where: Any) -> dict[str, np.ndarray]:
    """The list-valued keys (translation, size, rotation, velocity) of every box, converted in
    one pass for the common, valid case (3x faster than one pass per key). Anything unexpected
    falls back to :func:`_numeric_column` per key, which names the first bad box as before."""
    keys = [(k, w) for k, w in NUMERIC_KEYS if w]
    n, total = len(flat), sum(w for _, w in keys)
    rows = list(map(itemgetter(*(k for k, _ in keys)), flat))
    try:
        ok = all(set(map(len, map(itemgetter(i), rows))) <= {w} for i, (_, w) in enumerate(keys))
        arr = np.fromiter(chain.from_iterable(chain.from_iterable(rows)), dtype=np.float64, count=n * total) if ok else None
    except (TypeError, ValueError):
        ok = False
    if ok:
        arr = arr.reshape(n, total)
        cols, start = {}, 0
        for k, w in keys:
            cols[k] = arr[:, start:start + w]
            start += w
        ok = bool(np.isfinite(arr).all() and (cols["size"] > 0).all() and (cols["rotation"] != 0).any(axis=1).all())
    if not ok:
        return {k: _numeric_column(flat, k, w, where) for k, w in keys}
    return {k: np.ascontiguousarray(v) for k, v in cols.items()}


def _numeric_column(flat: list[dict], key: str, width: int, where: Any) -> np.ndarray:
    """``key`` of every box as an N x width (or N, for width 0) float64 array, validated."""
    values = list(map(itemgetter(key), flat))
    try:
        ok = not width or set(map(len, values)) <= {width}
        arr = np.fromiter(chain.from_iterable(values) if width else values, dtype=np.float64,
                          count=len(flat) * max(width, 1))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        i = next((j for j, v in enumerate(values) if not _is_numbers(v, width)), 0)
        kind = f"a list of {width} numbers" if width else "a number"
        raise ResultsError(f"{where(i)}: {key} must be {kind}, got {values[i]!r}")
    if width:
        arr = arr.reshape(len(flat), width)
    bad = ~np.isfinite(arr) if width == 0 else ~np.isfinite(arr).all(axis=1)
    what = "finite (no NaN or inf)"
    if key == "size":
        bad |= ~(arr > 0).all(axis=1)
        what = "positive and finite"
    elif key == "rotation":
        bad |= ~(arr != 0).any(axis=1)
        what = "a finite, non-zero quaternion"
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ResultsError(f"{where(i)}: {key} {values[i]!r} must be {what}")
    return arr


def _is_numbers(v: Any, width: int) -> bool:
    def number(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    if width == 0:
        return number(v)
    return isinstance(v, list) and len(v) == width and all(number(x) for x in v)
