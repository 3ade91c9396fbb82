"""Ground truth for nuScenes detection evaluation, as arrays.

:func:`load_gt` gives exactly the boxes the devkit's ``load_gt`` + ``add_center_dist`` +
``filter_eval_boxes`` keep (same samples, same order, same velocities, same filters), but reads
the tables once instead of building one Python object per box. :func:`filter_boxes` is the
devkit's ``filter_eval_boxes`` for any :class:`BoxSet` (it is applied to predictions too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from bevsimdet.errors import DataError, UserError
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
    return boxes.select(keep)


def load_gt(
    dataroot: str | Path,
    version: str,
    split: str,
    *,
    nusc: Any = None,
    class_range: Mapping[str, float] | None = None,
) -> GroundTruth:
    """Ground truth of ``split`` (e.g. ``val``, ``mini_val``) of a nuScenes-format dataset.

    ``nusc`` is an already loaded ``nuscenes.NuScenes`` of that dataroot/version, to avoid loading
    the tables twice; without it the tables are loaded here.
    """
    from nuscenes.utils.splits import create_splits_scenes

    splits = create_splits_scenes()
    if split not in splits:
        raise UserError(f"unknown split '{split}'", fix=f"use one of: {', '.join(sorted(splits))}")
    required = {"train": "trainval", "val": "trainval", "train_detect": "trainval", "train_track": "trainval",
                "mini_train": "mini", "mini_val": "mini", "test": "test"}.get(split)
    if required and not version.endswith(required):
        raise UserError(f"split '{split}' does not belong to version '{version}'", fix=f"use a v1.0-{required} dataset")
    if nusc is None:
        nusc = _load_nuscenes(dataroot, version)
    scene_names = set(splits[split])
    sample_tokens = [s["token"] for s in nusc.sample if nusc.get("scene", s["scene_token"])["name"] in scene_names]
    if not sample_tokens:
        raise DataError(f"no samples of split '{split}' in {dataroot} ({version})",
                        fix="check --split against the scene names of the dataset")
    attribute_names = {a["token"]: a["name"] for a in nusc.attribute}
    ann_table = {a["token"]: a for a in nusc.sample_annotation}
    sample_time = {s["token"]: s["timestamp"] for s in nusc.sample}

    ego, rows, racks = [], [], []
    for si, token in enumerate(sample_tokens):
        sample = nusc.get("sample", token)
        sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        ego.append(nusc.get("ego_pose", sd["ego_pose_token"])["translation"])
        for ann_token in sample["anns"]:
            ann = ann_table[ann_token]
            category = ann["category_name"]  # added to the table by NuScenes' reverse index
            if category == BIKE_RACK:
                racks.append((si, ann))
            name = CATEGORY_TO_DETECTION_NAME.get(category)
            if name is None:
                continue
            attrs = ann["attribute_tokens"]
            if len(attrs) > 1:
                raise DataError(f"annotation {ann_token} has {len(attrs)} attributes; nuScenes allows at most one",
                                path=dataroot)
            rows.append((si, ann, NAME_TO_INDEX[name], ATTRIBUTE_TO_INDEX[attribute_names[attrs[0]]] if attrs else -1))

    boxes = BoxSet.from_columns(
        sample=[r[0] for r in rows],
        label=[r[2] for r in rows],
        translation=[r[1]["translation"] for r in rows],
        size=[r[1]["size"] for r in rows],
        rotation=[r[1]["rotation"] for r in rows],
        velocity=_box_velocities([r[1] for r in rows], ann_table, sample_time),
        attribute=[r[3] for r in rows],
        score=np.full(len(rows), -1.0),
        num_pts=[r[1]["num_lidar_pts"] + r[1]["num_radar_pts"] for r in rows],
    )
    rack_set = BoxSet.from_columns(
        sample=[r[0] for r in racks], label=np.zeros(len(racks)), translation=[r[1]["translation"] for r in racks],
        size=[r[1]["size"] for r in racks], rotation=[r[1]["rotation"] for r in racks],
        velocity=np.zeros((len(racks), 2)), attribute=np.full(len(racks), -1), score=np.full(len(racks), -1.0),
        num_pts=np.full(len(racks), -1),
    )
    return GroundTruth.from_unfiltered(sample_tokens, np.array(ego), boxes, rack_set, class_range,
                                       version=version, split=split)


def _box_velocities(anns: list[dict], ann_table: dict, sample_time: dict) -> np.ndarray:
    """N x 2 GT velocities exactly as ``NuScenes.box_velocity(token)[:2]``: centred difference of
    the neighbouring annotations of the instance, one-sided at track ends, NaN when the instance
    has a single annotation or the neighbours are too far apart in time."""
    n = len(anns)
    if n == 0:
        return np.zeros((0, 2))
    has_prev = np.array([a["prev"] != "" for a in anns])
    has_next = np.array([a["next"] != "" for a in anns])
    first = [ann_table[a["prev"]] if a["prev"] else a for a in anns]
    last = [ann_table[a["next"]] if a["next"] else a for a in anns]
    pos_diff = np.array([b["translation"] for b in last], dtype=np.float64) - np.array(
        [f["translation"] for f in first], dtype=np.float64
    )
    t_last = 1e-6 * np.array([sample_time[b["sample_token"]] for b in last], dtype=np.float64)
    t_first = 1e-6 * np.array([sample_time[f["sample_token"]] for f in first], dtype=np.float64)
    time_diff = t_last - t_first
    max_diff = np.where(has_prev & has_next, 2 * VELOCITY_MAX_TIME_DIFF, VELOCITY_MAX_TIME_DIFF)
    invalid = ~(has_prev | has_next) | (time_diff > max_diff)
    with np.errstate(divide="ignore", invalid="ignore"):
        vel = pos_diff[:, :2] / time_diff[:, None]
    vel[invalid] = np.nan
    return vel


def _load_nuscenes(dataroot: str | Path, version: str) -> Any:
    root = Path(dataroot)
    if not (root / version).is_dir():
        raise DataError(f"no '{version}' table folder in {root}", fix="pass --dataroot of a nuScenes-format dataset and its --version")
    from nuscenes import NuScenes

    try:
        return NuScenes(version=version, dataroot=str(root), verbose=False)
    except (AssertionError, FileNotFoundError, KeyError, ValueError) as e:
        raise DataError(f"cannot read the nuScenes tables of {root / version}: {e}") from None
