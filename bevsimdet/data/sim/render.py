"""Sensors of the simulated world: camera images and LiDAR sweeps from the one ray caster.

:func:`world_at` poses every box of a scene at one instant; :func:`render_camera` and
:func:`scan_lidar` cast their ray grids with :mod:`bevsimdet.data.sim.raycast` against the same
boxes and the same ground plane, so LiDAR points land exactly on rendered surfaces.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from bevsimdet.data.sim.raycast import Hits, Prims, cast, ground_t, pinhole_rects, spherical_rects
from bevsimdet.data.sim.rig import CameraSpec, LidarSpec
from bevsimdet.data.sim.scene import (
    _SLOT_REFLECT, LANE_W, TEX_BRICK, TEX_FOLIAGE, TEX_PAVING, TEX_PLAIN, TEX_WINDOWS, Scene, actor_parts,
)

GROUND_FAR = 600.0  # metres; the ground beyond fades into the horizon


@dataclass
class Frame:
    """Every box of a scene at one instant (P prims in G groups) with per-prim appearance.

    ``instance`` P / ``group_instance`` G: index into ``scene.actors`` or -1 for clutter.
    """

    prims: Prims
    color: np.ndarray  # P x 3
    reflect: np.ndarray  # P
    tex: np.ndarray  # P
    instance: np.ndarray  # P
    group_instance: np.ndarray  # G


def _static_part(scene: Scene) -> dict:
    """Static prims with their group bounds (axis-aligned in the road frame), computed once per scene."""
    sb = scene.static_box
    starts = scene.static_group_start
    c, s = np.cos(scene.heading), np.sin(scene.heading)
    lx = c * sb[:, 0] + s * sb[:, 1]
    ly = -s * sb[:, 0] + c * sb[:, 1]
    gboxes = []
    for a, b in zip(starts[:-1], starts[1:]):
        x0, x1 = (lx[a:b] - sb[a:b, 3]).min(), (lx[a:b] + sb[a:b, 3]).max()
        y0, y1 = (ly[a:b] - sb[a:b, 4]).min(), (ly[a:b] + sb[a:b, 4]).max()
        z0, z1 = (sb[a:b, 2] - sb[a:b, 5]).min(), (sb[a:b, 2] + sb[a:b, 5]).max()
        mx, my = (x0 + x1) / 2, (y0 + y1) / 2
        gboxes.append([c * mx - s * my, s * mx + c * my, (z0 + z1) / 2, (x1 - x0) / 2, (y1 - y0) / 2, (z1 - z0) / 2,
                       scene.heading])
    return dict(gboxes=np.asarray(gboxes).reshape(-1, 7))


def _actor_part(scene: Scene) -> dict:
    """All actors' parts in their own frames (K parts), computed once per scene."""
    pcs, phs, cols, refl, owner, starts = [], [], [], [], [], [0]
    for i, actor in enumerate(scene.actors):
        pc, ph, slot = actor_parts(actor)
        pcs.append(pc)
        phs.append(ph)
        cols.append(actor.colors[slot])
        boost = 1.6 if actor.cls in ("traffic_cone", "barrier") else 1.0
        refl.append(np.array([_SLOT_REFLECT[int(k)] for k in slot]) * boost)
        owner.append(np.full(len(pc), i, dtype=np.int64))
        starts.append(starts[-1] + len(pc))
    cat = lambda xs, shape: np.concatenate(xs) if xs else np.zeros(shape)  # noqa: E731
    return dict(pc=cat(pcs, (0, 3)), ph=cat(phs, (0, 3)), color=cat(cols, (0, 3)), reflect=cat(refl, (0,)),
                owner=cat(owner, (0,)).astype(np.int64), starts=np.asarray(starts, dtype=np.int64),
                xy0=np.array([a.xy0 for a in scene.actors]).reshape(-1, 2),
                vel=np.array([a.vel for a in scene.actors]).reshape(-1, 2),
                zc=np.array([a.z0 + a.size[2] / 2 for a in scene.actors]),
                yaw=np.array([a.yaw for a in scene.actors]),
                half=np.array([[a.size[1] / 2, a.size[0] / 2, a.size[2] / 2] for a in scene.actors]).reshape(-1, 3))


