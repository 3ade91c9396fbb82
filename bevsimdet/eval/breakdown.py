"""Heading and velocity errors per class, split into moving and still objects.

mAOE and mAVE average over true positives of all motion states, so they cannot say *why* a
detector's heading or velocity is poor. This breakdown pairs every GT box with the nearest
prediction of its class (centre distance < ``max_dist``, score >= ``min_score``) and reports, per
class and motion state, the share of headings within 0.5 rad, the share flipped (error > 2.6 rad),
and the mean true and predicted speeds. Two patterns it exposes: front/back flips (a large flipped
share) and a velocity branch that predicts "everything stands still" (predicted speed ~0 on movers,
whose velocity error then equals their speed).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bevsimdet.eval.boxes import DETECTION_NAMES, BoxSet, angle_diff, quaternion_yaw
from bevsimdet.eval.match import candidate_pairs
from bevsimdet.eval.metrics import SKIPPED_TP, yaw_period

MOVING_SPEED = 1.0  # m/s: GT speed above which an object counts as moving
ALIGNED, FLIPPED = 0.5, 2.6  # rad


def nearest_pairs(gt: BoxSet, preds: BoxSet, max_dist: float) -> tuple[np.ndarray, np.ndarray]:
    """For each GT box the nearest prediction of the same sample and class closer than ``max_dist``
    (ties: the earlier prediction). Returns ``(gt_index, pred_index)``, one pair per paired GT box."""
    key_p = preds.sample * len(DETECTION_NAMES) + preds.label
    key_g = gt.sample * len(DETECTION_NAMES) + gt.label
    pi, gi, dist = candidate_pairs(key_p, preds.translation[:, :2], key_g, gt.translation[:, :2], max_dist)
    order = np.lexsort((pi, dist, gi))  # by GT, then distance, then prediction index
    gi, pi = gi[order], pi[order]
    first = np.ones(len(gi), dtype=bool)
    first[1:] = gi[1:] != gi[:-1]
    return gi[first], pi[first]


def nearest_pairs_reference(gt: BoxSet, preds: BoxSet, max_dist: float) -> tuple[np.ndarray, np.ndarray]:
    """Plain loop version of :func:`nearest_pairs` (the equivalence test's reference)."""
    gis, pis = [], []
    for i in range(len(gt)):
        best, best_d = -1, max_dist
        for j in range(len(preds)):
            if preds.sample[j] != gt.sample[i] or preds.label[j] != gt.label[i]:
                continue
            d = float(np.hypot(*(preds.translation[j, :2] - gt.translation[i, :2])))
            if d < best_d:
                best, best_d = j, d
        if best >= 0:
            gis.append(i)
            pis.append(best)
    return np.asarray(gis, dtype=np.int64), np.asarray(pis, dtype=np.int64)


def motion_breakdown(gt: BoxSet, preds: BoxSet, *, max_dist: float = 2.0, min_score: float = 0.2) -> list[dict[str, Any]]:
    """Rows ``{class, state ('moving'|'still'), gt, paired, aligned, flipped, orient_err, vel_err,
    speed_gt, speed_pred}`` for every class and state with GT boxes (``aligned``/``flipped``: shares of
    the paired boxes; errors and speeds: means over them, NaN where none is paired or the class has
    no heading/velocity). Barriers use the devkit's pi period for heading; traffic cones have none."""
    preds = preds.select(preds.score >= min_score)
    gi, pi = nearest_pairs(gt, preds, max_dist)
    g_yaw, p_yaw = quaternion_yaw(gt.rotation), quaternion_yaw(preds.rotation)
    gt_speed = np.nan_to_num(np.linalg.norm(gt.velocity, axis=1), nan=0.0)
    rows = []
    for c, name in enumerate(DETECTION_NAMES):
        for state in ("moving", "still"):
            in_state = (gt.label == c) & ((gt_speed > MOVING_SPEED) if state == "moving" else (gt_speed <= MOVING_SPEED))
            if not in_state.any():
                continue
            sel = in_state[gi]
            g, p = gi[sel], pi[sel]
            row: dict[str, Any] = {"class": name, "state": state, "gt": int(in_state.sum()), "paired": int(len(g))}
            nan = float("nan")
            skipped = SKIPPED_TP.get(name, ())
            if len(g) and "orient_err" not in skipped:
                err = np.abs(angle_diff(g_yaw[g], p_yaw[p], yaw_period(name)))
                row.update(aligned=float(np.mean(err < ALIGNED)), flipped=float(np.mean(err > FLIPPED)), orient_err=float(err.mean()))
            else:
                row.update(aligned=nan, flipped=nan, orient_err=nan)
            has_vel = np.isfinite(gt.velocity[g]).all(axis=1)
            if has_vel.any() and "vel_err" not in skipped:
                gv, pv = gt.velocity[g[has_vel]], preds.velocity[p[has_vel]]
                row.update(vel_err=float(np.linalg.norm(pv - gv, axis=1).mean()), speed_gt=float(np.linalg.norm(gv, axis=1).mean()),
                           speed_pred=float(np.linalg.norm(pv, axis=1).mean()))
            else:
                row.update(vel_err=nan, speed_gt=nan, speed_pred=nan)
            rows.append(row)
    return rows


def print_breakdown(rows: list[dict[str, Any]], console: Any = None, title: str = "heading and velocity by motion state", max_dist: float = 2.0) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    cols = [("class", "class"), ("state", "state"), ("GT", "gt"), ("paired", "paired"), ("<0.5 rad", "aligned"), ("flipped", "flipped"),
            ("AOE", "orient_err"), ("AVE", "vel_err"), ("speed GT", "speed_gt"), ("speed pred", "speed_pred")]
    for head, _ in cols:
        table.add_column(head, justify="left" if head in ("class", "state") else "right", no_wrap=True)

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "-" if np.isnan(v) else f"{v:.2f}"
        return str(v)

    for r in rows:
        table.add_row(*(cell(r[k]) for _, k in cols))
    console.print(table)
    console.print(f"nearest prediction of the class within {max_dist:g} m per GT box; moving: GT speed > {MOVING_SPEED:g} m/s; "
                  f"flipped: heading error > {FLIPPED:g} rad")


__all__ = ["motion_breakdown", "nearest_pairs", "nearest_pairs_reference", "print_breakdown", "MOVING_SPEED"]
