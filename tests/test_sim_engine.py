"""Unit tests of the simulator's building blocks: ray caster, rig, shapes, scene layout."""

from __future__ import annotations

import numpy as np
import pytest

from bevsimdet.data.sim.raycast import Prims, cast, cast_reference, ground_t, pinhole_rects, spherical_rects
from bevsimdet.data.sim.rig import build_rig, lidar_spec
from bevsimdet.data.sim.shapes import SHAPES, check_tight


def _random_prims(rng: np.random.Generator, groups: int) -> Prims:
    centers, halves, yaws, starts, gboxes = [], [], [], [0], []
    for _ in range(groups):
        c = np.array([*rng.uniform(-30, 30, 2), 0.0])
        yaw = rng.uniform(-np.pi, np.pi)
        hl, hw, hh = rng.uniform(0.2, 4.0, 3)
        n = int(rng.integers(1, 4))
        for _ in range(n):
            # parts inside the group's cuboid, sharing its yaw
            f = rng.uniform(0.3, 1.0, 3)
            off = (1 - f) * rng.uniform(-1, 1, 3) * np.array([hl, hw, hh])
            cy, sy = np.cos(yaw), np.sin(yaw)
            centers.append([c[0] + cy * off[0] - sy * off[1], c[1] + sy * off[0] + cy * off[1], hh + off[2]])
            halves.append(f * np.array([hl, hw, hh]))
            yaws.append(yaw)
        starts.append(starts[-1] + n)
        gboxes.append([c[0], c[1], hh, hl, hw, hh, yaw])
    return Prims(np.array(centers).reshape(-1, 3), np.array(halves).reshape(-1, 3), np.array(yaws),
                 np.array(starts), np.array(gboxes).reshape(-1, 7))


def _assert_same(a, b):
    np.testing.assert_array_equal(a.t, b.t)
    np.testing.assert_array_equal(a.prim, b.prim)
    np.testing.assert_array_equal(a.silhouette, b.silhouette)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cast_matches_reference_pinhole(seed):
    rng = np.random.default_rng(seed)
    prims = _random_prims(rng, 25)
    rig = build_rig(0.04)
    for cam in rig.cameras:
        cam2world = np.eye(4)
        cam2world[:3, :3] = cam.cam2ego[:3, :3]
        cam2world[:3, 3] = [rng.uniform(-3, 3), rng.uniform(-3, 3), 1.5]
        kinv = np.linalg.inv(cam.intrinsics)
        u, v = np.meshgrid(np.arange(cam.width) + 0.5, np.arange(cam.height) + 0.5)
        dirs = (np.stack([u, v, np.ones_like(u)], -1) @ kinv.T @ cam2world[:3, :3].T).astype(np.float32)
        rects = pinhole_rects(prims, np.linalg.inv(cam2world), cam.intrinsics, cam.width, cam.height)
        _assert_same(cast(cam2world[:3, 3], dirs, prims, rects), cast_reference(cam2world[:3, 3], dirs, prims))


