"""Rotated BEV rectangles in pure PyTorch: corners, pairwise intersection areas and IoU.

A BEV box here is ``(x, y, w, l, yaw)``: ``l`` along the heading ``yaw``, ``w`` across it (the
:mod:`bevsimdet.data.batch` convention). :func:`bev_iou` computes the IoU of every pair of rotated
rectangles at once: the intersection polygon's vertices are the corners of each box inside the
other plus the edge-edge crossings; sorted by angle around their mean, the shoelace formula gives
its area. :func:`bev_iou_reference` is the plain loop over shapely polygons that the tests hold it
to. Rotated NMS (:mod:`bevsimdet.models.heads.nms`) and the GT-paste collision test
(:mod:`bevsimdet.data.gt_paste`) both use it, so it lives on the geometry floor.
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-6


def bev_corners(boxes: Tensor) -> Tensor:
    """M x 5 (x, y, w, l, yaw) -> M x 4 x 2 corners, counter-clockwise."""
    x, y, w, l, yaw = boxes.unbind(-1)
    c, s = torch.cos(yaw), torch.sin(yaw)
    sx = torch.tensor([0.5, -0.5, -0.5, 0.5], dtype=boxes.dtype, device=boxes.device)  # along l
    sy = torch.tensor([0.5, 0.5, -0.5, -0.5], dtype=boxes.dtype, device=boxes.device)  # along w
    dl = sx[None] * l[:, None]
    dw = sy[None] * w[:, None]
    cx = x[:, None] + dl * c[:, None] - dw * s[:, None]
    cy = y[:, None] + dl * s[:, None] + dw * c[:, None]
    return torch.stack([cx, cy], -1)


def _inside(points: Tensor, boxes: Tensor) -> Tensor:
    """points P x 4 x 2 inside boxes P x 5 (pairwise) -> P x 4 bool."""
    d = points - boxes[:, None, :2]
    c, s = torch.cos(boxes[:, 4])[:, None], torch.sin(boxes[:, 4])[:, None]
    along = d[..., 0] * c + d[..., 1] * s
    across = -d[..., 0] * s + d[..., 1] * c
    tol = 1e-5
    return (along.abs() <= boxes[:, None, 3] / 2 + tol) & (across.abs() <= boxes[:, None, 2] / 2 + tol)


def _cross(u: Tensor, v: Tensor) -> Tensor:
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def intersection_area(a: Tensor, b: Tensor) -> Tensor:
    """Intersection areas of rotated rectangles paired row by row: a, b P x 5 -> P."""
    p_ = a.shape[0]
    ca, cb = bev_corners(a), bev_corners(b)  # P x 4 x 2
    a_in_b, b_in_a = _inside(ca, b), _inside(cb, a)
    # edges p + t r (of a) against q + u s (of b), all 4 x 4 combinations
    p, r = ca[:, :, None], (ca.roll(-1, 1) - ca)[:, :, None]  # P x 4 x 1 x 2
    q, s = cb[:, None], (cb.roll(-1, 1) - cb)[:, None]  # P x 1 x 4 x 2
    denom = _cross(r, s)  # P x 4 x 4
    qp = q - p
    ok = denom.abs() > EPS
    safe = torch.where(ok, denom, torch.ones_like(denom))
    t = _cross(qp, s) / safe
    u = _cross(qp, r) / safe
    hit = ok & (t >= 0) & (t <= 1) & (u >= 0) & (u <= 1)
    crossing = (p + t[..., None] * r).reshape(p_, 16, 2)
    pts = torch.cat([ca, cb, crossing], 1)  # P x 24 x 2
    valid = torch.cat([a_in_b, b_in_a, hit.reshape(p_, 16)], 1)
    n = valid.sum(-1)
    centre = (pts * valid[..., None].to(pts.dtype)).sum(1) / n.clamp(min=1)[:, None].to(pts.dtype)
    rel = pts - centre[:, None]
    angle = torch.where(valid, torch.atan2(rel[..., 1], rel[..., 0]), torch.full_like(rel[..., 0], 10.0))  # invalid last
    order = angle.argsort(-1)
    pts = pts.gather(1, order[..., None].expand_as(pts))
    valid = valid.gather(1, order)
    # invalid slots repeat the first point: their edges have zero length and add no area
    pts = torch.where(valid[..., None], pts, pts[:, :1].expand_as(pts))
    area = 0.5 * _cross(pts, pts.roll(-1, 1)).sum(-1)
    return torch.where(n >= 3, area.abs(), torch.zeros_like(area))


def bev_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of rotated BEV boxes a M x 5 and b K x 5 (x, y, w, l, yaw) -> M x K.

    Only pairs whose circumscribed circles meet are intersected (the rest are 0), so the cost
    follows the number of nearby pairs rather than M x K.
    """
    a, b = a.float(), b.float()
    out = a.new_zeros(a.shape[0], b.shape[0])
    if a.shape[0] == 0 or b.shape[0] == 0:
        return out
    ra, rb = a[:, 2:4].norm(dim=1) / 2, b[:, 2:4].norm(dim=1) / 2
    near = torch.cdist(a[:, :2], b[:, :2]) <= ra[:, None] + rb[None] + 1e-4
    i, j = torch.nonzero(near, as_tuple=True)
    inter = intersection_area(a[i], b[j])
    union = (a[i, 2] * a[i, 3] + b[j, 2] * b[j, 3] - inter).clamp(min=EPS)
    out[i, j] = inter / union
    return out


def bev_iou_reference(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU with shapely polygons, one pair at a time."""
    from shapely.geometry import Polygon

    ca, cb = bev_corners(a.double()).tolist(), bev_corners(b.double()).tolist()
    out = torch.zeros(len(ca), len(cb), dtype=torch.float64)
    for i, pa in enumerate(ca):
        for j, pb in enumerate(cb):
            pa_, pb_ = Polygon(pa), Polygon(pb)
            inter = pa_.intersection(pb_).area
            out[i, j] = inter / max(pa_.area + pb_.area - inter, EPS)
    return out.float()


__all__ = ["bev_corners", "bev_iou", "bev_iou_reference", "intersection_area"]
