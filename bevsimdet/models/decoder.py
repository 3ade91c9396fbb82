"""BEV decoders: GeneralizedResNet + LSSFPN (BEVFusion camera-only) and SECOND + SECONDFPN.

Both map B x C_in x Ny x Nx to B x C_out x Ny x Nx (the head runs at the input resolution).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bevsimdet.models.image import BasicBlock, conv_bn_relu


class _StageBackbone(nn.Module):
    """Sequential stages whose every output is kept; ``strides`` are cumulative."""

    stages: nn.ModuleList

    @staticmethod
    def cumulative(strides) -> list[int]:
        out, acc = [], 1
        for s in strides:
            acc *= int(s)
            out.append(acc)
        return out

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs


class GeneralizedResNet(_StageBackbone):
    """Stages of BasicBlocks, ``blocks`` = [[num_blocks, channels, stride], ...]; returns every
    stage's output."""

    def __init__(self, in_channels: int, blocks: Sequence[Sequence[int]]):
        super().__init__()
        self.stages = nn.ModuleList()
        cin = in_channels
        for num, width, stride in blocks:
            layers = [BasicBlock(cin, width, stride)] + [BasicBlock(width, width, 1) for _ in range(num - 1)]
            self.stages.append(nn.Sequential(*layers))
            cin = width
        self.out_channels = [int(b[1]) for b in blocks]
        self.strides = self.cumulative(b[2] for b in blocks)


class LSSFPN(nn.Module):
    """Upsample the last stage to the first stage's size, concat, 1x1 + 3x3 ConvBNReLU, then
    upsample by ``scale`` (the first stage's stride) back to the decoder's input resolution."""

    def __init__(self, in_channels: Sequence[int], out_channels: int, scale: int):
        super().__init__()
        self.fuse = nn.Sequential(conv_bn_relu(in_channels[0] + in_channels[-1], out_channels, 1), conv_bn_relu(out_channels, out_channels, 3))
        self.scale = scale
        self.up = conv_bn_relu(out_channels, out_channels, 3) if scale > 1 else nn.Identity()

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        first, last = feats[0], feats[-1]
        last = F.interpolate(last, size=first.shape[-2:], mode="bilinear", align_corners=True)
        x = self.fuse(torch.cat([last, first], 1))
        if self.scale > 1:
            x = self.up(F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=True))
        return x


class SECOND(_StageBackbone):
    """SECOND BEV backbone: per stage a strided ConvBNReLU then ``layer_nums[i]`` 3x3 ConvBNReLU."""

    def __init__(self, in_channels: int, channels: Sequence[int], layer_nums: Sequence[int], strides: Sequence[int]):
        super().__init__()
        self.stages = nn.ModuleList()
        cin = in_channels
        for cout, n, s in zip(channels, layer_nums, strides):
            layers = [conv_bn_relu(cin, cout, 3, s)] + [conv_bn_relu(cout, cout, 3) for _ in range(n)]
            self.stages.append(nn.Sequential(*layers))
            cin = cout
        self.out_channels = list(channels)
        self.strides = self.cumulative(strides)


class SECONDFPN(nn.Module):
    """Bring every stage back to the input resolution (deconv by its stride) and concat."""

    def __init__(self, in_channels: Sequence[int], out_channels: Sequence[int], strides: Sequence[int]):
        super().__init__()
        ups = []
        for cin, cout, s in zip(in_channels, out_channels, strides):
            conv = nn.ConvTranspose2d(cin, cout, s, s, bias=False) if s > 1 else nn.Conv2d(cin, cout, 1, bias=False)
            ups.append(nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True)))
        self.ups = nn.ModuleList(ups)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        return torch.cat([up(f) for up, f in zip(self.ups, feats)], 1)


class BEVDecoder(nn.Module):
    """Backbone + neck on the fused BEV: B x C_in x Ny x Nx -> B x ``out_channels`` x Ny x Nx."""

    def __init__(self, backbone: nn.Module, neck: nn.Module, out_channels: int):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.neck(self.backbone(x))


def generalized_resnet_decoder(in_channels: int, blocks: Sequence[Sequence[int]], out_channels: int) -> BEVDecoder:
    backbone = GeneralizedResNet(in_channels, blocks)
    return BEVDecoder(backbone, LSSFPN(backbone.out_channels, out_channels, backbone.strides[0]), out_channels)


def second_decoder(in_channels: int, channels: Sequence[int], layer_nums: Sequence[int], strides: Sequence[int], upsample_channels: Sequence[int]) -> BEVDecoder:
    backbone = SECOND(in_channels, channels, layer_nums, strides)
    return BEVDecoder(backbone, SECONDFPN(channels, upsample_channels, backbone.strides), sum(upsample_channels))


__all__ = ["BEVDecoder", "GeneralizedResNet", "LSSFPN", "SECOND", "SECONDFPN", "generalized_resnet_decoder", "second_decoder"]
