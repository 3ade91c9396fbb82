"""The one ray-casting engine behind both the cameras and the LiDAR.

The world is the ground plane ``z = 0`` plus upright boxes (yaw-only cuboids, "primitives"). Boxes
are grouped: a group is one object (the parts of a car, a tree) or one piece of clutter. A sensor
casts a *grid* of rays from one origin (pixels of a camera, beam x azimuth cells of a spinning LiDAR).
Instead of testing every ray against every box, each group is first bounded by a rectangle of grid
cells (the screen-space box of its bounding cuboid for a pinhole camera, its azimuth/elevation extent
for the LiDAR); only the rays in that rectangle are slab-tested against the group's parts, and a
depth buffer keeps the first hit. :func:`cast_reference` is the plain all-rays x all-boxes version.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEAR = 1e-3  # rays start just off their origin: a sensor inside a box does not see that box


@dataclass
class Prims:
    """P upright boxes in world coordinates, grouped into G contiguous groups.

    ``center`` P x 3 box centres; ``half`` P x 3 half extents along the box's own (length, width,
    height) axes; ``yaw`` P heading of the length axis; ``group_start`` G + 1 offsets (group g owns
    prims ``group_start[g]:group_start[g + 1]``); ``group_box`` G x 7 bounding cuboid of each group
    (cx, cy, cz, half_l, half_w, half_h, yaw) used only to bound the rays worth testing.
    """

    center: np.ndarray
    half: np.ndarray
    yaw: np.ndarray
    group_start: np.ndarray
    group_box: np.ndarray

    @property
    def num_groups(self) -> int:
        return len(self.group_start) - 1


@dataclass
class Hits:
    """First hits of a ray grid: ``t`` H x W ray parameter (inf: no box hit), ``prim`` H x W (-1: none),
    ``silhouette`` G number of rays that hit each group regardless of occlusion."""

    t: np.ndarray
    prim: np.ndarray
    silhouette: np.ndarray


def _slab(origin_local: np.ndarray, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Entry parameter of rays ``origin_local + t d`` into an axis-aligned box of ``half`` extents (inf: miss)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        near = None
        far = None
        for o, d, h in ((origin_local[0], dx, half[0]), (origin_local[1], dy, half[1]), (origin_local[2], dz, half[2])):
            inv = 1.0 / d
            a = (-h - o) * inv
            b = (h - o) * inv
            lo = np.minimum(a, b)
            hi = np.maximum(a, b)
            near = lo if near is None else np.maximum(near, lo)
            far = hi if far is None else np.minimum(far, hi)
        return np.where((near <= far) & (near > NEAR), near, np.inf)


def _box_t(origin: np.ndarray, d: np.ndarray, center: np.ndarray, half: np.ndarray, yaw: float) -> np.ndarray:
    """Hit parameter of rays (origin, ``d`` ... x 3) with one upright box; inf where they miss."""
    c, s = np.cos(yaw), np.sin(yaw)
    o = origin - center
    ol = np.array([c * o[0] + s * o[1], -s * o[0] + c * o[1], o[2]], dtype=np.float32)
    dx = c * d[..., 0] + s * d[..., 1]
    dy = -s * d[..., 0] + c * d[..., 1]
    return _slab(ol, dx, dy, d[..., 2], half.astype(np.float32))


def ground_t(origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Hit parameter of rays with the ground plane z = 0 (inf for rays that do not descend)."""
    dz = dirs[..., 2]
    with np.errstate(divide="ignore"):
        t = np.where(dz < 0, -origin[2] / dz, np.inf)
    return t.astype(np.float32)


MAX_PAIRS = 1 << 21  # (ray, box) pairs slab-tested in one vectorised batch


