"""What detectors return, and what post-processing makes of it."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class DetectorOutput:
    """Raw outputs of a detector's forward pass (training and test alike).

    * ``preds``: one dict per head task (see :data:`bevsimdet.data.classes.TASKS`), each with
      ``heatmap`` B x K_t x Ny x Nx (logits), ``reg`` B x 2 (sub-cell centre offset),
      ``height`` B x 1 (centre z), ``dim`` B x 3 (log w, l, h), ``rot`` B x 2 (sin, cos yaw),
      ``vel`` B x 2 (vx, vy), all at the head's BEV resolution.
    * ``feats``: named BEV feature maps B x C x Ny x Nx. Detectors fill what they have of
      ``camera_bev``, ``lidar_bev``, ``fused_bev`` (fuser output) and ``decoder_bev``; the student
      adds ``sim_lidar_bev`` (projected to the teacher's LiDAR-BEV width). Distillation pairs these
      by name.
    * ``depth``: (B*N) x D x h x w per-camera depth distribution (softmax), or ``None``; the
      student's is its sim-LiDAR branch's.
    * ``depths``: every depth distribution by branch (the student: ``camera`` and ``sim_lidar``);
      empty for single-branch detectors, whose one distribution is ``depth``.
    """

    preds: list[dict[str, Tensor]]
    feats: dict[str, Tensor] = field(default_factory=dict)
    depth: Tensor | None = None
    depths: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class Detections:
    """Post-processed boxes of one sample, in the (augmented) ego frame of the batch.

    ``boxes`` M x 9 (see :mod:`bevsimdet.data.batch`), ``scores`` M, ``labels`` M (long).
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