def world_at(scene: Scene, t: float) -> Frame:
    """Pose the static clutter and every actor at time ``t`` (seconds)."""
    if "static" not in scene.cache:
        scene.cache["static"] = _static_part(scene)
        scene.cache["actors"] = _actor_part(scene)
    st, ac = scene.cache["static"], scene.cache["actors"]
    sb = scene.static_box
    n_static = len(sb)
    centers = ac["xy0"] + ac["vel"] * t  # actor box centres (xy) at t
    own = ac["owner"]
    c, s = np.cos(ac["yaw"])[own], np.sin(ac["yaw"])[own]
    pc = ac["pc"]
    part_c = np.stack([centers[own, 0] + c * pc[:, 0] - s * pc[:, 1], centers[own, 1] + s * pc[:, 0] + c * pc[:, 1],
                       ac["zc"][own] + pc[:, 2]], axis=1)
    n_act = len(scene.actors)
    gbox_act = np.concatenate([centers, ac["zc"][:, None], ac["half"], ac["yaw"][:, None]], axis=1)
    prims = Prims(
        center=np.concatenate([sb[:, :3], part_c]), half=np.concatenate([sb[:, 3:6], ac["ph"]]),
        yaw=np.concatenate([sb[:, 6], ac["yaw"][own]]),
        group_start=np.concatenate([scene.static_group_start, n_static + ac["starts"][1:]]).astype(np.int64),
        group_box=np.concatenate([st["gboxes"], gbox_act.reshape(-1, 7)]),
    )
    n_sg = len(scene.static_group_start) - 1
    return Frame(
        prims, np.concatenate([scene.static_color, ac["color"]]), np.concatenate([scene.static_reflect, ac["reflect"]]),
        np.concatenate([scene.static_tex, np.full(len(pc), TEX_PLAIN, dtype=np.int64)]),
        np.concatenate([np.full(n_static, -1, dtype=np.int64), own]),
        np.concatenate([np.full(n_sg, -1, dtype=np.int64), np.arange(n_act, dtype=np.int64)]),
    )


# --- surfaces ---------------------------------------------------------------------------------------


