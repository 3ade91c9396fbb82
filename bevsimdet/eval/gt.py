"""Ground truth for nuScenes detection evaluation, as arrays.

:func:`load_gt` gives exactly the boxes the devkit's ``load_gt`` + ``add_center_dist`` +
``filter_eval_boxes`` keep (same samples, same order, same velocities, same filters), but reads
only the tables it needs (:mod:`bevsimdet.eval.tables`) instead of building the devkit's
``NuScenes`` and one Python object per box, and caches the result (:mod:`bevsimdet.eval.cache`). :func:`filter_boxes` is the
devkit's ``filter_eval_boxes`` for any :class:`BoxSet` (it is applied to predictions too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from bevsimdet.errors import DataError
from bevsimdet.eval.boxes import (
    ATTRIBUTE_TO_INDEX,
    BIKE_CLASSES,
    DETECTION_NAMES,
    NAME_TO_INDEX,
    BoxSet,
    points_in_boxes,
    xy_norm,
)
from bevsimdet.eval.match import pairs_by_key
from bevsimdet.eval.tables import EvalTables, check_split, read_eval_tables, table_folder
from bevsimdet.io import paused_gc

# detection_cvpr_2019 evaluation ranges (m), in DETECTION_NAMES order.
CVPR_2019_CLASS_RANGE: dict[str, float] = {
    "car": 50,
    "truck": 50,
    "bus": 50,
    "trailer": 50,
    "construction_vehicle": 50,
    "pedestrian": 40,
    "motorcycle": 40,
    "bicycle": 40,
    "traffic_cone": 30,
    "barrier": 30,
}

# The devkit's category -> detection class map (``detection/utils.py:category_to_detection_name``);
# categories not listed (e.g. personal_mobility, stroller, wheelchair) are not evaluated.
CATEGORY_TO_DETECTION_NAME = {
    "movable_object.barrier": "barrier",
    "vehicle.bicycle": "bicycle",
    "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus",
    "vehicle.car": "car",
    "vehicle.construction": "construction_vehicle",
    "vehicle.motorcycle": "motorcycle",
    "human.pedestrian.adult": "pedestrian",
    "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian",
    "human.pedestrian.police_officer": "pedestrian",
    "movable_object.trafficcone": "traffic_cone",
    "vehicle.trailer": "trailer",
    "vehicle.truck": "truck",
}
BIKE_RACK = "static_object.bicycle_rack"
VELOCITY_MAX_TIME_DIFF = 1.5  # s, the devkit's box_velocity default (doubled for centred differences)
_ARRAY_FIELDS = ("sample", "label", "translation", "size", "rotation", "velocity", "attribute", "score", "num_pts")  # of a BoxSet


@dataclass
class GroundTruth:
    """Filtered GT boxes of one split, plus what is needed to filter predictions the same way.

    * ``sample_tokens``   S sample tokens of the split, in the devkit's order.
    * ``ego_translation`` S x 3, ego position (LIDAR_TOP ``sample_data``'s ego pose) per sample.
    * ``boxes``           filtered GT :class:`BoxSet` (``sample`` indexes ``sample_tokens``).
    * ``racks``           bicycle-rack boxes (a :class:`BoxSet`, label/score/attribute unused).
    * ``class_range``     the per-class range the boxes were filtered with.
    """

    sample_tokens: tuple[str, ...]
    ego_translation: np.ndarray
    boxes: BoxSet
    racks: BoxSet
    class_range: Mapping[str, float] = field(default_factory=lambda: dict(CVPR_2019_CLASS_RANGE))
    version: str = ""
    split: str = ""

    def __post_init__(self) -> None:
        self.token_to_index = {t: i for i, t in enumerate(self.sample_tokens)}

    @property
    def num_samples(self) -> int:
        return len(self.sample_tokens)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Named arrays holding everything but ``class_range``/``version``/``split`` (what the GT
        cache stores); :meth:`from_arrays` reverses it."""
        arrays = {"sample_tokens": np.array(self.sample_tokens, dtype=str), "ego_translation": self.ego_translation}
        for prefix, boxes in (("boxes", self.boxes), ("racks", self.racks)):
            arrays.update({f"{prefix}.{f}": getattr(boxes, f) for f in _ARRAY_FIELDS})
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], version: str = "", split: str = "") -> "GroundTruth":
        """The GT of :meth:`to_arrays` (KeyError when an array is missing)."""
        boxes, racks = (BoxSet(**{f: arrays[f"{prefix}.{f}"] for f in _ARRAY_FIELDS}) for prefix in ("boxes", "racks"))
        return cls(tuple(arrays["sample_tokens"].tolist()), arrays["ego_translation"], boxes, racks, version=version, split=split)

    def within(self, max_range: float) -> "GroundTruth":
        """The same split with every class range capped at ``max_range`` metres (e.g. the near
        objects only): the GT filtered again, without reading the tables. Equal to
        :func:`load_gt` with the capped ranges, since the filters only ever remove boxes."""
        capped = {k: min(float(v), max_range) for k, v in self.class_range.items()}
        if capped == {k: float(v) for k, v in self.class_range.items()}:
            return self
        return GroundTruth(self.sample_tokens, self.ego_translation, filter_boxes(self.boxes, self.ego_translation, self.racks, capped),
                           self.racks, capped, self.version, self.split)

    @classmethod
    def from_unfiltered(
        cls,
        sample_tokens: tuple[str, ...] | list[str],
        ego_translation: np.ndarray,
        boxes: BoxSet,
        racks: BoxSet,
        class_range: Mapping[str, float] | None = None,
        **kw: Any,
    ) -> "GroundTruth":
        """Apply the devkit's GT filters (range, zero points, bicycle racks) to ``boxes``."""
        class_range = dict(class_range or CVPR_2019_CLASS_RANGE)
        ego = np.asarray(ego_translation, dtype=np.float64).reshape(-1, 3)
        kept = filter_boxes(boxes, ego, racks, class_range)
        return cls(tuple(sample_tokens), ego, kept, racks, class_range, **kw)


