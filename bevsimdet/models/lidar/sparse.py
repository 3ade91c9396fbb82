"""Optional sparse-convolution LiDAR encoder (BEVFusion's SparseEncoder layout), CUDA only.

Importing this module imports spconv; :func:`bevsimdet.models.build.build_lidar_encoder` does
so only when a config asks for ``model.lidar.encoder: sparse``. spconv's CPU backward does not
work, so the encoder refuses to build without CUDA. Untested in CI (no spconv, no GPU there).

Points -> dynamic voxels (mean of their points' features) -> SubM/strided sparse 3D convs with
x/y stride 8 -> dense ``B x 128 x Nz' x Ny/8 x Nx/8`` -> z folded into channels -> 1x1 ConvBNReLU
to ``out_channels``. With BEVFusion's 0.075 m voxels over +-54 m this gives 180 x 180.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from bevsimdet.errors import ConfigError
from bevsimdet.models.lidar import scatter_mean, voxel_grid, voxelize

try:
    import spconv.pytorch as spconv
except ImportError:  # pragma: no cover - depends on the environment
    spconv = None


def _subm(cin: int, cout: int, key: str):
    return spconv.SparseSequential(spconv.SubMConv3d(cin, cout, 3, padding=1, bias=False, indice_key=key), nn.BatchNorm1d(cout), nn.ReLU(inplace=True))


def _down(cin: int, cout: int, padding, key: str):
    return spconv.SparseSequential(spconv.SparseConv3d(cin, cout, 3, stride=2, padding=padding, bias=False, indice_key=key), nn.BatchNorm1d(cout), nn.ReLU(inplace=True))


class SparseLidarEncoder(nn.Module):
    """Point clouds (B tensors P_i x F) -> LiDAR BEV B x out_channels x Ny/8 x Nx/8."""

    def __init__(self, pc_range: Sequence[float], voxel_size: Sequence[float], in_channels: int = 5, out_channels: int = 256):
        super().__init__()
        if spconv is None:
            raise ConfigError("model.lidar.encoder 'sparse' needs spconv (e.g. spconv-cu120)", fix="install spconv or use encoder: pillar")
        if not torch.cuda.is_available():
            raise ConfigError("model.lidar.encoder 'sparse' runs on CUDA only (spconv's CPU backward fails)", fix="use encoder: pillar on CPU")
        self.pc_range = tuple(float(v) for v in pc_range)
        self.voxel_size = tuple(float(v) for v in voxel_size)
        self.in_channels = in_channels
        nz, ny, nx = voxel_grid(self.pc_range, self.voxel_size)
        self.spatial_shape = [nz + 1, ny, nx]  # one spare z slice, as BEVFusion's 41 for 40
        self.net = spconv.SparseSequential(
            _subm(in_channels, 16, "subm1"), _subm(16, 16, "subm1"),
            _down(16, 32, 1, "down2"), _subm(32, 32, "subm2"), _subm(32, 32, "subm2"),
            _down(32, 64, 1, "down3"), _subm(64, 64, "subm3"), _subm(64, 64, "subm3"),
            _down(64, 128, (0, 1, 1), "down4"), _subm(128, 128, "subm4"),
            spconv.SparseSequential(spconv.SparseConv3d(128, 128, (3, 1, 1), stride=(2, 1, 1), bias=False), nn.BatchNorm1d(128), nn.ReLU(inplace=True)),
        )
        z = self.spatial_shape[0]
        for pad in (1, 1, 0):
            z = (z + 2 * pad - 3) // 2 + 1
        z = (z - 3) // 2 + 1
        self.out = nn.Sequential(nn.Conv2d(128 * z, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))
        self.out_channels = out_channels

    def forward(self, points: Sequence[Tensor]) -> Tensor:
        pts, _, vox, coords = voxelize([p[:, : self.in_channels] for p in points], self.pc_range, self.voxel_size)
        feats = scatter_mean(pts.float(), vox, coords.shape[0])
        x = spconv.SparseConvTensor(feats, coords.int(), self.spatial_shape, len(points))
        dense = self.net(x).dense()  # B x C x Z x Y x X
        b, c, z, h, w = dense.shape
        return self.out(dense.reshape(b, c * z, h, w))


__all__ = ["SparseLidarEncoder"]
