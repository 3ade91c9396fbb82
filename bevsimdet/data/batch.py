"""The one typed batch container that flows from the data layer into every model.

Coordinate convention (see README, "Box and coordinate convention"):

* **Ego frame** = the ego-vehicle frame at the timestamp of the sample's LIDAR_TOP keyframe:
  x forward, y left, z up, metres, origin on the ground under the rear axle (nuScenes ego pose).
  Everything in a batch (points, boxes, camera extrinsics) is expressed in this frame, then moved
  by the BEV augmentation ``bev_aug`` (identity at test time).
* **Box** = 9 numbers ``(x, y, z, w, l, h, yaw, vx, vy)``: ``(x, y, z)`` the box *centre* (not the
  bottom), ``(w, l, h)`` in nuScenes ``wlh`` order (l along the heading), ``yaw`` the heading of the
  length axis, counter-clockwise from +x about +z (radians, in (-pi, pi]), ``(vx, vy)`` velocity in
  m/s, rotated into the frame (not ego-motion compensated). Converting to nuScenes global boxes is a
  rigid transform with ``ego2global`` (exactly ``Box.rotate`` then ``Box.translate`` of the devkit).
* **Camera**: OpenCV camera frame (x right, y down, z forward). ``cam2ego`` maps camera
  coordinates into the ego frame above (it folds in the camera's own ego pose, so cameras and LiDAR
  captured at slightly different times agree). ``img_aug`` maps a pixel ``(u, v, 1)`` of the
  original image to the augmented image (resize/crop/flip/rotate); ``intrinsics`` are those of the
  original image.
* **BEV maps** are ``B x C x Ny x Nx`` with row ``iy`` along +y and column ``ix`` along +x; cell
  ``(iy, ix)`` has centre ``(xmin + (ix + 0.5) dx, ymin + (iy + 0.5) dy)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

BOX_DIM = 9  # x, y, z, w, l, h, yaw, vx, vy
POINT_DIM = 5  # x, y, z, intensity, time_lag (s, >= 0; 0 for the keyframe sweep)


@dataclass
class SampleMeta:
    """Per-sample bookkeeping needed to turn predictions back into nuScenes global boxes."""

    sample_token: str
    scene_token: str = ""
    timestamp: int = 0
    ego2global: np.ndarray = field(default_factory=lambda: np.eye(4))  # 4 x 4, ego frame -> global
    lidar2ego: np.ndarray = field(default_factory=lambda: np.eye(4))  # 4 x 4, LIDAR_TOP -> ego frame
    image_paths: tuple[str, ...] = ()
    lidar_path: str = ""


@dataclass
class Batch:
    """A collated batch of B samples with N cameras each.

    Shapes (B samples, N cameras, H x W augmented image size, P_i points, M_i boxes):

    * ``images``      B x N x 3 x H x W float32, normalised (ImageNet mean/std).
    * ``intrinsics``  B x N x 3 x 3 float32, pinhole matrix of the *original* image.
    * ``cam2ego``     B x N x 4 x 4 float32, camera -> (un-augmented) ego frame.
    * ``img_aug``     B x N x 3 x 3 float32, original pixel -> augmented pixel (homogeneous 2D).
    * ``bev_aug``     B x 4 x 4 float32, ego frame -> augmented ego frame (rot/scale/flip).
    * ``points``      list of B tensors P_i x 5 (x, y, z, intensity, time_lag) in the *augmented*
      ego frame, sweeps included; ``None`` for camera-only data (the student needs none).
    * ``gt_boxes``    list of B tensors M_i x 9 in the augmented ego frame (see module docstring).
    * ``gt_labels``   list of B long tensors M_i, indices into :data:`bevsimdet.data.classes.CLASSES`.
    * ``meta``        list of B :class:`SampleMeta`.
    """

    images: Tensor
    intrinsics: Tensor
    cam2ego: Tensor
    img_aug: Tensor
    bev_aug: Tensor
    points: list[Tensor] | None = None
    gt_boxes: list[Tensor] = field(default_factory=list)
    gt_labels: list[Tensor] = field(default_factory=list)
    meta: list[SampleMeta] = field(default_factory=list)

    @property
    def batch_size(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_cams(self) -> int:
        return int(self.images.shape[1])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        def mv(x: Any) -> Any:
            if isinstance(x, Tensor):
                return x.to(device, non_blocking=non_blocking)
            if isinstance(x, list):
                return [mv(v) for v in x]
            return x

        return replace(self, **{f.name: mv(getattr(self, f.name)) for f in fields(self) if f.name != "meta"})

    def without_lidar(self) -> "Batch":
        """The same batch with no LiDAR in it (what a camera-only model sees at deployment)."""
        return replace(self, points=None)
