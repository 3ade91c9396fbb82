"""Run a detector over a split and score it with the nuScenes detection metric.

Every rank predicts its shard of the split (the loader's distributed sampler), the per-sample
results are gathered to the main rank only, and the main rank alone decodes and scores them
against the ground truth (which only it loads); the summary is then broadcast so every rank
returns the same numbers. Prediction uses the bare model (never the DDP wrapper), so ranks with
different numbers of batches cannot deadlock, and the gather runs under the process group's
timeout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from bevsimdet.engine import dist
from bevsimdet.errors import UserError
from bevsimdet.eval.metrics import SUMMARY_KEYS, TP_SUMMARY


PostProcess = Callable[[Any, Any], Sequence[Any]]


def summarize(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Flat scalars (mAP, NDS, mATE..mAAE, AP/<class>) from ``DetectionMetrics.to_dict()``."""
    out = {"mAP": float(metrics["mean_ap"]), "NDS": float(metrics["nd_score"])}
    for name, key in TP_SUMMARY.items():
        out[name] = float(metrics["tp_errors"][key])
    for cls, ap in metrics["mean_dist_aps"].items():
        out[f"AP/{cls}"] = float(ap)
    return out


@torch.no_grad()
def predict(
    model: nn.Module,
    postprocess: PostProcess,
    loader: Any,
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    progress: bool = True,
    depth_stats: DepthStats | None = None,
) -> dict[str, list[dict]]:
    """This rank's results (sample token -> nuScenes result boxes) over ``loader``.

    The model is given :func:`~bevsimdet.models.detectors.model_input` of each batch: no LiDAR
    for a camera-only model, whatever the loader holds. ``depth_stats``, when given, accumulates
    the agreement of the model's depth distributions with the batch's LiDAR (batches with points
    only; the evaluator reads the points, the model never does)."""
    from bevsimdet.eval.results import detections_to_results
    from bevsimdet.models.detectors import model_input
    from bevsimdet.progress import progress_bar

    was_training = model.training
    model.eval()
    results: dict[str, list[dict]] = {}
    autocast = torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float16, enabled=amp_dtype is not None and device.type == "cuda")
    for batch in progress_bar(loader, desc="evaluate", unit="batch", allowed=progress and dist.is_main()):
        batch = batch.to(device)
        seen = model_input(model, batch)
        with autocast:
            output = model(seen)
        dets = postprocess(output, seen)
        if depth_stats is not None and output.depth is not None and batch.points is not None:
            depth_stats.add(output.depth, batch)
        results.update(detections_to_results(dets, batch.meta, bev_augs=batch.bev_aug))
    model.train(was_training)
    return results


# object cells by the depth of their LiDAR return (m): where a camera's depth holds and where it fades
DEPTH_BANDS = ((0.0, 15.0, "lt15"), (15.0, 30.0, "15to30"), (30.0, float("inf"), "ge30"))


