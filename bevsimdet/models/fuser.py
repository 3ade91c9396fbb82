"""ConvFuser (BEVFusion): concatenate BEV maps along channels, then Conv3x3-BN-ReLU."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn


class ConvFuser(nn.Module):
    """``[B x C_i x Ny x Nx]`` (same grid) -> B x out_channels x Ny x Nx.

    Args: in_channels: the C_i in input order (teacher: [camera, lidar]); out_channels.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int):
        super().__init__()
        self.in_channels = [int(c) for c in in_channels]
        self.out_channels = out_channels
        self.net = nn.Sequential(
            nn.Conv2d(sum(self.in_channels), out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        widths = [int(f.shape[1]) for f in feats]
        if widths != self.in_channels:
            raise ValueError(f"ConvFuser expects channels {self.in_channels}, got {widths}")
        shapes = {tuple(int(s) for s in f.shape[-2:]) for f in feats}  # ints: under ONNX tracing shapes are tensors
        if len(shapes) != 1:
            raise ValueError(f"ConvFuser inputs must share one BEV grid, got {sorted(shapes)}")
        return self.net(torch.cat(list(feats), 1))


__all__ = ["ConvFuser"]
