"""The simulated nuScenes sensor rig: six pinhole cameras and a 32-beam spinning LIDAR_TOP.

Figures follow the nuScenes car (Renault Zoe): cameras ~1.5 m above the ground at yaws
0, -55, +55, 180, +110, -110 deg; front-facing focal length ~1260 px at 1600 x 900, the rear camera
~800 px. LIDAR_TOP is an HDL-32E-like sensor at ~1.84 m whose frame follows the devkit's convention
for LIDAR_TOP: x to the right of the car, y forward, z up (a -90 deg yaw from the ego frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bevsimdet.data.classes import CAMERAS, LIDAR

FULL_WIDTH, FULL_HEIGHT = 1600, 900


@dataclass(frozen=True)
class CameraSpec:
    """A pinhole camera; ``cam2ego`` maps OpenCV camera coordinates (x right, y down, z forward) to ego."""

    channel: str
    intrinsics: np.ndarray  # 3 x 3, pixels of the (scaled) image
    cam2ego: np.ndarray  # 4 x 4
    width: int
    height: int


@dataclass(frozen=True)
class LidarSpec:
    """A spinning LiDAR: one ray per (beam, azimuth column); ``lidar2ego`` in the devkit's LIDAR_TOP axes."""

    channel: str
    lidar2ego: np.ndarray  # 4 x 4
    elevations: np.ndarray  # B, radians, beam 0 the highest
    azimuths: int  # columns per revolution
    max_range: float
    range_noise: float  # metres (1 sigma)

    def directions(self) -> np.ndarray:
        """Unit ray directions in the LiDAR frame, B x A x 3 (column 0 at azimuth -pi, counter-clockwise)."""
        az = -np.pi + (np.arange(self.azimuths) + 0.5) * (2 * np.pi / self.azimuths)
        el = self.elevations[:, None]
        ce = np.cos(el)
        return np.stack(np.broadcast_arrays(ce * np.cos(az), ce * np.sin(az), np.sin(el)), axis=-1)


# channel: (yaw deg, translation in ego m, focal px at full resolution, principal point offset px)
_CAMERA_MOUNTS = {
    "CAM_FRONT": (0.0, (1.70, 0.02, 1.51), 1266.0, (16.0, 41.0)),
    "CAM_FRONT_RIGHT": (-55.0, (1.55, -0.49, 1.50), 1260.0, (7.0, 5.0)),
    "CAM_FRONT_LEFT": (55.0, (1.52, 0.49, 1.51), 1257.0, (26.0, 9.0)),
    "CAM_BACK": (180.0, (0.03, 0.00, 1.58), 809.0, (29.0, 32.0)),
    "CAM_BACK_LEFT": (110.0, (1.04, 0.48, 1.56), 1256.0, (-8.0, 28.0)),
    "CAM_BACK_RIGHT": (-110.0, (1.03, -0.48, 1.56), 1259.0, (6.0, 15.0)),
}
assert tuple(_CAMERA_MOUNTS) == CAMERAS


def _rt(rotation: np.ndarray, translation) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = rotation
    m[:3, 3] = translation
    return m


def yaw_matrix(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def camera_spec(channel: str, image_scale: float) -> CameraSpec:
    yaw_deg, t, focal, (dx, dy) = _CAMERA_MOUNTS[channel]
    yaw = np.deg2rad(yaw_deg)
    forward = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    down = np.array([0.0, 0.0, -1.0])
    width, height = max(8, round(FULL_WIDTH * image_scale)), max(8, round(FULL_HEIGHT * image_scale))
    sx, sy = width / FULL_WIDTH, height / FULL_HEIGHT
    k = np.array(
        [[focal * sx, 0.0, (FULL_WIDTH / 2 + dx) * sx], [0.0, focal * sy, (FULL_HEIGHT / 2 + dy) * sy], [0.0, 0.0, 1.0]]
    )
    return CameraSpec(channel, k, _rt(np.stack([right, down, forward], axis=1), t), width, height)


def lidar_spec(beams: int = 32) -> LidarSpec:
    # LIDAR_TOP axes: x right, y forward, z up  ->  ego = Rz(-90 deg) @ lidar.
    return LidarSpec(
        channel=LIDAR,
        lidar2ego=_rt(yaw_matrix(-np.pi / 2), (0.943, 0.0, 1.84)),
        elevations=np.deg2rad(np.linspace(10.67, -30.67, beams)),
        azimuths=1084,  # ~0.33 deg at 20 Hz
        max_range=100.0,
        range_noise=0.015,
    )


@dataclass(frozen=True)
class Rig:
    cameras: tuple[CameraSpec, ...]
    lidar: LidarSpec


def build_rig(image_scale: float) -> Rig:
    return Rig(tuple(camera_spec(c, image_scale) for c in CAMERAS), lidar_spec())
