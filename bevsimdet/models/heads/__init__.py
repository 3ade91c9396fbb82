"""CenterPoint head (nuScenes 6-task grouping), its targets and loss, and box decoding with NMS.

Box code (10 channels, the order of :data:`bevsimdet.distill.losses.REG_KEYS` concatenated):
``[dx, dy, z, log w, log l, log h, sin k yaw, cos k yaw, vx, vy]`` where ``(dx, dy)`` is the box
centre's offset inside its BEV cell in cell units (``x = xmin + (ix + dx) * cell``) and ``k`` is
the task's yaw multiple (:func:`bevsimdet.data.classes.yaw_multiple`: 2 for the barrier task, whose
heading is only defined modulo pi, else 1; decoding divides the angle by it). The heatmap
of class k has a Gaussian peak of exactly 1 at the centre cell of each of its boxes (radius from
:func:`gaussian_radius` in cells, at least ``min_radius``; CenterPoint's drawing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bevsimdet.data.batch import Batch
from bevsimdet.data.classes import CLASS_TO_LABEL, TASKS, yaw_multiple
from bevsimdet.models.heads.nms import circle_nms, rotate_nms
from bevsimdet.models.output import DetectorOutput, Detections

HEADS: dict[str, int] = {"reg": 2, "height": 1, "dim": 3, "rot": 2, "vel": 2}  # + 'heatmap': K_t
CODE_SIZE = sum(HEADS.values())
BevRange = tuple[float, float, float, float]  # xmin, ymin, xmax, ymax


def task_labels(tasks: Sequence[Sequence[str]]) -> list[list[int]]:
    """Global class labels of each task's classes, in task order."""
    return [[CLASS_TO_LABEL[c] for c in t] for t in tasks]


def task_yaw_multiples(tasks: Sequence[Sequence[str]], multiples: Sequence[int] | None) -> list[int]:
    """Per task, the k of its ``sin k yaw, cos k yaw`` code: ``multiples`` as given, or from the classes."""
    out = [yaw_multiple(tuple(t)) for t in tasks] if multiples is None else [int(k) for k in multiples]
    if len(out) != len(tasks) or any(k < 1 for k in out):
        raise ValueError(f"yaw_multiples needs one positive integer per task ({len(tasks)}), got {list(multiples or [])}")
    return out


# ------------------------------------------------------------------------------------------------
# Gaussian targets


def gaussian_radius(height: Tensor | float, width: Tensor | float, min_overlap: float = 0.1) -> Tensor:
    """CornerNet/CenterPoint radius (cells) such that a box shifted by it keeps IoU >= min_overlap
    with the original (the smallest of the three cases). Element-wise on tensors."""
    h = torch.as_tensor(height, dtype=torch.float32)
    w = torch.as_tensor(width, dtype=torch.float32)
    mo = min_overlap
    b1, c1 = h + w, w * h * (1 - mo) / (1 + mo)
    r1 = (b1 + (b1**2 - 4 * c1).clamp(min=0).sqrt()) / 2
    b2, c2 = 2 * (h + w), (1 - mo) * w * h
    r2 = (b2 + (b2**2 - 16 * c2).clamp(min=0).sqrt()) / 2
    b3, c3 = -2 * mo * (h + w), (mo - 1) * w * h
    r3 = (b3 + (b3**2 - 16 * mo * c3).clamp(min=0).sqrt()) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def draw_gaussian(heatmap: Tensor, center: tuple[int, int], radius: int) -> Tensor:
    """Max a Gaussian (sigma = (2r + 1) / 6, window (2r + 1)^2, peak 1) into Ny x Nx ``heatmap``
    at cell ``center = (ix, iy)``, in place (the window is clipped at the edges). Reference
    drawing, one box at a time."""
    ix, iy = center
    ny, nx = heatmap.shape
    sigma = (2 * radius + 1) / 6
    y0, y1 = max(iy - radius, 0), min(iy + radius + 1, ny)
    x0, x1 = max(ix - radius, 0), min(ix + radius + 1, nx)
    if y0 >= y1 or x0 >= x1:
        return heatmap
    yy = torch.arange(y0, y1, dtype=torch.float32, device=heatmap.device)[:, None] - iy
    xx = torch.arange(x0, x1, dtype=torch.float32, device=heatmap.device)[None, :] - ix
    g = torch.exp(-(xx.square() + yy.square()) / (2 * sigma * sigma)).to(heatmap.dtype)
    heatmap[y0:y1, x0:x1] = torch.maximum(heatmap[y0:y1, x0:x1], g)
    return heatmap


