"""Write one simulated scene in the nuScenes on-disk format (sensor files + table records).

Tokens are 32 hex digits hashed from (seed, table, scene, index), so the same seed gives the same
dataset byte for byte. Each scene is generated independently (one process per scene is fine) and
returns its table records; :mod:`bevsimdet.data.sim.simulate` merges them and writes the tables.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from nuscenes.utils.data_classes import Box
from nuscenes.utils.geometry_utils import points_in_box
from pyquaternion import Quaternion

from bevsimdet.data.classes import LIDAR, SIM_CATEGORY
from bevsimdet.data.sim.render import render_camera, scan_lidar, world_at
from bevsimdet.data.sim.rig import Rig, build_rig
from bevsimdet.data.sim.scene import WORLD_REVISION, Scene, build_scene

KEYFRAME_DT = 0.5  # s (2 Hz)
SWEEP_DT = 0.05  # s (20 Hz)
ANNOTATION_RADIUS = 60.0  # m around the ego within which objects are annotated
JPEG_QUALITY = 90
LOCATIONS = ("boston-seaport", "singapore-onenorth", "singapore-queenstown", "singapore-hollandvillage")
VISIBILITY = (("1", "v0-40", 0.4), ("2", "v40-60", 0.6), ("3", "v60-80", 0.8), ("4", "v80-100", 1.01))
ATTRIBUTES = (
    "vehicle.moving", "vehicle.stopped", "vehicle.parked", "cycle.with_rider", "cycle.without_rider",
    "pedestrian.sitting_lying_down", "pedestrian.standing", "pedestrian.moving",
)


def token(seed: int, *parts: object) -> str:
    """Deterministic 32-hex-digit token."""
    return hashlib.sha1("/".join(map(str, (seed, *parts))).encode()).hexdigest()[:32]


def quat(m: np.ndarray) -> list[float]:
    """(w, x, y, z) of a rotation matrix, as plain floats (what the JSON tables hold)."""
    q = Quaternion(matrix=np.asarray(m, dtype=np.float64)[:3, :3], atol=1e-6)
    return [float(v) for v in q.elements]


def yaw_quat(yaw: float) -> list[float]:
    return [float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))]


@dataclass(frozen=True)
class SceneJob:
    """Everything one worker needs to write scene ``index`` (picklable for process pools)."""

    out_dir: str
    seed: int
    index: int
    name: str
    samples: int
    sweeps: int
    image_scale: float
    world_revision: int = WORLD_REVISION
    absent: tuple[str, ...] = ()  # rare classes this scene lacks (simulate --long-tail; scene.long_tail_absent)


def scene_duration(samples: int) -> float:
    return (samples - 1) * KEYFRAME_DT


def map_size(samples: int) -> float:
    """Side (m) of the square map mask that holds one scene (ego path centred)."""
    return float(np.ceil((12.0 * scene_duration(samples) + 320.0) / 50.0) * 50.0)


def sim_scene(job: SceneJob) -> Scene:
    return build_scene(job.seed, job.index, scene_duration(job.samples), map_size(job.samples), job.world_revision,
                       frozenset(job.absent))


def shared_tokens(seed: int, rig: Rig) -> dict[str, str]:
    """Tokens of the records shared by all scenes (sensors, calibrations, categories, attributes)."""
    out = {}
    for ch in [c.channel for c in rig.cameras] + [LIDAR]:
        out[f"sensor/{ch}"] = token(seed, "sensor", ch)
        out[f"calibrated_sensor/{ch}"] = token(seed, "calibrated_sensor", ch)
    for name in SIM_CATEGORY.values():
        out[f"category/{name}"] = token(seed, "category", name)
    for name in ATTRIBUTES:
        out[f"attribute/{name}"] = token(seed, "attribute", name)
    return out


def _write_map(path: Path, scene: Scene, size: float) -> None:
    """Drivable-area mask at 0.1 m/pixel, global origin at the bottom-left pixel (devkit MapMask)."""
    res = 0.1
    n = int(round(size / res))
    mask = np.zeros((n, n), dtype=np.uint8)
    far = 1e4

    def fill(x0: float, x1: float, y0: float, y1: float) -> None:
        xs, ys = np.array([x0, x1, x1, x0]), np.array([y0, y0, y1, y1])
        gx, gy = scene.to_global(xs, ys)
        poly = np.stack([gx / res, n - gy / res], axis=1).round().astype(np.int32)
        cv2.fillPoly(mask, [poly], 255)

    fill(-far, far, -scene.half_road, scene.half_road)
    for xc, hw in zip(scene.side_streets, scene.side_half):
        fill(xc - hw, xc + hw, scene.half_road + scene.sidewalk, far)
        fill(xc - hw, xc + hw, -far, -scene.half_road - scene.sidewalk)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), mask, [cv2.IMWRITE_PNG_COMPRESSION, 1])


def write_scene(job: SceneJob, progress=None) -> dict:
    """Simulate and write scene ``job.index``; returns its table records and per-class counts.

    ``progress`` (optional) is called once per keyframe.
    """
    cv2.setNumThreads(1)
    seed, idx = job.seed, job.index
    out = Path(job.out_dir)
    rig = build_rig(job.image_scale)
    shared = shared_tokens(seed, rig)
    scene = sim_scene(job)
    rng = np.random.default_rng([seed, idx, 0x5E45])
    tables: dict[str, list] = {k: [] for k in ("log", "map", "scene", "sample", "sample_data", "ego_pose",
                                                "sample_annotation", "instance")}
    log_rng = np.random.default_rng([seed, idx, 0x106])
    logfile = f"n{900 + idx % 100:03d}-2024-{1 + idx % 12:02d}-{1 + idx % 28:02d}-{8 + idx % 10:02d}-{idx % 60:02d}-{seed % 60:02d}+0000"
    log_token, map_token, scene_token = token(seed, "log", idx), token(seed, "map", idx), token(seed, "scene", idx)
    tables["log"].append(dict(token=log_token, logfile=logfile, vehicle="n900", date_captured=logfile[5:15],
                              location=str(LOCATIONS[log_rng.integers(len(LOCATIONS))])))
    map_file = f"maps/{map_token}.png"
    _write_map(out / map_file, scene, map_size(job.samples))
    tables["map"].append(dict(token=map_token, log_tokens=[log_token], category="semantic_prior", filename=map_file))

    base_ts = 1_533_000_000_000_000 + idx * 3_600_000_000 + (seed % 1000) * 1_000_000
    ts = lambda t: int(base_ts + round(t * 1e6))  # noqa: E731
    sample_tokens = [token(seed, "sample", idx, k) for k in range(job.samples)]
    key_times = [k * KEYFRAME_DT for k in range(job.samples)]
    for k, st in enumerate(sample_tokens):
        tables["sample"].append(dict(token=st, timestamp=ts(key_times[k]), scene_token=scene_token,
                                     prev=sample_tokens[k - 1] if k else "",
                                     next=sample_tokens[k + 1] if k + 1 < job.samples else ""))
    tables["scene"].append(dict(token=scene_token, log_token=log_token, nbr_samples=job.samples,
                                first_sample_token=sample_tokens[0], last_sample_token=sample_tokens[-1],
                                name=job.name, description=f"bevsimdet synthetic street, seed {seed}"))

    # LiDAR times: `sweeps` sweeps lead up to every keyframe (also the first one).
    lidar_times = []
    for k, tk in enumerate(key_times):
        lidar_times += [(tk - j * SWEEP_DT, k, False) for j in range(job.sweeps, 0, -1)]
        lidar_times.append((tk, k, True))
    lidar_tokens = [token(seed, "sample_data", idx, LIDAR, i) for i in range(len(lidar_times))]
    cam_tokens = {c.channel: [token(seed, "sample_data", idx, c.channel, k) for k in range(job.samples)]
                  for c in rig.cameras}

    def sd_record(tok: str, k: int, t: float, channel: str, key: bool, filename: str, prev: str, nxt: str,
                  width: int = 0, height: int = 0, ego: np.ndarray | None = None) -> None:
        tables["sample_data"].append(dict(
            token=tok, sample_token=sample_tokens[k], ego_pose_token=tok,
            calibrated_sensor_token=shared[f"calibrated_sensor/{channel}"], timestamp=ts(t),
            fileformat="pcd" if channel == LIDAR else "jpg", is_key_frame=key, height=height, width=width,
            filename=filename, prev=prev, next=nxt))
        tables["ego_pose"].append(dict(token=tok, timestamp=ts(t), rotation=quat(ego),
                                       translation=[float(ego[0, 3]), float(ego[1, 3]), 0.0]))

    lidar_cs = (rig.lidar.lidar2ego[:3, 3].tolist(), quat(rig.lidar.lidar2ego))
    annotations: dict[int, list[dict]] = {}
    counts: dict[str, int] = {}
    for i, (t, k, key) in enumerate(lidar_times):
        frame = world_at(scene, t)
        ego = scene.ego_pose(t)
        sweep = scan_lidar(scene, frame, rig.lidar, ego, rng)
        folder = "samples" if key else "sweeps"
        fname = f"{folder}/{LIDAR}/{logfile}__{LIDAR}__{ts(t)}.pcd.bin"
        (out / fname).parent.mkdir(parents=True, exist_ok=True)
        sweep.points.tofile(out / fname)
        sd_record(lidar_tokens[i], k, t, LIDAR, key, fname, lidar_tokens[i - 1] if i else "",
                  lidar_tokens[i + 1] if i + 1 < len(lidar_times) else "", ego=ego)
        if not key:
            continue
        visible = np.zeros(len(scene.actors), dtype=np.int64)
        silhouette = np.zeros(len(scene.actors), dtype=np.int64)
        for cam in rig.cameras:
            img = render_camera(scene, frame, cam, ego, rng)
            visible += img.visible
            silhouette += img.silhouette
            cname = f"samples/{cam.channel}/{logfile}__{cam.channel}__{ts(t)}.jpg"
            (out / cname).parent.mkdir(parents=True, exist_ok=True)
            ok, buf = cv2.imencode(".jpg", img.rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            (out / cname).write_bytes(buf.tobytes())
            toks = cam_tokens[cam.channel]
            sd_record(toks[k], k, t, cam.channel, True, cname, toks[k - 1] if k else "",
                      toks[k + 1] if k + 1 < job.samples else "", cam.width, cam.height, ego)
        ego_q = Quaternion(quat(ego))
        ego_t = ego[:3, 3].copy()
        ego_t[2] = 0.0
        pts = sweep.points[:, :3].T
        for a_idx, actor in enumerate(scene.actors):
            c = actor.center(t)
            if np.hypot(c[0] - ego_t[0], c[1] - ego_t[1]) > ANNOTATION_RADIUS:
                continue
            size = [float(actor.size[0]), float(actor.size[1]), float(actor.size[2])]
            rot = yaw_quat(actor.yaw)
            box = Box([float(v) for v in c], size, Quaternion(rot))
            box.translate(-ego_t)
            box.rotate(ego_q.inverse)
            box.translate(-np.asarray(lidar_cs[0]))
            box.rotate(Quaternion(lidar_cs[1]).inverse)
            # only points within the box's circumsphere can be inside it (same count, far fewer tests)
            near = np.sum((pts - box.center[:, None]) ** 2, axis=0) <= np.sum((np.asarray(size) / 2) ** 2) + 1e-3
            n_pts = int(points_in_box(box, pts[:, near]).sum())
            frac = visible[a_idx] / silhouette[a_idx] if silhouette[a_idx] else 0.0
            vis = next(v[0] for v in VISIBILITY if frac < v[2])
            annotations.setdefault(a_idx, []).append(dict(
                token=token(seed, "sample_annotation", idx, a_idx, k), sample_token=sample_tokens[k],
                instance_token=token(seed, "instance", idx, a_idx), visibility_token=vis,
                attribute_tokens=[shared[f"attribute/{actor.attribute}"]] if actor.attribute else [],
                translation=[float(v) for v in c], size=size, rotation=rot, prev="", next="",
                num_lidar_pts=n_pts, num_radar_pts=0))
            counts[actor.cls] = counts.get(actor.cls, 0) + 1
        if progress is not None:
            progress()

    for a_idx, anns in annotations.items():
        for j, ann in enumerate(anns):
            ann["prev"] = anns[j - 1]["token"] if j else ""
            ann["next"] = anns[j + 1]["token"] if j + 1 < len(anns) else ""
        tables["sample_annotation"] += anns
        actor = scene.actors[a_idx]
        tables["instance"].append(dict(token=token(seed, "instance", idx, a_idx),
                                       category_token=shared[f"category/{SIM_CATEGORY[actor.cls]}"],
                                       nbr_annotations=len(anns), first_annotation_token=anns[0]["token"],
                                       last_annotation_token=anns[-1]["token"]))
    return dict(tables=tables, counts=counts, sweeps=len(lidar_times) - job.samples)
