"""BEV non-maximum suppression in pure PyTorch: circle NMS and rotated-box NMS.

A BEV box here is ``(x, y, w, l, yaw)`` (the :mod:`bevsimdet.data.batch` convention). The
rotated-box IoU is :func:`bevsimdet.geometry.bev.bev_iou` (shared with the GT-paste collision
test); greedy suppression walks the score order over the precomputed IoU (or distance) matrix.
``*_reference`` functions are plain loops (shapely polygons for the IoU) for the tests.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from bevsimdet.geometry.bev import bev_corners, bev_iou, bev_iou_reference  # noqa: F401 (bev_corners, bev_iou_reference re-exported)


def _greedy(order: Tensor, overlap: Tensor, post_max: int | None) -> Tensor:
    """Greedy suppression along ``order`` given the boolean M x M ``overlap`` (in score order)."""
    over = overlap.cpu().numpy()
    suppressed = np.zeros(over.shape[0], dtype=bool)
    keep = []
    for i in range(over.shape[0]):
        if suppressed[i]:
            continue
        keep.append(i)
        if post_max is not None and len(keep) >= post_max:
            break
        suppressed |= over[i]
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)] if keep else order[:0]


def rotate_nms(boxes: Tensor, scores: Tensor, iou_threshold: float, post_max: int | None = None) -> Tensor:
    """Indices kept by greedy rotated-box NMS (IoU > threshold suppresses), best score first."""
    order = torch.sort(scores, descending=True, stable=True).indices
    if order.numel() == 0:
        return order
    iou = bev_iou(boxes[order], boxes[order])
    return _greedy(order, iou > iou_threshold, post_max)


def circle_nms(centres: Tensor, scores: Tensor, thresh: float, post_max: int | None = None) -> Tensor:
    """Indices kept by CenterPoint's circle NMS: a box is suppressed by a better one whose centre
    is within squared distance ``thresh`` (m^2)."""
    order = torch.sort(scores, descending=True, stable=True).indices
    if order.numel() == 0:
        return order
    c = centres[order].float()
    dist2 = (c[:, None, :] - c[None, :, :]).square().sum(-1)
    return _greedy(order, dist2 <= thresh, post_max)


def nms_reference(boxes: Tensor, scores: Tensor, kind: str, thresh: float, post_max: int | None = None) -> Tensor:
    """Plain-loop greedy NMS (``kind`` 'rotate' or 'circle') for the equivalence tests."""
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    keep: list[int] = []
    for i in order:
        ok = True
        for j in keep:
            if kind == "circle":
                d = float((boxes[i, 0] - boxes[j, 0]) ** 2 + (boxes[i, 1] - boxes[j, 1]) ** 2)
                ok = d > thresh
            else:
                ok = float(bev_iou_reference(boxes[i : i + 1], boxes[j : j + 1])[0, 0]) <= thresh
            if not ok:
                break
        if ok:
            keep.append(i)
            if post_max is not None and len(keep) >= post_max:
                break
    return torch.tensor(keep, dtype=torch.long)


__all__ = ["bev_corners", "bev_iou", "bev_iou_reference", "rotate_nms", "circle_nms", "nms_reference"]