def draw_heatmaps(ix: Tensor, iy: Tensor, radius: Tensor, labels: Tensor, num_classes: int, shape: tuple[int, int]) -> Tensor:
    """Vectorised :func:`draw_gaussian` for M boxes at once -> num_classes x Ny x Nx."""
    ny, nx = shape
    device = ix.device
    heat = torch.zeros(num_classes, ny * nx, device=device)
    if ix.numel() == 0:
        return heat.view(num_classes, ny, nx)
    r = radius.float()[:, None, None]
    sigma = (2 * r + 1) / 6
    dx = (torch.arange(nx, device=device)[None, None, :] - ix[:, None, None]).float()  # M x 1 x Nx
    dy = (torch.arange(ny, device=device)[None, :, None] - iy[:, None, None]).float()  # M x Ny x 1
    window = (dx.abs() <= r) & (dy.abs() <= r)
    g = (torch.exp(-(dx.square() + dy.square()) / (2 * sigma.square())) * window).reshape(-1, ny * nx)
    heat.scatter_reduce_(0, labels[:, None].expand_as(g), g, "amax")
    return heat.view(num_classes, ny, nx)


@dataclass
class CenterPointTargets:
    """Per head task (lists of length T): ``heatmaps`` B x K_t x Ny x Nx, ``indices`` B x max_objs
    long flat centre cells ``iy * Nx + ix``, ``masks`` B x max_objs (1 real object, 0 padding),
    ``codes`` B x max_objs x 10 box codes, ``labels`` B x max_objs (class within the task)."""

    heatmaps: list[Tensor]
    indices: list[Tensor]
    masks: list[Tensor]
    codes: list[Tensor]
    labels: list[Tensor]


