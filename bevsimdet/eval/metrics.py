"""The nuScenes detection metric (mAP, TP errors, NDS), vectorised and equal to the devkit's.

:func:`evaluate` reproduces ``nuscenes.eval.detection.evaluate.DetectionEval.evaluate`` with the
``detection_cvpr_2019`` config: predictions are filtered like the ground truth, matched greedily
by centre distance for every class and threshold (:mod:`bevsimdet.eval.match`), turned into
101-point precision/recall/confidence curves and TP-error curves, and summarised into APs, TP
errors and NDS. The curves are kept (:attr:`DetectionMetrics.curves`) for plots.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from bevsimdet.data.classes import HALF_TURN_CLASSES
from bevsimdet.eval.boxes import DETECTION_NAMES, BoxSet, angle_diff, quaternion_yaw, scale_iou, xy_norm
from bevsimdet.eval.gt import CVPR_2019_CLASS_RANGE, GroundTruth, filter_boxes
from bevsimdet.eval.match import candidate_pairs, greedy_match

TP_METRICS: tuple[str, ...] = ("trans_err", "scale_err", "orient_err", "vel_err", "attr_err")
# the flat summary names of the TP errors (what run logs, metrics.json and result tables use)
TP_SUMMARY: dict[str, str] = {"mATE": "trans_err", "mASE": "scale_err", "mAOE": "orient_err", "mAVE": "vel_err", "mAAE": "attr_err"}
SUMMARY_KEYS: tuple[str, ...] = ("mAP", "NDS", *TP_SUMMARY)
# TP errors that are undefined for a class (the devkit reports NaN and nanmean skips them).
SKIPPED_TP = {"traffic_cone": ("attr_err", "vel_err", "orient_err"), "barrier": ("attr_err", "vel_err")}


def yaw_period(name: str) -> float:
    """Period of heading errors for class ``name``: pi for barriers (front and back alike), else 2 pi."""
    return np.pi if name in HALF_TURN_CLASSES else 2 * np.pi
NUM_RECALL = 101
PRED_CHUNK = 200_000  # predictions per candidate-pair pass, bounds memory on full val sets


@dataclass(frozen=True)
class MetricConfig:
    """The devkit's ``DetectionConfig``; defaults are ``detection_cvpr_2019``."""

    class_range: Mapping[str, float] = field(default_factory=lambda: dict(CVPR_2019_CLASS_RANGE))
    dist_ths: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    dist_th_tp: float = 2.0
    min_recall: float = 0.1
    min_precision: float = 0.1
    max_boxes_per_sample: int = 500
    mean_ap_weight: int = 5

    def __post_init__(self) -> None:
        if set(self.class_range) != set(DETECTION_NAMES):
            raise ValueError("class_range must have exactly the 10 nuScenes detection classes")
        if self.dist_th_tp not in self.dist_ths:
            raise ValueError("dist_th_tp must be one of dist_ths")

    def serialize(self) -> dict:
        """The same dict as the devkit's ``DetectionConfig.serialize``."""
        return {
            "class_range": dict(self.class_range),
            "dist_fcn": "center_distance",
            "dist_ths": list(self.dist_ths),
            "dist_th_tp": self.dist_th_tp,
            "min_recall": self.min_recall,
            "min_precision": self.min_precision,
            "max_boxes_per_sample": self.max_boxes_per_sample,
            "mean_ap_weight": self.mean_ap_weight,
        }


@dataclass
class Curve:
    """One class at one distance threshold: the devkit's ``DetectionMetricData`` (101 points each)."""

    recall: np.ndarray
    precision: np.ndarray
    confidence: np.ndarray
    trans_err: np.ndarray
    vel_err: np.ndarray
    scale_err: np.ndarray
    orient_err: np.ndarray
    attr_err: np.ndarray

    @classmethod
    def no_predictions(cls) -> "Curve":
        ones = np.ones(NUM_RECALL)
        return cls(np.linspace(0, 1, NUM_RECALL), np.zeros(NUM_RECALL), np.zeros(NUM_RECALL),
                   ones, ones.copy(), ones.copy(), ones.copy(), ones.copy())

    @property
    def max_recall_ind(self) -> int:
        """Index of the highest recall reached (last non-zero confidence), 0 if none."""
        nz = np.flatnonzero(self.confidence)
        return int(nz[-1]) if len(nz) else 0

    def serialize(self) -> dict:
        return {k: getattr(self, k).tolist() for k in
                ("recall", "precision", "confidence", "trans_err", "vel_err", "scale_err", "orient_err", "attr_err")}


