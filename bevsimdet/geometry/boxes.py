"""Boxes in the bevsimdet convention (see :mod:`bevsimdet.data.batch`) and nuScenes global boxes.

An ego box is 9 numbers ``(x, y, z, w, l, h, yaw, vx, vy)``: centre, nuScenes ``wlh`` size, the
heading of the length axis about +z and the velocity, all in the keyframe ego frame. The
conversion to a global devkit ``Box`` is ``Box.rotate(q_pose)`` then ``Box.translate(t_pose)``;
the converse keeps the heading of the box's length axis projected onto the ego xy plane (the
devkit evaluation's ``quaternion_yaw``) and drops any pitch and roll relative to the ego frame.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from bevsimdet.geometry.transforms import quaternion_to_matrix, wrap_angle

# Unit corners in the devkit's ``Box.corners()`` order: the first four face forward (+l/2),
# the last four backward; (+w/2 = +y side).
_CORNER_SIGNS = np.array(
    [
        [1, 1, 1],
        [1, -1, 1],
        [1, -1, -1],
        [1, 1, -1],
        [-1, 1, 1],
        [-1, -1, 1],
        [-1, -1, -1],
        [-1, 1, -1],
    ],
    dtype=np.float64,
)


def global_to_ego(
    translations: np.ndarray,
    sizes: np.ndarray,
    rotations: np.ndarray,
    velocities: np.ndarray,
    ego2global: np.ndarray,
) -> np.ndarray:
    """Global nuScenes boxes -> M x 9 ego boxes.

    ``translations`` M x 3, ``sizes`` M x 3 (w, l, h), ``rotations`` M x 4 quaternions (w, x, y, z),
    ``velocities`` M x 2 global (vx, vy; NaN becomes 0), ``ego2global`` 4 x 4.
    """
    translations = np.asarray(translations, dtype=np.float64).reshape(-1, 3)
    m = len(translations)
    sizes = np.asarray(sizes, dtype=np.float64).reshape(m, 3)
    velocities = np.nan_to_num(np.asarray(velocities, dtype=np.float64).reshape(m, 2))
    rot_pose = ego2global[:3, :3]
    out = np.zeros((m, 9))
    out[:, 0:3] = (translations - ego2global[:3, 3]) @ rot_pose  # R^T (t - t_pose), row-wise
    out[:, 3:6] = sizes
    if m:
        rot_ego = rot_pose.T @ quaternion_to_matrix(np.asarray(rotations).reshape(m, 4))
        out[:, 6] = wrap_angle(np.arctan2(rot_ego[:, 1, 0], rot_ego[:, 0, 0]))
    vel3 = np.concatenate([velocities, np.zeros((m, 1))], axis=1)
    out[:, 7:9] = (vel3 @ rot_pose)[:, :2]
    return out


def box_to_ego(box: Any, ego2global: np.ndarray) -> np.ndarray:
    """One devkit ``Box`` in global coordinates -> a 9-vector ego box (reference, via the devkit)."""
    from nuscenes.eval.common.utils import quaternion_yaw
    from pyquaternion import Quaternion

    box = box.copy()
    pose = Quaternion(matrix=ego2global[:3, :3], atol=1e-6)
    box.translate(-ego2global[:3, 3])
    box.rotate(pose.inverse)
    vel = np.nan_to_num(np.asarray(box.velocity, dtype=np.float64))
    yaw = wrap_angle(quaternion_yaw(box.orientation))
    return np.array([*box.center, *box.wlh, yaw, vel[0], vel[1]], dtype=np.float64)


def ego_to_boxes(boxes: np.ndarray, ego2global: np.ndarray, names: Sequence[str] | None = None) -> list[Any]:
    """M x 9 ego boxes -> devkit ``Box`` objects in global coordinates (``rotate`` then ``translate``)."""
    from nuscenes.utils.data_classes import Box
    from pyquaternion import Quaternion

    pose = Quaternion(matrix=np.asarray(ego2global)[:3, :3], atol=1e-6)
    out = []
    for i, b in enumerate(np.asarray(boxes, dtype=np.float64).reshape(-1, 9)):
        box = Box(
            b[0:3].tolist(),
            b[3:6].tolist(),
            Quaternion(axis=[0, 0, 1], angle=float(b[6])),
            velocity=(float(b[7]), float(b[8]), 0.0),
            name=names[i] if names is not None else None,
        )
        box.rotate(pose)
        box.translate(np.asarray(ego2global)[:3, 3])
        out.append(box)
    return out


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """M x 9 (or M x 7) boxes -> M x 8 x 3 corners, in the devkit's ``Box.corners()`` order."""
    boxes = np.asarray(boxes, dtype=np.float64)
    boxes = boxes.reshape(-1, boxes.shape[-1])
    # local frame: x along the length, y along the width
    half = np.stack([boxes[:, 4], boxes[:, 3], boxes[:, 5]], axis=1) / 2
    local = _CORNER_SIGNS[None] * half[:, None, :]
    c, s = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    x = c * local[..., 0] - s * local[..., 1]
    y = s * local[..., 0] + c * local[..., 1]
    return np.stack([x, y, local[..., 2]], axis=-1) + boxes[:, None, 0:3]


def points_in_boxes(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """N x 3 points, M x 9 (or M x 7) boxes -> N x M bool, True where a point lies inside (or on) a box."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    boxes = np.asarray(boxes, dtype=np.float64)
    boxes = boxes.reshape(-1, boxes.shape[-1])
    d = points[:, None, :] - boxes[None, :, 0:3]  # N x M x 3
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    along = d[..., 0] * c + d[..., 1] * s
    across = -d[..., 0] * s + d[..., 1] * c
    return (
        (np.abs(along) <= boxes[:, 4] / 2)
        & (np.abs(across) <= boxes[:, 3] / 2)
        & (np.abs(d[..., 2]) <= boxes[:, 5] / 2)
    )


def transform_boxes(boxes: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Map M x 9 boxes through a 4 x 4 transform made of a rotation about z, a uniform scale, axis
    flips and a translation (a BEV augmentation, or a rigid change of ego frame).

    Centres map as points, sizes scale by ``|det|^(1/3)``, the heading vector and the velocity map
    through the linear part (so a flip mirrors the yaw and the velocity).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 9)
    transform = np.asarray(transform, dtype=np.float64)
    lin, shift = transform[:3, :3], transform[:3, 3]
    m = len(boxes)
    heading = np.stack([np.cos(boxes[:, 6]), np.sin(boxes[:, 6]), np.zeros(m)], axis=1) @ lin.T
    vel = np.concatenate([boxes[:, 7:9], np.zeros((m, 1))], axis=1) @ lin.T
    out = boxes.copy()
    out[:, 0:3] = boxes[:, 0:3] @ lin.T + shift
    out[:, 3:6] = boxes[:, 3:6] * abs(np.linalg.det(lin)) ** (1 / 3)
    out[:, 6] = np.arctan2(heading[:, 1], heading[:, 0])
    out[:, 7:9] = vel[:, :2]
    return out

