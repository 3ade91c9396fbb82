"""LiDAR depth supervision of LSS depth distributions (training only): targets and the loss.

Used by the detection criterion (``det_depth``, BEVDepth style) and by the distillation
criterion (its ``depth`` term on the student's branches). Keyframe LiDAR points
(``time_lag == 0``; older sweeps would smear moving objects) are projected into every camera's
*augmented* image, and each image-feature cell keeps the depth bin of its nearest return. The student never sees these at test time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bevsimdet.data.batch import Batch


def num_depth_bins(dbound: tuple[float, float, float]) -> int:
    dmin, dmax, step = dbound
    return int(round((dmax - dmin) / step))


OBJECT_MARGIN = 0.25  # metres added to every box side: LiDAR returns lie on (or just off) the faces


def points_in_any_box(points: Tensor, boxes: Tensor, margin: float = 0.0) -> Tensor:
    """P x 3 points, M x 9 boxes (same frame) -> P bool: inside (or on) at least one box grown by
    ``margin`` on every side. Vectorised over P x M; reference: ``geometry.points_in_boxes``."""
    if boxes.shape[0] == 0 or points.shape[0] == 0:
        return torch.zeros(points.shape[0], dtype=torch.bool, device=points.device)
    d = points[:, None, :3].float() - boxes[None, :, :3].float()  # P x M x 3
    c, s = boxes[:, 6].float().cos(), boxes[:, 6].float().sin()
    along = d[..., 0] * c + d[..., 1] * s
    across = -d[..., 0] * s + d[..., 1] * c
    inside = (along.abs() <= boxes[:, 4] / 2 + margin) & (across.abs() <= boxes[:, 3] / 2 + margin) & (d[..., 2].abs() <= boxes[:, 5] / 2 + margin)
    return inside.any(1)


def lidar_depth_bins(batch: Batch, feat_hw: tuple[int, int], dbound: tuple[float, float, float]) -> Tensor:
    """(B*N) x h x w long: depth bin of the nearest keyframe LiDAR return per feature cell, -1 if none.

    ``feat_hw`` is the image-feature size the depth distribution is predicted at; ``dbound`` is
    ``(dmin, dmax, step)`` in metres, bin ``k`` covering ``[dmin + k step, dmin + (k + 1) step)``.
    """
    return lidar_depth_targets(batch, feat_hw, dbound)[0]


def lidar_depth_targets(batch: Batch, feat_hw: tuple[int, int], dbound: tuple[float, float, float]) -> tuple[Tensor, Tensor]:
    """(bins, on_object), both (B*N) x h x w: the depth bin of the nearest keyframe LiDAR return
    per feature cell (-1 if none, see :func:`lidar_depth_bins`) and whether that return lies on
    an annotated object (inside a GT box grown by :data:`OBJECT_MARGIN`)."""
    if batch.points is None:
        raise ValueError("depth supervision needs LiDAR points in the batch (batch.points is None)")
    # geometry in float32 even inside a mixed-precision step: bf16 keeps 8 bits, ~0.25 m at 50 m
    with torch.autocast(batch.images.device.type, enabled=False):
        return _lidar_depth_targets(batch, feat_hw, dbound)


def _lidar_depth_targets(batch: Batch, feat_hw: tuple[int, int], dbound: tuple[float, float, float]) -> tuple[Tensor, Tensor]:
    h, w = feat_hw
    img_h, img_w = batch.images.shape[-2:]
    n = batch.num_cams
    dmin, _, step = dbound
    nbins = num_depth_bins(dbound)
    out, objects = [], []
    for b, pts in enumerate(batch.points):
        pts = pts[pts[:, 4] == 0, :3].float()
        boxes = batch.gt_boxes[b].to(pts.device) if b < len(batch.gt_boxes) else pts.new_zeros(0, 9)
        on_box = points_in_any_box(pts, boxes, OBJECT_MARGIN)  # boxes and points: augmented ego frame
        aug2ego = torch.linalg.inv(batch.bev_aug[b].float())
        ego2cam = torch.linalg.inv(batch.cam2ego[b].float())  # N x 4 x 4
        hom = torch.cat([pts, pts.new_ones(pts.shape[0], 1)], 1) @ aug2ego.t()  # P x 4, un-augmented ego
        cam = torch.einsum("nij,pj->npi", ego2cam, hom)[..., :3]  # N x P x 3
        z = cam[..., 2]
        pix = torch.einsum("nij,npj->npi", batch.intrinsics[b].float(), cam)
        pix = pix / pix[..., 2:3].clamp(min=1e-6)
        pix = torch.einsum("nij,npj->npi", batch.img_aug[b].float(), pix)
        u = pix[..., 0] / pix[..., 2]
        v = pix[..., 1] / pix[..., 2]
        k = torch.floor((z - dmin) / step).long()
        ok = (z > 1e-3) & (u >= 0) & (u < img_w) & (v >= 0) & (v < img_h) & (k >= 0) & (k < nbins)
        cell = torch.floor(v * h / img_h).long().clamp(0, h - 1) * w + torch.floor(u * w / img_w).long().clamp(0, w - 1)
        inf = torch.full_like(z, float("inf"))
        flat = torch.full((n, h * w), float("inf"), device=pts.device)
        flat.scatter_reduce_(1, cell * ok, torch.where(ok, z, inf), "amin")
        nearest_obj = torch.full((n, h * w), float("inf"), device=pts.device)
        nearest_obj.scatter_reduce_(1, cell * ok, torch.where(ok & on_box[None], z, inf), "amin")
        bins = torch.floor((flat - dmin) / step)
        out.append(torch.where(torch.isfinite(flat), bins, torch.full_like(bins, -1.0)).long().view(n, h, w))
        objects.append((torch.isfinite(flat) & (nearest_obj == flat)).view(n, h, w))
    return torch.cat(out, 0), torch.cat(objects, 0)


def bin_centre_depth(bins: Tensor, dbound: tuple[float, float, float]) -> Tensor:
    """The depth (m) at the centre of each bin index in ``bins`` (any shape; float)."""
    dmin, _, step = dbound
    return dmin + (bins.float() + 0.5) * step


def depth_bce(depth_probs: Tensor, target_bins: Tensor, weights: Tensor | None = None) -> Tensor:
    """Binary cross-entropy of a predicted depth distribution against LiDAR depth bins.

    ``depth_probs`` (B*N) x D x h x w (softmax over D); ``target_bins`` (B*N) x h x w long, the
    bin of the nearest LiDAR return in each feature cell, -1 where there is none. Averaged over
    cells that have a target (BEVDepth style), or weighted by ``weights`` (B*N) x h x w and
    divided by the weight of those cells; zero when no cell has one.
    """
    valid = target_bins >= 0
    d = depth_probs.shape[1]
    probs = depth_probs.float().permute(0, 2, 3, 1)[valid]  # V x D
    if probs.shape[0] == 0:
        return depth_probs.sum() * 0.0
    onehot = F.one_hot(target_bins[valid], d).float()
    bce = F.binary_cross_entropy(probs.clamp(1e-6, 1 - 1e-6), onehot, reduction="none").sum(1)  # V
    if weights is None:
        return bce.sum() / probs.shape[0]
    w = weights.float()[valid]
    return (bce * w).sum() / w.sum().clamp(min=1e-6)


def depth_agreement(depth_probs: Tensor, target_bins: Tensor, dbound: tuple[float, float, float], cells: Tensor | None = None) -> Tensor:
    """How well a depth distribution agrees with LiDAR, as sums to accumulate over a split.

    ``depth_probs`` (B*N) x D x h x w, ``target_bins`` (B*N) x h x w (-1: no return); ``cells``
    optionally restricts to a subset (e.g. cells whose return is on an object). Returns a float64
    4-vector: [cells with a LiDAR return, those whose most likely bin is within one bin of the
    LiDAR bin, the sum over them of |expected depth - LiDAR bin centre| in metres, and of the
    signed error (expected - LiDAR: negative places the object too near)].
    """
    valid = target_bins >= 0
    if cells is not None:
        valid = valid & cells
    probs = depth_probs.detach().float().permute(0, 2, 3, 1)[valid]  # V x D
    target = target_bins[valid]
    if probs.shape[0] == 0:
        return torch.zeros(4, dtype=torch.float64)
    centres = bin_centre_depth(torch.arange(probs.shape[1], device=probs.device), dbound)
    within = ((probs.argmax(1) - target).abs() <= 1).sum()
    signed = (probs * centres).sum(1) - centres[target]
    sums = [float(probs.shape[0]), float(within), float(signed.abs().sum()), float(signed.sum())]
    return torch.tensor(sums, dtype=torch.float64)


__all__ = ["bin_centre_depth", "depth_agreement", "depth_bce", "lidar_depth_bins", "lidar_depth_targets", "num_depth_bins", "points_in_any_box", "OBJECT_MARGIN"]
