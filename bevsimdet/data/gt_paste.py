"""GT-paste (BEVFusion's ``ObjectPaste``, mmdet3d's ``ObjectSample``): objects of the GT database
(:mod:`bevsimdet.data.gt_database`) pasted into a training sample's LiDAR points.

For each class of ``sample_groups``, in its order, the sample is filled up to that many objects of
the class: candidates are drawn without replacement among the class's database objects with at
least ``min_points`` points in the sweeps the dataset loads. A candidate whose BEV box overlaps a
box of the sample (every annotated box, also of classes that are not trained on) or an object
pasted before it is dropped, not redrawn (as mmdet3d). A pasted object keeps the pose it was
scanned in (in its own sample's keyframe ego frame), so the LiDAR sees it from the viewpoint its
points were recorded from. The sample's points inside a pasted box (at each point's time, see
:func:`~bevsimdet.data.gt_database.points_in_moving_boxes`) are removed and the object's points
added; its box and label join the sample's GT.

**Points only**: camera images are not touched (as BEVFusion), so a fusion model sees pasted
objects in its LiDAR branch that its cameras do not show. A camera-only model never sees the
points, and a distilled student's batches feed its teacher, which would then teach objects the
student's images do not contain: training refuses GT-paste for ``camera`` and ``student`` models.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from bevsimdet.data.gt_database import GTDatabase, from_box_frame, moving_box_members
from bevsimdet.errors import DataError
from bevsimdet.geometry.bev import bev_iou

# Two BEV boxes collide when their IoU exceeds this: float32 round-off between boxes that only
# touch stays far below it, and a real overlap this small is under 2 cm^2 for two cars.
COLLISION_IOU = 1e-5


def bev_boxes(boxes: np.ndarray) -> torch.Tensor:
    """M x 9 boxes -> M x 5 (x, y, w, l, yaw) for :func:`bevsimdet.geometry.bev.bev_iou`."""
    return torch.from_numpy(np.asarray(boxes, dtype=np.float64).reshape(-1, 9)[:, [0, 1, 3, 4, 6]])


def sweep_indices(sweeps: int, sweep_stride: int) -> tuple[int, ...]:
    """The stored sweep indices (0 = keyframe, k = the k-th stored sweep) a dataset with ``sweeps``
    sweeps at ``sweep_stride`` loads (as :meth:`NuScenesDataset.sweeps_of`)."""
    return (0,) + tuple(sweep_stride * j for j in range(1, sweeps + 1))


class ObjectPaste:
    """Paste GT-database objects into one sample (see the module docstring).

    ``sample_groups``: label -> objects of that label a sample is filled up to (dict order is the
    paste order); ``min_points``: label -> least points in the loaded sweeps (default 5);
    ``sweep_ids``: the sweep indices the dataset loads (:func:`sweep_indices`); ``stop_epoch``:
    no paste from this sampler epoch on (None: always).
    """

    def __init__(
        self,
        database: GTDatabase,
        sample_groups: Mapping[int, int],
        min_points: Mapping[int, int],
        sweep_ids: Sequence[int],
        stop_epoch: int | None = None,
    ):
        if max(sweep_ids) > database.max_sweeps:
            raise DataError(
                f"GT database {database.path} stores {database.max_sweeps} sweeps, the dataset loads sweep {max(sweep_ids)}",
                fix=f"rebuild it with `bevsimdet prepare --max-sweeps {max(sweep_ids)} --gt-database --force`",
            )
        self.database = database
        self.sample_groups = dict(sample_groups)
        self.sweep_ids = np.array(sorted(set(sweep_ids)), dtype=np.int64)
        self.stop_epoch = stop_epoch
        used = database.counts[:, self.sweep_ids].sum(1)
        self.min_points = {label: max(1, int(min_points.get(label, 5))) for label in self.sample_groups}
        self.pools = {label: np.flatnonzero((database.labels == label) & (used >= self.min_points[label])) for label in self.sample_groups}

    def active(self, epoch: int | None) -> bool:
        """Whether samples of sampler ``epoch`` are pasted (an unknown epoch counts as 0)."""
        return self.stop_epoch is None or (epoch or 0) < self.stop_epoch

    def choose(self, labels: np.ndarray, occupied: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Database indices of the objects to paste into a sample with GT ``labels`` (M) and
        annotated boxes ``occupied`` (K x 9; no pasted box may overlap one of them)."""
        draws = []
        for label, target in self.sample_groups.items():
            pool = self.pools[label]
            n = min(target - int((labels == label).sum()), len(pool))
            if n > 0:
                draws.append(rng.choice(pool, size=n, replace=False))
        if not draws:
            return np.zeros(0, dtype=np.int64)
        cand = np.concatenate(draws)
        cb = bev_boxes(self.database.boxes[cand])
        placed = bev_boxes(occupied)
        hits_placed = (bev_iou(cb, placed) > COLLISION_IOU).any(1).numpy() if len(placed) else np.zeros(len(cand), dtype=bool)
        hits_cand = (bev_iou(cb, cb) > COLLISION_IOU).numpy()
        keep: list[int] = []
        for j in range(len(cand)):
            # an accepted candidate blocks the later ones, as the annotated boxes block all
            if not hits_placed[j] and not hits_cand[j, keep].any():
                keep.append(j)
        return cand[keep]

    def __call__(
        self, points: np.ndarray, boxes: np.ndarray, labels: np.ndarray, occupied: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Paste into one sample: ``points`` P x 5, ``boxes`` M x 9, ``labels`` M (the GT trained
        on), ``occupied`` K x 9 (every annotated box) -> (P' x 5, M' x 9, M') with the pasted
        objects' boxes and labels appended and their points first."""
        chosen = self.choose(labels, occupied, rng)
        if not len(chosen):
            return points, boxes, labels
        new_boxes = self.database.boxes[chosen]
        pasted = []
        for i, box in zip(chosen, new_boxes):
            local, sweep = self.database.points_of(int(i))
            pasted.append(from_box_frame(local[np.isin(sweep, self.sweep_ids)], box))
        inside = np.zeros(len(points), dtype=bool)
        for idx in moving_box_members(points, new_boxes):
            inside[idx] = True
        return (
            np.concatenate(pasted + [points[~inside]]).astype(points.dtype, copy=False),
            np.concatenate([boxes.reshape(-1, 9), new_boxes]),
            np.concatenate([labels, self.database.labels[chosen]]).astype(labels.dtype, copy=False),
        )


__all__ = ["COLLISION_IOU", "ObjectPaste", "bev_boxes", "sweep_indices"]
