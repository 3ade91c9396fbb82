"""Lift-Splat-Shoot view transform: image features -> camera BEV, with vectorised BEV pooling.

Every image-feature cell ``(i, j)`` of every camera is lifted to ``D`` frustum points, one per
depth bin (bin ``k`` covers ``[dmin + k step, dmin + (k + 1) step)``; its point sits at the bin
centre). A frustum point's augmented pixel ``(u, v)`` is the centre of its feature cell (pixel
centres at integer coordinates, as in :mod:`bevsimdet.data.transforms`). Geometry, per camera::

    (u, v) --img_aug^-1--> original pixel --K^-1--> ray (z = 1) --x depth--> camera point
           --cam2ego--> ego --bev_aug--> augmented ego --grid--> BEV cell (ix, iy, iz)

The depth net predicts a softmax over the ``D`` bins and ``C`` context channels per cell; each
frustum point carries ``depth[k] * context`` and :func:`bev_pool` sums the points of every BEV
cell (``index_add_`` on a precomputed flat cell rank; points outside the grid are dropped). The
z slices are concatenated into channels and a ConvBNReLU block with stride ``downsample``
produces the camera BEV ``B x C x Ny x Nx`` (row = y, column = x).

The per-point cell ranks depend only on the camera matrices, so they are cached and reused as
long as the batch's matrices are unchanged (a fixed rig at test time).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bevsimdet.data.batch import Batch
from bevsimdet.errors import ConfigError


GROUND_PRIOR_FLOOR = 1e-2  # log floor of the ground prior: a bin far from the ground hit gets log(0.01)


def grid_size(bound: tuple[float, float, float]) -> int:
    lo, hi, step = bound
    return int(round((hi - lo) / step))


def bev_pool(feats: Tensor, ranks: Tensor, num_cells: int) -> Tensor:
    """Sum point features into cells: P x C features, P flat cell ranks in [0, num_cells) ->
    num_cells x C. Vectorised with ``index_add_`` (its gradient is a gather)."""
    out = feats.new_zeros(num_cells, feats.shape[1])
    return out.index_add_(0, ranks, feats)


def bev_pool_reference(feats: Tensor, ranks: Tensor, num_cells: int) -> Tensor:
    """Plain-loop reference of :func:`bev_pool` (differentiable, one point at a time)."""
    cells = [feats.new_zeros(feats.shape[1]) for _ in range(num_cells)]
    for p in range(feats.shape[0]):
        r = int(ranks[p])
        cells[r] = cells[r] + feats[p]
    return torch.stack(cells) if cells else feats.new_zeros(0, feats.shape[1])


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


def scale_grad(x: Tensor, scale: float) -> Tensor:
    """Identity forward; the gradient flowing back through it is multiplied by ``scale``."""
    if scale == 1.0:
        return x
    if scale == 0.0:
        return x.detach()
    return _ScaleGrad.apply(x, scale)


class SplitDepthNet(nn.Module):
    """(B*N) x C_in x h x w -> (B*N) x (D + C) x h x w from two branches, each a 3x3 ConvBNReLU
    then a 1x1 conv: depth logits (D) and context (C). ``input_grad_scale`` scales the gradient
    the depth branch sends back into the shared image features (0: the depth branch learns on top
    of them without reshaping them; a depth loss then cannot pull the features away from what the
    detection needs)."""

    def __init__(self, in_channels: int, hidden: int, num_bins: int, out_channels: int, input_grad_scale: float = 1.0):
        super().__init__()
        self.input_grad_scale = float(input_grad_scale)

        def branch(cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True), nn.Conv2d(hidden, cout, 1))

        self.depth = branch(num_bins)
        self.context = branch(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.depth(scale_grad(x, self.input_grad_scale)), self.context(x)], 1)


class LSSTransform(nn.Module):
    """Image features (B*N) x C_in x h x w -> (camera BEV B x C x Ny x Nx, depth (B*N) x D x h x w).

    Args:
        in_channels: C_in of the image features; out_channels: C of the BEV.
        image_size: (H, W) of the augmented images; feature_stride: H / h.
        xbound, ybound, zbound: (min, max, cell) of the pooling grid in the augmented ego frame.
        dbound: (min, max, step) of the depth bins (metres along the camera's z axis).
        depth_net: ``conv1x1`` (BEVFusion-C), ``conv3x3`` (a 3x3 ConvBNReLU before the 1x1) or
            ``split`` (separate 3x3 ConvBNReLU branches for depth and context, as BEVDepth's
            DepthNet: a depth loss then shapes its own branch, not the context features).
        downsample: stride of the BEV conv block after pooling (BEVFusion: 2).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        image_size: tuple[int, int],
        feature_stride: int,
        xbound: tuple[float, float, float],
        ybound: tuple[float, float, float],
        zbound: tuple[float, float, float],
        dbound: tuple[float, float, float],
        depth_net: str = "conv1x1",
        downsample: int = 1,
        camera_aware: bool = False,
        ground_prior: float = 0.0,
        oracle_depth: bool = False,
        depth_grad_scale: float = 1.0,
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.feature_stride = feature_stride
        if self.image_size[0] % feature_stride or self.image_size[1] % feature_stride:
            raise ConfigError(f"image size {self.image_size} is not a multiple of the feature stride {feature_stride}", fix="set data.image_size / model.camera.image_size to multiples of 8")
        self.feature_shape = (self.image_size[0] // feature_stride, self.image_size[1] // feature_stride)
        self.xbound, self.ybound, self.zbound, self.dbound = (tuple(float(v) for v in b) for b in (xbound, ybound, zbound, dbound))
        self.nx, self.ny, self.nz = grid_size(self.xbound), grid_size(self.ybound), grid_size(self.zbound)
        self.num_bins = grid_size(self.dbound)
        if self.nx % downsample or self.ny % downsample:
            raise ConfigError(f"LSS grid {self.ny} x {self.nx} is not divisible by downsample {downsample}", fix="adjust model.camera.xbound/ybound or downsample")
        self.downsample = downsample
        self.bev_shape = (self.ny // downsample, self.nx // downsample)
        c = out_channels
        self.camera_aware = bool(camera_aware)
        self.oracle_depth = bool(oracle_depth)
        if depth_grad_scale != 1.0 and depth_net != "split":
            raise ConfigError("model.camera.depth_grad_scale needs depth_net: split (the other depth nets share one layer)", fix="set depth_net: split or depth_grad_scale: 1.0")
        if ground_prior and not self.camera_aware:
            raise ConfigError("model.camera.ground_prior needs model.camera.camera_aware: true", fix="set camera_aware: true or ground_prior: 0")
        # learned weight of the log ground prior added to the depth logits (None: no prior)
        self.prior_weight = nn.Parameter(torch.tensor(float(ground_prior))) if ground_prior else None
        cin = in_channels + (self.num_geometry_channels if self.camera_aware else 0)
        if depth_net == "conv1x1":
            self.depthnet: nn.Module = nn.Conv2d(cin, self.num_bins + c, 1)
        elif depth_net == "conv3x3":
            self.depthnet = nn.Sequential(
                nn.Conv2d(cin, in_channels, 3, padding=1, bias=False), nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
                nn.Conv2d(in_channels, self.num_bins + c, 1),
            )
        elif depth_net == "split":
            self.depthnet = SplitDepthNet(cin, in_channels, self.num_bins, c, depth_grad_scale)
        else:
            raise ConfigError(f"unknown depth net '{depth_net}'", fix="use conv1x1, conv3x3 or split")
        pooled = c * self.nz
        if downsample > 1:
            self.bev_out: nn.Module = nn.Sequential(
                nn.Conv2d(pooled, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, stride=downsample, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
            )
        elif pooled != c:
            self.bev_out = nn.Sequential(nn.Conv2d(pooled, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        else:
            self.bev_out = nn.Identity()
        self.register_buffer("frustum", self._frustum(), persistent=False)
        self._cache: tuple[tuple[Tensor, ...], Tensor, Tensor] | None = None
        self._geo_cache: tuple[tuple[Tensor, ...], Tensor] | None = None

    # ------------------------------------------------------------------------------------------
    # geometry

    @property
    def bev_range(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) covered by the BEV output."""
        return (self.xbound[0], self.ybound[0], self.xbound[1], self.ybound[1])

    def _frustum(self) -> Tensor:
        """D x h x w x 3: (u, v) augmented pixel of the feature cell centre, d the bin centre."""
        h, w = self.feature_shape
        s = self.feature_stride
        dmin, _, step = self.dbound
        d = dmin + (torch.arange(self.num_bins, dtype=torch.float32) + 0.5) * step
        v = torch.arange(h, dtype=torch.float32) * s + (s - 1) / 2
        u = torch.arange(w, dtype=torch.float32) * s + (s - 1) / 2
        dd, vv, uu = torch.meshgrid(d, v, u, indexing="ij")
        return torch.stack([uu, vv, dd], -1)

    def geometry(self, intrinsics: Tensor, cam2ego: Tensor, img_aug: Tensor, bev_aug: Tensor) -> Tensor:
        """Frustum points in the augmented ego frame: B x N x D x h x w x 3.

        Args: intrinsics B x N x 3 x 3, cam2ego B x N x 4 x 4, img_aug B x N x 3 x 3, bev_aug B x 4 x 4.
        """
        dt = torch.float64  # small matrices: invert in double, apply in the frustum's dtype
        pix2ray = torch.linalg.inv(intrinsics.to(dt)) @ torch.linalg.inv(img_aug.to(dt))  # B x N x 3 x 3
        cam2aug = bev_aug.to(dt)[:, None] @ cam2ego.to(dt)  # B x N x 4 x 4
        uv1 = torch.cat([self.frustum[0, ..., :2], torch.ones_like(self.frustum[0, ..., :1])], -1)  # h x w x 3
        ray = torch.einsum("bnij,hwj->bnhwi", pix2ray.float(), uv1)
        ray = ray / ray[..., 2:3]  # the undo of a rotation/flip is affine, but stay exact for any homography
        rot = torch.einsum("bnij,bnhwj->bnhwi", cam2aug[..., :3, :3].float(), ray)  # ego direction per unit depth
        depth = self.frustum[:, 0, 0, 2]  # D
        return depth[None, None, :, None, None, None] * rot[:, :, None] + cam2aug[..., :3, 3].float()[:, :, None, None, None, :]

    @property
    def num_geometry_channels(self) -> int:
        """Channels of :meth:`depth_geometry`: the ray direction (3) + the ground prior (D)."""
        return 3 + self.num_bins

    def depth_geometry(self, batch: Batch) -> Tensor:
        """(B*N) x (3 + D) x h x w camera geometry of every image-feature cell, for a camera-aware
        depth net (cached per camera setup, like :meth:`pool_indices`).

        * the unit direction of the cell's ray in the (un-augmented) ego frame: its elevation is
          what ties an image row to a distance on flat ground, and a CNN cannot see a cell's
          absolute position or the camera's pose (image resize/rotation moves the horizon);
        * a ground prior over the D depth bins: a Gaussian (sigma = one bin) around the depth at
          which the ray meets the ground plane z = 0 of the ego frame, zero for rays that point
          above the horizon. On flat ground this is the depth of every object's foot point.

        Pure geometry from the camera matrices (no LiDAR), so camera-only models may use it.
        """
        key = (batch.intrinsics, batch.cam2ego, batch.img_aug)
        if self._geo_cache is not None and _same(self._geo_cache[0], key):
            return self._geo_cache[1]
        with torch.autocast(batch.images.device.type, enabled=False):
            dt = torch.float64
            pix2ray = torch.linalg.inv(batch.intrinsics.to(dt)) @ torch.linalg.inv(batch.img_aug.to(dt))  # B x N x 3 x 3
            uv1 = torch.cat([self.frustum[0, ..., :2], torch.ones_like(self.frustum[0, ..., :1])], -1).to(dt)  # h x w x 3
            ray = torch.einsum("bnij,hwj->bnhwi", pix2ray, uv1)
            ray = ray / ray[..., 2:3]  # camera-z depth 1
            ego = torch.einsum("bnij,bnhwj->bnhwi", batch.cam2ego.to(dt)[..., :3, :3], ray)  # ego direction per unit depth
            height = batch.cam2ego.to(dt)[..., 2, 3][:, :, None, None]  # B x N x 1 x 1
            down = ego[..., 2] < -1e-6
            ground = torch.where(down, height / (-ego[..., 2]).clamp(min=1e-6), torch.zeros_like(height.expand_as(down)))
            dmin, _, step = self.dbound
            centres = dmin + (torch.arange(self.num_bins, dtype=dt, device=ray.device) + 0.5) * step
            prior = torch.exp(-0.5 * ((ground[..., None] - centres) / step).square()) * down[..., None]  # B x N x h x w x D
            direction = ego / ego.norm(dim=-1, keepdim=True)
            geo = torch.cat([direction, prior], -1).permute(0, 1, 4, 2, 3).flatten(0, 1).float().contiguous()
        self._geo_cache = (tuple(t.clone() for t in key), geo)
        return geo

    def pool_indices(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """(kept, ranks): flat indices into the (B*N*D*h*w) frustum points that fall in the grid,
        and their flat cell ranks ``((b * nz + iz) * ny + iy) * nx + ix``. Cached per camera setup."""
        key = (batch.intrinsics, batch.cam2ego, batch.img_aug, batch.bev_aug)
        if self._cache is not None and _same(self._cache[0], key):
            return self._cache[1], self._cache[2]
        with torch.autocast(batch.images.device.type, enabled=False):  # metres need float32
            geom = self.geometry(*(t.float() for t in key))
        b = geom.shape[0]
        lo = geom.new_tensor([self.xbound[0], self.ybound[0], self.zbound[0]])
        cell = geom.new_tensor([self.xbound[2], self.ybound[2], self.zbound[2]])
        idx = torch.floor((geom - lo) / cell).long().view(b, -1, 3)
        ix, iy, iz = idx.unbind(-1)
        ok = (ix >= 0) & (ix < self.nx) & (iy >= 0) & (iy < self.ny) & (iz >= 0) & (iz < self.nz)
        bidx = torch.arange(b, device=geom.device)[:, None].expand_as(ix)
        ranks = ((bidx * self.nz + iz) * self.ny + iy) * self.nx + ix
        kept = torch.nonzero(ok.reshape(-1)).squeeze(1)
        ranks = ranks.reshape(-1)[kept]
        self._cache = (tuple(t.clone() for t in key), kept, ranks)
        return kept, ranks

    # ------------------------------------------------------------------------------------------

    def forward(self, img_feats: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
        bn, _, h, w = img_feats.shape
        if (h, w) != self.feature_shape:
            raise ConfigError(
                f"image features are {h} x {w} but the view transform was built for {self.feature_shape} "
                f"(images {self.image_size})", fix="make model.camera.image_size equal data.image_size",
            )
        b = batch.batch_size
        net_in = img_feats
        if self.camera_aware:
            geo = self.depth_geometry(batch)
            net_in = torch.cat([img_feats, geo.to(img_feats.dtype)], 1)
        x = self.depthnet(net_in)
        logits = x[:, : self.num_bins]
        if self.prior_weight is not None:
            # start from "everything stands on the ground": log of the ground prior (floored, so
            # rays above the horizon get a flat prior) scaled by a learned weight
            logits = logits + self.prior_weight * torch.log(geo[:, 3:] + GROUND_PRIOR_FLOOR).to(logits.dtype)
        depth = logits.softmax(1)  # (B*N) x D x h x w
        context = x[:, self.num_bins :]  # (B*N) x C x h x w
        if self.oracle_depth:
            depth = self.oracle(batch).to(depth.dtype)
        kept, ranks = self.pool_indices(batch)
        c = self.out_channels
        # only the kept frustum points are materialised: depth weight x the context of their pixel
        hw = h * w
        pixel = (kept // (self.num_bins * hw)) * hw + kept % hw
        # summed in float32 (under autocast, half precision would lose small contributions)
        feats = context.permute(0, 2, 3, 1).reshape(-1, c)[pixel].float() * depth.reshape(-1)[kept, None].float()
        pooled = bev_pool(feats, ranks, b * self.nz * self.ny * self.nx)
        bev = pooled.view(b, self.nz, self.ny, self.nx, c).permute(0, 1, 4, 2, 3).reshape(b, self.nz * c, self.ny, self.nx)
        return self.bev_out(bev.to(context.dtype)), depth

    def oracle(self, batch: Batch) -> Tensor:
        """(B*N) x D x h x w one-hot LiDAR depth: the bin of the nearest keyframe return in each
        feature cell, all zeros where no return falls (a cell with no LiDAR lifts nothing).

        A diagnostic only (``model.camera.oracle_depth``): the ceiling of camera geometry. It reads
        ``batch.points`` at training *and* test time, so the model is no longer camera-only."""
        if batch.points is None:
            raise ConfigError("model.camera.oracle_depth needs LiDAR points in every batch (it is a diagnostic, not a camera-only model)",
                              fix="set data.load_points: true, or turn oracle_depth off")
        bins = self.depth_targets(batch).to(batch.images.device)
        onehot = torch.nn.functional.one_hot(bins.clamp(min=0), self.num_bins) * (bins >= 0)[..., None]
        return onehot.permute(0, 3, 1, 2).float()

    def depth_targets(self, batch: Batch) -> Tensor:
        """(B*N) x h x w long: the depth bin of the nearest keyframe LiDAR return in each feature
        cell, -1 where there is none (BEVDepth-style supervision; needs ``batch.points``)."""
        from bevsimdet.models.depth import lidar_depth_bins

        return lidar_depth_bins(batch, self.feature_shape, self.dbound)


def _same(a: tuple[Tensor, ...], b: tuple[Tensor, ...]) -> bool:
    return all(x.shape == y.shape and x.device == y.device and torch.equal(x, y) for x, y in zip(a, b))


__all__ = ["LSSTransform", "SplitDepthNet", "bev_pool", "bev_pool_reference", "grid_size"]