def _rect_pairs(rects: np.ndarray, prims: Prims, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ray, prim) pairs of the rectangles, cell-major: each ray of a group's rectangle is followed by
    all of the group's prims. Returns ``ray``, ``prim`` (pairs), ``cell_start`` (first pair of each
    cell) and ``cell_group`` (group of each cell)."""
    g, r0, r1, c0, c1 = rects.T
    w = c1 - c0
    area = (r1 - r0) * w
    rid = np.repeat(np.arange(len(rects)), area)  # rectangle of each cell
    k = np.arange(len(rid)) - np.repeat(np.cumsum(area) - area, area)
    row = k // w[rid]
    cell_ray = (r0[rid] + row) * width + c0[rid] + (k - row * w[rid])
    cell_group = g[rid]
    first = prims.group_start[cell_group]
    n_parts = prims.group_start[cell_group + 1] - first
    cell_start = np.cumsum(n_parts) - n_parts
    part = np.arange(int(n_parts.sum())) - np.repeat(cell_start, n_parts)
    return np.repeat(cell_ray, n_parts), np.repeat(first, n_parts) + part, cell_start, cell_group


def _chunks(rects: np.ndarray, prims: Prims) -> list[np.ndarray]:
    """Split rectangles into batches of at most about MAX_PAIRS pairs (a huge rectangle goes alone)."""
    g, r0, r1, c0, c1 = rects.T
    cost = (r1 - r0) * (c1 - c0) * (prims.group_start[g + 1] - prims.group_start[g])
    out, start, acc = [], 0, 0
    for i, c in enumerate(cost):
        if acc and acc + c > MAX_PAIRS:
            out.append(rects[start:i])
            start, acc = i, 0
        acc += c
    if start < len(rects):
        out.append(rects[start:])
    return out


def cast(origin: np.ndarray, dirs: np.ndarray, prims: Prims, rects: np.ndarray) -> Hits:
    """Cast a ray grid against the boxes, testing each group only inside its rectangles.

    ``origin`` 3 (world), ``dirs`` H x W x 3 float32 world directions, ``rects`` R x 5 int rows
    ``(group, r0, r1, c0, c1)`` (a group may own several rectangles, e.g. across the LiDAR's azimuth
    seam). All (ray, box) pairs of a batch of rectangles are slab-tested at once; the nearest hit per
    ray wins. Returns :class:`Hits` over boxes only (the ground is handled by the caller).
    """
    h, w = dirs.shape[:2]
    flat = dirs.reshape(-1, 3)
    t_buf = np.full(h * w, np.inf, dtype=np.float32)
    p_buf = np.full(h * w, -1, dtype=np.int32)
    silhouette = np.zeros(prims.num_groups, dtype=np.int64)
    origin = np.asarray(origin, dtype=np.float64)
    # per-prim ray origin in the box frame
    c, s = np.cos(prims.yaw), np.sin(prims.yaw)
    o = origin - prims.center
    o_local = np.stack([c * o[:, 0] + s * o[:, 1], -s * o[:, 0] + c * o[:, 1], o[:, 2]], axis=1).astype(np.float32)
    cf, sf, half = c.astype(np.float32), s.astype(np.float32), prims.half.astype(np.float32)
    for batch in _chunks(rects, prims):
        ray, prim, cell_start, cell_group = _rect_pairs(batch, prims, w)
        d = flat[ray]
        cp, sp = cf[prim], sf[prim]
        dx = cp * d[:, 0] + sp * d[:, 1]
        dy = -sp * d[:, 0] + cp * d[:, 1]
        t = _slab(o_local[prim].T, dx, dy, d[:, 2], half[prim].T)
        # nearest part of the group along each ray of its rectangle
        t_cell = np.minimum.reduceat(t, cell_start)
        seg = np.repeat(np.arange(len(cell_start)), np.diff(np.append(cell_start, len(t))))
        is_min = (t == t_cell[seg]) & np.isfinite(t)
        p_cell = np.minimum.reduceat(np.where(is_min, prim, np.iinfo(np.int32).max), cell_start)
        hit = np.isfinite(t_cell)
        silhouette += np.bincount(cell_group[hit], minlength=prims.num_groups)
        r_cell, t_cell, p_cell = ray[cell_start][hit], t_cell[hit], p_cell[hit]
        # depth test across groups (several rectangles may cover one ray); ties go to the lowest prim
        t_old, p_old = t_buf[r_cell], p_buf[r_cell]
        np.minimum.at(t_buf, r_cell, t_cell)
        won = (t_cell == t_buf[r_cell]) & ((t_cell < t_old) | (p_cell < p_old))
        order = np.argsort(-p_cell[won], kind="stable")  # the last write of a repeated ray wins
        p_buf[r_cell[won][order]] = p_cell[won][order]
    return Hits(t_buf.reshape(h, w), p_buf.reshape(h, w), silhouette)


def cast_reference(origin: np.ndarray, dirs: np.ndarray, prims: Prims) -> Hits:
    """Plain version of :func:`cast`: every ray against every box, no culling."""
    h, w = dirs.shape[:2]
    t_buf = np.full((h, w), np.inf, dtype=np.float32)
    p_buf = np.full((h, w), -1, dtype=np.int32)
    silhouette = np.zeros(prims.num_groups, dtype=np.int64)
    origin = np.asarray(origin, dtype=np.float64)
    for g in range(prims.num_groups):
        any_hit = np.zeros((h, w), dtype=bool)
        for p in range(prims.group_start[g], prims.group_start[g + 1]):
            t = _box_t(origin, dirs, prims.center[p], prims.half[p], prims.yaw[p])
            any_hit |= np.isfinite(t)
            closer = t < t_buf
            t_buf[closer] = t[closer]
            p_buf[closer] = p
        silhouette[g] = int(any_hit.sum())
    return Hits(t_buf, p_buf, silhouette)


def _group_corners(group_box: np.ndarray) -> np.ndarray:
    """G x 8 x 3 world corners of the groups' bounding cuboids."""
    c, hl, hw, hh, yaw = group_box[:, :3], group_box[:, 3], group_box[:, 4], group_box[:, 5], group_box[:, 6]
    sx = np.array([1, 1, -1, -1, 1, 1, -1, -1], dtype=np.float64)
    sy = np.array([1, -1, -1, 1, 1, -1, -1, 1], dtype=np.float64)
    sz = np.array([1, 1, 1, 1, -1, -1, -1, -1], dtype=np.float64)
    lx, ly, lz = sx * hl[:, None], sy * hw[:, None], sz * hh[:, None]
    cy, sn = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    return np.stack([c[:, 0:1] + cy * lx - sn * ly, c[:, 1:2] + sn * lx + cy * ly, c[:, 2:3] + lz], axis=-1)


_EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4], [0, 4], [1, 5], [2, 6], [3, 7]])


def pinhole_rects(prims: Prims, world2cam: np.ndarray, intrinsics: np.ndarray, width: int, height: int,
                  near: float = 0.05) -> np.ndarray:
    """Pixel rectangles (R x 5) of the groups a pinhole camera may see.

    The part of a cuboid in front of the camera (its corners with z > near plus the points where its
    edges cross z = near) projects inside the bounding box of those points' projections.
    """
    corners = _group_corners(prims.group_box) @ world2cam[:3, :3].T + world2cam[:3, 3]  # G x 8 x 3
    a, b = corners[:, _EDGES[:, 0]], corners[:, _EDGES[:, 1]]  # G x 12 x 3
    za, zb = a[..., 2], b[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        f = (near - za) / (zb - za)
    crosses = (za > near) != (zb > near)
    cut = a + np.where(crosses, f, 0.0)[..., None] * (b - a)
    pts = np.concatenate([corners, cut], axis=1)  # G x 20 x 3
    valid = np.concatenate([corners[..., 2] > near, crosses], axis=1)
    z = np.where(valid, np.maximum(pts[..., 2], near), 1.0)
    uv = (pts @ intrinsics.T)[..., :2] / z[..., None]
    big = 1e9
    u0 = np.floor(np.where(valid, uv[..., 0], big).min(axis=1) - 1).clip(-1, width + 1).astype(np.int64)
    u1 = np.ceil(np.where(valid, uv[..., 0], -big).max(axis=1) + 1).clip(-1, width + 1).astype(np.int64)
    v0 = np.floor(np.where(valid, uv[..., 1], big).min(axis=1) - 1).clip(-1, height + 1).astype(np.int64)
    v1 = np.ceil(np.where(valid, uv[..., 1], -big).max(axis=1) + 1).clip(-1, height + 1).astype(np.int64)
    u0, u1 = np.clip(u0, 0, width), np.clip(u1, 0, width)
    v0, v1 = np.clip(v0, 0, height), np.clip(v1, 0, height)
    keep = valid.any(axis=1) & (u1 > u0) & (v1 > v0)
    g = np.nonzero(keep)[0]
    return np.stack([g, v0[g], v1[g], u0[g], u1[g]], axis=1).astype(np.int64)


def spherical_rects(prims: Prims, world2sensor: np.ndarray, elevations: np.ndarray, azimuths: int,
                    max_range: float) -> np.ndarray:
    """Beam x azimuth rectangles (R x 5) of the groups a spinning LiDAR may hit.

    ``world2sensor`` must be a yaw rotation plus translation (the sensor is upright). Azimuth
    columns start at -pi; a group across the seam gets two rectangles. Elevation bounds use the
    nearest and farthest horizontal distance of the footprint, so they hold for edges too.
    """
    box = prims.group_box
    corners = _group_corners(box) @ world2sensor[:3, :3].T + world2sensor[:3, 3]
    foot = corners[:, :4, :2]
    # Distance from the sensor to each footprint rectangle, in the box's own frame.
    origin_w = -world2sensor[:3, :3].T @ world2sensor[:3, 3]
    o = origin_w[None, :2] - box[:, :2]
    c, s = np.cos(box[:, 6]), np.sin(box[:, 6])
    lx, ly = c * o[:, 0] + s * o[:, 1], -s * o[:, 0] + c * o[:, 1]
    d_min = np.hypot(np.maximum(np.abs(lx) - box[:, 3], 0), np.maximum(np.abs(ly) - box[:, 4], 0))
    d_max = np.linalg.norm(foot, axis=-1).max(axis=1)
    zmin, zmax = corners[..., 2].min(axis=1), corners[..., 2].max(axis=1)
    el_hi = np.arctan2(zmax, np.where(zmax > 0, d_min, d_max))
    el_lo = np.arctan2(zmin, np.where(zmin > 0, d_max, d_min))
    step = 2 * np.pi / azimuths
    az = np.arctan2(foot[..., 1], foot[..., 0])
    mid = np.arctan2(foot[..., 1].mean(axis=1), foot[..., 0].mean(axis=1))
    rel = (az - mid[:, None] + np.pi) % (2 * np.pi) - np.pi
    a0, a1 = mid + rel.min(axis=1), mid + rel.max(axis=1)
    full = d_min <= 1e-6
    c0 = np.floor((a0 + np.pi) / step - 0.5).astype(np.int64) - 1
    c1 = np.ceil((a1 + np.pi) / step - 0.5).astype(np.int64) + 2
    c0[full], c1[full] = 0, azimuths
    margin = 1e-6
    rows_ok = (elevations[None, :] >= el_lo[:, None] - margin) & (elevations[None, :] <= el_hi[:, None] + margin)
    r0 = rows_ok.argmax(axis=1)
    r1 = len(elevations) - rows_ok[:, ::-1].argmax(axis=1)
    keep = rows_ok.any(axis=1) & (d_min < max_range)
    out = []
    for g in np.nonzero(keep)[0]:
        lo, hi = int(c0[g]), int(c1[g])
        if hi - lo >= azimuths:
            out.append((g, r0[g], r1[g], 0, azimuths))
            continue
        lo_w, hi_w = lo % azimuths, hi % azimuths
        if lo_w < hi_w or hi_w == 0:
            out.append((g, r0[g], r1[g], lo_w, hi_w if hi_w else azimuths))
        else:
            out.append((g, r0[g], r1[g], lo_w, azimuths))
            out.append((g, r0[g], r1[g], 0, hi_w))
    return np.array(out, dtype=np.int64).reshape(-1, 5)