class CenterPointTargetAssigner:
    """GT boxes (augmented ego frame) -> :class:`CenterPointTargets` on the head's grid.

    ``yaw_multiples`` (one per task, default from the classes, see :func:`task_yaw_multiples`):
    the rot code of task t is ``sin k_t yaw, cos k_t yaw``."""

    def __init__(self, tasks: Sequence[Sequence[str]], bev_range: BevRange, grid_shape: tuple[int, int], *, gaussian_overlap: float = 0.1, min_radius: int = 2, max_objs: int = 500, yaw_multiples: Sequence[int] | None = None):
        self.tasks = [tuple(t) for t in tasks]
        self.labels = task_labels(self.tasks)
        self.yaw_multiples = task_yaw_multiples(self.tasks, yaw_multiples)
        self.bev_range = tuple(float(v) for v in bev_range)
        self.grid_shape = (int(grid_shape[0]), int(grid_shape[1]))
        self.gaussian_overlap, self.min_radius, self.max_objs = gaussian_overlap, min_radius, max_objs

    def __call__(self, gt_boxes: Sequence[Tensor], gt_labels: Sequence[Tensor]) -> CenterPointTargets:
        ny, nx = self.grid_shape
        xmin, ymin, xmax, ymax = self.bev_range
        dx, dy = (xmax - xmin) / nx, (ymax - ymin) / ny
        out = CenterPointTargets([], [], [], [], [])
        device = gt_boxes[0].device if len(gt_boxes) else torch.device("cpu")
        for labels, k in zip(self.labels, self.yaw_multiples):
            lut = torch.full((max(CLASS_TO_LABEL.values()) + 1,), -1, dtype=torch.long, device=device)
            lut[torch.tensor(labels, device=device)] = torch.arange(len(labels), device=device)
            heat, idx, mask, code, lab = [], [], [], [], []
            for boxes, glabels in zip(gt_boxes, gt_labels):
                boxes = boxes.float()
                local = lut[glabels.long()]
                cx, cy = (boxes[:, 0] - xmin) / dx, (boxes[:, 1] - ymin) / dy
                ix, iy = torch.floor(cx).long(), torch.floor(cy).long()
                sel = (local >= 0) & (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny) & (boxes[:, 3] > 0) & (boxes[:, 4] > 0)
                sel = torch.nonzero(sel).squeeze(1)[: self.max_objs]
                b, ix, iy, cx, cy, local = boxes[sel], ix[sel], iy[sel], cx[sel], cy[sel], local[sel]
                radius = gaussian_radius(b[:, 4] / dy, b[:, 3] / dx, self.gaussian_overlap).to(device).floor().clamp(min=self.min_radius).long()
                heat.append(draw_heatmaps(ix, iy, radius, local, len(labels), (ny, nx)))
                m = sel.numel()
                c = torch.stack([cx - ix, cy - iy, b[:, 2], b[:, 3].log(), b[:, 4].log(), b[:, 5].clamp(min=1e-3).log(),
                                 (k * b[:, 6]).sin(), (k * b[:, 6]).cos(), b[:, 7], b[:, 8]], 1) if m else boxes.new_zeros(0, CODE_SIZE)
                pad = self.max_objs - m
                idx.append(F.pad(iy * nx + ix, (0, pad)))
                mask.append(F.pad(torch.ones(m, device=device), (0, pad)))
                code.append(F.pad(torch.nan_to_num(c), (0, 0, 0, pad)))
                lab.append(F.pad(local, (0, pad)))
            out.heatmaps.append(torch.stack(heat))
            out.indices.append(torch.stack(idx))
            out.masks.append(torch.stack(mask))
            out.codes.append(torch.stack(code))
            out.labels.append(torch.stack(lab))
        return out


# ------------------------------------------------------------------------------------------------
# head