def filter_boxes(boxes: BoxSet, ego_translation: np.ndarray, racks: BoxSet, class_range: Mapping[str, float]) -> BoxSet:
    """The devkit's ``filter_eval_boxes``: keep boxes within their class range (xy distance to the
    ego, strict), with ``num_pts != 0``, and drop bicycles/motorcycles centred in a bicycle rack."""
    return boxes.select(eval_mask(boxes, ego_translation, racks, class_range))


def eval_mask(boxes: BoxSet, ego_translation: np.ndarray, racks: BoxSet, class_range: Mapping[str, float]) -> np.ndarray:
    """N bools: the boxes :func:`filter_boxes` keeps."""
    ranges = np.array([float(class_range[n]) for n in DETECTION_NAMES])
    ego_dist = xy_norm(boxes.translation - ego_translation[boxes.sample])
    keep = (ego_dist < ranges[boxes.label]) & (boxes.num_pts != 0)
    bike = np.flatnonzero(keep & np.isin(boxes.label, BIKE_CLASSES))
    if len(bike) and len(racks):
        bi, ri = pairs_by_key(boxes.sample[bike], racks.sample)
        inside = points_in_boxes(
            boxes.translation[bike[bi]], racks.translation[ri], racks.size[ri], racks.rotation[ri]
        )
        keep[bike[bi[inside]]] = False
    return keep


def count_instances(dataroot: str | Path, version: str, split: str, class_range: Mapping[str, float] | None = None) -> dict[str, int]:
    """Distinct physical objects (instance tokens) per detection class that the evaluation of
    ``split`` scores: annotated at least once within the class range with LiDAR points (the boxes
    :func:`load_gt` keeps). What a split can resolve depends on these, not on its box count: one
    parked motorcycle seen in 40 keyframes is one object."""
    scene_names = set(check_split(split, version))
    folder = table_folder(dataroot, version)
    tables = read_eval_tables(folder, scene_names)
    return instances_from_tables(tables, scene_names, class_range or CVPR_2019_CLASS_RANGE, source=folder)


