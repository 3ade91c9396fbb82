"""Random ground truth and predictions for testing and benchmarking the evaluator.

No images or point clouds: just boxes in global coordinates around random ego positions, with
the cases the metric must handle (out-of-range and zero-point GT, bicycles in racks, NaN GT
velocities, missing attributes) and knobs for detector behaviour (recall, noise, duplicates,
false positives, class confusion, tied scores, samples without predictions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from bevsimdet.eval.boxes import ATTRIBUTE_NAMES, DETECTION_NAMES, BoxSet, quaternion_yaw
from bevsimdet.eval.gt import GroundTruth

# Typical w, l, h (m) per class, in DETECTION_NAMES order.
TYPICAL_SIZE = np.array(
    [[1.9, 4.6, 1.7], [2.5, 6.9, 2.8], [2.9, 11.0, 3.5], [2.9, 12.3, 3.9], [2.8, 6.4, 3.2],
     [0.7, 0.7, 1.8], [0.8, 2.1, 1.5], [0.6, 1.7, 1.3], [0.4, 0.4, 1.1], [2.5, 0.5, 1.0]]
)
_REL_ATTRS = {
    "car": (5, 6, 7), "truck": (5, 6, 7), "bus": (5, 6, 7), "trailer": (5, 6, 7), "construction_vehicle": (5, 6, 7),
    "pedestrian": (0, 1, 2), "motorcycle": (3, 4), "bicycle": (3, 4), "traffic_cone": (), "barrier": (),
}


def yaw_quaternion(yaw: np.ndarray) -> np.ndarray:
    """N yaw angles -> N x 4 quaternions (w, x, y, z) about +z."""
    return np.stack([np.cos(yaw / 2), np.zeros_like(yaw), np.zeros_like(yaw), np.sin(yaw / 2)], axis=1)


def _attributes(rng: np.random.Generator, labels: np.ndarray, missing: float) -> np.ndarray:
    out = np.full(len(labels), -1, dtype=np.int64)
    for i, lab in enumerate(labels.tolist()):
        rel = _REL_ATTRS[DETECTION_NAMES[lab]]
        if rel and rng.random() >= missing:
            out[i] = rel[rng.integers(len(rel))]
    return out


def random_ground_truth(
    rng: np.random.Generator,
    num_samples: int,
    boxes_per_sample: float = 30.0,
    *,
    classes: Sequence[str] = DETECTION_NAMES,
    racks_per_sample: float = 0.3,
) -> GroundTruth:
    """A random split: ego poses, GT boxes up to 60 m away, bicycle racks with bikes in them."""
    tokens = tuple(f"{rng.integers(1 << 62):016x}{i:08d}" for i in range(num_samples))
    ego = np.column_stack([rng.uniform(-2000, 2000, (num_samples, 2)), np.zeros(num_samples)])
    counts = rng.poisson(boxes_per_sample, num_samples)
    n = int(counts.sum())
    sample = np.repeat(np.arange(num_samples), counts)
    class_idx = np.array([DETECTION_NAMES.index(c) for c in classes])
    label = class_idx[rng.integers(len(class_idx), size=n)]
    xy = ego[sample, :2] + rng.uniform(-60, 60, (n, 2))
    z = rng.normal(1.0, 0.5, n)
    size = TYPICAL_SIZE[label] * np.exp(rng.normal(0, 0.15, (n, 3)))
    vel = rng.normal(0, 3, (n, 2))
    vel[rng.random(n) < 0.05] = np.nan
    num_pts = np.where(rng.random(n) < 0.1, 0, rng.integers(1, 500, n))

    rack_counts = rng.poisson(racks_per_sample, num_samples)
    rack_sample = np.repeat(np.arange(num_samples), rack_counts)
    nr = len(rack_sample)
    rack_xy = ego[rack_sample, :2] + rng.uniform(-30, 30, (nr, 2))
    racks = BoxSet.from_columns(
        sample=rack_sample, label=np.zeros(nr), translation=np.column_stack([rack_xy, np.full(nr, 0.6)]),
        size=np.column_stack([rng.uniform(1.5, 4, nr), rng.uniform(3, 10, nr), np.full(nr, 1.2)]),
        rotation=yaw_quaternion(rng.uniform(-np.pi, np.pi, nr)), velocity=np.zeros((nr, 2)),
        attribute=np.full(nr, -1), score=np.full(nr, -1.0), num_pts=np.full(nr, -1),
    )
    # Park some of the bikes of a sample inside its first rack (the devkit drops them).
    first_rack = {int(s): i for i, s in reversed(list(enumerate(rack_sample.tolist())))}
    for i in np.flatnonzero(np.isin(label, (6, 7)) & (rng.random(n) < 0.5)).tolist():
        r = first_rack.get(int(sample[i]))
        if r is not None:
            xy[i] = rack_xy[r] + rng.uniform(-0.3, 0.3, 2)
            z[i] = 0.6
    boxes = BoxSet.from_columns(
        sample=sample, label=label, translation=np.column_stack([xy, z]), size=size,
        rotation=yaw_quaternion(rng.uniform(-np.pi, np.pi, n)), velocity=vel,
        attribute=_attributes(rng, label, missing=0.05), score=np.full(n, -1.0), num_pts=num_pts,
    )
    return GroundTruth.from_unfiltered(tokens, ego, boxes, racks)


@dataclass
class PredictionModel:
    """How the fake detector behaves."""

    recall: float = 0.8  # chance that a GT box is detected
    noise: float = 0.4  # centre noise (m, std)
    duplicates: float = 0.2  # chance of an extra, lower-scored detection of a detected box
    false_positives: float = 30.0  # mean random boxes per sample
    fp_range: float = 60.0  # false positives lie in a square of this half-size around the ego (m)
    confusion: float = 0.05  # chance of a wrong class
    score_levels: int = 0  # > 0: scores rounded to this many levels (many ties)
    empty_samples: float = 0.0  # chance that a sample has no predictions at all
    shuffle_samples: bool = False  # results in a random sample order (ties depend on it)
    max_per_sample: int = 500


def random_predictions(rng: np.random.Generator, gt: GroundTruth, model: PredictionModel | None = None) -> dict[str, list[dict]]:
    """A ``results`` mapping made by perturbing ``gt`` and adding false positives."""
    m = model or PredictionModel()
    g = gt.boxes
    det = np.flatnonzero(rng.random(len(g)) < m.recall)
    dup = det[rng.random(len(det)) < m.duplicates]
    src = np.concatenate([det, dup])
    n = len(src)
    score = np.concatenate([rng.uniform(0.3, 1.0, len(det)), rng.uniform(0.05, 0.5, len(dup))])
    label = g.label[src].copy()
    confused = rng.random(n) < m.confusion
    label[confused] = rng.integers(len(DETECTION_NAMES), size=int(confused.sum()))
    trans = g.translation[src] + rng.normal(0, m.noise, (n, 3))
    size = g.size[src] * np.exp(rng.normal(0, 0.1, (n, 3)))
    yaw = quaternion_yaw(g.rotation[src]) + rng.normal(0, 0.3, n) + np.pi * (rng.random(n) < 0.1)
    vel = np.nan_to_num(g.velocity[src]) + rng.normal(0, 0.5, (n, 2))
    sample = g.sample[src]

    counts = rng.poisson(m.false_positives, gt.num_samples)
    fp_sample = np.repeat(np.arange(gt.num_samples), counts)
    nf = len(fp_sample)
    fp_label = rng.integers(len(DETECTION_NAMES), size=nf)
    fp_trans = np.column_stack([gt.ego_translation[fp_sample, :2] + rng.uniform(-m.fp_range, m.fp_range, (nf, 2)), rng.normal(1, 0.5, nf)])
    # Some false bicycles inside racks (filtered from predictions too).
    if len(gt.racks):
        k = min(len(gt.racks), nf)
        fp_sample[:k] = gt.racks.sample[:k]
        fp_label[:k] = 7
        fp_trans[:k] = gt.racks.translation[:k]

    sample = np.concatenate([sample, fp_sample])
    label = np.concatenate([label, fp_label])
    trans = np.concatenate([trans, fp_trans])
    size = np.concatenate([size, TYPICAL_SIZE[fp_label] * np.exp(rng.normal(0, 0.1, (nf, 3)))])
    yaw = np.concatenate([yaw, rng.uniform(-np.pi, np.pi, nf)])
    vel = np.concatenate([vel, rng.normal(0, 2, (nf, 2))])
    score = np.concatenate([score, rng.uniform(0.0, 0.6, nf)])
    if m.score_levels > 0:
        score = np.round(score * m.score_levels) / m.score_levels
    attr = _attributes(rng, label, missing=0.0)
    rot = yaw_quaternion(yaw)

    order = np.arange(gt.num_samples)
    if m.shuffle_samples:
        rng.shuffle(order)
    empty = rng.random(gt.num_samples) < m.empty_samples
    perm = rng.permutation(len(sample))  # boxes within a sample in random order
    by_sample: list[list[int]] = [[] for _ in range(gt.num_samples)]
    for i in perm.tolist():
        by_sample[int(sample[i])].append(i)
    results: dict[str, list[dict]] = {}
    for s in order.tolist():
        idx = [] if empty[s] else sorted(by_sample[s], key=lambda i: -score[i])[: m.max_per_sample]
        results[gt.sample_tokens[s]] = [
            {
                "sample_token": gt.sample_tokens[s],
                "translation": trans[i].tolist(),
                "size": size[i].tolist(),
                "rotation": rot[i].tolist(),
                "velocity": vel[i].tolist(),
                "detection_name": DETECTION_NAMES[int(label[i])],
                "detection_score": float(score[i]),
                "attribute_name": "" if attr[i] < 0 else ATTRIBUTE_NAMES[int(attr[i])],
            }
            for i in idx
        ]
    return results


# --------------------------------------------------------------------------------------------
# a nuScenes-format table set (annotations only, no sensor files), for benchmarks and tests

# category -> (relative frequency, detection class index for its typical size or -1, moving chance)
_WORLD_CATEGORIES = {
    "vehicle.car": (30, 0, 0.5), "vehicle.truck": (6, 1, 0.4), "vehicle.bus.rigid": (2, 2, 0.6),
    "vehicle.bus.bendy": (0.3, 2, 0.6), "vehicle.trailer": (2, 3, 0.2), "vehicle.construction": (1.5, 4, 0.1),
    "human.pedestrian.adult": (14, 5, 0.7), "human.pedestrian.child": (0.5, 5, 0.7),
    "human.pedestrian.construction_worker": (1, 5, 0.5), "human.pedestrian.police_officer": (0.2, 5, 0.5),
    "vehicle.motorcycle": (1.2, 6, 0.4), "vehicle.bicycle": (1.2, 7, 0.3), "movable_object.trafficcone": (8, 8, 0.0),
    "movable_object.barrier": (12, 9, 0.0), "static_object.bicycle_rack": (2, -1, 0.0),
    "human.pedestrian.stroller": (0.3, 5, 0.7), "movable_object.debris": (0.8, 8, 0.0),
}
_WORLD_ATTRIBUTES = {"vehicle": ("vehicle.moving", "vehicle.parked"), "human": ("pedestrian.moving", "pedestrian.standing"),
                     "cycle": ("cycle.with_rider", "cycle.without_rider")}
CAMERA_CHANNELS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT")
RADAR_CHANNELS = ("RADAR_FRONT", "RADAR_FRONT_LEFT", "RADAR_FRONT_RIGHT", "RADAR_BACK_LEFT", "RADAR_BACK_RIGHT")
# with sensor_tables: a nuScenes-like camera (1600 x 900) looking along its sensor's +x
_CAM_INTRINSIC = [[1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5], [0.0, 0.0, 1.0]]
_CAM_ROTATION = [0.5, -0.5, 0.5, -0.5]  # optical axis (z) along the ego's +x, image down along -z
_EXT = {"camera": "jpg", "lidar": "pcd.bin", "radar": "pcd"}
# the smallest valid PNG (1 x 1 grey): the devkit's NuScenes only checks that map files exist
_TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108000000003a7e9b55"
    "0000000a49444154789c636000000002000148afa4710000000049454e44ae426082"
)


def _attribute_of(category: str, moving: bool) -> str:
    if category.startswith("vehicle.bicycle") or category.startswith("vehicle.motorcycle"):
        return _WORLD_ATTRIBUTES["cycle"][0 if moving else 1]
    if category.startswith("vehicle."):
        return _WORLD_ATTRIBUTES["vehicle"][0 if moving else 1]
    if category.startswith("human.pedestrian.") and category != "human.pedestrian.stroller":
        return _WORLD_ATTRIBUTES["human"][0 if moving else 1]
    return ""


def write_tables(
    root,
    version: str,
    scenes,
    *,
    seed: int = 0,
    actors_per_scene: int = 90,
    sweeps: int = 9,
    gap_prob: float = 0.02,
    sensor_tables: bool = False,
    camera_sweeps: int = 0,
    radar_sweeps: int = 0,
) -> dict:
    """Write the 13 nuScenes tables of a random annotated world to ``root/version/`` (+ a map file).

    ``scenes``: scene name -> number of keyframes (name them after the devkit's splits, e.g.
    ``val``, so its split lists apply). Per keyframe the ``sample_data`` table holds what
    ``bevsimdet simulate`` writes: a LIDAR_TOP keyframe after ``sweeps`` non-key sweeps and six
    camera keyframes, each with an ego pose. Actors (all categories, including ones the detection
    task ignores and bicycle racks with parked bicycles) move at constant velocity and are
    annotated within 60 m of the ego, chained by ``prev``/``next`` (so the devkit estimates
    velocities); ``gap_prob`` inserts keyframe gaps too long for a velocity. No sensor files are
    written: the tables load with ``nuscenes.NuScenes`` and evaluate with ``DetectionEval``.

    ``sensor_tables`` makes the sensor tables complete enough for ``bevsimdet prepare`` and of the
    real dataset's size (the files themselves are still not written): ``sample_data`` rows get
    nuScenes-style file names and per-channel ``prev``/``next`` chains, cameras get intrinsics,
    and every keyframe gets ``camera_sweeps`` non-key frames per camera (12 Hz) and
    ``radar_sweeps`` non-key + 1 key frame per radar channel (13 Hz). With ``sweeps=9,
    camera_sweeps=5, radar_sweeps=5`` that is 76 ``sample_data`` (and ``ego_pose``) rows per
    keyframe, as nuScenes trainval (2,631,083 rows for 34,149 keyframes: 77). Without it the
    output is unchanged. Returns counts (``samples``, ``annotations``, ``sample_data``).
    """
    import json
    from pathlib import Path

    root = Path(root)
    rng = np.random.default_rng(seed)
    counter = iter(range(1, 1 << 62))

    def tok() -> str:
        return f"{seed:08x}{next(counter):024x}"

    t: dict[str, list[dict]] = {k: [] for k in ("category", "attribute", "visibility", "instance", "sensor",
                                                "calibrated_sensor", "ego_pose", "log", "scene", "sample",
                                                "sample_data", "sample_annotation", "map")}
    cats = list(_WORLD_CATEGORIES)
    cat_tok = {c: tok() for c in cats}
    t["category"] = [{"token": cat_tok[c], "name": c, "description": ""} for c in cats]
    attr_tok = {a: tok() for a in ATTRIBUTE_NAMES}
    t["attribute"] = [{"token": v, "name": k, "description": ""} for k, v in attr_tok.items()]
    t["visibility"] = [{"token": str(i), "level": lvl, "description": ""}
                       for i, lvl in enumerate(("v0-40", "v40-60", "v60-80", "v80-100"), 1)]
    cs_tok, modality = {}, {}
    for ch in ("LIDAR_TOP", *CAMERA_CHANNELS, *(RADAR_CHANNELS if sensor_tables and radar_sweeps else ())):
        s, cs_tok[ch] = tok(), tok()
        modality[ch] = "lidar" if ch == "LIDAR_TOP" else "radar" if ch.startswith("RADAR") else "camera"
        camera = sensor_tables and modality[ch] == "camera"
        t["sensor"].append({"token": s, "channel": ch, "modality": modality[ch]})
        t["calibrated_sensor"].append({"token": cs_tok[ch], "sensor_token": s, "translation": [0.9, 0.0, 1.8],
                                       "rotation": _CAM_ROTATION if camera else [1.0, 0.0, 0.0, 0.0],
                                       "camera_intrinsic": _CAM_INTRINSIC if camera else []})
    log = tok()
    t["log"].append({"token": log, "logfile": "synthetic", "vehicle": "n000", "date_captured": "2024-01-01",
                     "location": "boston-seaport"})
    t["map"].append({"token": tok(), "log_tokens": [log], "category": "semantic_prior", "filename": "maps/synthetic.png"})
    freq = np.array([v[0] for v in _WORLD_CATEGORIES.values()])
    freq = freq / freq.sum()

    for scene_name, n in scenes.items():
        scene = tok()
        samples = [tok() for _ in range(n)]
        dt = np.where(rng.random(n) < gap_prob, 3.5, 0.5)  # a gap too long even for a centred difference
        dt[0] = 0.0
        times = np.cumsum(dt)
        stamps = (1_600_000_000_000_000 + len(t["scene"]) * 10**10 + np.round(times * 1e6)).astype(np.int64)
        heading = rng.uniform(-np.pi, np.pi)
        direction = np.array([np.cos(heading), np.sin(heading)])
        speed = rng.uniform(0.0, 10.0)
        ego = rng.uniform(-1500, 1500, 2) + times[:, None] * speed * direction  # n x 2
        ego_q = yaw_quaternion(np.array([heading]))[0].tolist()
        last_frame: dict[str, dict] = {}  # channel -> its newest sample_data row of the scene
        for k, s in enumerate(samples):
            t["sample"].append({"token": s, "timestamp": int(stamps[k]), "scene_token": scene,
                                "prev": samples[k - 1] if k else "", "next": samples[k + 1] if k + 1 < n else ""})
            frames = [("LIDAR_TOP", stamps[k] - 50_000 * j, False) for j in range(sweeps, 0, -1)]  # 20 Hz sweeps
            if sensor_tables:  # every channel's frames in time order, so that prev/next chain them
                frames += [(ch, stamps[k] - 83_333 * j, False) for ch in CAMERA_CHANNELS for j in range(camera_sweeps, 0, -1)]
                frames += [(ch, stamps[k] - 76_923 * j, key) for ch in (RADAR_CHANNELS if radar_sweeps else ())
                           for j, key in [*((j, False) for j in range(radar_sweeps, 0, -1)), (0, True)]]
            frames += [(ch, stamps[k], True) for ch in ("LIDAR_TOP", *CAMERA_CHANNELS)]
            for ch, stamp, key in frames:
                sd = tok()
                t["ego_pose"].append({"token": sd, "timestamp": int(stamp), "rotation": ego_q,
                                      "translation": [float(ego[k, 0]), float(ego[k, 1]), 0.0]})
                row = {"token": sd, "sample_token": s, "ego_pose_token": sd,
                       "calibrated_sensor_token": cs_tok[ch], "timestamp": int(stamp),
                       "fileformat": "pcd" if ch == "LIDAR_TOP" else "jpg", "is_key_frame": key,
                       "height": 0, "width": 0, "filename": "", "prev": "", "next": ""}
                if sensor_tables:
                    m = modality[ch]
                    row.update(fileformat=_EXT[m].split(".")[0], height=900 if m == "camera" else 0, width=1600 if m == "camera" else 0,
                               filename=f"{'samples' if key else 'sweeps'}/{ch}/synthetic__{ch}__{int(stamp)}.{_EXT[m]}")
                    if ch in last_frame:
                        row["prev"], last_frame[ch]["next"] = last_frame[ch]["token"], sd
                    last_frame[ch] = row
                t["sample_data"].append(row)
        t["scene"].append({"token": scene, "name": scene_name, "description": "synthetic", "log_token": log,
                           "nbr_samples": n, "first_sample_token": samples[0], "last_sample_token": samples[-1]})

        # actors along the ego's path, constant velocity
        m = actors_per_scene
        cat_idx = rng.choice(len(cats), size=m, p=freq)
        along = rng.uniform(-40, speed * times[-1] + 40, m)
        side = rng.uniform(-45, 45, m)
        start = ego[0] + along[:, None] * direction + side[:, None] * direction[::-1] * np.array([-1, 1])
        moving = rng.random(m) < np.array([_WORLD_CATEGORIES[cats[c]][2] for c in cat_idx])
        vel = moving[:, None] * rng.normal(0, 4, (m, 2))
        yaw = np.where(moving, np.arctan2(vel[:, 1], vel[:, 0]), rng.uniform(-np.pi, np.pi, m))
        size_idx = np.array([_WORLD_CATEGORIES[cats[c]][1] for c in cat_idx])
        size = np.where(size_idx[:, None] >= 0, TYPICAL_SIZE[np.maximum(size_idx, 0)], [[3.0, 8.0, 1.5]])
        size = size * np.exp(rng.normal(0, 0.1, (m, 3)))
        actors = [(cats[c], start[i], vel[i], yaw[i], size[i], bool(moving[i])) for i, c in enumerate(cat_idx)]
        for i, c in enumerate(cat_idx):  # parked bicycles in each rack (the devkit drops them)
            if cats[c] == "static_object.bicycle_rack":
                for _ in range(int(rng.integers(1, 3))):
                    actors.append(("vehicle.bicycle", start[i] + rng.uniform(-0.5, 0.5, 2), np.zeros(2), yaw[i],
                                   TYPICAL_SIZE[7], False))
        for cat, p0, v, yw, sz, mov in actors:
            pos = p0 + times[:, None] * v
            dist = np.hypot(*(pos - ego).T)
            seen = np.flatnonzero(dist <= 60.0)
            if not len(seen):
                continue
            inst, anns = tok(), [tok() for _ in seen]
            attr = _attribute_of(cat, mov)
            attrs = [attr_tok[attr]] if attr and rng.random() > 0.05 else []
            pts = np.where(rng.random(len(seen)) < 0.08, 0, rng.poisson(4000.0 / np.maximum(dist[seen], 2.0) ** 1.3) + 1)
            rot = yaw_quaternion(np.array([yw]))[0].tolist()
            for j, k in enumerate(seen.tolist()):
                t["sample_annotation"].append({
                    "token": anns[j], "sample_token": samples[k], "instance_token": inst, "visibility_token": "4",
                    "attribute_tokens": attrs, "translation": [float(pos[k, 0]), float(pos[k, 1]), float(sz[2] / 2)],
                    "size": [float(x) for x in sz], "rotation": rot,
                    "num_lidar_pts": int(pts[j]), "num_radar_pts": int(cat.startswith("vehicle.") and pts[j] > 0),
                    "prev": anns[j - 1] if j else "", "next": anns[j + 1] if j + 1 < len(anns) else "",
                })
            t["instance"].append({"token": inst, "category_token": cat_tok[cat], "nbr_annotations": len(anns),
                                  "first_annotation_token": anns[0], "last_annotation_token": anns[-1]})

    (root / "maps").mkdir(parents=True, exist_ok=True)
    (root / "maps" / "synthetic.png").write_bytes(_TINY_PNG)
    folder = root / version
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in t.items():
        (folder / f"{name}.json").write_text(json.dumps(rows))
    return {"samples": len(t["sample"]), "annotations": len(t["sample_annotation"]), "sample_data": len(t["sample_data"])}