class CenterHead(nn.Module):
    """Shared ConvBNReLU, then per task one small conv branch per output (``heatmap`` K_t
    channels + :data:`HEADS`). B x C x Ny x Nx -> list (one per task) of dicts of B x c x Ny x Nx.

    Args: in_channels; tasks: class-name groups (default the nuScenes 6 tasks); share_channels;
    head_channels; num_head_convs: convs per branch (the last is the plain output conv);
    init_bias: heatmap output bias (-2.19: initial probability ~0.1); velocity_scale: the ``vel``
    branch's conv output is multiplied by this (m/s per unit).

    Why ``velocity_scale``: velocities (up to ~15 m/s) are the one box code an order of magnitude
    larger than the others (cell offsets, log sizes, sin/cos), and under Adam and an L1 loss the
    output of a conv moves by about the same amount per step whatever the target's scale, so in
    m/s the branch needs ~10x the steps of the others to reach its targets. Predicting in units of
    ~10 m/s puts it on their footing; the code and its decoding stay in m/s.
    """

    def __init__(self, in_channels: int, tasks: Sequence[Sequence[str]] = TASKS, share_channels: int = 64, head_channels: int = 64, num_head_convs: int = 2, init_bias: float = -2.19, velocity_scale: float = 1.0):
        super().__init__()
        self.tasks = [tuple(t) for t in tasks]
        self.velocity_scale = float(velocity_scale)
        self.fused = True  # training runs all branches as one conv per layer (_branches_fused); False: the plain loop
        self.shared = nn.Sequential(nn.Conv2d(in_channels, share_channels, 3, padding=1, bias=False), nn.BatchNorm2d(share_channels), nn.ReLU(inplace=True))
        self.task_heads = nn.ModuleList()
        for t in self.tasks:
            branches = nn.ModuleDict()
            for name, out in {"heatmap": len(t), **HEADS}.items():
                layers: list[nn.Module] = []
                cin = share_channels
                for _ in range(num_head_convs - 1):
                    layers += [nn.Conv2d(cin, head_channels, 3, padding=1, bias=False), nn.BatchNorm2d(head_channels), nn.ReLU(inplace=True)]
                    cin = head_channels
                final = nn.Conv2d(cin, out, 3, padding=1)
                if name == "heatmap":
                    nn.init.constant_(final.bias, init_bias)
                layers.append(final)
                branches[name] = nn.Sequential(*layers)
            self.task_heads.append(branches)

    def forward(self, x: Tensor) -> list[dict[str, Tensor]]:
        x = self.shared(x)
        if self.training and self.fused and self._fusable():
            out = self._branches_fused(x)
        else:
            out = [{name: branch(x) for name, branch in heads.items()} for heads in self.task_heads]
        if self.velocity_scale != 1.0:
            for pred in out:
                pred["vel"] = pred["vel"] * self.velocity_scale
        return out


    # -- fast path: all branches at once -----------------------------------------------------
    # The 6 tasks x 6 outputs are 36 small branches of 32-channel convs on the same input; on the
    # CPU each conv (and its backward) is a separate kernel launch that cannot fill the cores, and
    # the head cost as much as the image encoder (docs/benchmarks.md). Here every layer of all
    # branches is one conv: the first a plain conv with the branches' filters stacked, the later
    # ones grouped convs (one group per branch; the last layer's outputs zero-padded to the widest
    # branch), BatchNorm over the stacked channels. Same parameters, same arithmetic per channel;
    # the plain loop in forward() is the reference (tests/test_speed_paths.py). Training only:
    # eval, export and inference keep the plain modules.

    def _branch_layers(self) -> list[list[nn.Module]]:
        return [list(branch) for heads in self.task_heads for branch in heads.values()]

    def _fusable(self) -> bool:
        layers = self._branch_layers()
        shape = [type(m) for m in layers[0]]
        if any([type(m) for m in br] != shape for br in layers):
            return False
        bns = [m for br in layers for m in br if isinstance(m, nn.BatchNorm2d)]
        return all(bn.momentum is not None and bn.track_running_stats and bn.momentum == bns[0].momentum and bn.eps == bns[0].eps for bn in bns)

    def _branches_fused(self, x: Tensor) -> list[dict[str, Tensor]]:
        layers = self._branch_layers()
        g = len(layers)
        y = x
        for j, first in enumerate(layers[0]):
            mods = [br[j] for br in layers]
            if isinstance(first, nn.Conv2d):
                widest = max(m.out_channels for m in mods)
                pad = lambda t, m: F.pad(t, [0, 0] * (t.dim() - 1) + [0, widest - m.out_channels])  # noqa: E731 zero filters after the branch's own
                weight = torch.cat([pad(m.weight, m) for m in mods])
                bias = torch.cat([pad(m.bias, m) for m in mods]) if first.bias is not None else None
                y = F.conv2d(y, weight, bias, first.stride, first.padding, first.dilation, 1 if j == 0 else g)
            elif isinstance(first, nn.BatchNorm2d):
                mean = torch.cat([m.running_mean for m in mods])
                var = torch.cat([m.running_var for m in mods])
                y = F.batch_norm(y, mean, var, torch.cat([m.weight for m in mods]), torch.cat([m.bias for m in mods]), True, first.momentum, first.eps)
                with torch.no_grad():  # F.batch_norm updated the stacked copies: hand each BN its slice
                    sizes = [m.num_features for m in mods]
                    for m, rm, rv in zip(mods, mean.split(sizes), var.split(sizes)):
                        m.running_mean.copy_(rm)
                        m.running_var.copy_(rv)
                        m.num_batches_tracked.add_(1)
            else:
                y = first(y)
        per = y.unflatten(1, (g, -1))  # B x G x widest x Ny x Nx
        widths = [br[-1].out_channels for br in layers]
        outs = [per[:, i, :w] for i, w in enumerate(widths)]
        names = [(t, name) for t, heads in enumerate(self.task_heads) for name in heads]
        result: list[dict[str, Tensor]] = [{} for _ in self.task_heads]
        for (t, name), o in zip(names, outs):
            result[t][name] = o
        return result