def instances_from_tables(tables: EvalTables, scene_names: set[str], class_range: Mapping[str, float],
                          source: object = "") -> dict[str, int]:
    """:func:`count_instances` on already read tables."""
    samples = [s["token"] for s in tables.samples if tables.scene_name[s["scene_token"]] in scene_names]
    ego, sample_idx, labels, translation, num_pts, instance, racks, rack_idx = [], [], [], [], [], [], [], []
    for si, token in enumerate(samples):
        if token not in tables.lidar_ego:
            raise DataError(f"sample {token} has no LIDAR_TOP keyframe (sample_data)", path=source)
        ego.append(tables.lidar_ego[token])
        for ann in tables.anns[token]:
            if ann["category_name"] == BIKE_RACK:
                racks.append(ann)
                rack_idx.append(si)
            name = CATEGORY_TO_DETECTION_NAME.get(ann["category_name"])
            if name is not None:
                sample_idx.append(si)
                labels.append(NAME_TO_INDEX[name])
                translation.append(ann["translation"])
                num_pts.append(_num_pts(ann))
                instance.append(ann["instance_token"])
    n = len(labels)
    boxes = BoxSet.from_columns(
        sample=sample_idx, label=labels, translation=np.array(translation, dtype=np.float64).reshape(n, 3),
        size=np.ones((n, 3)), rotation=np.tile([1.0, 0, 0, 0], (n, 1)), velocity=np.zeros((n, 2)),
        attribute=np.full(n, -1), score=np.full(n, -1.0), num_pts=num_pts)
    nr = len(racks)
    rack_set = BoxSet.from_columns(
        sample=rack_idx, label=np.zeros(nr), translation=[r["translation"] for r in racks], size=[r["size"] for r in racks],
        rotation=[r["rotation"] for r in racks], velocity=np.zeros((nr, 2)), attribute=np.full(nr, -1),
        score=np.full(nr, -1.0), num_pts=np.full(nr, -1))
    keep = eval_mask(boxes, np.array(ego, dtype=np.float64).reshape(-1, 3), rack_set, class_range)
    seen: dict[str, set[str]] = {name: set() for name in DETECTION_NAMES}
    for k in np.flatnonzero(keep):
        seen[DETECTION_NAMES[labels[k]]].add(instance[k])
    return {name: len(v) for name, v in seen.items()}


def load_gt(
    dataroot: str | Path,
    version: str,
    split: str,
    *,
    nusc: Any = None,
    class_range: Mapping[str, float] | None = None,
    cache: bool = True,
    parallel: bool = False,
) -> GroundTruth:
    """Ground truth of ``split`` (e.g. ``val``, ``mini_val``) of a nuScenes-format dataset.

    Without ``nusc`` only the tables evaluation needs are read (:mod:`bevsimdet.eval.tables`), and
    with ``cache`` the result is kept in a GT cache file keyed by those tables' sizes and mtimes
    (:mod:`bevsimdet.eval.cache`), so the next evaluation of the same split skips the tables.
    ``nusc`` is an already loaded ``nuscenes.NuScenes`` of that dataroot/version (its tables are
    used instead of reading them again; nothing is cached). ``parallel``: see
    :func:`~bevsimdet.eval.tables.read_eval_tables` (for processes without threads).
    """
    scene_names = set(check_split(split, version))
    if nusc is not None:
        return gt_from_tables(EvalTables.from_nuscenes(nusc), scene_names, version, split, class_range, source=dataroot)
    folder = table_folder(dataroot, version)
    use_cache = cache and class_range is None
    if use_cache:
        from bevsimdet.eval import cache as gt_cache

        key = gt_cache.cache_key(folder, version, split, sorted(scene_names))
        cached = gt_cache.read(key)
        if cached is not None:
            try:
                return GroundTruth.from_arrays(cached, version, split)
            except KeyError:  # a file of an older layout: rebuilt below
                pass
    with paused_gc():  # hundreds of thousands of records, no cycles among them
        gt = gt_from_tables(read_eval_tables(folder, scene_names, parallel=parallel), scene_names, version, split, class_range, source=folder)
    if use_cache:
        gt_cache.write(key, gt.to_arrays())
    return gt


