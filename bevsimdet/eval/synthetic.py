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