class DepthStats:
    """Accumulates how well a model's depth distributions agree with LiDAR over a split:
    ``depth_within1`` (share of feature cells with a LiDAR return whose most likely bin is within
    one bin of it), ``depth_mae`` (mean |expected depth - LiDAR depth|, metres), ``depth_bias``
    (mean expected - LiDAR depth: negative is too near) and ``depth_cells`` (how many), and the same
    over the cells whose nearest return lies on an annotated object (``_obj``): the depth a
    detector needs, where the ground prior alone does not help. The object cells are also split by
    their return's depth (:data:`DEPTH_BANDS`: ``_obj_lt15``, ``_obj_15to30``, ``_obj_ge30``)."""

    def __init__(self, dbound: tuple[float, float, float]):
        self.dbound = tuple(float(v) for v in dbound)
        self.groups = ("", "_obj") + tuple(f"_obj_{name}" for _, _, name in DEPTH_BANDS)
        self.sums = [0.0] * (4 * len(self.groups))  # per group: count, within one bin, |error| sum, error sum

    def add(self, depth: torch.Tensor, batch: Any) -> None:
        from bevsimdet.models.depth import lidar_depth_targets

        bins, on_object = (t.to(depth.device) for t in lidar_depth_targets(batch, tuple(depth.shape[-2:]), self.dbound))
        self.add_targets(depth, bins, on_object)

    def add_targets(self, depth: torch.Tensor, bins: torch.Tensor, on_object: torch.Tensor) -> None:
        """``depth`` (B*N) x D x h x w; ``bins`` (B*N) x h x w LiDAR depth bins (-1: no return);
        ``on_object`` (B*N) x h x w bool (see :func:`bevsimdet.models.depth.lidar_depth_targets`)."""
        from bevsimdet.models.depth import bin_centre_depth, depth_agreement

        centre = bin_centre_depth(bins, self.dbound)
        cells = [None, on_object] + [on_object & (centre >= lo) & (centre < hi) for lo, hi, _ in DEPTH_BANDS]
        stats = torch.cat([depth_agreement(depth, bins, self.dbound, c) for c in cells])
        for i, v in enumerate(stats.tolist()):
            self.sums[i] += v

    def summary(self) -> dict[str, float]:
        sums = [sum(v) for v in zip(*dist.all_gather_json(self.sums))] if dist.is_dist() else self.sums
        out = {}
        for k, suffix in enumerate(self.groups):
            n, within, err, signed = sums[4 * k: 4 * k + 4]
            if n > 0:
                out.update({f"depth_within1{suffix}": within / n, f"depth_mae{suffix}": err / n, f"depth_bias{suffix}": signed / n,
                            f"depth_cells{suffix}": n})
        return out


class Evaluator:
    """Callable ``model -> summary metrics``; built once and reused for every validation of a run.

    ``last`` holds the full metrics (``DetectionMetrics.to_dict()`` plus the summary) of the
    latest call on the main rank. ``diagnostic`` (see :func:`bevsimdet.models.build.diagnostic`),
    when set, is returned with every summary under the key ``diagnostic``, so metrics.json and
    the run log of a diagnostic model say what it is.
    """

    def __init__(self, loader: Any, postprocess: PostProcess, gt: Any, device: torch.device, *, amp_dtype: torch.dtype | None = None,
                 progress: bool = True, dbound: tuple[float, float, float] | None = None, diagnostic: str | None = None):
        self.loader = loader
        self.diagnostic = diagnostic
        self.dbound = dbound  # depth bins of camera models: also report depth_within1 / depth_mae
        self.postprocess = postprocess
        self.gt = gt
        self.device = device
        self.amp_dtype = amp_dtype
        self.progress = progress
        self.last: dict[str, Any] = {}

    def __call__(self, model: nn.Module) -> dict[str, float | str]:
        from bevsimdet.eval.dist import gather_results
        from bevsimdet.eval.metrics import evaluate

        stats = DepthStats(self.dbound) if self.dbound is not None else None
        local = predict(model, self.postprocess, self.loader, self.device, amp_dtype=self.amp_dtype, progress=self.progress, depth_stats=stats)
        results = gather_results(local)  # None on the other ranks
        depth = stats.summary() if stats is not None else {}
        summary: dict[str, float | str] = {}
        if dist.is_main():
            full = evaluate(results, self.gt).to_dict()  # the GT's class ranges (maybe capped) filter the predictions too
            summary = {**summarize(full), **depth, **({"diagnostic": self.diagnostic} if self.diagnostic else {})}
            self.last = {**summary, **full}
        return dist.broadcast_json(summary)  # every rank returns the main rank's numbers


def _split_loader(cfg: Any, split: str) -> Any:
    from bevsimdet.data.dataset import build_dataset
    from bevsimdet.data.loader import build_dataloader

    dataset = build_dataset(cfg.data, split, train=False)
    return build_dataloader(dataset, cfg.train.batch_size, shuffle=False, seed=cfg.seed, num_workers=cfg.train.num_workers, distributed=dist.is_dist())


def _amp_dtype(cfg: Any) -> torch.dtype | None:
    return getattr(torch, cfg.train.amp_dtype) if cfg.train.amp else None


