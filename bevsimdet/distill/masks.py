"""The object-aware mask of cross-modal distillation (CMD).

The mask is the CenterPoint ground-truth heatmap collapsed over classes: each GT box draws a
Gaussian around the BEV cell holding its centre (radius from ``gaussian_radius((l, w),
min_overlap)`` in cells, at least ``min_radius``, sigma = (2r + 1) / 6, window (2r + 1)^2);
Gaussians of one class combine by max; the per-class maps are summed (method.md 2.3) and then
**clamped to at most 1** (our choice: the released code leaves sums > 1 where objects of
different classes touch, which would weight those cells by the number of classes present).

Grid edges follow CenterPoint: a box whose centre cell is outside the grid draws nothing (even
if part of it reaches into the grid); a box near or over an edge draws the part of its window
that lies inside. Cells are indexed as in :mod:`bevsimdet.data.batch`: ``mask[b, 0, iy, ix]``,
cell centre ``(xmin + (ix + 0.5) dx, ymin + (iy + 0.5) dy)``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from bevsimdet.data.classes import CLASSES

BevRange = tuple[float, float, float, float]  # xmin, ymin, xmax, ymax (metres)

# the distance at which a range weight reaches 1 + gain: nuScenes' evaluation range of the
# vehicle classes (car, truck, bus, trailer, construction vehicle), the farthest of any class
RANGE_REFERENCE = 50.0


def gaussian_radius_t(length: Tensor, width: Tensor, min_overlap: float) -> Tensor:
    """CornerNet/CenterPoint ``gaussian_radius((length, width), min_overlap)`` element-wise."""
    mo = min_overlap
    b1 = length + width
    c1 = width * length * (1 - mo) / (1 + mo)
    r1 = (b1 + (b1**2 - 4 * c1).clamp(min=0).sqrt()) / 2
    b2 = 2 * (length + width)
    c2 = (1 - mo) * width * length
    r2 = (b2 + (b2**2 - 16 * c2).clamp(min=0).sqrt()) / 2
    b3 = -2 * mo * (length + width)
    c3 = (mo - 1) * width * length
    r3 = (b3 + (b3**2 - 16 * mo * c3).clamp(min=0).sqrt()) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def _centre_cells(boxes: Tensor, bev_range: BevRange, shape: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Integer centre cells (ix, iy), the inside-the-grid flag and the radius (cells) per box."""
    ny, nx = shape
    xmin, ymin, xmax, ymax = bev_range
    dx, dy = (xmax - xmin) / nx, (ymax - ymin) / ny
    ix = torch.floor((boxes[:, 0] - xmin) / dx).long()
    iy = torch.floor((boxes[:, 1] - ymin) / dy).long()
    inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    return ix, iy, inside, boxes[:, 3] / dx, boxes[:, 4] / dy


def range_weight(bev_range: BevRange, shape: tuple[int, int], gain: float, *, device: torch.device | None = None) -> Tensor:
    """1 x 1 x Ny x Nx weight ``1 + gain * r / RANGE_REFERENCE`` of each BEV cell, ``r`` the
    distance of the cell centre from the ego origin (m). Multiplies the object mask when far
    objects should count more in CMD than their share of cells (``distill.mask_range_weight``)."""
    ny, nx = shape
    xmin, ymin, xmax, ymax = bev_range
    xs = xmin + (torch.arange(nx, device=device, dtype=torch.float32) + 0.5) * (xmax - xmin) / nx
    ys = ymin + (torch.arange(ny, device=device, dtype=torch.float32) + 0.5) * (ymax - ymin) / ny
    r = torch.hypot(xs[None, :], ys[:, None])
    return (1.0 + gain * r / RANGE_REFERENCE)[None, None]


def object_mask(
    gt_boxes: Sequence[Tensor],
    gt_labels: Sequence[Tensor],
    bev_range: BevRange,
    shape: tuple[int, int],
    *,
    min_overlap: float = 0.1,
    min_radius: int = 2,
    num_classes: int = len(CLASSES),
) -> Tensor:
    """B x 1 x Ny x Nx object-aware mask in [0, 1] from GT boxes (M_i x 9) and labels (M_i)."""
    ny, nx = shape
    masks = []
    for boxes, labels in zip(gt_boxes, gt_labels):
        device = boxes.device
        ix, iy, inside, w_cells, l_cells = _centre_cells(boxes.float(), bev_range, shape)
        ix, iy, labels = ix[inside], iy[inside], labels[inside].long()
        radius = gaussian_radius_t(l_cells[inside], w_cells[inside], min_overlap).floor().clamp(min=min_radius)
        sigma = (2 * radius + 1) / 6
        ddx = torch.arange(nx, device=device)[None, None, :] - ix[:, None, None]  # M x 1 x Nx
        ddy = torch.arange(ny, device=device)[None, :, None] - iy[:, None, None]  # M x Ny x 1
        r = radius[:, None, None]
        window = (ddx.abs() <= r) & (ddy.abs() <= r)
        g = torch.exp(-(ddx.square() + ddy.square()).float() / (2 * sigma[:, None, None] ** 2)) * window
        g = g.reshape(g.shape[0], ny * nx)
        per_class = torch.zeros(num_classes, ny * nx, device=device)
        per_class.scatter_reduce_(0, labels[:, None].expand_as(g), g, "amax")
        masks.append(per_class.sum(0).clamp(max=1.0).view(ny, nx))
    if not masks:
        raise ValueError("object_mask needs at least one sample")
    return torch.stack(masks)[:, None]


def object_mask_reference(
    gt_boxes: Sequence[Tensor],
    gt_labels: Sequence[Tensor],
    bev_range: BevRange,
    shape: tuple[int, int],
    *,
    min_overlap: float = 0.1,
    min_radius: int = 2,
    num_classes: int = len(CLASSES),
) -> Tensor:
    """Loop reference of :func:`object_mask`, drawing box by box and cell by cell."""
    import math

    ny, nx = shape
    out = torch.zeros(len(gt_boxes), 1, ny, nx)
    for b, (boxes, labels) in enumerate(zip(gt_boxes, gt_labels)):
        heat = torch.zeros(num_classes, ny, nx)
        ix, iy, inside, w_cells, l_cells = _centre_cells(boxes.float().cpu(), bev_range, shape)
        for m in range(boxes.shape[0]):
            if not inside[m]:
                continue
            r = max(min_radius, int(gaussian_radius_t(l_cells[m], w_cells[m], min_overlap)))
            sigma = (2 * r + 1) / 6
            k = int(labels[m])
            for yy in range(int(iy[m]) - r, int(iy[m]) + r + 1):
                for xx in range(int(ix[m]) - r, int(ix[m]) + r + 1):
                    if 0 <= xx < nx and 0 <= yy < ny:
                        v = math.exp(-((xx - int(ix[m])) ** 2 + (yy - int(iy[m])) ** 2) / (2 * sigma**2))
                        heat[k, yy, xx] = max(float(heat[k, yy, xx]), v)
        out[b, 0] = heat.sum(0).clamp(max=1.0)
    return out


__all__ = ["object_mask", "object_mask_reference", "gaussian_radius_t", "BevRange"]
