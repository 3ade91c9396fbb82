"""Procedural layout of one scene: a street with traffic, pedestrians, a work zone and clutter.

Everything is laid out in a *road frame* (x along the main road, y to its left, z up) and placed in
the global frame by one rigid transform. The ego car drives along the right lane at constant speed;
all actors move on straight lines at constant velocity, so a box's position at any time is exact
and the velocities derived from consecutive annotations match the motion.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bevsimdet.data.classes import CLASSES
from bevsimdet.data.sim.shapes import CAR_SHAPES, GLASS, PAINT, RUBBER, SECOND, SKIN, WHITE, parts_array

LANE_W = 3.5
PARK_W = 2.5
KERB_H = 0.15

# Mean (w, l, h) and relative spread of each class.
# What each world revision changed (simulate --world-revision; the manifest records it).
WORLD_REVISIONS = {
    1: "the first world (until 2026-11-29): standing pedestrians and the sidewalk objects placed so "
       "that every class is near the ego get a uniformly random heading; parked two-wheelers all point the same way "
       "across the kerb, away from the road on one side",
    2: "standing pedestrians face the road (+-0.6 rad) and parked two-wheelers stand across the kerb "
       "facing the road (+-0.35 rad), so their heading is observable; the rest of the rules are unchanged",
}
WORLD_REVISION = max(WORLD_REVISIONS)

# The classes that ``simulate --long-tail F`` keeps out of a training scene with probability 1 - F
# (the ones a minority of nuScenes scenes hold).
RARE_CLASSES = ("bus", "trailer", "construction_vehicle", "motorcycle", "bicycle")

SIZE = {
    "car": ((1.95, 4.61, 1.72), 0.09),
    "truck": ((2.46, 6.74, 2.73), 0.18),
    "bus": ((2.94, 11.19, 3.47), 0.12),
    "trailer": ((2.87, 12.01, 3.82), 0.15),
    "construction_vehicle": ((2.73, 6.38, 3.13), 0.18),
    "pedestrian": ((0.73, 0.66, 1.76), 0.09),
    "motorcycle": ((0.66, 2.12, 1.44), 0.1),
    "bicycle": ((0.60, 1.68, 1.27), 0.1),
    "traffic_cone": ((0.40, 0.40, 1.06), 0.15),
    "barrier": ((2.49, 0.49, 0.98), 0.15),
}

# Material slot properties: (base colour or None for per-instance colour, LiDAR reflectivity, texture).
TEX_PLAIN, TEX_WINDOWS, TEX_FOLIAGE, TEX_PAVING, TEX_BRICK = range(5)
_SLOT_REFLECT = {PAINT: 0.55, GLASS: 0.12, RUBBER: 0.06, SKIN: 0.35, SECOND: 0.45, WHITE: 0.9}

_CAR_PAINTS = np.array(
    [[235, 235, 235], [25, 25, 28], [160, 162, 168], [110, 112, 118], [150, 20, 25], [30, 50, 120],
     [60, 90, 140], [200, 200, 190], [40, 70, 50], [130, 100, 60], [220, 180, 40], [90, 20, 40]], dtype=np.float64)
_CLOTHES = np.array(
    [[30, 30, 35], [200, 200, 200], [40, 60, 120], [120, 30, 30], [60, 90, 60], [150, 130, 90], [80, 80, 85],
     [220, 120, 40], [20, 40, 80], [170, 60, 120]], dtype=np.float64)
_SKINS = np.array([[230, 190, 160], [200, 150, 110], [150, 100, 70], [100, 65, 45]], dtype=np.float64)


@dataclass
class Actor:
    """One annotated object; its pose at time t is ``(x0 + vx t, y0 + vy t, z0)`` (bottom centre, global)."""

    cls: str
    size: np.ndarray  # w, l, h
    xy0: np.ndarray  # bottom-centre position at t = 0 (global)
    z0: float
    yaw: float  # global heading
    vel: np.ndarray  # global m/s
    attribute: str
    shape: str
    colors: np.ndarray  # len(SLOTS) x 3

    def center(self, t: float) -> np.ndarray:
        xy = self.xy0 + self.vel * t
        return np.array([xy[0], xy[1], self.z0 + self.size[2] / 2])


@dataclass
class Scene:
    """A scene's static world (boxes in global coordinates), its actors, ego motion and lighting."""

    origin: np.ndarray  # road-frame origin in global xy
    heading: float  # road-frame x axis in global
    half_road: float
    sidewalk: float
    lanes: int
    side_streets: np.ndarray  # road-frame x centres
    side_half: np.ndarray  # half widths
    ego_y: float
    ego_speed: float
    ego_x0: float
    # static boxes: N x 7 (cx, cy, cz, half_l, half_w, half_h, yaw) global; groups via group_start
    static_box: np.ndarray
    static_group_start: np.ndarray
    static_color: np.ndarray
    static_reflect: np.ndarray
    static_tex: np.ndarray
    actors: list[Actor] = field(default_factory=list)
    sun: np.ndarray = field(default_factory=lambda: np.array([0.3, 0.2, 0.9]))
    ambient: float = 0.45
    sun_strength: float = 0.6
    sky_top: np.ndarray = field(default_factory=lambda: np.array([90, 140, 210.0]))
    sky_horizon: np.ndarray = field(default_factory=lambda: np.array([200, 215, 230.0]))
    tint: np.ndarray = field(default_factory=lambda: np.ones(3))
    asphalt: np.ndarray = field(default_factory=lambda: np.array([95, 95, 98.0]))
    verge: np.ndarray = field(default_factory=lambda: np.array([105, 120, 80.0]))
    noise_tex: np.ndarray = field(default_factory=lambda: np.zeros((256, 256), np.float32))
    cache: dict = field(default_factory=dict)  # derived arrays (see render.world_at)

    # --- frames -------------------------------------------------------------------------------
    def to_global(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s = np.cos(self.heading), np.sin(self.heading)
        return self.origin[0] + c * x - s * y, self.origin[1] + s * x + c * y

    def to_road(self, gx: np.ndarray, gy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s = np.cos(self.heading), np.sin(self.heading)
        dx, dy = gx - self.origin[0], gy - self.origin[1]
        return c * dx + s * dy, -s * dx + c * dy

    def ego_pose(self, t: float) -> np.ndarray:
        """4 x 4 ego -> global at time t (s)."""
        gx, gy = self.to_global(np.float64(self.ego_x0 + self.ego_speed * t), np.float64(self.ego_y))
        c, s = np.cos(self.heading), np.sin(self.heading)
        m = np.eye(4)
        m[:2, :2] = [[c, -s], [s, c]]
        m[0, 3], m[1, 3] = gx, gy
        return m

    def in_road(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Road-frame points on drivable surface (main road or a side street beyond the sidewalks)."""
        on = np.abs(y) < self.half_road
        for xc, hw in zip(self.side_streets, self.side_half):
            on |= (np.abs(x - xc) < hw) & (np.abs(y) >= self.half_road + self.sidewalk)
        return on


def _jitter_size(rng: np.random.Generator, cls: str) -> np.ndarray:
    mean, spread = SIZE[cls]
    scale = np.exp(rng.normal(0, spread * 0.8))
    return np.asarray(mean) * scale * np.exp(rng.normal(0, spread * 0.35, 3))


def _colors(rng: np.random.Generator, cls: str) -> np.ndarray:
    """Per-instance material colours (one row per shape slot)."""
    jit = lambda c: np.clip(c * rng.uniform(0.85, 1.15) + rng.normal(0, 8, 3), 5, 250)  # noqa: E731
    paint = jit(_CAR_PAINTS[rng.integers(len(_CAR_PAINTS))])
    second = jit(_CLOTHES[rng.integers(len(_CLOTHES))])
    if cls == "pedestrian":
        paint = jit(_CLOTHES[rng.integers(len(_CLOTHES))])
    elif cls == "construction_vehicle":
        paint = jit(np.array([[230, 170, 20], [220, 110, 20], [200, 200, 60], [240, 240, 240]])[rng.integers(4)])
    elif cls == "traffic_cone":
        paint = jit(np.array([[240, 90, 20], [235, 60, 30], [250, 140, 20]])[rng.integers(3)])
    elif cls == "barrier":
        paint = jit(np.array([[200, 200, 195], [230, 230, 230], [210, 40, 30], [235, 120, 30], [170, 165, 155]])[rng.integers(5)])
    elif cls in ("truck", "trailer"):
        second = jit(np.array([[230, 230, 230], [200, 40, 40], [60, 80, 150], [180, 180, 170], [50, 110, 60]])[rng.integers(5)])
    glass = jit(np.array([45.0, 55.0, 70.0]))
    rubber = jit(np.array([28.0, 28.0, 30.0]))
    skin = jit(_SKINS[rng.integers(len(_SKINS))])
    white = jit(np.array([240.0, 240.0, 240.0]))
    return np.stack([paint, glass, rubber, skin, second, white])


def _attribute(cls: str, speed: float, stopped: bool = False) -> str:
    moving = abs(speed) > 0.2
    if cls in ("barrier", "traffic_cone"):
        return ""
    if cls == "pedestrian":
        return "pedestrian.moving" if moving else "pedestrian.standing"
    if cls in ("bicycle", "motorcycle"):
        return "cycle.with_rider" if moving or stopped else "cycle.without_rider"
    if moving:
        return "vehicle.moving"
    return "vehicle.stopped" if stopped else "vehicle.parked"


class _Builder:
    """Accumulates static boxes and actors in road-frame coordinates, with a static-footprint check."""

    def __init__(self, scene_rng: np.random.Generator, shape_rng: np.random.Generator):
        self.rng = scene_rng
        # body styles come from their own stream, so the layout (and every other draw) does not
        # depend on them
        self.shape_rng = shape_rng
        self.boxes: list[list[float]] = []  # road frame: cx, cy, cz, hl, hw, hh, yaw(rel)
        self.groups = [0]
        self.colors: list[np.ndarray] = []
        self.reflect: list[float] = []
        self.tex: list[int] = []
        self.footprints: list[tuple[float, float, float, float]] = []  # x0, x1, y0, y1 (static, road frame)
        self.actors: list[dict] = []

    def free(self, x0: float, x1: float, y0: float, y1: float) -> bool:
        return all(x1 <= a0 or x0 >= a1 or y1 <= b0 or y0 >= b1 for a0, a1, b0, b1 in self.footprints)

    def occupy(self, x0: float, x1: float, y0: float, y1: float) -> None:
        self.footprints.append((x0, x1, y0, y1))

    def group(self, parts: list[tuple], color: np.ndarray, reflect: float, tex: int = TEX_PLAIN) -> None:
        """parts: (x0, x1, y0, y1, z0, z1[, color]) road-frame axis-aligned boxes of one clutter group."""
        for p in parts:
            x0, x1, y0, y1, z0, z1 = p[:6]
            self.boxes.append([(x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2, (x1 - x0) / 2, (y1 - y0) / 2, (z1 - z0) / 2, 0.0])
            self.colors.append(np.asarray(p[6] if len(p) > 6 else color, dtype=np.float64))
            self.reflect.append(reflect)
            self.tex.append(tex)
        self.groups.append(len(self.boxes))

    def actor(self, cls: str, x: float, y: float, z0: float, yaw: float, speed: float, *, size=None,
              shape: str | None = None, stopped: bool = False, static: bool = True) -> bool:
        size = _jitter_size(self.rng, cls) if size is None else size
        w, length = size[0], size[1]
        c, s = abs(np.cos(yaw)), abs(np.sin(yaw))
        ex, ey = (c * length + s * w) / 2, (s * length + c * w) / 2
        if static:
            if not self.free(x - ex, x + ex, y - ey, y + ey):
                return False
            self.occupy(x - ex, x + ex, y - ey, y + ey)
        if shape is None:
            shape = cls
            if cls in ("motorcycle", "bicycle") and abs(speed) <= 0.2:
                shape = f"{cls}_parked"
                size = size * np.array([1.0, 1.0, 0.78 if cls == "motorcycle" else 0.8])
            elif cls == "barrier" and self.rng.random() < 0.4:
                shape = "barrier_fence"
            elif cls == "car":
                shape = _weighted(self.shape_rng, CAR_SHAPES)
        self.actors.append(dict(cls=cls, x=x, y=y, z0=z0, yaw=yaw, speed=speed, size=size, shape=shape,
                                attribute=_attribute(cls, speed, stopped), colors=_colors(self.rng, cls)))
        return True


def _weighted(rng: np.random.Generator, table: dict[str, float]) -> str:
    names = list(table)
    p = np.asarray([table[n] for n in names], dtype=np.float64)
    return names[rng.choice(len(names), p=p / p.sum())]


def build_scene(seed: int, scene_index: int, duration: float, map_size: float, revision: int = WORLD_REVISION,
                absent: frozenset[str] = frozenset()) -> Scene:
    """Lay out one scene; ``duration`` seconds of ego motion starting at t = 0 (sweeps from t < 0).

    ``absent`` (a subset of :data:`RARE_CLASSES`, see :func:`long_tail_absent`) names classes of
    which the scene holds no object at all: a parked or moving vehicle drawn as one of them becomes
    a car (a truck+trailer becomes a truck alone), a work zone has no construction vehicle, and
    absent two-wheelers are neither parked nor ridden. Empty (the default) is the full world, draw
    for draw.

    ``revision`` (see :data:`WORLD_REVISIONS`) picks the rules for the heading of standing
    pedestrians and parked two-wheelers. Both revisions make the same random draws per placement,
    but a sidewalk object's footprint depends on its heading, so once one placement succeeds at a
    different attempt the draws after it shift: the same seed gives another sample of the same
    kind of street, not the same street with turned pedestrians."""
    if revision not in WORLD_REVISIONS:
        raise ValueError(f"world revision {revision} is not one of {sorted(WORLD_REVISIONS)}")
    if not set(absent) <= set(RARE_CLASSES):
        raise ValueError(f"absent classes {sorted(absent)} are not all among {RARE_CLASSES}")
    rng = np.random.default_rng([seed, scene_index, 0x5CE7E])
    b = _Builder(rng, np.random.default_rng([seed, scene_index, 0x5A9E5]))
    lanes = int(rng.choice([1, 2], p=[0.45, 0.55]))
    half_road = lanes * LANE_W + PARK_W
    sidewalk = float(rng.uniform(2.5, 4.5))
    ego_speed = float(0.0 if rng.random() < 0.1 else rng.uniform(3.0, 12.0))
    ego_y = -(lanes - 0.5) * LANE_W
    travel = ego_speed * duration
    x_lo, x_hi = -100.0, travel + 100.0
    ego_x0 = 0.0

    # Side streets meet the main road behind the sidewalks.
    side_streets, side_half = [], []
    x = x_lo + rng.uniform(10, 80)
    while x < x_hi:
        side_streets.append(x)
        side_half.append(rng.uniform(4.0, 7.0))
        x += rng.uniform(70, 150)
    side_streets, side_half = np.asarray(side_streets), np.asarray(side_half)

    def near_side_street(x0: float, x1: float, pad: float = 1.0) -> bool:
        return bool(np.any((x1 > side_streets - side_half - pad) & (x0 < side_streets + side_half + pad)))

    # --- static clutter -------------------------------------------------------------------------
    walk_color = rng.uniform(150, 190) * np.array([1.0, 0.98, 0.95])
    b.group([(x_lo - 150, x_hi + 150, half_road, half_road + sidewalk, 0.0, KERB_H)], walk_color, 0.3, TEX_PAVING)
    b.group([(x_lo - 150, x_hi + 150, -half_road - sidewalk, -half_road, 0.0, KERB_H)], walk_color, 0.3, TEX_PAVING)
    for side in (1, -1):
        y_in = half_road + sidewalk
        x = x_lo - 60
        while x < x_hi + 60:
            width = rng.uniform(8, 30)
            x0, x1 = x, x + width
            x = x1 + rng.uniform(0, 6)
            if near_side_street(x0, x1, 2.0):
                continue
            setback = rng.uniform(0.5, 6.0)
            kind = rng.random()
            ya = y_in + setback
            if kind < 0.7:
                depth, height = rng.uniform(8, 20), rng.uniform(5, 28)
                color = np.array([rng.uniform(120, 220)] * 3) * rng.uniform(0.8, 1.05, 3)
                ys = sorted((side * ya, side * (ya + depth)))
                b.group([(x0, x1, ys[0], ys[1], 0.0, height)], color, 0.4, TEX_WINDOWS if rng.random() < 0.8 else TEX_BRICK)
            elif kind < 0.85:
                height = rng.uniform(1.2, 2.6)
                ys = sorted((side * ya, side * (ya + 0.3)))
                color = np.array([rng.uniform(90, 200)] * 3) * rng.uniform(0.85, 1.05, 3)
                b.group([(x0, x1, ys[0], ys[1], 0.0, height)], color, 0.35, TEX_BRICK)
            # else: an empty lot
        # trees and street lights on the sidewalk near the kerb
        x = x_lo - 40 + rng.uniform(0, 10)
        while x < x_hi + 40:
            y = side * (half_road + 0.7)
            if rng.random() < 0.6:
                trunk_h, r = rng.uniform(1.8, 3.2), rng.uniform(1.2, 2.4)
                crown = np.array([rng.uniform(40, 80), rng.uniform(80, 130), rng.uniform(30, 60)])
                parts = [(x - 0.15, x + 0.15, y - 0.15, y + 0.15, KERB_H, KERB_H + trunk_h, np.array([90, 70, 50.0])),
                         (x - r, x + r, y - r, y + r, KERB_H + trunk_h, KERB_H + trunk_h + 1.3 * r, crown),
                         (x - 0.6 * r, x + 0.6 * r, y - 0.6 * r, y + 0.6 * r, KERB_H + trunk_h + 1.3 * r,
                          KERB_H + trunk_h + 2.0 * r, crown * 1.1)]
                b.group(parts, crown, 0.25, TEX_FOLIAGE)
                b.occupy(x - 0.3, x + 0.3, y - 0.3, y + 0.3)
            else:
                pole_h = rng.uniform(5.5, 8.0)
                arm = -side * 1.6
                parts = [(x - 0.1, x + 0.1, y - 0.1, y + 0.1, KERB_H, KERB_H + pole_h),
                         (x - 0.08, x + 0.08, min(y, y + arm), max(y, y + arm), KERB_H + pole_h - 0.15, KERB_H + pole_h)]
                b.group(parts, np.array([120, 122, 125.0]) * rng.uniform(0.7, 1.2), 0.5)
                b.occupy(x - 0.25, x + 0.25, y - 0.25, y + 0.25)
            x += rng.uniform(9, 24)

    # --- work zone in a parking strip: barriers, cones, a construction vehicle ----------------------
    def work_zone(xc: float, side: int, length: float) -> None:
        y_in, y_out = side * (half_road - PARK_W - 0.3), side * (half_road - 0.2)
        # a work zone without its vehicle is one that the full world also has (15 %)
        if rng.random() < 0.85 and "construction_vehicle" not in absent:
            b.actor("construction_vehicle", xc + rng.uniform(-length / 4, length / 4), side * (half_road - PARK_W / 2),
                    0.0, (0.0 if side < 0 else np.pi) + rng.normal(0, 0.1), 0.0)
        xs = np.arange(xc - length / 2, xc + length / 2, rng.uniform(3.5, 6.0))
        for xx in xs:
            b.actor("traffic_cone", xx + rng.normal(0, 0.1), y_in + side * 0.3, 0.0, rng.uniform(-np.pi, np.pi), 0.0)
        yb = (y_in + y_out) / 2
        for xx in (xc - length / 2 - 1.0, xc + length / 2 + 1.0):
            b.actor("barrier", xx, yb, 0.0, 0.0 + rng.normal(0, 0.05), 0.0)
        for xx in np.arange(xc - length / 2 + 2.0, xc + length / 2 - 2.0, rng.uniform(2.6, 3.2)):
            b.actor("barrier", xx, y_out - side * 0.5, 0.0, np.pi / 2 + rng.normal(0, 0.05), 0.0)

    ego_mid = ego_x0 + travel / 2
    work_zone(ego_mid + rng.uniform(-20, 25), int(rng.choice([-1, 1])), rng.uniform(12, 30))
    if rng.random() < 0.6:
        work_zone(rng.uniform(x_lo + 20, x_hi - 20), int(rng.choice([-1, 1])), rng.uniform(10, 25))

    # --- every class in every scene (small splits such as mini_val must hold all of them): objects
    # missing from the ego's kerb side are placed there, in the LiDAR's clear line of sight -------
    present = {a["cls"] for a in b.actors if a["y"] < 0 and a["speed"] == 0 and abs(a["x"] - ego_mid) < 20}
    on_sidewalk = ("pedestrian", "bicycle", "motorcycle")
    for cls in sorted(set(CLASSES) - present - set(absent), key=lambda c: (c not in on_sidewalk, CLASSES.index(c))):
        for attempt in range(80):
            xx = ego_mid + rng.uniform(-1, 1) * (8 + attempt * 0.5)
            if cls in on_sidewalk:
                y, z0, yaw = -(half_road + rng.uniform(0.6, 1.4)), KERB_H, rng.uniform(-np.pi, np.pi)
                if revision >= 2:  # facing the road (+y from the ego's sidewalk), the same draw as spread
                    yaw = np.pi / 2 + yaw / np.pi * (0.6 if cls == "pedestrian" else 0.35)
                if b.actor(cls, xx, y, z0, yaw, 0.0):
                    # no parked car between the ego's path and a sidewalk object, or it would hide it
                    b.occupy(min(xx, ego_mid) - 3.0, max(xx, ego_mid) + 3.0, -half_road, -(half_road - PARK_W))
                    break
            else:
                side = -1 if attempt < 40 else 1  # the far kerb when the near one is full
                y, yaw = side * (half_road - PARK_W / 2), (np.pi / 2 if cls == "barrier" else (side > 0) * np.pi)
                if b.actor(cls, xx, y, 0.0, yaw, 0.0, stopped=cls == "bus"):
                    break

    # --- parked vehicles along both kerbs -----------------------------------------------------------
    parked = {"car": 0.8, "truck": 0.14, "trailer": 0.02, "construction_vehicle": 0.01, "bus": 0.015}
    for side in (1, -1):
        occupancy = rng.uniform(0.45, 0.95)
        x = x_lo
        while x < x_hi:
            cls = _weighted(rng, parked)
            if cls in absent:  # the commonest parked vehicle takes its place, drawn with its own size
                cls = "car"
            size = _jitter_size(rng, cls)
            if rng.random() < occupancy:
                yaw = (0.0 if side < 0 else np.pi) + rng.normal(0, 0.03)
                if rng.random() < 0.15:
                    yaw += np.pi
                y = side * (half_road - PARK_W / 2 + rng.uniform(-0.2, 0.15))
                b.actor(cls, x + size[1] / 2, y, 0.0, yaw, 0.0, size=size, stopped=cls == "bus")
            x += size[1] + rng.uniform(0.8, 6.0)

    # --- traffic in lanes: one speed per lane so vehicles never run into each other -----------------
    moving = {"car": 0.8, "truck": 0.13, "bus": 0.03, "motorcycle": 0.02, "bicycle": 0.012, "truck+trailer": 0.02}
    for lane in range(-lanes, lanes):
        y = (lane + 0.5) * LANE_W
        direction = 1.0 if lane < 0 else -1.0
        is_ego_lane = abs(y - ego_y) < 1e-6
        speed = ego_speed if is_ego_lane else (0.0 if rng.random() < 0.1 else rng.uniform(4.0, 14.0))
        span = speed * duration
        x = x_lo - span - 40 + rng.uniform(0, 20)
        while x < x_hi + span + 40:
            kind = _weighted(rng, moving)
            if kind == "truck+trailer" and "trailer" in absent:
                kind = "truck"
            elif kind in absent:  # a bus or a ridden two-wheeler gives its place in the lane to a car
                kind = "car"
            cls = "truck" if kind == "truck+trailer" else kind
            size = _jitter_size(rng, cls)
            length = size[1]
            if kind == "truck+trailer":
                size = size * np.array([1.0, 0.45, 1.0])
                length = size[1] + 0.5 + SIZE["trailer"][0][1]
            gap = rng.uniform(5.0, 35.0)
            # x is the rear (direction-wise) end of the vehicle (chain) at t = 0
            if is_ego_lane and x - 8 < ego_x0 + 4 and x + length + 8 > ego_x0 - 4:
                x = ego_x0 + 8 + 4
                continue
            yaw = 0.0 if direction > 0 else np.pi
            yy = y + rng.normal(0, 0.15)
            v = direction * speed
            if direction > 0:
                front = x + length
                b.actor(cls, front - size[1] / 2, yy, 0.0, yaw, v, size=size, static=False, stopped=speed == 0)
                if kind == "truck+trailer":
                    b.actor("trailer", x + SIZE["trailer"][0][1] / 2, yy, 0.0, yaw, v, static=False,
                            size=np.array([size[0], SIZE["trailer"][0][1], max(size[2], 3.2)]), stopped=speed == 0)
            else:
                b.actor(cls, x + size[1] / 2, yy, 0.0, yaw, v, size=size, static=False, stopped=speed == 0)
                if kind == "truck+trailer":
                    tl = SIZE["trailer"][0][1]
                    b.actor("trailer", x + size[1] + 0.5 + tl / 2, yy, 0.0, yaw, v, static=False,
                            size=np.array([size[0], tl, max(size[2], 3.2)]), stopped=speed == 0)
            x += length + gap

    # --- parked two-wheelers on the sidewalks (riding ones are part of the lane traffic) -------------
    for side in (1, -1):
        for _ in range(rng.poisson(0.25)):
            cls = "bicycle" if rng.random() < 0.6 else "motorcycle"
            if cls in absent:
                continue
            # revision 1: all towards +y, i.e. away from the road on one side and towards it on the
            # other, which a BEV flip turns into each other; revision 2: towards the road on both
            across = np.pi / 2 if revision < 2 else -side * np.pi / 2
            b.actor(cls, rng.uniform(x_lo, x_hi), side * (half_road + 0.9), KERB_H, across + rng.normal(0, 0.2), 0.0)

    # --- pedestrians on the sidewalks ------------------------------------------------------------------
    for side in (1, -1):
        n_ped = rng.poisson(rng.uniform(1.5, 8) * (x_hi - x_lo) / 100)
        for _ in range(n_ped):
            xx = rng.uniform(x_lo - 20, x_hi + 20)
            yy = side * (half_road + rng.uniform(1.3, sidewalk - 0.4))
            if rng.random() < 0.7:
                direction = 1.0 if rng.random() < 0.5 else -1.0
                b.actor("pedestrian", xx, yy, KERB_H, 0.0 if direction > 0 else np.pi, direction * rng.uniform(1.0, 1.8),
                        static=False)
            else:
                yaw = rng.uniform(-np.pi, np.pi)
                if revision >= 2:  # standing pedestrians face the road, within +-0.6 rad (the same draw)
                    yaw = -side * np.pi / 2 + yaw / np.pi * 0.6
                b.actor("pedestrian", xx, yy, KERB_H, yaw, 0.0)

    # --- into the global frame ---------------------------------------------------------------------------
    origin = np.array([map_size / 2, map_size / 2]) + rng.uniform(-20, 20, 2)
    heading = float(rng.uniform(-np.pi, np.pi))
    # centre the ego path in the map
    c, s = np.cos(heading), np.sin(heading)
    origin -= np.array([c, s]) * (ego_x0 + travel / 2)
    scene = Scene(
        origin=origin, heading=heading, half_road=half_road, sidewalk=sidewalk, lanes=lanes,
        side_streets=side_streets, side_half=side_half, ego_y=ego_y, ego_speed=ego_speed, ego_x0=ego_x0,
        static_box=np.zeros((0, 7)), static_group_start=np.asarray(b.groups), static_color=np.asarray(b.colors),
        static_reflect=np.asarray(b.reflect), static_tex=np.asarray(b.tex, dtype=np.int64),
    )
    boxes = np.asarray(b.boxes)
    gx, gy = scene.to_global(boxes[:, 0], boxes[:, 1])
    boxes[:, 0], boxes[:, 1] = gx, gy
    boxes[:, 6] = heading
    scene.static_box = boxes
    for a in b.actors:
        gx, gy = scene.to_global(np.float64(a["x"]), np.float64(a["y"]))
        yaw = float((a["yaw"] + heading + np.pi) % (2 * np.pi) - np.pi)
        vel = np.array([c, s]) * a["speed"]  # speeds are signed along the road's x axis
        scene.actors.append(Actor(a["cls"], np.asarray(a["size"], dtype=np.float64), np.array([gx, gy]), a["z0"], yaw,
                                  vel, a["attribute"], a["shape"], a["colors"]))

    # lighting and appearance
    el, az = np.deg2rad(rng.uniform(15, 70)), rng.uniform(-np.pi, np.pi)
    scene.sun = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    scene.ambient = float(rng.uniform(0.35, 0.55))
    scene.sun_strength = float(rng.uniform(0.45, 0.8))
    overcast = rng.random() < 0.35
    scene.sky_top = np.array([150, 155, 165.0]) if overcast else np.array([70, 120, 200.0]) * rng.uniform(0.85, 1.15)
    scene.sky_horizon = np.array([205, 208, 212.0]) if overcast else np.array([190, 210, 230.0]) * rng.uniform(0.9, 1.05)
    scene.tint = rng.uniform(0.92, 1.08, 3)
    scene.asphalt = np.array([1.0, 1.0, 1.03]) * rng.uniform(70, 115)
    scene.verge = np.array([rng.uniform(90, 130), rng.uniform(105, 140), rng.uniform(70, 100)])
    scene.noise_tex = rng.standard_normal((256, 256)).astype(np.float32)
    return scene


def long_tail_absent(seed: int, train: list[bool], fraction: float) -> list[frozenset[str]]:
    """The rare classes each scene lacks in a long-tailed world (``simulate --long-tail``).

    ``train[i]``: scene ``i`` is a training scene; only those lose classes (an evaluation split
    keeps every class in every scene). A training scene holds each of :data:`RARE_CLASSES` with
    probability ``fraction``, a draw from its own generator per (seed, scene, class), so the draws
    do not depend on one another nor on the scene's layout. A class that no training scene drew is
    given to the training scene whose draw came closest, so every class can still be learnt.
    ``fraction`` 1 returns empty sets: the full world.
    """
    if fraction >= 1.0:
        return [frozenset() for _ in train]
    absent: list[set[str]] = [set() for _ in train]
    for k, cls in enumerate(RARE_CLASSES):
        u = {i: float(np.random.default_rng([seed, i, 0x1A11, k]).random()) for i, t in enumerate(train) if t}
        held = [i for i, v in u.items() if v < fraction]
        if u and not held:
            held = [min(u, key=lambda i: (u[i], i))]
        for i in u:
            if i not in held:
                absent[i].add(cls)
    return [frozenset(a) for a in absent]


def actor_parts(actor: Actor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local part boxes of an actor: centres K x 3 (relative to its box centre, heading frame), half K x 3, slot K."""
    p = parts_array(actor.shape)
    w, length, h = actor.size
    lo = np.stack([p[:, 0] * length, p[:, 2] * w, p[:, 4] * h - h / 2], axis=1)
    hi = np.stack([p[:, 1] * length, p[:, 3] * w, p[:, 5] * h - h / 2], axis=1)
    return (lo + hi) / 2, (hi - lo) / 2, p[:, 6].astype(np.int64)
