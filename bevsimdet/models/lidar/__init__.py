"""LiDAR branch: pure-PyTorch dynamic voxelisation + point feature net scattered to a BEV grid.

Points (all sweeps of a sample, ``x, y, z, intensity, time_lag`` in the augmented ego frame) are
assigned to voxels of ``voxel_size`` inside ``point_cloud_range`` (dynamic voxelisation: every
in-range point is kept, no per-voxel cap, no voxel limit). Each point gets PointPillars features
(its 5 values, offsets to its voxel's point mean and to the voxel centre), a Linear-BN-ReLU layer,
and a max over its voxel. Voxels are scattered to a dense ``B x C x Nz x Ny x Nx`` grid whose z
slices are folded into channels; with one z slice (``voxel_size[2]`` = the z range) this is
PointPillars. A ConvBNReLU stack with stride ``downsample`` gives the LiDAR BEV
``B x C_out x Ny' x Nx'``. The time lag channel is what lets the net use multi-sweep motion;
with ``time_bins`` > 1 the points are also split by time lag into that many slices, folded into
channels like the z slices, so that the BEV convolutions see where the object was in each slice
side by side (a moving object's slices are shifted along its velocity) instead of having to
untangle one max-pooled mixture of all sweeps.

:class:`SparseLidarEncoder` (spconv, CUDA only) is an optional alternative; spconv is imported
only when that encoder is built.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from bevsimdet.errors import ConfigError

Range6 = tuple[float, float, float, float, float, float]


def voxel_grid(pc_range: Sequence[float], voxel_size: Sequence[float]) -> tuple[int, int, int]:
    """(Nz, Ny, Nx) of a point-cloud range split into voxels."""
    n = [int(round((pc_range[i + 3] - pc_range[i]) / voxel_size[i])) for i in range(3)]
    return n[2], n[1], n[0]


def time_slice(lag: Tensor, time_bins: int, time_bin_width: float) -> Tensor:
    """Time slice of each point, ``round(lag / time_bin_width)`` clipped to ``[0, time_bins - 1]``
    (slice 0 holds the keyframe), long like ``lag``."""
    return torch.floor(lag / time_bin_width + 0.5).long().clamp(0, time_bins - 1)


def voxelize(points: Sequence[Tensor], pc_range: Sequence[float], voxel_size: Sequence[float], time_bins: int = 1, time_bin_width: float = 0.15) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Dynamic voxelisation of a batch of point clouds.

    Args: ``points`` B tensors P_i x F (x, y, z first; the time lag in channel 4 when
    ``time_bins`` > 1, see :func:`time_slice`).
    Returns ``(pts, batch_idx, voxel_of_point, coords)``: the in-range points P x F (concatenated
    in batch then input order), their sample index P, the index of their voxel P (into ``coords``),
    and ``coords`` V x 4 long ``(b, iz * time_bins + it, iy, ix)`` of the non-empty voxels sorted
    by flat rank (``(b, iz, iy, ix)`` with one time bin).
    """
    nz, ny, nx = voxel_grid(pc_range, voxel_size)
    device = points[0].device if len(points) else torch.device("cpu")
    width = points[0].shape[1] if len(points) else 5
    pts = torch.cat(list(points), 0) if len(points) else torch.zeros(0, width, device=device)
    bidx = torch.cat([torch.full((p.shape[0],), i, dtype=torch.long, device=device) for i, p in enumerate(points)]) if len(points) else torch.zeros(0, dtype=torch.long, device=device)
    lo = pts.new_tensor(pc_range[:3])
    size = pts.new_tensor(voxel_size)
    idx = torch.floor((pts[:, :3] - lo) / size).long()
    ix, iy, iz = idx.unbind(1)
    ok = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny) & (iz >= 0) & (iz < nz)
    pts, bidx, ix, iy, iz = pts[ok], bidx[ok], ix[ok], iy[ok], iz[ok]
    if time_bins > 1:
        iz = iz * time_bins + time_slice(pts[:, 4], time_bins, time_bin_width)
        nz = nz * time_bins
    rank = ((bidx * nz + iz) * ny + iy) * nx + ix
    uniq, inverse = torch.unique(rank, sorted=True, return_inverse=True)
    coords = torch.stack([uniq // (nz * ny * nx), (uniq // (ny * nx)) % nz, (uniq // nx) % ny, uniq % nx], 1)
    return pts, bidx, inverse, coords


def voxelize_reference(points: Sequence[Tensor], pc_range: Sequence[float], voxel_size: Sequence[float], time_bins: int = 1, time_bin_width: float = 0.15) -> dict[tuple[int, int, int, int], list[int]]:
    """Plain reference: ``(b, iz * time_bins + it, iy, ix) -> [indices of the sample's points in it]``."""
    import math

    nz, ny, nx = voxel_grid(pc_range, voxel_size)
    out: dict[tuple[int, int, int, int], list[int]] = {}
    for b, pts in enumerate(points):
        for i, p in enumerate(pts.tolist()):
            ix, iy, iz = (math.floor((p[k] - pc_range[k]) / voxel_size[k]) for k in range(3))
            if 0 <= ix < nx and 0 <= iy < ny and 0 <= iz < nz:
                it = min(max(math.floor(p[4] / time_bin_width + 0.5), 0), time_bins - 1) if time_bins > 1 else 0
                out.setdefault((b, iz * time_bins + it, iy, ix), []).append(i)
    return out


def scatter_mean(values: Tensor, index: Tensor, size: int) -> Tensor:
    """Mean of ``values`` P x F per group ``index`` P -> size x F (empty groups are 0)."""
    total = values.new_zeros(size, values.shape[1]).index_add_(0, index, values)
    count = values.new_zeros(size).index_add_(0, index, torch.ones_like(index, dtype=values.dtype))
    return total / count.clamp(min=1)[:, None]


class PillarFeatureNet(nn.Module):
    """Points -> per-voxel features: PointPillars point features, Linear-BN-ReLU, max per voxel.

    With ``input_norm`` the point features are first standardised channel by channel (a
    BatchNorm without affine parameters). Raw, they span very different scales (intensity
    0..255, x/y +-51 m, a point's height offset in its pillar ~1 m, the time lag 0..0.45 s), so
    the Linear layer first sees intensity and absolute position, and the cues that give heading
    (height profile) and velocity (time lag) are buried until the optimizer has rescaled its
    weights, far longer than a short schedule.
    """

    def __init__(self, in_channels: int, feat_channels: int, pc_range: Sequence[float], voxel_size: Sequence[float], input_norm: bool = False):
        super().__init__()
        self.pc_range = tuple(float(v) for v in pc_range)
        self.voxel_size = tuple(float(v) for v in voxel_size)
        self.input_norm = nn.BatchNorm1d(in_channels + 5, affine=False) if input_norm else None
        self.linear = nn.Linear(in_channels + 5, feat_channels, bias=False)
        self.norm = nn.BatchNorm1d(feat_channels)
        self.out_channels = feat_channels

    def forward(self, pts: Tensor, voxel_of_point: Tensor, coords: Tensor) -> Tensor:
        """P x F points, P voxel indices, V x 4 coords -> V x C."""
        v = coords.shape[0]
        mean = scatter_mean(pts[:, :3], voxel_of_point, v)
        size = pts.new_tensor(self.voxel_size)
        # x/y centre of each voxel (coords[:, 1] may fold a time slice into the z index)
        centre = (coords[:, [3, 2]].to(pts.dtype) + 0.5) * size[:2] + pts.new_tensor(self.pc_range[:2])
        feats = torch.cat([pts, pts[:, :3] - mean[voxel_of_point], pts[:, :2] - centre[voxel_of_point]], 1)
        if self.input_norm is not None:
            feats = self.input_norm(feats)
        x = torch.relu(self.norm(self.linear(feats)))
        out = x.new_full((v, x.shape[1]), float("-inf"))
        out = out.scatter_reduce(0, voxel_of_point[:, None].expand_as(x), x, "amax", include_self=True)
        return out


def bev_conv_stack(cin: int, hidden: int, cout: int, stride: int, num_blocks: int) -> nn.Sequential:
    """Strided 3x3 ConvBNReLU cin -> hidden, ``num_blocks`` 3x3 ConvBNReLU at ``hidden``, and a
    1x1 ConvBNReLU to ``cout`` when it differs (a wide BEV without wide 3x3 convs)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, hidden, 3, stride, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)]
    for _ in range(num_blocks):
        layers += [nn.Conv2d(hidden, hidden, 3, 1, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)]
    if hidden != cout:
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class PillarLidarEncoder(nn.Module):
    """Point clouds (B tensors P_i x F) -> LiDAR BEV B x C_out x Ny/ds x Nx/ds.

    Args:
        pc_range: (xmin, ymin, zmin, xmax, ymax, zmax) in the augmented ego frame.
        voxel_size: (dx, dy, dz); dz = the z range gives pillars.
        in_channels: floats per point; feat_channels: point feature net width.
        out_channels: LiDAR BEV width; hidden_channels: width of the BEV conv stack (default
            ``out_channels``); downsample: its stride; num_blocks: its stride-1 3x3 convs.
        max_points: per-sample point cap (random subset in training, the first points at test); 0: none.
        input_norm: standardise the point features before the point feature net (see
            :class:`PillarFeatureNet`).
        time_bins, time_bin_width: split the points into this many time-lag slices of this
            width (s; slice 0 is the keyframe, the last takes every older point), each its own
            set of channels of the dense grid; 1: all sweeps in one slice.
    """

    def __init__(
        self,
        pc_range: Range6,
        voxel_size: tuple[float, float, float],
        in_channels: int = 5,
        feat_channels: int = 32,
        out_channels: int = 64,
        downsample: int = 1,
        num_blocks: int = 2,
        max_points: int = 0,
        hidden_channels: int | None = None,
        input_norm: bool = False,
        time_bins: int = 1,
        time_bin_width: float = 0.15,
    ):
        super().__init__()
        if time_bins < 1 or time_bin_width <= 0:
            raise ConfigError(f"time_bins {time_bins} / time_bin_width {time_bin_width}: need >= 1 bins of positive width", fix="set model.lidar.time_bins >= 1 and time_bin_width > 0")
        if time_bins > 1 and in_channels < 5:
            raise ConfigError(f"time_bins {time_bins} needs the time lag (point channel 4) but in_channels is {in_channels}", fix="set model.lidar.in_channels: 5 or time_bins: 1")
        self.pc_range = tuple(float(v) for v in pc_range)
        self.voxel_size = tuple(float(v) for v in voxel_size)
        self.nz, self.ny, self.nx = voxel_grid(self.pc_range, self.voxel_size)
        self.time_bins, self.time_bin_width = int(time_bins), float(time_bin_width)
        self.slices = self.nz * self.time_bins  # z slices x time slices, folded into channels
        if self.nx % downsample or self.ny % downsample:
            raise ConfigError(f"LiDAR grid {self.ny} x {self.nx} is not divisible by downsample {downsample}", fix="adjust model.lidar.voxel_size or downsample")
        self.in_channels = in_channels
        self.max_points = max_points
        self.pfn = PillarFeatureNet(in_channels, feat_channels, self.pc_range, self.voxel_size, input_norm)
        self.backbone = bev_conv_stack(feat_channels * self.slices, hidden_channels or out_channels, out_channels, downsample, num_blocks)
        self.out_channels = out_channels
        self.bev_shape = (self.ny // downsample, self.nx // downsample)

    def _subsample(self, points: Sequence[Tensor]) -> list[Tensor]:
        out = []
        for p in points:
            p = p[:, : self.in_channels]
            if self.max_points and p.shape[0] > self.max_points:
                p = p[torch.randperm(p.shape[0], device=p.device)[: self.max_points]] if self.training else p[: self.max_points]
            out.append(p)
        return out

    def forward(self, points: Sequence[Tensor]) -> Tensor:
        b = len(points)
        pts, _, vox, coords = voxelize(self._subsample(points), self.pc_range, self.voxel_size, self.time_bins, self.time_bin_width)
        c = self.pfn.out_channels
        grid = pts.new_zeros(b * self.slices * self.ny * self.nx, c)
        if pts.shape[0] > 1 or not self.training:
            feats = self.pfn(pts.float(), vox, coords)
            rank = ((coords[:, 0] * self.slices + coords[:, 1]) * self.ny + coords[:, 2]) * self.nx + coords[:, 3]
            grid = grid.to(feats.dtype).index_copy(0, rank, feats)  # feats are bf16/fp16 under autocast
        else:
            # no (or one) point in the whole batch: BatchNorm cannot train on it; keep every
            # parameter in the graph so the step (and DDP) still sees zero gradients
            grid = grid + 0.0 * sum(p.sum() for p in self.pfn.parameters())
        dense = grid.view(b, self.slices, self.ny, self.nx, c).permute(0, 1, 4, 2, 3).reshape(b, self.slices * c, self.ny, self.nx)
        return self.backbone(dense)


__all__ = ["PillarLidarEncoder", "PillarFeatureNet", "time_slice", "voxelize", "voxelize_reference", "voxel_grid", "scatter_mean"]
