"""Array form of nuScenes evaluation boxes, and the vectorised geometry the metric needs.

The devkit keeps one Python object per box (``DetectionBox``); here a whole set of boxes is a
handful of aligned arrays (:class:`BoxSet`), so filtering and error computation are numpy
expressions. Every helper mirrors one devkit function (named in its docstring) in float64.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

# The nuScenes detection classes in the devkit's order (``detection/constants.py``); metrics
# dictionaries list classes in this order, as ``metrics_summary.json`` does.
DETECTION_NAMES: tuple[str, ...] = (
    "car",
    "truck",
    "bus",
    "trailer",
    "construction_vehicle",
    "pedestrian",
    "motorcycle",
    "bicycle",
    "traffic_cone",
    "barrier",
)
NAME_TO_INDEX = {n: i for i, n in enumerate(DETECTION_NAMES)}
ATTRIBUTE_NAMES: tuple[str, ...] = (
    "pedestrian.moving",
    "pedestrian.sitting_lying_down",
    "pedestrian.standing",
    "cycle.with_rider",
    "cycle.without_rider",
    "vehicle.moving",
    "vehicle.parked",
    "vehicle.stopped",
)
# Attribute index -1 stands for the empty attribute ''.
ATTRIBUTE_TO_INDEX = {"": -1, **{n: i for i, n in enumerate(ATTRIBUTE_NAMES)}}
BIKE_CLASSES = (NAME_TO_INDEX["bicycle"], NAME_TO_INDEX["motorcycle"])


@dataclass
class BoxSet:
    """N boxes in nuScenes global coordinates, in a fixed order (the order ties are broken by).

    * ``sample``      N int64, index into the sample-token list of the owning container.
    * ``label``       N int64, index into :data:`DETECTION_NAMES`.
    * ``translation`` N x 3 float64, box centre (m).
    * ``size``        N x 3 float64, ``w, l, h`` (m).
    * ``rotation``    N x 4 float64, quaternion ``w, x, y, z``.
    * ``velocity``    N x 2 float64, m/s (NaN where the devkit cannot estimate a GT velocity).
    * ``attribute``   N int64, index into :data:`ATTRIBUTE_NAMES`, -1 for ''.
    * ``score``       N float64 (-1 for ground truth).
    * ``num_pts``     N int64, LiDAR + radar points (-1 for predictions, as in the devkit).
    """

    sample: np.ndarray
    label: np.ndarray
    translation: np.ndarray
    size: np.ndarray
    rotation: np.ndarray
    velocity: np.ndarray
    attribute: np.ndarray
    score: np.ndarray
    num_pts: np.ndarray

    @classmethod
    def empty(cls) -> "BoxSet":
        return cls.from_columns(
            sample=[], label=[], translation=np.zeros((0, 3)), size=np.zeros((0, 3)), rotation=np.zeros((0, 4)),
            velocity=np.zeros((0, 2)), attribute=[], score=[], num_pts=[],
        )

    @classmethod
    def from_columns(cls, **cols) -> "BoxSet":
        """Build from array-likes, casting each column to its dtype and trailing shape."""
        out = {}
        for f in fields(cls):
            v = cols[f.name]
            if f.name in ("translation", "size", "rotation", "velocity"):
                width = {"translation": 3, "size": 3, "rotation": 4, "velocity": 2}[f.name]
                out[f.name] = np.asarray(v, dtype=np.float64).reshape(-1, width)
            elif f.name == "score":
                out[f.name] = np.asarray(v, dtype=np.float64).reshape(-1)
            else:
                out[f.name] = np.asarray(v, dtype=np.int64).reshape(-1)
        return cls(**out)

    def __len__(self) -> int:
        return int(self.sample.shape[0])

    def select(self, index: np.ndarray) -> "BoxSet":
        """The boxes at ``index`` (bool mask or integer index), order kept."""
        return BoxSet(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concat(sets: list["BoxSet"]) -> "BoxSet":
        if not sets:
            return BoxSet.empty()
        return BoxSet(**{f.name: np.concatenate([getattr(s, f.name) for s in sets]) for f in fields(BoxSet)})


def quaternion_yaw(q: np.ndarray) -> np.ndarray:
    """Heading of the rotated x axis projected on the xy plane (devkit ``quaternion_yaw``).

    ``q`` N x 4 (w, x, y, z), any norm -> N yaw in (-pi, pi].
    """
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    # First column of the rotation matrix; atan2 is scale-invariant, so no normalisation needed.
    return np.arctan2(2.0 * (x * y + w * z), w * w + x * x - y * y - z * z)


def angle_diff(x: np.ndarray, y: np.ndarray, period: np.ndarray | float) -> np.ndarray:
    """Signed smallest angle from ``y`` to ``x`` modulo ``period`` (devkit ``angle_diff``)."""
    diff = np.mod(x - y + period / 2, period) - period / 2
    return np.where(diff > np.pi, diff - 2 * np.pi, diff)


def scale_iou(size_a: np.ndarray, size_b: np.ndarray) -> np.ndarray:
    """IoU of two N x 3 sets of ``wlh`` sizes for aligned, concentric boxes (devkit ``scale_iou``)."""
    inter = np.prod(np.minimum(size_a, size_b), axis=1)
    return inter / (np.prod(size_a, axis=1) + np.prod(size_b, axis=1) - inter)


def rotation_matrices(q: np.ndarray) -> np.ndarray:
    """N x 4 quaternions (w, x, y, z; normalised here) -> N x 3 x 3 rotation matrices."""
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )


def points_in_boxes(points: np.ndarray, centre: np.ndarray, size: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Whether point i lies inside box i, faces included (devkit ``points_in_box``, pairwise).

    ``points``, ``centre``, ``size`` (w, l, h) N x 3 and ``rotation`` N x 4 -> N bool. The box
    frame is spanned by its length (x), width (y) and height (z) axes.
    """
    if len(points) == 0:
        return np.zeros(0, dtype=bool)
    rot = rotation_matrices(rotation)  # N x 3 x 3
    local = np.einsum("nji,nj->ni", rot, points - centre)
    half = np.stack([size[:, 1], size[:, 0], size[:, 2]], axis=1) / 2  # l, w, h along x, y, z
    return np.all(np.abs(local) <= half, axis=1)


def xy_norm(d: np.ndarray) -> np.ndarray:
    """Euclidean norm of the first two columns of an N x >=2 array."""
    return np.sqrt(d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1])