# ------------------------------------------------------------------------------------------------
# loss


def gaussian_focal_loss(logits: Tensor, target: Tensor) -> Tensor:
    """CornerNet/CenterPoint focal loss on Gaussian heatmaps, summed (not normalised):
    positives (target == 1) ``-log p (1 - p)^2``, the rest ``-log(1 - p) p^2 (1 - t)^4``,
    with ``p = clamp(sigmoid(logits), 1e-4, 1 - 1e-4)``."""
    p = logits.float().sigmoid().clamp(1e-4, 1 - 1e-4)
    t = target.float()
    pos = t.eq(1).float()
    pos_loss = -p.log() * (1 - p).square() * pos
    neg_loss = -(1 - p).log() * p.square() * (1 - t).pow(4) * (1 - pos)
    return (pos_loss + neg_loss).sum()


def regression_code(pred: dict[str, Tensor]) -> Tensor:
    """B x 10 x Ny x Nx box code of one task's prediction."""
    return torch.cat([pred[k] for k in HEADS], 1)


def gather_cells(maps: Tensor, indices: Tensor) -> Tensor:
    """B x C x Ny x Nx maps at flat cells B x K -> B x K x C."""
    b, c = maps.shape[:2]
    return maps.reshape(b, c, -1).gather(2, indices[:, None, :].expand(b, c, indices.shape[1])).transpose(1, 2)


def velocity_huber(error: Tensor, beta: float) -> Tensor:
    """Smooth-L1 of velocity errors (m/s): ``0.5 e^2 / beta`` below ``beta``, ``|e| - beta / 2``
    above; plain ``|e|`` for ``beta = 0``."""
    if beta <= 0:
        return error.abs()
    a = error.abs()
    return torch.where(a < beta, 0.5 * a.square() / beta, a - 0.5 * beta)


