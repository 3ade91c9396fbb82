"""Geometry units (no dataset): transforms, the box convention against the devkit, projection,
and the augmentation matrices against the pixels/points they move."""

from __future__ import annotations

import numpy as np
import pytest
from nuscenes.utils.data_classes import Box
from nuscenes.utils.geometry_utils import points_in_box
from pyquaternion import Quaternion

from bevsimdet.data.transforms import BEVAug, ImageAug, apply_bev_aug, warp_image
from bevsimdet.geometry import (
    apply_transform,
    box_corners,
    box_to_ego,
    ego_to_boxes,
    from_homogeneous,
    global_to_ego,
    in_image,
    invert,
    make_transform,
    points_in_boxes,
    project_points,
    quaternion_to_matrix,
    rotation_z,
    to_homogeneous,
    transform_boxes,
    wrap_angle,
)


def random_pose(rng: np.random.Generator, tilt: float = 0.05) -> np.ndarray:
    """An ego pose: any yaw, small pitch/roll (as on real roads), a far-away translation."""
    q = Quaternion(axis=[0, 0, 1], angle=rng.uniform(-np.pi, np.pi)) * Quaternion(axis=rng.normal(size=3), angle=rng.uniform(-tilt, tilt))
    return make_transform(q.elements, rng.uniform(-2000, 2000, 3))


def random_boxes(rng: np.random.Generator, m: int = 20) -> np.ndarray:
    b = np.zeros((m, 9))
    b[:, 0:2] = rng.uniform(-50, 50, (m, 2))
    b[:, 2] = rng.uniform(-1, 2, m)
    b[:, 3:6] = rng.uniform(0.4, 5, (m, 3))
    b[:, 6] = rng.uniform(-np.pi, np.pi, m)
    b[:, 7:9] = rng.normal(0, 5, (m, 2))
    return b


def test_quaternion_matrix_and_inverse():
    rng = np.random.default_rng(0)
    for _ in range(10):
        q = Quaternion(rng.normal(size=4)).normalised
        np.testing.assert_allclose(quaternion_to_matrix(q.elements), q.rotation_matrix, atol=1e-12)
    t = random_pose(rng)
    np.testing.assert_allclose(invert(t) @ t, np.eye(4), atol=1e-9)
    a = np.eye(4)
    a[:3, :3] = 1.3 * rotation_z(0.4) @ np.diag([1, -1, 1])
    a[:3, 3] = [1, 2, 3]
    np.testing.assert_allclose(invert(a) @ a, np.eye(4), atol=1e-12)
    p = rng.normal(size=(5, 3))
    np.testing.assert_allclose(from_homogeneous(to_homogeneous(p) @ t.T), apply_transform(t, p), atol=1e-9)


def test_wrap_angle():
    np.testing.assert_allclose(wrap_angle(np.array([0.0, np.pi, -np.pi, 3 * np.pi, 2 * np.pi + 0.1, -0.1])), [0, np.pi, np.pi, np.pi, 0.1, -0.1], atol=1e-12)
    x = np.random.default_rng(1).uniform(-50, 50, 1000)
    w = wrap_angle(x)
    assert (w > -np.pi).all() and (w <= np.pi).all()
    np.testing.assert_allclose(np.cos(w), np.cos(x), atol=1e-9)


def test_global_to_ego_matches_devkit_and_round_trips():
    from bevsimdet.eval.results import ego_to_global

    rng = np.random.default_rng(2)
    for _ in range(5):
        pose = random_pose(rng)
        ego = random_boxes(rng)
        ego[:, 2] = 0.5
        glob = ego_to_boxes(ego, pose)  # devkit Box.rotate then Box.translate
        # the evaluation's vectorised conversion and the devkit agree
        centre, quat, vel = ego_to_global(ego, pose)
        np.testing.assert_allclose(centre, [b.center for b in glob], atol=1e-7)
        np.testing.assert_allclose(np.abs((quat * [b.orientation.elements for b in glob]).sum(1)), 1, atol=1e-9)
        np.testing.assert_allclose(vel, [b.velocity[:2] for b in glob], atol=1e-9)
        # global -> ego: vectorised == devkit reference; round trip up to the pose tilt of the velocity
        back = global_to_ego([b.center for b in glob], [b.wlh for b in glob], [b.orientation.elements for b in glob], [b.velocity[:2] for b in glob], pose)
        ref = np.stack([box_to_ego(b, pose) for b in glob])
        np.testing.assert_allclose(back[:, :7], ref[:, :7], atol=1e-7)
        np.testing.assert_allclose(back[:, :6], ego[:, :6], atol=1e-6)
        np.testing.assert_allclose(wrap_angle(back[:, 6] - ego[:, 6]), 0, atol=1e-9)
        np.testing.assert_allclose(back[:, 7:], ego[:, 7:], atol=0.1 * np.abs(ego[:, 7:]).max())


