"""Bootstrap intervals for detection metrics: validation scenes and training runs resampled.

A difference between two training recipes is uncertain for two reasons: the validation set is a
sample of scenes (a few rare objects move a class AP), and each run is one draw of the training
noise. :func:`paired_difference` resamples both: in every replicate, each world's validation scenes
are drawn with replacement (the *same* draw for both recipes, which pairs them), every run's
metric is recomputed on those scenes, and each recipe's runs of the world are drawn with
replacement. The interval is the 2.5 / 97.5 % percentile of the replicates' difference.

Recomputing mAP on resampled scenes does not need the evaluation again: predictions only ever
match ground truth of their own sample, so duplicating a scene duplicates its matches.
:class:`PreparedRun` matches once (:func:`bevsimdet.eval.metrics.match_all`), and
:meth:`PreparedRun.metrics` repeats each matched prediction as often as its scene was drawn and
rebuilds the devkit's curves from them. :func:`reference_metrics` is the plain version (the scenes
really duplicated, then :func:`bevsimdet.eval.metrics.evaluate`); a test holds the two equal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from bevsimdet.eval.boxes import DETECTION_NAMES, BoxSet, quaternion_yaw
from bevsimdet.eval.gt import GroundTruth, filter_boxes
from bevsimdet.eval.metrics import (
    NUM_RECALL,
    SKIPPED_TP,
    SUMMARY_KEYS,
    TP_METRICS,
    TP_SUMMARY,
    Curve,
    DetectionMetrics,
    MetricConfig,
    _curve,
    calc_ap,
    calc_tp,
    evaluate,
    tp_errors,
    match_all,
    yaw_period,
)


def summary_of(metrics: DetectionMetrics) -> dict[str, float]:
    """mAP, NDS, mATE..mAAE of ``metrics`` (the keys of :data:`SUMMARY_KEYS`)."""
    tp = metrics.tp_errors
    return {"mAP": metrics.mean_ap, "NDS": metrics.nd_score, **{k: tp[v] for k, v in TP_SUMMARY.items()}}


@dataclass
class _ClassCurve:
    """One (class, threshold): predictions in the devkit's visiting order and their matches."""

    sample: np.ndarray  # P, sample index of each prediction
    is_tp: np.ndarray  # P bools
    conf: np.ndarray  # P scores
    errors: dict[str, np.ndarray]  # TP metric -> one value per true positive (threshold dist_th_tp only)