class CenterPointCriterion(nn.Module):
    """``forward(output, batch)`` -> raw terms ``det_heatmap`` (Gaussian focal loss / number of
    GT centres, per task, summed over tasks), ``det_bbox`` (code-weighted L1 on the box code at
    GT centres / number of objects, summed over tasks) and, with ``depth_dbound``, ``det_depth``
    (BEVDepth-style BCE of ``output.depth`` against LiDAR depth bins, when the batch has points).
    :meth:`targets` exposes the targets (distillation reuses them).

    ``velocity_beta`` > 0 makes the two velocity terms smooth-L1 with that transition (m/s). Why:
    most objects stand still, and while the features cannot yet tell movers from parked objects
    the velocity branch sits at ~0; under L1 every static object then adds a full-size gradient
    of random sign (the sign of its tiny prediction), noise that drowns the movers' consistent
    pull and keeps the branch at 0 for a whole short schedule. Under smooth-L1 a static object
    near 0 adds almost nothing, and movers (errors of metres per second) keep L1's unit gradient.
    """

    def __init__(self, assigner: CenterPointTargetAssigner, code_weights: Sequence[float] = (1.0,) * 8 + (0.2, 0.2), depth_dbound: tuple[float, float, float] | None = None, velocity_beta: float = 0.0):
        super().__init__()
        self.assigner = assigner
        if len(code_weights) != CODE_SIZE:
            raise ValueError(f"{len(code_weights)} code weights for a {CODE_SIZE}-d box code")
        self.register_buffer("code_weights", torch.tensor(list(code_weights), dtype=torch.float32), persistent=False)
        self.depth_dbound = depth_dbound
        self.velocity_beta = float(velocity_beta)

    def targets(self, batch: Batch) -> CenterPointTargets:
        return self.assigner(batch.gt_boxes, batch.gt_labels)

    def forward(self, output: DetectorOutput, batch: Batch) -> dict[str, Tensor]:
        device = output.preds[0]["heatmap"].device
        tg = self.assigner([b.to(device) for b in batch.gt_boxes], [l.to(device) for l in batch.gt_labels])
        heat_total, box_total = None, None
        for t, pred in enumerate(output.preds):
            heatmap = tg.heatmaps[t]
            num_pos = heatmap.eq(1).float().sum().clamp(min=1)
            h = gaussian_focal_loss(pred["heatmap"], heatmap) / num_pos
            mask = tg.masks[t]
            code = gather_cells(regression_code(pred).float(), tg.indices[t])
            err = code - tg.codes[t]
            if self.velocity_beta > 0:
                err = torch.cat([err[..., :8].abs(), velocity_huber(err[..., 8:], self.velocity_beta)], -1)
            else:
                err = err.abs()
            l1 = err * self.code_weights * mask[..., None]
            bx = l1.sum() / (mask.sum() + 1e-4)
            heat_total = h if heat_total is None else heat_total + h
            box_total = bx if box_total is None else box_total + bx
        terms = {"det_heatmap": heat_total, "det_bbox": box_total}
        if self.depth_dbound is not None and output.depth is not None and batch.points is not None:
            from bevsimdet.models.depth import depth_bce, lidar_depth_bins

            bins = lidar_depth_bins(batch, tuple(output.depth.shape[-2:]), self.depth_dbound).to(device)
            terms["det_depth"] = depth_bce(output.depth, bins)
        return terms


# ------------------------------------------------------------------------------------------------
# decoding


