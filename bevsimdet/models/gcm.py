"""Geometry Compensation Module (GCM): residual deformable self-attention on a 2D feature map.

One block is ``x + Attn(query = x + pos, value = x)`` where ``Attn`` is single-level, multi-head
deformable attention (Deformable-DETR): every cell attends to ``num_points`` bilinear samples per
head around its own reference point, at offsets and with weights predicted from its query. There is
no LayerNorm or FFN (as in the released SimDistill block). The student applies one on the
simulated-LiDAR BEV map and optionally one on the image features before that branch's depth net.

Conventions: reference points are cell *centres* ``((ix + 0.5) / W, (iy + 0.5) / H)`` in [0, 1]
(the released code truncates them to cell corners; we do not), and sampling uses
``F.grid_sample(..., align_corners=False)``, for which normalised coordinate ``2 u - 1`` with
``u = (ix + 0.5) / W`` hits the centre of column ``ix`` exactly. Samples outside the map read zeros.

Everything is plain PyTorch (linear layers, softmax, ``grid_sample``), so it runs on any device
and exports to ONNX (opset >= 16 for ``grid_sample``). :func:`deform_attn_reference` is a
loop-by-loop reference of the same computation used by the equivalence tests.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DeformableSelfAttention2d(nn.Module):
    """Single-level multi-head deformable self-attention over a fixed-size ``H x W`` map.

    Args:
        channels: feature width C (divisible by ``num_heads``; even, for the positional embedding).
        height, width: the map size the learned positional embedding is built for.
        num_heads: attention heads; each reads ``C / num_heads`` channels.
        num_points: sampling points per head and query.
    """

    def __init__(self, channels: int, height: int, width: int, num_heads: int = 8, num_points: int = 4):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
        if channels % 2:
            raise ValueError(f"channels ({channels}) must be even (row/column embeddings are C/2 each)")
        self.channels, self.height, self.width = channels, height, width
        self.num_heads, self.num_points = num_heads, num_points
        self.row_embed = nn.Embedding(height, channels // 2)
        self.col_embed = nn.Embedding(width, channels // 2)
        self.sampling_offsets = nn.Linear(channels, num_heads * num_points * 2)
        self.attention_weights = nn.Linear(channels, num_heads * num_points)
        self.value_proj = nn.Linear(channels, channels)
        self.output_proj = nn.Linear(channels, channels)
        # constants of the fixed map size; non-persistent so they never enter checkpoints
        self.register_buffer("ref_points", self._cell_centres(height, width), persistent=False)
        self.register_buffer("cell_scale", torch.tensor([float(width), float(height)]), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable-DETR initialisation: at start every head samples along its own direction
        at radii 1..P cells with uniform weights, so the block starts as a smooth local filter."""
        nn.init.uniform_(self.row_embed.weight)
        nn.init.uniform_(self.col_embed.weight)
        nn.init.zeros_(self.sampling_offsets.weight)
        theta = torch.arange(self.num_heads, dtype=torch.float64) * (2.0 * math.pi / self.num_heads)
        direction = torch.stack([theta.cos(), theta.sin()], -1)
        direction = direction / direction.abs().amax(-1, keepdim=True)
        radii = torch.arange(1, self.num_points + 1, dtype=torch.float64)
        bias = direction[:, None, :] * radii[None, :, None]  # heads x points x 2
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(bias.reshape(-1).float())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def positional_embedding(self) -> Tensor:
        """C x H x W: column embedding in the first C/2 channels, row embedding in the rest."""
        c2 = self.channels // 2
        col = self.col_embed.weight.t()[:, None, :].expand(c2, self.height, self.width)
        row = self.row_embed.weight.t()[:, :, None].expand(c2, self.height, self.width)
        return torch.cat([col, row], 0)

    @staticmethod
    def _cell_centres(height: int, width: int) -> Tensor:
        """(H*W) x 2 normalised (x, y) cell centres, row-major."""
        ys = (torch.arange(height, dtype=torch.float32) + 0.5) / height
        xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)

    def sampling(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """What both the fast path and the reference need.

        Returns ``value`` B x heads x C/heads x H x W, ``locations`` B x (H*W) x heads x P x 2
        (normalised x, y in [0, 1] before clipping) and ``weights`` B x (H*W) x heads x P.
        """
        b, c, h, w = x.shape
        if not torch.jit.is_tracing() and (h, w, c) != (self.height, self.width, self.channels):
            raise ValueError(f"expected B x {self.channels} x {self.height} x {self.width}, got {tuple(x.shape)}")
        src = x.flatten(2).transpose(1, 2)  # B x HW x C
        query = src + self.positional_embedding().flatten(1).t()[None]
        value = self.value_proj(src).transpose(1, 2).reshape(b, self.num_heads, c // self.num_heads, h, w)
        offsets = self.sampling_offsets(query).view(b, h * w, self.num_heads, self.num_points, 2)
        locations = self.ref_points[None, :, None, None, :] + offsets / self.cell_scale
        weights = self.attention_weights(query).view(b, h * w, self.num_heads, self.num_points).softmax(-1)
        return value, locations, weights

    def forward(self, x: Tensor) -> Tensor:
        """B x C x H x W -> B x C x H x W (the attention output, without the residual)."""
        b, c, h, w = x.shape
        value, locations, weights = self.sampling(x)
        heads, points = self.num_heads, self.num_points
        grid = (2.0 * locations - 1.0).permute(0, 2, 1, 3, 4).reshape(b * heads, h * w, points, 2)
        sampled = F.grid_sample(
            value.reshape(b * heads, c // heads, h, w), grid.to(value.dtype),
            mode="bilinear", padding_mode="zeros", align_corners=False,
        )  # (B*heads) x C/heads x HW x P
        attn = weights.permute(0, 2, 1, 3).reshape(b * heads, 1, h * w, points).to(sampled.dtype)
        out = (sampled * attn).sum(-1).view(b, c, h * w).transpose(1, 2)  # B x HW x C
        return self.output_proj(out).transpose(1, 2).reshape(b, c, h, w)


def _bilinear_zero_pad(img: Tensor, u: float, v: float) -> Tensor:
    """Sample C x H x W at normalised (u, v) like grid_sample(align_corners=False, zeros)."""
    _, h, w = img.shape
    px, py = u * w - 0.5, v * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = img.new_zeros(img.shape[0])
    for yy in (y0, y0 + 1):
        for xx in (x0, x0 + 1):
            if 0 <= xx < w and 0 <= yy < h:
                out = out + img[:, yy, xx] * (1.0 - abs(px - xx)) * (1.0 - abs(py - yy))
    return out


@torch.no_grad()
def deform_attn_reference(module: DeformableSelfAttention2d, x: Tensor) -> Tensor:
    """Loop reference of ``module(x)``: each query, head and point sampled one at a time."""
    b, c, h, w = x.shape
    value, locations, weights = module.sampling(x)
    out = x.new_zeros(b, h * w, c)
    dh = c // module.num_heads
    for bi in range(b):
        for q in range(h * w):
            for head in range(module.num_heads):
                acc = x.new_zeros(dh)
                for p in range(module.num_points):
                    u, v = locations[bi, q, head, p].tolist()
                    acc = acc + weights[bi, q, head, p] * _bilinear_zero_pad(value[bi, head], u, v)
                out[bi, q, head * dh:(head + 1) * dh] = acc
    return module.output_proj(out).transpose(1, 2).reshape(b, c, h, w)


class GCM(nn.Module):
    """Residual deformable self-attention block: ``x + DeformableSelfAttention2d(x)``.

    B x C x H x W -> B x C x H x W, with H x W fixed at construction (learned positions).
    """

    def __init__(self, channels: int, height: int, width: int, num_heads: int = 8, num_points: int = 4):
        super().__init__()
        self.attn = DeformableSelfAttention2d(channels, height, width, num_heads, num_points)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.attn(x)


__all__ = ["GCM", "DeformableSelfAttention2d", "deform_attn_reference"]