class PreparedRun:
    """One run's predictions matched against one split's ground truth, ready to be rescored on
    any reweighting of the split's samples (:meth:`metrics`).

    ``preds``: a :class:`BoxSet` indexed by ``gt.sample_tokens`` (as :func:`evaluate` takes it).
    """

    def __init__(self, preds: BoxSet, gt: GroundTruth, config: MetricConfig | None = None):
        self.config = config or MetricConfig()
        self.num_samples = gt.num_samples
        preds = filter_boxes(preds, gt.ego_translation, gt.racks, self.config.class_range)
        g = gt.boxes
        rank_order, match = match_all(g, preds, tuple(self.config.dist_ths))
        sorted_labels = preds.label[rank_order]
        gt_yaw, pred_yaw = quaternion_yaw(g.rotation), quaternion_yaw(preds.rotation)
        self.gt_sample = {ci: g.sample[g.label == ci] for ci in range(len(DETECTION_NAMES))}
        self.curves: dict[tuple[str, float], _ClassCurve] = {}
        for ci, name in enumerate(DETECTION_NAMES):
            lo, hi = np.searchsorted(sorted_labels, [ci, ci + 1])
            order = rank_order[lo:hi]
            for ti, th in enumerate(self.config.dist_ths):
                matched = match[ti, order]
                is_tp = matched >= 0
                errors = {}
                if th == self.config.dist_th_tp:
                    p, q = order[is_tp], matched[is_tp]
                    errors = tp_errors(preds, g, p, q, pred_yaw, gt_yaw, yaw_period(name))
                self.curves[(name, th)] = _ClassCurve(preds.sample[order], is_tp, preds.score[order], errors)

    def metrics(self, sample_weight: np.ndarray | None = None) -> dict[str, float]:
        """Summary metrics with sample ``s`` counted ``sample_weight[s]`` times (non-negative
        integers, one per sample of the split; ``None``: every sample once)."""
        w = np.ones(self.num_samples, dtype=np.int64) if sample_weight is None else np.asarray(sample_weight, dtype=np.int64)
        if w.shape != (self.num_samples,) or (w < 0).any():
            raise ValueError(f"sample_weight must be {self.num_samples} non-negative integers")
        cfg = self.config
        label_aps: dict[str, dict[float, float]] = {}
        label_tp: dict[str, dict[str, float]] = {}
        for ci, name in enumerate(DETECTION_NAMES):
            npos = int(w[self.gt_sample[ci]].sum())
            label_aps[name] = {}
            for th in cfg.dist_ths:
                c = self.curves[(name, th)]
                if th != cfg.dist_th_tp:  # only the AP is read at this threshold: skip the TP errors
                    label_aps[name][th] = self._ap(c, w, npos)
                    continue
                curve = self._curve(c, w, npos)
                label_aps[name][th] = calc_ap(curve, cfg.min_recall, cfg.min_precision)
                label_tp[name] = {m: math.nan if m in SKIPPED_TP.get(name, ()) else calc_tp(curve, cfg.min_recall, m)
                                  for m in TP_METRICS}
        return summary_of(DetectionMetrics(label_aps, label_tp, 0.0, cfg))

    def _ap(self, c: _ClassCurve, w: np.ndarray, npos: int) -> float:
        """calc_ap of the curve :meth:`_curve` would build (its precision part only)."""
        reps = w[c.sample]
        is_tp = np.repeat(c.is_tp, reps)
        if npos == 0 or not is_tp.any():
            return calc_ap(Curve.no_predictions(), self.config.min_recall, self.config.min_precision)
        tp = np.cumsum(is_tp).astype(float)
        fp = np.cumsum(~is_tp).astype(float)
        prec = np.interp(np.linspace(0, 1, NUM_RECALL), tp / float(npos), tp / (fp + tp), right=0)
        prec = prec[round(100 * self.config.min_recall) + 1:] - self.config.min_precision
        prec[prec < 0] = 0
        return float(np.mean(prec)) / (1.0 - self.config.min_precision)

    @staticmethod
    def _curve(c: _ClassCurve, w: np.ndarray, npos: int) -> Curve:
        reps = w[c.sample]
        is_tp = np.repeat(c.is_tp, reps)
        if npos == 0 or not is_tp.any():
            return Curve.no_predictions()
        tp_reps = reps[c.is_tp]
        errors = {k: np.repeat(v, tp_reps) for k, v in c.errors.items()} or {m: np.zeros(int(is_tp.sum())) for m in TP_METRICS}
        return _curve(is_tp, np.repeat(c.conf, reps), npos, errors)


def reference_metrics(preds: BoxSet, gt: GroundTruth, sample_weight: np.ndarray, config: MetricConfig | None = None) -> dict[str, float]:
    """The plain version of :meth:`PreparedRun.metrics`: build the split with sample ``s`` copied
    ``sample_weight[s]`` times (ground truth and predictions, each copy a sample of its own) and
    run the full :func:`evaluate` on it."""
    w = np.asarray(sample_weight, dtype=np.int64)
    copies = np.repeat(np.arange(gt.num_samples), w)  # new sample -> original sample
    tokens = tuple(f"{gt.sample_tokens[s]}#{k}" for k, s in enumerate(copies))

    def duplicate(boxes: BoxSet) -> BoxSet:
        cols = {f: [] for f in ("sample", "label", "translation", "size", "rotation", "velocity", "attribute", "score", "num_pts")}
        for new, s in enumerate(copies):
            sel = boxes.sample == s
            for f in cols:
                cols[f].append(np.full(int(sel.sum()), new) if f == "sample" else getattr(boxes, f)[sel])
        return BoxSet.from_columns(**{f: np.concatenate(v) if v else [] for f, v in cols.items()})

    dup_gt = GroundTruth(tokens, gt.ego_translation[copies], duplicate(gt.boxes), duplicate(gt.racks), gt.class_range)
    return summary_of(evaluate(duplicate(preds), dup_gt, config=config))