class CenterPointPostProcess(nn.Module):
    """Predictions -> one :class:`Detections` per sample, in the batch's (augmented) ego frame.

    Per task: sigmoid heatmaps, the ``pre_max_size`` best cells over all its classes, box decoding,
    ``score_threshold`` and ``post_center_range`` filters, then NMS of type ``nms_type[t]``:
    ``circle`` (squared centre distance <= ``min_radius[t]``) or ``rotate`` (BEV IoU >
    ``nms_thr``, box sizes scaled per class by ``nms_scale[t]`` first), keeping at most
    ``post_max_size``. Labels are global class indices. ``yaw_multiples``: as the target
    assigner's (the decoded yaw is ``atan2(sin, cos) / k_t``).
    """

    def __init__(
        self,
        tasks: Sequence[Sequence[str]],
        bev_range: BevRange,
        *,
        score_threshold: float = 0.1,
        pre_max_size: int = 1000,
        post_max_size: int = 83,
        nms_type: Sequence[str] = ("circle", "rotate", "rotate", "circle", "rotate", "rotate"),
        min_radius: Sequence[float] = (4.0, 12.0, 10.0, 1.0, 0.85, 0.175),
        nms_thr: float = 0.2,
        nms_scale: Sequence[Sequence[float]] | None = None,
        post_center_range: Sequence[float] = (-61.2, -61.2, -10.0, 61.2, 61.2, 10.0),
        yaw_multiples: Sequence[int] | None = None,
    ):
        super().__init__()
        self.tasks = [tuple(t) for t in tasks]
        self.labels = task_labels(self.tasks)
        self.yaw_multiples = task_yaw_multiples(self.tasks, yaw_multiples)
        if not (len(nms_type) == len(min_radius) == len(self.tasks)):
            raise ValueError(f"nms_type / min_radius need one entry per task ({len(self.tasks)})")
        for kind in nms_type:
            if kind not in ("circle", "rotate"):
                raise ValueError(f"unknown NMS type '{kind}' (circle or rotate)")
        self.bev_range = tuple(float(v) for v in bev_range)
        self.score_threshold, self.pre_max_size, self.post_max_size = score_threshold, pre_max_size, post_max_size
        self.nms_type, self.min_radius, self.nms_thr = list(nms_type), [float(r) for r in min_radius], nms_thr
        self.nms_scale = [list(s) for s in nms_scale] if nms_scale is not None else [[1.0] * len(t) for t in self.tasks]
        self.post_center_range = tuple(float(v) for v in post_center_range)

    def decode_task(self, pred: dict[str, Tensor], t: int, b: int) -> tuple[Tensor, Tensor, Tensor]:
        """(boxes M x 9, scores M, task-local labels M) of sample ``b`` before NMS."""
        heat = pred["heatmap"][b].float().sigmoid()
        k, ny, nx = heat.shape
        scores, flat = heat.reshape(-1).topk(min(self.pre_max_size, heat.numel()))
        label, cell = flat // (ny * nx), flat % (ny * nx)
        iy, ix = cell // nx, cell % nx
        code = regression_code(pred)[b].float().reshape(CODE_SIZE, -1)[:, cell].t()  # M x 10
        xmin, ymin, xmax, ymax = self.bev_range
        dx, dy = (xmax - xmin) / nx, (ymax - ymin) / ny
        x = xmin + (ix + code[:, 0]) * dx
        y = ymin + (iy + code[:, 1]) * dy
        dims = code[:, 3:6].clamp(max=10.0).exp()
        yaw = torch.atan2(code[:, 6], code[:, 7]) / self.yaw_multiples[t]
        boxes = torch.cat([x[:, None], y[:, None], code[:, 2:3], dims, yaw[:, None], code[:, 8:10]], 1)
        r = self.post_center_range
        keep = (scores > self.score_threshold) & (x >= r[0]) & (y >= r[1]) & (boxes[:, 2] >= r[2]) & (x <= r[3]) & (y <= r[4]) & (boxes[:, 2] <= r[5])
        return boxes[keep], scores[keep], label[keep]

    def nms(self, boxes: Tensor, scores: Tensor, labels: Tensor, t: int) -> Tensor:
        if self.nms_type[t] == "circle":
            return circle_nms(boxes[:, :2], scores, self.min_radius[t], self.post_max_size)
        scale = boxes.new_tensor(self.nms_scale[t])[labels]
        bev = torch.stack([boxes[:, 0], boxes[:, 1], boxes[:, 3] * scale, boxes[:, 4] * scale, boxes[:, 6]], 1)
        return rotate_nms(bev, scores, self.nms_thr, self.post_max_size)

    @torch.no_grad()
    def forward(self, output: DetectorOutput, batch: Batch | None = None) -> list[Detections]:
        bsz = output.preds[0]["heatmap"].shape[0]
        dets = []
        for b in range(bsz):
            all_boxes, all_scores, all_labels = [], [], []
            for t, pred in enumerate(output.preds):
                boxes, scores, local = self.decode_task(pred, t, b)
                keep = self.nms(boxes, scores, local, t)
                lut = torch.tensor(self.labels[t], dtype=torch.long, device=boxes.device)
                all_boxes.append(boxes[keep])
                all_scores.append(scores[keep])
                all_labels.append(lut[local[keep]])
            dets.append(Detections(boxes=torch.cat(all_boxes), scores=torch.cat(all_scores), labels=torch.cat(all_labels)))
        return dets


__all__ = [
    "CenterHead",
    "CenterPointCriterion",
    "CenterPointPostProcess",
    "CenterPointTargetAssigner",
    "CenterPointTargets",
    "gaussian_radius",
    "draw_gaussian",
    "draw_heatmaps",
    "gaussian_focal_loss",
    "velocity_huber",
    "regression_code",
    "gather_cells",
    "HEADS",
    "CODE_SIZE",
]
