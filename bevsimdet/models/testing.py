"""Synthetic batches for tests and benchmarks: the nuScenes camera rig, random points and boxes.

The rig is the simulator's (:mod:`bevsimdet.data.sim.rig`, full-resolution 1600 x 900 intrinsics)
with the test-time image transform of :mod:`bevsimdet.data.transforms` (resize + centred crop to
``image_size``), so geometry in these batches is what the data layer produces.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bevsimdet.data.batch import Batch, SampleMeta
from bevsimdet.data.classes import CAMERAS, CLASSES

# typical (w, l, h) per class, metres
CLASS_SIZES = {
    "car": (1.9, 4.6, 1.7), "truck": (2.5, 7.0, 3.0), "construction_vehicle": (2.8, 6.5, 3.2), "bus": (2.9, 11.0, 3.5),
    "trailer": (2.9, 12.0, 3.9), "barrier": (2.5, 0.5, 1.0), "motorcycle": (0.8, 2.1, 1.5), "bicycle": (0.6, 1.7, 1.3),
    "pedestrian": (0.7, 0.7, 1.75), "traffic_cone": (0.4, 0.4, 1.0),
}


def camera_rig(num_cams: int = 6, image_size: tuple[int, int] = (128, 352)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(intrinsics N x 3 x 3, cam2ego N x 4 x 4, img_aug N x 3 x 3) of the first ``num_cams``
    nuScenes cameras, images resized and centre-cropped to ``image_size`` as at test time."""
    from bevsimdet.data.sim.rig import FULL_HEIGHT, FULL_WIDTH, camera_spec
    from bevsimdet.data.transforms import ImageAug

    h, w = image_size
    resize = max(h / FULL_HEIGHT, w / FULL_WIDTH)
    aug = ImageAug(image_size=(h, w), test_resize=resize)
    specs = [camera_spec(c, 1.0) for c in CAMERAS[:num_cams]]
    mat, _ = aug.sample((FULL_HEIGHT, FULL_WIDTH), None)
    k = torch.tensor(np.stack([s.intrinsics for s in specs]), dtype=torch.float32)
    c2e = torch.tensor(np.stack([s.cam2ego for s in specs]), dtype=torch.float32)
    a = torch.tensor(np.stack([mat] * len(specs)), dtype=torch.float32)
    return k, c2e, a


def random_batch(
    model_cfg: Any | None = None,
    batch_size: int = 1,
    num_cams: int = 6,
    image_size: tuple[int, int] | None = None,
    num_points: int = 2000,
    num_boxes: int = 8,
    seed: int = 0,
    with_points: bool = True,
    box_range: float = 45.0,
) -> Batch:
    """A random but geometrically valid batch.

    ``image_size`` defaults to ``model_cfg.camera.image_size`` (or 128 x 352). Boxes: random classes
    with typical sizes, centres within ``box_range`` m, on the ground, random yaw and speed.
    Points: uniform in +-50 m around the ego, 0-3 sweeps back (time lag 0-0.15 s).
    ``num_boxes=0`` and ``num_points=0`` give an empty scene.
    """
    if image_size is None:
        image_size = tuple(model_cfg.camera.image_size) if model_cfg is not None else (128, 352)
    g = torch.Generator().manual_seed(seed)
    h, w = image_size
    k, c2e, a = camera_rig(num_cams, (h, w))
    boxes, labels, points, meta = [], [], [], []
    sizes = torch.tensor([CLASS_SIZES[c] for c in CLASSES])
    for b in range(batch_size):
        lab = torch.randint(0, len(CLASSES), (num_boxes,), generator=g)
        xy = (torch.rand(num_boxes, 2, generator=g) * 2 - 1) * box_range
        wlh = sizes[lab] * (0.9 + 0.2 * torch.rand(num_boxes, 3, generator=g))
        yaw = (torch.rand(num_boxes, 1, generator=g) * 2 - 1) * torch.pi
        vel = torch.randn(num_boxes, 2, generator=g) * 2.0
        boxes.append(torch.cat([xy, wlh[:, 2:3] / 2, wlh, yaw, vel], 1))
        labels.append(lab)
        pts = torch.cat([
            (torch.rand(num_points, 2, generator=g) * 2 - 1) * 50.0,
            torch.rand(num_points, 1, generator=g) * 3.0 - 0.5,
            torch.rand(num_points, 1, generator=g),
            torch.randint(0, 4, (num_points, 1), generator=g).float() * 0.05,
        ], 1)
        points.append(pts)
        meta.append(SampleMeta(sample_token=f"random-{seed}-{b}"))
    return Batch(
        images=torch.randn(batch_size, num_cams, 3, h, w, generator=g),
        intrinsics=k[None].repeat(batch_size, 1, 1, 1),
        cam2ego=c2e[None].repeat(batch_size, 1, 1, 1),
        img_aug=a[None].repeat(batch_size, 1, 1, 1),
        bev_aug=torch.eye(4)[None].repeat(batch_size, 1, 1),
        points=points if with_points else None,
        gt_boxes=boxes,
        gt_labels=labels,
        meta=meta,
    )


__all__ = ["random_batch", "camera_rig", "CLASS_SIZES"]
