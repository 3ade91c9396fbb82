"""Projection of ego-frame points into (augmented) camera images.

Pixel coordinates follow OpenCV and the nuScenes intrinsics: ``(u, v)`` with the centre of the
top-left pixel at ``(0, 0)``, u to the right, v down. ``img_aug`` (3 x 3) maps an original pixel to
the augmented image (see :mod:`bevsimdet.data.batch`).
"""

from __future__ import annotations

import numpy as np

from bevsimdet.geometry.transforms import apply_transform, invert


def project_points(
    points: np.ndarray,
    intrinsics: np.ndarray,
    cam2ego: np.ndarray,
    img_aug: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Project N x 3 ego points into one camera.

    Returns ``uv`` N x 2 pixel coordinates (of the augmented image when ``img_aug`` is given) and
    ``depth`` N, the z of each point in the camera frame (<= 0 means behind the camera; its uv
    is then meaningless).
    """
    cam = apply_transform(invert(cam2ego), np.asarray(points, dtype=np.float64).reshape(-1, 3))
    depth = cam[:, 2]
    pix = cam @ np.asarray(intrinsics, dtype=np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = pix[:, :2] / pix[:, 2:3]
    if img_aug is not None:
        aug = np.asarray(img_aug, dtype=np.float64)
        uv = uv @ aug[:2, :2].T + aug[:2, 2]
    return uv, depth


def in_image(uv: np.ndarray, depth: np.ndarray, image_size: tuple[int, int], min_depth: float = 0.1) -> np.ndarray:
    """N bool: in front of the camera by ``min_depth`` and inside an ``(H, W)`` image."""
    h, w = image_size
    return (
        (depth > min_depth)
        & (uv[:, 0] >= -0.5)
        & (uv[:, 0] <= w - 0.5)
        & (uv[:, 1] >= -0.5)
        & (uv[:, 1] <= h - 0.5)
    )