def test_nan_velocity_becomes_zero():
    out = global_to_ego([[1.0, 2.0, 0.0]], [[2.0, 4.0, 1.5]], [[1.0, 0, 0, 0]], [[np.nan, np.nan]], np.eye(4))
    assert np.isfinite(out).all() and (out[0, 7:] == 0).all()


def test_corners_and_points_in_boxes_match_devkit():
    rng = np.random.default_rng(3)
    boxes = random_boxes(rng, 8)
    dev = ego_to_boxes(boxes, np.eye(4))
    corners = box_corners(boxes)
    for c, b in zip(corners, dev):
        np.testing.assert_allclose(c, b.corners().T, atol=1e-9)
    pts = np.concatenate([rng.uniform(-55, 55, (3000, 2)), rng.uniform(-2, 4, (3000, 1))], axis=1)
    pts = np.concatenate([pts, boxes[:, :3] + rng.uniform(-0.3, 0.3, (8, 3)) * boxes[:, 3:6]])
    inside = points_in_boxes(pts, boxes)
    ref = np.stack([points_in_box(b, pts.T) for b in dev], axis=1)
    np.testing.assert_array_equal(inside, ref)
    assert inside.any()
    assert points_in_boxes(np.zeros((0, 3)), boxes).shape == (0, 8)
    assert points_in_boxes(pts, np.zeros((0, 9))).shape == (len(pts), 0)


def test_transform_boxes_moves_corners_and_inverts():
    rng = np.random.default_rng(4)
    boxes = random_boxes(rng)
    for flip in (np.diag([1, 1, 1]), np.diag([1, -1, 1]), np.diag([-1, 1, 1])):
        t = np.eye(4)
        t[:3, :3] = flip @ (1.04 * rotation_z(rng.uniform(-0.4, 0.4)))
        t[:3, 3] = [0.5, -1.0, 0.0]
        moved = transform_boxes(boxes, t)
        # the same solid: corners map onto corners (as a set: a flip reorders them)
        got = np.sort(box_corners(moved).round(6), axis=1)
        want = np.sort(apply_transform(t, box_corners(boxes).reshape(-1, 3)).reshape(-1, 8, 3).round(6), axis=1)
        np.testing.assert_allclose(got, want, atol=1e-5)
        np.testing.assert_allclose(moved[:, 7:9], (boxes[:, 7:9] @ t[:2, :2].T), atol=1e-9)
        back = transform_boxes(moved, invert(t))
        np.testing.assert_allclose(back[:, :6], boxes[:, :6], atol=1e-9)
        np.testing.assert_allclose(wrap_angle(back[:, 6] - boxes[:, 6]), 0, atol=1e-9)
        np.testing.assert_allclose(back[:, 7:], boxes[:, 7:], atol=1e-9)
    assert transform_boxes(np.zeros((0, 9)), np.eye(4)).shape == (0, 9)


def front_camera(f: float = 100.0, size: tuple[int, int] = (90, 160)) -> tuple[np.ndarray, np.ndarray]:
    """A camera 1.5 m up looking along +x (OpenCV axes), principal point at the image centre."""
    h, w = size
    k = np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]])
    rot = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=float)  # camera x,y,z -> ego -y,-z,+x
    return k, make_transform(rot, [1.0, 0.0, 1.5])


