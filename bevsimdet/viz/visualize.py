"""``bevsimdet visualize``: pictures of a trained detector's predictions on dataset samples.

Per sample one PNG (:func:`bevsimdet.viz.sample.render_sample`): the six camera views with the
projected GT (solid) and predicted (dashed) boxes, and a BEV panel with the LiDAR points, GT and
predictions. Optionally a GIF over a whole scene, and for one sample a side-by-side of the
teacher's and the student's BEV feature maps (:mod:`bevsimdet.viz.features`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bevsimdet.errors import DataError, UserError


def select_indices(dataset: Any, *, index: int | None = None, sample: str | None = None, scene: str | None = None) -> list[int]:
    """Dataset indices of one sample (``index`` or ``sample`` token) or of a whole ``scene`` (in
    time order); sample 0 when nothing is given."""
    if sum(x is not None for x in (index, sample, scene)) > 1:
        raise UserError("pass at most one of --index, --sample and --scene")
    if sample is not None:
        return [dataset.index_of(sample)]
    if scene is not None:
        found = sorted((s.timestamp, i) for i, s in enumerate(dataset.samples) if s.scene_name == scene)
        if not found:
            names = sorted({s.scene_name for s in dataset.samples})
            raise DataError(f"scene '{scene}' is not in split '{dataset.infos.split}'", fix=f"use one of {', '.join(names[:12])}")
        return [i for _, i in found]
    index = 0 if index is None else index
    if not -len(dataset) <= index < len(dataset):
        raise UserError(f"--index {index} is out of range: split '{dataset.infos.split}' has {len(dataset)} samples")
    return [index % len(dataset)]


@torch.no_grad()
def visualize(
    cfg: Any,
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    split: str | None = None,
    index: int | None = None,
    sample: str | None = None,
    scene: str | None = None,
    gif: bool = False,
    score_threshold: float = 0.3,
    teacher: str | Path | None = None,
    teacher_config: str | Path | None = None,
    progress: bool = True,
) -> list[Path]:
    """Render predictions of ``checkpoint`` (a detector of ``cfg.model``) and return the files
    written under ``out_dir``: one PNG per sample, ``<scene>.gif`` with ``gif``, and
    ``features_<token>.png`` (teacher vs student, first sample) when ``teacher`` is given."""
    from bevsimdet.data.dataset import build_dataset
    from bevsimdet.data.loader import collate
    from bevsimdet.infer import load_detector
    from bevsimdet.models.build import build_postprocess, diagnostic
    from bevsimdet.models.detectors import model_input
    from bevsimdet.progress import progress_bar
    from bevsimdet.viz.sample import render_sample

    if gif and scene is None:
        raise UserError("--gif needs --scene NAME (the GIF runs over a scene's samples)")
    out_dir = Path(out_dir)
    cfg.data.load_points = True  # the BEV panel draws the LiDAR points (and a teacher needs them)
    dataset = build_dataset(cfg.data, split or cfg.data.val_split, train=False)
    indices = select_indices(dataset, index=index, sample=sample, scene=scene)
    model, device = load_detector(cfg, checkpoint)
    postprocess = build_postprocess(cfg.model)
    teacher_model = _teacher(teacher, teacher_config, device) if teacher is not None else None

    diag = diagnostic(cfg.model)
    name = f"{cfg.name} ({diag})" if diag else cfg.name
    written: list[Path] = []
    for k, i in enumerate(progress_bar(indices, desc="visualize", unit="sample", allowed=progress)):
        batch = collate([dataset[i]])
        on_device = batch.to(device)
        # the points are loaded for the drawing and the teacher; a camera model is not given them
        output = model(model_input(model, on_device))
        dets = postprocess(output, on_device)
        token = batch.meta[0].sample_token
        png = out_dir / (f"{k:03d}_{token}.png" if scene is not None else f"{token}.png")
        written.append(render_sample(batch, 0, png, detections=dets[0], score_threshold=score_threshold,
                                     title=f"{name}: sample {token} (GT solid, predictions dashed, score >= {score_threshold:g})"))
        if teacher_model is not None and k == 0:
            written.append(_feature_png(cfg, teacher_model(on_device).feats, output.feats, out_dir / f"features_{token}.png", token))
    if gif:
        from bevsimdet.viz.gif import write_gif

        written.append(write_gif([p for p in written if p.name[:3].isdigit()], out_dir / f"{scene}.gif"))
    return written


def _teacher(checkpoint: str | Path, config: str | Path | None, device: torch.device) -> torch.nn.Module:
    from bevsimdet.config import teacher_config_from
    from bevsimdet.distill.run import load_frozen_teacher

    return load_frozen_teacher(teacher_config_from(checkpoint, config), checkpoint, device)


def _feature_png(cfg: Any, teacher_feats: dict, student_feats: dict, out: Path, token: str) -> Path:
    from bevsimdet.models.build import bev_range
    from bevsimdet.viz.features import available_pairs, render_feature_comparison

    if not available_pairs(teacher_feats, student_feats):
        raise UserError(
            f"the teacher's BEV features ({', '.join(sorted(teacher_feats))}) and the model's ({', '.join(sorted(student_feats))}) share no pair to compare",
            fix="pass the fusion teacher's checkpoint to --teacher and a student or camera model as CONFIG",
        )
    return render_feature_comparison(teacher_feats, student_feats, out, bev_range=bev_range(cfg.model),
                                     title=f"teacher vs {cfg.name}: BEV feature channel norm, sample {token}")
