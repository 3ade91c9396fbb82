"""Homogeneous transforms, poses and angles (numpy, float64).

A transform is a 4 x 4 matrix ``T`` mapping column vectors ``[x, y, z, 1]`` of a source frame
into a target frame; names read ``src2dst`` (``cam2ego`` maps camera points into the ego frame).
Quaternions are ``(w, x, y, z)`` as in the nuScenes tables and pyquaternion.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def quaternion_to_matrix(q: Sequence[float] | np.ndarray) -> np.ndarray:
    """``... x 4`` quaternions (w, x, y, z; normalised here) -> ``... x 3 x 3`` rotation matrices."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def make_transform(rotation: np.ndarray | Sequence[float], translation: Sequence[float] | np.ndarray) -> np.ndarray:
    """4 x 4 transform from a rotation (3 x 3 matrix or (w, x, y, z) quaternion) and a translation."""
    rotation = np.asarray(rotation, dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = quaternion_to_matrix(rotation) if rotation.shape == (4,) else rotation
    out[:3, 3] = np.asarray(translation, dtype=np.float64)
    return out


def pose_matrix(record: dict) -> np.ndarray:
    """4 x 4 transform of a nuScenes ``ego_pose`` (ego -> global) or ``calibrated_sensor``
    (sensor -> ego) record."""
    return make_transform(record["rotation"], record["translation"])


def invert(transform: np.ndarray) -> np.ndarray:
    """Inverse of a 4 x 4 affine transform (exact for rigid ones, valid for rotation/scale/flip)."""
    transform = np.asarray(transform, dtype=np.float64)
    lin_inv = np.linalg.inv(transform[:3, :3])
    out = np.eye(4)
    out[:3, :3] = lin_inv
    out[:3, 3] = -lin_inv @ transform[:3, 3]
    return out


def to_homogeneous(points: np.ndarray) -> np.ndarray:
    """N x D -> N x (D + 1) with a trailing column of ones."""
    points = np.asarray(points)
    return np.concatenate([points, np.ones((*points.shape[:-1], 1), dtype=points.dtype)], axis=-1)


def from_homogeneous(points: np.ndarray) -> np.ndarray:
    """N x (D + 1) -> N x D, dividing by the last coordinate."""
    return points[..., :-1] / points[..., -1:]


def apply_transform(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map N x 3 points through a 4 x 4 affine transform (keeps the input dtype)."""
    points = np.asarray(points)
    transform = np.asarray(transform)
    return (points @ transform[:3, :3].T.astype(points.dtype) + transform[:3, 3].astype(points.dtype)).astype(points.dtype)


def wrap_angle(angle: np.ndarray | float) -> np.ndarray | float:
    """Angles wrapped into (-pi, pi]."""
    out = np.pi - np.mod(np.pi - np.asarray(angle, dtype=np.float64), 2 * np.pi)
    return float(out) if np.ndim(out) == 0 else out


def rotation_z(angle: float) -> np.ndarray:
    """3 x 3 rotation by ``angle`` (radians, counter-clockwise) about +z."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