def test_project_points_pinhole():
    k, cam2ego = front_camera()
    pts = np.array([[11.0, 0.0, 1.5], [11.0, 1.0, 1.5], [11.0, 0.0, 2.5], [-5.0, 0.0, 1.5]])
    uv, depth = project_points(pts, k, cam2ego)
    np.testing.assert_allclose(depth, [10, 10, 10, -6])
    np.testing.assert_allclose(uv[0], [79.5, 44.5])
    np.testing.assert_allclose(uv[1], [79.5 - 10, 44.5])  # +y (left) -> smaller u
    np.testing.assert_allclose(uv[2], [79.5, 44.5 - 10])  # up -> smaller v
    np.testing.assert_array_equal(in_image(uv, depth, (90, 160)), [True, True, True, False])
    aug = np.array([[0.5, 0, 3.0], [0, 0.5, -2.0], [0, 0, 1]])
    uv_aug, _ = project_points(pts, k, cam2ego, aug)
    np.testing.assert_allclose(uv_aug, uv * 0.5 + [3.0, -2.0])


def spot_image(size: tuple[int, int], uv: tuple[float, float]) -> np.ndarray:
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    blob = np.exp(-((xx - uv[0]) ** 2 + (yy - uv[1]) ** 2) / (2 * 2.5**2))
    return np.repeat((255 * blob)[..., None], 3, axis=2).astype(np.uint8)


@pytest.mark.parametrize("seed", range(6))
def test_image_aug_matrix_matches_warped_pixels(seed):
    rng = np.random.default_rng(seed)
    src = (225, 400)
    aug = ImageAug(image_size=(128, 352), resize_lim=(0.8, 1.0), test_resize=0.88, rot_lim=(-5.4, 5.4), rand_flip=True)
    uv = (rng.uniform(120, 280), rng.uniform(120, 200))
    mat, resized = aug.sample(src, rng)
    out = warp_image(spot_image(src, uv), mat, resized, aug.image_size)
    assert out.shape == (128, 352, 3)
    want = (mat @ [uv[0], uv[1], 1.0])[:2]
    g = out[..., 0].astype(float)
    yy, xx = np.mgrid[0 : g.shape[0], 0 : g.shape[1]]
    near = (np.hypot(xx - want[0], yy - want[1]) < 12) * g
    got = np.array([(near * xx).sum(), (near * yy).sum()]) / near.sum()
    np.testing.assert_allclose(got, want, atol=0.35)


def test_image_aug_test_time_is_deterministic_and_centred():
    aug = ImageAug(image_size=(128, 352), test_resize=0.88)
    mat, resized = aug.sample((225, 400), None)
    assert resized == (198, 352)
    np.testing.assert_allclose(mat[:2, :2], np.diag([0.88, 0.88]))
    identity = ImageAug(image_size=(225, 400), test_resize=1.0).sample((225, 400), None)[0]
    np.testing.assert_allclose(identity, np.eye(3), atol=1e-12)


def test_bev_aug_moves_points_with_boxes_and_inverts():
    rng = np.random.default_rng(5)
    boxes = random_boxes(rng, 10)
    # points inside each box (shrunk a little so rounding never pushes them out)
    local = rng.uniform(-0.45, 0.45, (10, 30, 3)) * boxes[:, None, [4, 3, 5]]
    c, s = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    pts = np.stack([c * local[..., 0] - s * local[..., 1], s * local[..., 0] + c * local[..., 1], local[..., 2]], -1) + boxes[:, None, :3]
    pts = np.concatenate([pts.reshape(-1, 3), rng.uniform(0, 1, (300, 2))], axis=1).astype(np.float32)
    owner = np.repeat(np.arange(10), 30)
    aug = BEVAug(rot_lim=(-0.3925, 0.3925), scale_lim=(0.95, 1.05), flip=True)
    flips = set()
    for _ in range(8):
        mat = aug.sample(rng)
        flips.add((mat[0, 0] * mat[1, 1] < 0, round(float(np.linalg.det(mat[:3, :3])), 1) < 0))
        p2, b2 = apply_bev_aug(pts, boxes, mat)
        inside = points_in_boxes(p2[:, :3], b2)
        assert inside[np.arange(len(owner)), owner].all()
        np.testing.assert_array_equal(p2[:, 3:], pts[:, 3:])
        p3, b3 = apply_bev_aug(p2, b2, invert(mat))
        np.testing.assert_allclose(p3, pts, atol=1e-4)
        np.testing.assert_allclose(b3[:, :6], boxes[:, :6], atol=1e-9)
        np.testing.assert_allclose(b3[:, 7:], boxes[:, 7:], atol=1e-9)
    assert any(f[1] for f in flips)  # some draws flipped
    np.testing.assert_array_equal(aug.sample(None), np.eye(4))