def gt_from_tables(
    tables: EvalTables,
    scene_names: set[str],
    version: str,
    split: str,
    class_range: Mapping[str, float] | None = None,
    source: object = "",
) -> GroundTruth:
    """The devkit's ``load_gt`` + ``add_center_dist`` + ``filter_eval_boxes`` on :class:`EvalTables`."""
    sample_tokens = [s["token"] for s in tables.samples if tables.scene_name[s["scene_token"]] in scene_names]
    if not sample_tokens:
        raise DataError(f"no samples of split '{split}' in {source} ({version})",
                        fix="check --split against the scene names of the dataset")
    attribute_names = tables.attribute_name
    ann_table = tables.ann_table
    sample_time = {s["token"]: s["timestamp"] for s in tables.samples}

    ego, sample_idx, anns, labels, attributes, racks, rack_idx = [], [], [], [], [], [], []
    for si, token in enumerate(sample_tokens):
        translation = tables.lidar_ego.get(token)
        if translation is None:
            raise DataError(f"sample {token} has no LIDAR_TOP keyframe (sample_data)", path=source,
                            fix="evaluation needs the ego pose of every sample's LIDAR_TOP keyframe")
        ego.append(translation)
        for ann in tables.anns[token]:
            category = ann["category_name"]
            if category == BIKE_RACK:
                racks.append(ann)
                rack_idx.append(si)
            name = CATEGORY_TO_DETECTION_NAME.get(category)
            if name is None:
                continue
            attrs = ann["attribute_tokens"]
            if len(attrs) > 1:
                raise DataError(f"annotation {ann['token']} has {len(attrs)} attributes; nuScenes allows at most one",
                                path=source)
            anns.append(ann)
            sample_idx.append(si)
            labels.append(NAME_TO_INDEX[name])
            attributes.append(ATTRIBUTE_TO_INDEX[attribute_names[attrs[0]]] if attrs else -1)

    n = len(anns)
    boxes = BoxSet(
        sample=np.array(sample_idx, dtype=np.int64),
        label=np.array(labels, dtype=np.int64),
        translation=_floats(anns, "translation", 3, source),
        size=_floats(anns, "size", 3, source),
        rotation=_floats(anns, "rotation", 4, source),
        velocity=_box_velocities(anns, ann_table, sample_time),
        attribute=np.array(attributes, dtype=np.int64),
        score=np.full(n, -1.0),
        num_pts=np.fromiter(map(_num_pts, anns), dtype=np.int64, count=n),
    )
    nr = len(racks)
    rack_set = BoxSet(
        sample=np.array(rack_idx, dtype=np.int64), label=np.zeros(nr, dtype=np.int64),
        translation=_floats(racks, "translation", 3, source), size=_floats(racks, "size", 3, source),
        rotation=_floats(racks, "rotation", 4, source), velocity=np.zeros((nr, 2)),
        attribute=np.full(nr, -1, dtype=np.int64), score=np.full(nr, -1.0), num_pts=np.full(nr, -1, dtype=np.int64),
    )
    return GroundTruth.from_unfiltered(sample_tokens, np.array(ego, dtype=np.float64).reshape(-1, 3), boxes, rack_set,
                                       class_range, version=version, split=split)


def _num_pts(ann: dict) -> int:
    return ann["num_lidar_pts"] + ann["num_radar_pts"]


def _floats(records: list[dict], key: str, width: int, source: object = "") -> np.ndarray:
    """``key`` of every record as an N x width float64 array (built without nested lists)."""
    values = list(map(itemgetter(key), records))
    if set(map(len, values)) - {width}:
        bad = next(r for r, v in zip(records, values) if len(v) != width)
        raise DataError(f"annotation {bad.get('token')}: {key} must have {width} numbers, got {bad[key]!r}", path=source)
    return np.fromiter(chain.from_iterable(values), dtype=np.float64, count=len(values) * width).reshape(-1, width)


def _box_velocities(anns: list[dict], ann_table: dict, sample_time: dict) -> np.ndarray:
    """N x 2 GT velocities exactly as ``NuScenes.box_velocity(token)[:2]``: centred difference of
    the neighbouring annotations of the instance, one-sided at track ends, NaN when the instance
    has a single annotation or the neighbours are too far apart in time."""
    n = len(anns)
    if n == 0:
        return np.zeros((0, 2))
    prev = list(map(itemgetter("prev"), anns))
    nxt = list(map(itemgetter("next"), anns))
    has_prev = np.fromiter(map(bool, prev), dtype=bool, count=n)
    has_next = np.fromiter(map(bool, nxt), dtype=bool, count=n)
    first = [ann_table[p] if p else a for p, a in zip(prev, anns)]
    last = [ann_table[q] if q else a for q, a in zip(nxt, anns)]
    pos_diff = _floats(last, "translation", 3) - _floats(first, "translation", 3)
    t_last = 1e-6 * np.fromiter((sample_time[b["sample_token"]] for b in last), dtype=np.float64, count=n)
    t_first = 1e-6 * np.fromiter((sample_time[f["sample_token"]] for f in first), dtype=np.float64, count=n)
    time_diff = t_last - t_first
    max_diff = np.where(has_prev & has_next, 2 * VELOCITY_MAX_TIME_DIFF, VELOCITY_MAX_TIME_DIFF)
    invalid = ~(has_prev | has_next) | (time_diff > max_diff)
    with np.errstate(divide="ignore", invalid="ignore"):
        vel = pos_diff[:, :2] / time_diff[:, None]
    vel[invalid] = np.nan
    return vel