def _box_surface(frame: Frame, prim: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World normals (K x 3) and box-local hit points (K x 3) of hits ``pts`` on prims ``prim``."""
    pr = frame.prims
    c, s = np.cos(pr.yaw[prim]), np.sin(pr.yaw[prim])
    d = pts - pr.center[prim]
    local = np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], axis=1)
    rel = np.abs(local) / np.maximum(pr.half[prim], 1e-6)
    axis = rel.argmax(axis=1)
    sign = np.sign(local[np.arange(len(axis)), axis])
    nl = np.zeros_like(local)
    nl[np.arange(len(axis)), axis] = sign
    normal = np.stack([c * nl[:, 0] - s * nl[:, 1], s * nl[:, 0] + c * nl[:, 1], nl[:, 2]], axis=1)
    return normal, local


def _noise(scene: Scene, x: np.ndarray, y: np.ndarray, cell: float) -> np.ndarray:
    i = np.floor(x / cell).astype(np.int64) & 255
    j = np.floor(y / cell).astype(np.int64) & 255
    return scene.noise_tex[i, j]


def _ground(scene: Scene, gx: np.ndarray, gy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Colour (K x 3) and LiDAR reflectivity (K) of ground points at global (gx, gy)."""
    x, y = scene.to_road(gx, gy)
    road = scene.in_road(x, y)
    n = 0.07 * _noise(scene, gx, gy, 0.15) + 0.05 * _noise(scene, gx + 7.3, gy - 3.1, 1.7)
    color = np.where(road[:, None], scene.asphalt, scene.verge) * (1.0 + np.where(road, 1.0, 2.2) * n)[:, None]
    refl = np.where(road, 0.12, 0.2)
    ay = np.abs(y)
    main = ay < scene.half_road
    yellow = main & (ay < 0.09)
    white = main & (np.abs(ay - scene.lanes * LANE_W) < 0.07)
    for k in range(1, scene.lanes):
        white |= main & (np.abs(ay - k * LANE_W) < 0.07) & (np.mod(x, 9.0) < 3.0)
    for xc, hw in zip(scene.side_streets, scene.side_half):
        cw = (x > xc - hw) & (x < xc - hw + 3.0) & (ay < scene.lanes * LANE_W) & (np.mod(y, 1.2) < 0.6)
        white |= main & cw
    color = np.where(yellow[:, None], np.array([200, 170, 50.0]), color)
    color = np.where(white[:, None], np.array([215, 215, 210.0]) * (1 + 0.5 * n[:, None]), color)
    refl = np.where(yellow | white, 0.7, refl)
    return color, refl


def _box_texture(scene: Scene, frame: Frame, prim: np.ndarray, pts: np.ndarray, local: np.ndarray,
                 normal: np.ndarray) -> np.ndarray:
    """Multiplicative texture (K) of box hits."""
    tex = frame.tex[prim]
    m = np.ones(len(prim))
    side_u = np.where(np.abs(normal[:, 2]) > 0.5, 0.0, np.where(np.abs(local[:, 0]) / np.maximum(frame.prims.half[prim, 0], 1e-6) > 0.999, local[:, 1], local[:, 0]))
    z = pts[:, 2]
    win = tex == TEX_WINDOWS
    if win.any():
        fu, fz = np.mod(side_u[win], 3.1) / 3.1, np.mod(z[win], 3.3) / 3.3
        is_win = (fu > 0.22) & (fu < 0.78) & (fz > 0.35) & (fz < 0.8) & (z[win] > 1.2) & (np.abs(normal[win, 2]) < 0.5)
        m[win] = np.where(is_win, 0.35, 1.0)
    brick = tex == TEX_BRICK
    if brick.any():
        m[brick] = np.where(np.mod(z[brick], 0.35) < 0.04, 0.75, 1.0) * (1 + 0.06 * _noise(scene, side_u[brick], z[brick], 0.2))
    fol = tex == TEX_FOLIAGE
    if fol.any():
        m[fol] = 1 + 0.25 * _noise(scene, pts[fol, 0] + pts[fol, 2], pts[fol, 1] - pts[fol, 2], 0.25)
    pav = tex == TEX_PAVING
    if pav.any():
        px, py = scene.to_road(pts[pav, 0], pts[pav, 1])
        grid = (np.mod(px, 0.6) < 0.04) | (np.mod(py, 0.6) < 0.04)
        m[pav] = np.where(grid, 0.8, 1.0) * (1 + 0.05 * _noise(scene, pts[pav, 0], pts[pav, 1], 0.1))
    return m


def _shade(scene: Scene, normal: np.ndarray) -> np.ndarray:
    return scene.ambient + scene.sun_strength * np.clip(normal @ scene.sun, 0, None) + 0.08 * normal[:, 2]


# --- cameras ----------------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _camera_rays(k: tuple, width: int, height: int) -> np.ndarray:
    """H x W x 3 camera-frame ray directions with z = 1 (so the ray parameter is the depth)."""
    kinv = np.linalg.inv(np.asarray(k).reshape(3, 3))
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    pix = np.stack([u, v, np.ones_like(u)], axis=-1)
    return (pix @ kinv.T).astype(np.float32)


@dataclass
class CameraImage:
    """A rendered camera: ``rgb`` H x W x 3 uint8, ``depth`` H x W camera z (inf for sky),
    ``instance`` H x W actor index (-1: none), ``visible`` / ``silhouette`` per-actor pixel counts."""

    rgb: np.ndarray
    depth: np.ndarray
    instance: np.ndarray
    visible: np.ndarray
    silhouette: np.ndarray


def render_camera(scene: Scene, frame: Frame, cam: CameraSpec, ego2global: np.ndarray,
                  rng: np.random.Generator) -> CameraImage:
    cam2global = ego2global @ cam.cam2ego
    world2cam = np.linalg.inv(cam2global)
    origin = cam2global[:3, 3]
    rays = _camera_rays(tuple(cam.intrinsics.ravel()), cam.width, cam.height)
    dirs = (rays @ cam2global[:3, :3].T.astype(np.float32)).astype(np.float32)
    rects = pinhole_rects(frame.prims, world2cam, cam.intrinsics, cam.width, cam.height)
    hits = cast(origin, dirs, frame.prims, rects)
    return _shade_camera(scene, frame, hits, origin, dirs, rng)


def _shade_camera(scene: Scene, frame: Frame, hits: Hits, origin: np.ndarray, dirs: np.ndarray,
                  rng: np.random.Generator) -> CameraImage:
    h, w = dirs.shape[:2]
    tg = ground_t(origin, dirs)
    tg = np.where(tg * np.linalg.norm(dirs, axis=-1) < GROUND_FAR, tg, np.inf)
    box = np.isfinite(hits.t) & (hits.t <= tg)
    ground = ~box & np.isfinite(tg)
    depth = np.where(box, hits.t, tg).astype(np.float32)
    img = np.empty((h, w, 3), dtype=np.float64)
    # sky
    d = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    a = np.clip(d[..., 2] * 3.0, 0, 1)[..., None]
    img[:] = scene.sky_horizon * (1 - a) + scene.sky_top * a
    # ground
    if ground.any():
        pts = origin + tg[ground][:, None].astype(np.float64) * dirs[ground]
        col, _ = _ground(scene, pts[:, 0], pts[:, 1])
        img[ground] = col * _shade(scene, np.tile([0.0, 0.0, 1.0], (len(pts), 1)))[:, None]
    # boxes
    if box.any():
        prim = hits.prim[box]
        pts = origin + hits.t[box][:, None].astype(np.float64) * dirs[box]
        normal, local = _box_surface(frame, prim, pts)
        col = frame.color[prim] * (_shade(scene, normal) * _box_texture(scene, frame, prim, pts, local, normal))[:, None]
        img[box] = col
    img = img * scene.tint + 2.5 * rng.standard_normal(img.shape, dtype=np.float32)
    rgb = np.clip(img, 0, 255).astype(np.uint8)
    instance = np.full((h, w), -1, dtype=np.int64)
    instance[box] = frame.instance[hits.prim[box]]
    n_act = int(frame.group_instance.max()) + 1 if len(frame.group_instance) else 0
    visible = np.bincount(instance[instance >= 0], minlength=n_act)
    silhouette = np.zeros(n_act, dtype=np.int64)
    gi = frame.group_instance
    silhouette[gi[gi >= 0]] = hits.silhouette[gi >= 0]
    return CameraImage(rgb, depth, instance, visible, silhouette)


# --- LiDAR ------------------------------------------------------------------------------------------


_LIDAR_RAYS: dict[int, np.ndarray] = {}


def _lidar_rays(spec: LidarSpec) -> np.ndarray:
    key = id(spec)
    if key not in _LIDAR_RAYS:
        _LIDAR_RAYS.clear()
        _LIDAR_RAYS[key] = spec.directions().astype(np.float32)
    return _LIDAR_RAYS[key]


@dataclass
class LidarSweep:
    """One sweep: ``points`` N x 5 float32 (x, y, z, intensity, ring) in the LIDAR_TOP frame;
    ``instance`` N actor index of each return (-1: ground or clutter)."""

    points: np.ndarray
    instance: np.ndarray


def scan_lidar(scene: Scene, frame: Frame, spec: LidarSpec, ego2global: np.ndarray,
               rng: np.random.Generator) -> LidarSweep:
    lidar2global = ego2global @ spec.lidar2ego
    origin = lidar2global[:3, 3]
    dirs_l = _lidar_rays(spec)
    dirs = (dirs_l @ lidar2global[:3, :3].T.astype(np.float32)).astype(np.float32)
    rects = spherical_rects(frame.prims, np.linalg.inv(lidar2global), spec.elevations, spec.azimuths, spec.max_range)
    hits = cast(origin, dirs, frame.prims, rects)
    tg = ground_t(origin, dirs)
    box = np.isfinite(hits.t) & (hits.t <= tg)
    t = np.where(box, hits.t, tg)
    valid = t < spec.max_range
    beam, col = np.nonzero(valid)
    tv = t[valid].astype(np.float64)
    bv = box[valid]
    d = dirs[valid].astype(np.float64)
    pts = origin + tv[:, None] * d
    refl = np.empty(len(tv))
    cosi = np.empty(len(tv))
    inst = np.full(len(tv), -1, dtype=np.int64)
    if bv.any():
        prim = hits.prim[valid][bv]
        normal, _ = _box_surface(frame, prim, pts[bv])
        refl[bv] = frame.reflect[prim]
        cosi[bv] = np.abs(np.einsum("ij,ij->i", normal, d[bv]))
        inst[bv] = frame.instance[prim]
    if (~bv).any():
        _, refl[~bv] = _ground(scene, pts[~bv, 0], pts[~bv, 1])
        cosi[~bv] = np.abs(d[~bv, 2])
    # Returns fade with range, grazing incidence and dark surfaces.
    p_keep = 0.98 * (1 - (tv / spec.max_range) ** 4) * np.clip(cosi * 8, 0, 1) * np.clip(refl * 4 + 0.6, 0, 1)
    keep = rng.random(len(tv)) < p_keep
    tn = tv[keep] + rng.normal(0, spec.range_noise, int(keep.sum()))
    xyz = tn[:, None] * dirs_l[beam[keep], col[keep]].astype(np.float64)
    intensity = np.clip(refl[keep] * (0.35 + 0.65 * cosi[keep]) * 110 * np.exp(rng.normal(0, 0.15, len(tn))), 0, 255)
    points = np.concatenate([xyz, intensity[:, None], beam[keep][:, None].astype(np.float64)], axis=1).astype(np.float32)
    return LidarSweep(points, inst[keep])