def _load_model(cfg: Any, checkpoint: str | Path, split: str, progress: bool = True) -> tuple[nn.Module, torch.device]:
    """The detector of ``cfg.model`` with the checkpoint's weights (EMA when present), on this
    process's device; builds the info file of ``split`` when missing, then joins the torchrun
    process group when there is one (in that order, see ``ensure_infos``)."""
    from bevsimdet.data.dataset import ensure_infos
    from bevsimdet.engine.checkpoint import load_checkpoint
    from bevsimdet.models.build import build_detector

    device = dist.select_device(cfg.train.device)
    ensure_infos(cfg.data, split, progress=progress, wait_s=cfg.train.dist_timeout_s)
    dist.init_distributed(device, cfg.train.dist_timeout_s)  # a no-op outside torchrun
    model = build_detector(cfg.model)
    load_checkpoint(checkpoint, model=model, prefer_ema=True)
    return model.to(device), device


def build_evaluator(cfg: Any, split: str, device: torch.device, *, progress: bool = True) -> Evaluator:
    """Evaluator over ``split`` of ``cfg.data`` with ``cfg.model``'s post-processing."""
    from bevsimdet.eval.gt import load_gt
    from bevsimdet.models.build import HAS_CAMERA, build_postprocess, depth_bound, diagnostic

    gt = load_gt(cfg.data.dataroot, cfg.data.version, split) if dist.is_main() else None
    dbound = depth_bound(cfg.model) if cfg.model.type in HAS_CAMERA and cfg.data.load_points else None
    return Evaluator(_split_loader(cfg, split), build_postprocess(cfg.model).to(device), gt, device, amp_dtype=_amp_dtype(cfg), progress=progress, dbound=dbound,
                     diagnostic=diagnostic(cfg.model))


def evaluate_model(cfg: Any, checkpoint: str | Path, split: str | None = None, *, progress: bool = True,
                   max_range: float | None = None) -> dict[str, Any]:
    """Score the weights in ``checkpoint`` (EMA weights when present) on ``split`` (default:
    ``cfg.data.val_split``). Returns the summary (mAP, NDS, ...) merged with the full metrics
    (``DetectionMetrics.to_dict()``) on the main rank, the summary alone on other ranks.
    ``max_range`` caps every class's evaluation range (metres from the ego): the near objects only;
    the result then says so under ``max_range``."""
    split = split or cfg.data.val_split
    if max_range is not None and not max_range > 0:
        raise UserError(f"--max-range must be a positive distance in metres, got {max_range:g}")
    model, device = _load_model(cfg, checkpoint, split, progress)
    evaluator = build_evaluator(cfg, split, device, progress=progress)
    if max_range is not None and evaluator.gt is not None:
        evaluator.gt = evaluator.gt.within(max_range)
    summary = evaluator(model)
    out = evaluator.last if dist.is_main() else summary
    return {**out, "max_range": float(max_range)} if max_range is not None else out


def final_or_evaluate(cfg: Any, checkpoint: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """The metrics of the run's own last validation when they belong to ``checkpoint``
    (``<run>/metrics.json``, written by the trainer at the checkpoint's step, for a checkpoint in
    ``<run>/checkpoints/``), else :func:`evaluate_model` on the validation split; saves evaluating a
    finished run twice."""
    from bevsimdet.io import load_json
    from bevsimdet.weights import read_checkpoint

    checkpoint = Path(checkpoint)
    try:
        metrics = load_json(checkpoint.parent.parent / "metrics.json")
    except (OSError, ValueError):
        metrics = None
    if (isinstance(metrics, dict) and metrics.get("step") == read_checkpoint(checkpoint)[1].get("step")
            and all(k in metrics for k in SUMMARY_KEYS)):
        return metrics
    return evaluate_model(cfg, checkpoint, progress=progress)


def infer_results(cfg: Any, checkpoint: str | Path, split: str | None = None, *, progress: bool = True) -> dict[str, list[dict]] | None:
    """nuScenes results (sample token -> boxes in global coordinates) of ``checkpoint`` on
    ``split`` (default ``cfg.data.val_split``), gathered from all ranks on the main rank (``None``
    on the others); needs no annotations."""
    from bevsimdet.eval.dist import gather_results
    from bevsimdet.models.build import build_postprocess

    split = split or cfg.data.val_split
    model, device = _load_model(cfg, checkpoint, split, progress)
    loader = _split_loader(cfg, split)
    local = predict(model, build_postprocess(cfg.model).to(device), loader, device, amp_dtype=_amp_dtype(cfg), progress=progress)
    return gather_results(local)