@dataclass
class DetectionMetrics:
    """Per-class APs and TP errors plus their summaries, like the devkit's ``DetectionMetrics``."""

    label_aps: dict[str, dict[float, float]]
    label_tp_errors: dict[str, dict[str, float]]
    eval_time: float
    config: MetricConfig = field(default_factory=MetricConfig)
    curves: dict[tuple[str, float], Curve] = field(default_factory=dict, repr=False)

    @property
    def mean_dist_aps(self) -> dict[str, float]:
        return {c: float(np.mean(list(d.values()))) for c, d in self.label_aps.items()}

    @property
    def mean_ap(self) -> float:
        return float(np.mean(list(self.mean_dist_aps.values())))

    @property
    def tp_errors(self) -> dict[str, float]:
        out = {}
        for m in TP_METRICS:
            vals = np.array([self.label_tp_errors[c][m] for c in self.label_tp_errors], dtype=np.float64)
            out[m] = float(np.nanmean(vals)) if not np.all(np.isnan(vals)) else math.nan
        return out

    @property
    def tp_scores(self) -> dict[str, float]:
        return {m: max(0.0, 1.0 - e) for m, e in self.tp_errors.items()}

    @property
    def nd_score(self) -> float:
        scores = self.tp_scores
        total = float(self.config.mean_ap_weight * self.mean_ap + np.sum(list(scores.values())))
        return total / float(self.config.mean_ap_weight + len(scores))

    def to_dict(self) -> dict[str, Any]:
        """The content of the devkit's ``metrics_summary.json`` (threshold keys as JSON strings)."""
        return {
            "label_aps": {c: {str(th): ap for th, ap in d.items()} for c, d in self.label_aps.items()},
            "mean_dist_aps": self.mean_dist_aps,
            "mean_ap": self.mean_ap,
            "label_tp_errors": {c: dict(d) for c, d in self.label_tp_errors.items()},
            "tp_errors": self.tp_errors,
            "tp_scores": self.tp_scores,
            "nd_score": self.nd_score,
            "eval_time": self.eval_time,
            "cfg": self.config.serialize(),
        }

    def curves_dict(self) -> dict[str, dict]:
        """The content of the devkit's ``metrics_details.json``."""
        return {f"{c}:{th}": curve.serialize() for (c, th), curve in self.curves.items()}


def nds_parts(summary: dict[str, float], mean_ap_weight: int = MetricConfig.mean_ap_weight) -> dict[str, float]:
    """NDS split into what each summary metric adds: ``mAP`` -> w·mAP / (w + 5), each TP error ->
    max(0, 1 - error) / (w + 5); they sum to NDS. An error of 1 or more (mATE >= 1 m, mAVE >= 1 m/s)
    adds nothing, so NDS cannot see a gain made above that: a report shows the parts."""
    den = float(mean_ap_weight + len(TP_SUMMARY))
    parts = {"mAP": mean_ap_weight * summary["mAP"] / den}
    for key in TP_SUMMARY:
        err = summary[key]
        parts[key] = 0.0 if math.isnan(err) else max(0.0, 1.0 - err) / den
    return parts


