"""BEVFusion-style augmentations as explicit matrices.

* :class:`ImageAug` draws a resize / crop / flip / rotation of one camera image as a 3 x 3 matrix
  ``A`` mapping an original pixel ``(u, v, 1)`` to the augmented image (``Batch.img_aug``);
  :func:`warp_image` renders exactly that matrix (pixel centres at integer coordinates, as in
  OpenCV and the nuScenes intrinsics).
* :class:`BEVAug` draws a global rotation about z, a uniform scale and x/y flips as a 4 x 4
  matrix (``Batch.bev_aug``); :func:`apply_bev_aug` moves points and boxes with it.

Training draws from a ``numpy.random.Generator``; ``rng=None`` is the deterministic test-time
transform (fixed resize, centred crop, no flip/rotation; identity BEV matrix).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from bevsimdet.geometry.boxes import transform_boxes
from bevsimdet.geometry.transforms import rotation_z

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass(frozen=True)
class ImageAug:
    """Image augmentation parameters (as BEVFusion's ``ImageAug3D``).

    ``resize_lim``: range of the resize factor of the original image (training);
    ``test_resize``: the factor at test time; ``bot_pct_lim``: fraction of the resized height
    cut from the bottom; ``rot_lim``: rotation range in degrees; ``rand_flip``: horizontal flip
    with probability 0.5. Crops are random horizontally in training, centred at test time.
    """

    image_size: tuple[int, int] = (256, 704)  # final (H, W)
    resize_lim: tuple[float, float] = (0.38, 0.55)
    test_resize: float = 0.48
    bot_pct_lim: tuple[float, float] = (0.0, 0.0)
    rot_lim: tuple[float, float] = (-5.4, 5.4)
    rand_flip: bool = True

    def sample(self, src_size: tuple[int, int], rng: np.random.Generator | None) -> tuple[np.ndarray, tuple[int, int]]:
        """Matrix (3 x 3, original pixel -> augmented pixel) for an ``(H, W)`` source image, and
        the intermediate resized size ``(newH, newW)`` it implies."""
        h, w = src_size
        fh, fw = self.image_size
        train = rng is not None
        resize = float(rng.uniform(*self.resize_lim)) if train else self.test_resize
        new_w, new_h = int(w * resize), int(h * resize)
        bot = float(rng.uniform(*self.bot_pct_lim)) if train else float(np.mean(self.bot_pct_lim))
        crop_h = int((1 - bot) * new_h) - fh
        crop_w = int(rng.uniform(0, max(0, new_w - fw))) if train else int(max(0, new_w - fw) / 2)
        flip = bool(self.rand_flip and rng.integers(2)) if train else False
        angle = float(rng.uniform(*self.rot_lim)) if train else 0.0

        mat = _translate(-crop_w, -crop_h) @ _resize_matrix((h, w), (new_h, new_w))
        if flip:
            mat = np.array([[-1.0, 0, fw - 1], [0, 1, 0], [0, 0, 1]]) @ mat
        if angle:
            c = np.array([(fw - 1) / 2, (fh - 1) / 2])
            rad = np.deg2rad(angle)
            rot = np.eye(3)
            rot[:2, :2] = [[np.cos(rad), np.sin(rad)], [-np.sin(rad), np.cos(rad)]]
            mat = _translate(*c) @ rot @ _translate(*-c) @ mat
        return mat, (new_h, new_w)


def _translate(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0, dx], [0, 1, dy], [0, 0, 1]])


def _resize_matrix(src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """Pixel map of ``cv2.resize`` from an (H, W) image to (H', W'): u' = s (u + 0.5) - 0.5."""
    sx, sy = dst[1] / src[1], dst[0] / src[0]
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]])


def warp_image(image: np.ndarray, matrix: np.ndarray, resized: tuple[int, int], out_size: tuple[int, int]) -> np.ndarray:
    """Render ``matrix`` (original -> augmented pixel) on an ``H x W x 3`` uint8 image.

    The resize step runs first with area averaging (no aliasing when shrinking), the remaining
    crop/flip/rotation as one bilinear affine warp; pixels from outside the image are 0.
    """
    h, w = image.shape[:2]
    new_h, new_w = resized
    if (new_h, new_w) != (h, w):
        interp = cv2.INTER_AREA if new_w < w else cv2.INTER_LINEAR
        image = cv2.resize(image, (new_w, new_h), interpolation=interp)
    rest = matrix @ np.linalg.inv(_resize_matrix((h, w), resized))
    fh, fw = out_size
    return cv2.warpAffine(image, rest[:2], (fw, fh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def normalize_image(image: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 RGB -> 3 x H x W float32, ImageNet mean/std."""
    out = (image.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def denormalize_image(image: np.ndarray) -> np.ndarray:
    """3 x H x W normalised float -> H x W x 3 uint8 RGB (for pictures)."""
    out = np.asarray(image, dtype=np.float32).transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class BEVAug:
    """Global BEV augmentation (BEVFusion's ``GlobalRotScaleTrans`` then ``RandomFlip3D``):
    rotation about z (radians), uniform scale, and with ``flip`` independent flips of y and of x
    with probability 0.5 each."""

    rot_lim: tuple[float, float] = (-0.3925, 0.3925)
    scale_lim: tuple[float, float] = (0.95, 1.05)
    flip: bool = True

    def sample(self, rng: np.random.Generator | None) -> np.ndarray:
        """4 x 4 ego -> augmented-ego matrix (identity when ``rng`` is None)."""
        out = np.eye(4)
        if rng is None:
            return out
        angle = float(rng.uniform(*self.rot_lim))
        scale = float(rng.uniform(*self.scale_lim))
        out[:3, :3] = scale * rotation_z(angle)
        if self.flip:
            flip_y, flip_x = rng.integers(2, size=2)
            out = np.diag([-1.0 if flip_x else 1.0, -1.0 if flip_y else 1.0, 1.0, 1.0]) @ out
        return out


def apply_bev_aug(points: np.ndarray | None, boxes: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """Move P x C points (xyz in the first 3 channels) and M x 9 boxes by a 4 x 4 BEV matrix."""
    if points is not None:
        points = points.copy()
        points[:, :3] = points[:, :3] @ matrix[:3, :3].T.astype(points.dtype) + matrix[:3, 3].astype(points.dtype)
    return points, transform_boxes(boxes, matrix)