def scene_draws(scene_of_sample: np.ndarray, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """``replicates`` x S sample weights: each replicate draws the split's scenes with replacement
    (as many draws as scenes) and weighs every sample by the number of times its scene was drawn.
    ``scene_of_sample``: S scene ids (any integers)."""
    scenes, index = np.unique(np.asarray(scene_of_sample), return_inverse=True)
    picks = rng.integers(0, len(scenes), size=(replicates, len(scenes)))
    counts = np.zeros((replicates, len(scenes)), dtype=np.int64)
    np.add.at(counts, (np.arange(replicates)[:, None], picks), 1)
    return counts[:, index]


@dataclass
class Interval:
    """A point estimate and its percentile bootstrap interval."""

    estimate: float
    low: float
    high: float
    level: float = 0.95

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_difference(a: Sequence[np.ndarray], b: Sequence[np.ndarray], rng: np.random.Generator, *, level: float = 0.95) -> Interval:
    """Mean of recipe ``a`` minus mean of recipe ``b``, over worlds, with a bootstrap interval.

    ``a[w]`` is a runs x (1 + R) array for world ``w``: column 0 holds each run's metric on the
    world's validation scenes, column ``r`` the metric on scene replicate ``r`` (the same scene draw
    for ``a[w]`` and ``b[w]``: that pairs the two recipes). Each replicate also draws each
    recipe's runs of the world with replacement. The statistic is the mean over worlds of
    (mean over a's runs - mean over b's runs); worlds are fixed strata, not resampled.
    """
    if len(a) != len(b) or not a:
        raise ValueError("a and b need the same worlds (at least one)")
    reps = {x.shape[1] for x in [*a, *b]}
    if len(reps) != 1 or reps == {1}:
        raise ValueError("every world's arrays need the same number (> 0) of scene replicates")
    r = reps.pop() - 1
    estimate = float(np.mean([x[:, 0].mean() - y[:, 0].mean() for x, y in zip(a, b)]))
    diffs = np.zeros(r)
    cols = np.arange(1, r + 1)
    for x, y in zip(a, b):
        ia = rng.integers(0, len(x), size=(r, len(x)))
        ib = rng.integers(0, len(y), size=(r, len(y)))
        diffs += x[ia, cols[:, None]].mean(1) - y[ib, cols[:, None]].mean(1)
    diffs /= len(a)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(diffs, [tail, 100 - tail])
    return Interval(estimate, float(low), float(high), level)


def between_worlds(estimates: Sequence[float], *, level: float = 0.95) -> Interval:
    """The mean of per-world differences with a Student-t interval (len - 1 degrees of freedom):
    the worlds taken as a sample of worlds, which :func:`paired_difference` holds fixed. It answers
    whether the difference would hold on a *new* world, so it is wider; with 3 worlds the t
    quantile is 4.30 (vs 1.96)."""
    from scipy.stats import t

    x = np.asarray(estimates, dtype=float)
    if len(x) < 2:
        raise ValueError("an interval over worlds needs at least 2 worlds")
    mean = float(x.mean())
    half = float(t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return Interval(mean, mean - half, mean + half, level)


__all__ = ["PreparedRun", "reference_metrics", "scene_draws", "paired_difference", "between_worlds", "Interval", "summary_of",
           "SUMMARY_KEYS"]