def evaluate(
    results: Mapping[str, list[dict]] | BoxSet,
    gt: GroundTruth,
    *,
    config: MetricConfig | None = None,
) -> DetectionMetrics:
    """Score predictions against ground truth like ``DetectionEval.evaluate``.

    ``results`` is the ``results`` mapping of a submission (sample token -> list of box dicts, see
    :mod:`bevsimdet.eval.results`; it must cover exactly the split's samples, and its order breaks
    score ties as in the devkit), or an already converted :class:`BoxSet` indexed by
    ``gt.sample_tokens``. Without ``config`` the devkit's settings apply with the class ranges the
    GT was filtered with (the CVPR 2019 ranges, or capped ones from :meth:`GroundTruth.within`).
    """
    start = time.time()
    config = config or MetricConfig(class_range=dict(gt.class_range))
    if {k: float(v) for k, v in config.class_range.items()} != {k: float(v) for k, v in gt.class_range.items()}:
        raise ValueError("config.class_range differs from the range the ground truth was filtered with")
    if not isinstance(results, BoxSet):
        from bevsimdet.eval.results import results_to_boxes

        results = results_to_boxes(results, gt.sample_tokens, max_per_sample=config.max_boxes_per_sample)
    preds = filter_boxes(results, gt.ego_translation, gt.racks, config.class_range)
    curves = accumulate(gt.boxes, preds, config)

    label_aps: dict[str, dict[float, float]] = {}
    label_tp: dict[str, dict[str, float]] = {}
    for name in DETECTION_NAMES:
        label_aps[name] = {th: calc_ap(curves[(name, th)], config.min_recall, config.min_precision)
                           for th in config.dist_ths}
        curve = curves[(name, config.dist_th_tp)]
        label_tp[name] = {m: math.nan if m in SKIPPED_TP.get(name, ()) else calc_tp(curve, config.min_recall, m)
                          for m in TP_METRICS}
    return DetectionMetrics(label_aps, label_tp, time.time() - start, config, curves)


def calc_ap(curve: Curve, min_recall: float, min_precision: float) -> float:
    """Mean precision above ``min_recall``, less ``min_precision``, rescaled to [0, 1]."""
    prec = curve.precision[round(100 * min_recall) + 1:] - min_precision
    prec[prec < 0] = 0
    return float(np.mean(prec)) / (1.0 - min_precision)


def calc_tp(curve: Curve, min_recall: float, metric: str) -> float:
    """Mean TP error from just above ``min_recall`` up to the highest recall reached (1 if none)."""
    first = round(100 * min_recall) + 1
    last = curve.max_recall_ind
    if last < first:
        return 1.0
    return float(np.mean(getattr(curve, metric)[first:last + 1]))