@pytest.mark.parametrize("seed", [0, 3])
def test_cast_matches_reference_lidar(seed):
    rng = np.random.default_rng(seed)
    prims = _random_prims(rng, 30)
    spec = lidar_spec(beams=12)
    spec = type(spec)(spec.channel, spec.lidar2ego, spec.elevations, 200, spec.max_range, spec.range_noise)
    sensor2world = np.eye(4)
    yaw = rng.uniform(-np.pi, np.pi)
    sensor2world[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    sensor2world[:3, 3] = [1.0, -2.0, 1.8]
    dirs = (spec.directions() @ sensor2world[:3, :3].T).astype(np.float32)
    rects = spherical_rects(prims, np.linalg.inv(sensor2world), spec.elevations, spec.azimuths, 1e9)
    _assert_same(cast(sensor2world[:3, 3], dirs, prims, rects), cast_reference(sensor2world[:3, 3], dirs, prims))


def test_cast_empty_scene():
    prims = Prims(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros(1, dtype=np.int64), np.zeros((0, 7)))
    dirs = np.tile(np.array([1.0, 0.0, -0.1], np.float32), (4, 5, 1))
    hits = cast(np.array([0.0, 0.0, 2.0]), dirs, prims, np.zeros((0, 5), dtype=np.int64))
    assert np.isinf(hits.t).all() and (hits.prim == -1).all() and hits.silhouette.shape == (0,)
    np.testing.assert_allclose(ground_t(np.array([0.0, 0.0, 2.0]), dirs), 20.0, rtol=1e-6)


def test_rig_geometry():
    rig = build_rig(0.25)
    assert [c.channel for c in rig.cameras][0] == "CAM_FRONT" and len(rig.cameras) == 6
    front, back = rig.cameras[0], rig.cameras[3]
    assert (front.width, front.height) == (400, 225)
    assert front.intrinsics[0, 0] == pytest.approx(1266 * 0.25) and back.intrinsics[0, 0] == pytest.approx(809 * 0.25)
    # camera z (optical axis) looks along the mount yaw; LIDAR_TOP's y axis is the ego's forward axis
    np.testing.assert_allclose(front.cam2ego[:3, 2], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(back.cam2ego[:3, 2], [-1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(rig.lidar.lidar2ego[:3, :3] @ [0, 1, 0], [1, 0, 0], atol=1e-12)
    d = rig.lidar.directions()
    assert d.shape == (32, 1084, 3)
    np.testing.assert_allclose(np.linalg.norm(d, axis=-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_shapes_fill_their_box(shape):
    assert check_tight(shape)


def test_scene_is_seeded_and_has_every_class():
    from bevsimdet.data.classes import CLASSES
    from bevsimdet.data.sim.scene import build_scene

    a, b = build_scene(3, 1, 1.0, 400.0), build_scene(3, 1, 1.0, 400.0)
    assert len(a.actors) == len(b.actors)
    np.testing.assert_array_equal(np.array([x.xy0 for x in a.actors]), np.array([x.xy0 for x in b.actors]))
    assert {x.cls for x in a.actors} == set(CLASSES)
    c = build_scene(4, 1, 1.0, 400.0)
    assert len(c.actors) != len(a.actors) or not np.allclose(c.actors[0].xy0, a.actors[0].xy0)


def test_render_scene_without_actors():
    from bevsimdet.data.sim.render import render_camera, scan_lidar, world_at
    from bevsimdet.data.sim.scene import build_scene

    scene = build_scene(0, 0, 0.0, 400.0)
    scene.actors = []
    rig = build_rig(0.03)
    frame = world_at(scene, 0.0)
    img = render_camera(scene, frame, rig.cameras[0], scene.ego_pose(0.0), np.random.default_rng(0))
    assert img.rgb.shape == (27, 48, 3) and (img.instance == -1).all() and img.visible.shape == (0,)
    sweep = scan_lidar(scene, frame, rig.lidar, scene.ego_pose(0.0), np.random.default_rng(0))
    assert sweep.points.shape[1] == 5 and len(sweep.points) > 10000 and (sweep.instance == -1).all()


def test_scene_names_follow_devkit_splits():
    from nuscenes.utils import splits

    from bevsimdet.data.sim import scene_names
    from bevsimdet.errors import UserError

    mini = scene_names("v1.0-mini", 10)
    assert sorted(mini) == sorted(splits.mini_train + splits.mini_val)
    assert set(scene_names("v1.0-mini", 3)) & set(splits.mini_val)
    tv = scene_names("v1.0-trainval", 20)
    assert len(set(tv)) == 20 and set(tv) & set(splits.val) and set(tv) & set(splits.train)
    with pytest.raises(UserError):
        scene_names("v1.0-mini", 11)
    with pytest.raises(UserError):
        scene_names("v2.0", 1)


def _road_frame_headings(scene, cls: str, still: bool = True):
    """(road-frame y, road-frame yaw) of the actors of ``cls`` on the sidewalks (still ones only by
    default; a two-wheeler stopped in a lane is traffic, not parked)."""
    rows = []
    for a in scene.actors:
        _, y = scene.to_road(a.xy0[0], a.xy0[1])
        if a.cls == cls and (not still or np.linalg.norm(a.vel) < 0.2) and abs(y) > scene.half_road:
            rows.append((float(y), float(np.angle(np.exp(1j * (a.yaw - scene.heading))))))
    return np.array(rows).reshape(-1, 2)


def _off_facing_the_road(scenes, cls: str) -> np.ndarray:
    """|heading - facing the road| (rad) of the sidewalk ``cls`` actors of ``scenes``; the road lies
    towards -sign(y) from road-frame y."""
    rows = np.concatenate([_road_frame_headings(s, cls) for s in scenes])
    return np.abs(np.angle(np.exp(1j * (rows[:, 1] + np.sign(rows[:, 0]) * np.pi / 2))))


def test_world_revision_2_makes_still_pedestrians_and_parked_two_wheelers_face_the_road():
    """Revision 2: a standing pedestrian or parked two-wheeler on the sidewalk at road-frame y
    faces the road (yaw -sign(y) pi/2, within the drawn spread); revision 1 keeps its random
    headings."""
    from bevsimdet.data.classes import CLASSES
    from bevsimdet.data.sim.scene import WORLD_REVISION, build_scene

    assert WORLD_REVISION == 2
    old = [build_scene(s, i, 19.5, 600.0, revision=1) for s, i in ((3, 0), (3, 1), (5, 2))]
    new = [build_scene(s, i, 19.5, 600.0) for s, i in ((3, 0), (3, 1), (5, 2))]
    for cls, spread in (("pedestrian", 0.6), ("bicycle", 0.9), ("motorcycle", 0.9)):
        err = _off_facing_the_road(new, cls)
        assert len(err) >= 3 and err.max() <= spread, cls
    assert _off_facing_the_road(old, "pedestrian").max() > 2.0  # random in revision 1
    assert all({x.cls for x in s.actors} == set(CLASSES) for s in new)
    with pytest.raises(ValueError, match="world revision"):
        build_scene(3, 0, 1.0, 400.0, revision=9)