def match_all(gt: BoxSet, preds: BoxSet, dist_ths: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching of every class at every threshold at once.

    Returns ``rank_order`` (P, predictions sorted by class, then descending score, ties by
    descending position, which is the devkit's visiting order) and ``match`` (T x P, the GT index
    matched at threshold ``t``, or -1).
    """
    num_p, num_g, num_t = len(preds), len(gt), len(dist_ths)
    rank_order = np.lexsort((-np.arange(num_p), -preds.score, preds.label))
    rank = np.empty(num_p, dtype=np.int64)
    rank[rank_order] = np.arange(num_p)
    ncls = len(DETECTION_NAMES)
    pred_key = preds.sample * ncls + preds.label
    gt_key = gt.sample * ncls + gt.label
    pi, gi, dist = [], [], []
    for lo in range(0, num_p, PRED_CHUNK):
        p, g, d = candidate_pairs(pred_key[lo:lo + PRED_CHUNK], preds.translation[lo:lo + PRED_CHUNK, :2],
                                  gt_key, gt.translation[:, :2], max(dist_ths))
        pi.append(p + lo)
        gi.append(g)
        dist.append(d)
    pi, gi, dist = (np.concatenate(x) if x else np.zeros(0) for x in (pi, gi, dist))
    pi, gi = pi.astype(np.int64), gi.astype(np.int64)
    # One independent matching problem per threshold, solved together: threshold t owns
    # prediction ids [t*P, (t+1)*P) and GT ids [t*G, (t+1)*G).
    sel = [np.flatnonzero(dist < th) for th in dist_ths]
    match = greedy_match(
        np.tile(rank, num_t),
        np.concatenate([pi[s] + t * num_p for t, s in enumerate(sel)]),
        np.concatenate([gi[s] + t * num_g for t, s in enumerate(sel)]),
        np.concatenate([dist[s] for s in sel]),
        num_g * num_t,
    ).reshape(num_t, num_p)
    match = np.where(match >= 0, match - np.arange(num_t)[:, None] * num_g, -1)
    return rank_order, match



def tp_errors(preds: Any, gt: Any, p: np.ndarray, g: np.ndarray, pred_yaw: np.ndarray, gt_yaw: np.ndarray, period: float) -> dict[str, np.ndarray]:
    """The nuScenes TP errors of the matched pairs (prediction ``p[i]``, GT box ``g[i]``): one
    value per pair for each error (``attr_err`` NaN where the GT has no attribute)."""
    attr = np.where(gt.attribute[g] < 0, np.nan, (gt.attribute[g] == preds.attribute[p]).astype(np.float64))
    return {
        "trans_err": xy_norm(preds.translation[p] - gt.translation[g]),
        "vel_err": xy_norm(preds.velocity[p] - gt.velocity[g]),
        "scale_err": 1 - scale_iou(gt.size[g], preds.size[p]),
        "orient_err": np.abs(angle_diff(gt_yaw[g], pred_yaw[p], period)),
        "attr_err": 1 - attr,
    }

def accumulate(gt: BoxSet, preds: BoxSet, config: MetricConfig) -> dict[tuple[str, float], Curve]:
    """The devkit's ``accumulate`` for every (class, threshold): 101-point curves."""
    rank_order, match = match_all(gt, preds, tuple(config.dist_ths))
    sorted_labels = preds.label[rank_order]
    gt_yaw = quaternion_yaw(gt.rotation)
    pred_yaw = quaternion_yaw(preds.rotation)
    npos_per_class = np.bincount(gt.label, minlength=len(DETECTION_NAMES))
    curves = {}
    for ci, name in enumerate(DETECTION_NAMES):
        lo, hi = np.searchsorted(sorted_labels, [ci, ci + 1])
        order = rank_order[lo:hi]
        period = yaw_period(name)
        for ti, th in enumerate(config.dist_ths):
            npos = int(npos_per_class[ci])
            matched = match[ti, order]
            is_tp = matched >= 0
            if npos == 0 or not is_tp.any():
                curves[(name, th)] = Curve.no_predictions()
                continue
            p, g = order[is_tp], matched[is_tp]
            errors = tp_errors(preds, gt, p, g, pred_yaw, gt_yaw, period)
            curves[(name, th)] = _curve(is_tp, preds.score[order], npos, errors)
    return curves


def _curve(is_tp: np.ndarray, conf: np.ndarray, npos: int, errors: dict[str, np.ndarray]) -> Curve:
    """Precision/recall/confidence on 101 recall points and TP errors aligned to them.

    ``is_tp`` and ``conf`` are in visiting order; ``errors`` hold one value per true positive.
    """
    tp = np.cumsum(is_tp).astype(float)
    fp = np.cumsum(~is_tp).astype(float)
    prec = tp / (fp + tp)
    rec = tp / float(npos)
    rec_interp = np.linspace(0, 1, NUM_RECALL)
    prec_i = np.interp(rec_interp, rec, prec, right=0)
    conf_i = np.interp(rec_interp, rec, conf, right=0)
    tp_conf = conf[is_tp]
    # TP errors become running means over the matches, read off at the curve's confidences
    # (np.interp needs increasing x, hence the reversals).
    resampled = {k: np.interp(conf_i[::-1], tp_conf[::-1], _cummean(v)[::-1])[::-1] for k, v in errors.items()}
    return Curve(recall=rec_interp, precision=prec_i, confidence=conf_i, **resampled)


def _cummean(x: np.ndarray) -> np.ndarray:
    """Running mean ignoring NaNs; all-NaN gives ones (the error then counts as maximal)."""
    valid = ~np.isnan(x)
    if not valid.any():
        return np.ones(len(x))
    sums = np.cumsum(np.where(valid, x, 0.0))
    counts = np.cumsum(valid)
    return np.divide(sums, counts, out=np.zeros_like(sums), where=counts != 0)
