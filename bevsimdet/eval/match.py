"""Greedy centre-distance matching of predictions to ground truth, vectorised.

The devkit's rule (``detection/algo.py:accumulate``): predictions of a class are visited by
descending score; each takes the closest still-unmatched GT box of the same class and sample,
and is a true positive if that distance is ``< threshold``. Only pairs closer than the threshold
can ever match, and a prediction visits its candidates by (distance, GT order), so the rule is:
*in rank order, each prediction takes its first candidate that no earlier prediction took*.

:func:`greedy_match` computes exactly that without visiting predictions one by one. It works in
rounds over the candidate pairs: every unresolved prediction proposes its first untaken candidate,
and a proposal ``p -> g`` is final when no unresolved prediction ranked before ``p`` still has
``g`` among its untaken candidates. Then nothing that happens before ``p`` in the sequential
order can touch ``g`` or any candidate ``p`` prefers (those are already taken by final
assignments), so the sequential loop would give ``p`` exactly ``g``. The best-ranked unresolved
prediction of every (sample, class) group always qualifies, so each round makes progress; on
realistic data a few rounds resolve everything. :func:`greedy_match_reference` is the plain loop.
"""

from __future__ import annotations

import numpy as np


def pairs_by_key(a_key: np.ndarray, b_key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All index pairs ``(i, j)`` with ``a_key[i] == b_key[j]``, grouped by ``i`` ascending, ``j`` ascending."""
    order = np.argsort(b_key, kind="stable")
    sorted_keys = b_key[order]
    start = np.searchsorted(sorted_keys, a_key, side="left")
    count = np.searchsorted(sorted_keys, a_key, side="right") - start
    ai = np.repeat(np.arange(len(a_key)), count)
    offset = np.arange(len(ai)) - np.repeat(np.cumsum(count) - count, count)
    return ai, order[np.repeat(start, count) + offset]


def candidate_pairs(
    pred_key: np.ndarray, pred_xy: np.ndarray, gt_key: np.ndarray, gt_xy: np.ndarray, max_dist: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (prediction, GT) pairs with equal group key and xy centre distance ``< max_dist``.

    ``pred_key`` P int, ``pred_xy`` P x 2, ``gt_key`` G int, ``gt_xy`` G x 2.
    Returns ``(pred_index, gt_index, dist)``, each K.
    """
    pi, gi = pairs_by_key(pred_key, gt_key)
    d = pred_xy[pi] - gt_xy[gi]
    dist = np.sqrt(d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1])
    keep = dist < max_dist
    return pi[keep], gi[keep], dist[keep]


def greedy_match(
    pred_rank: np.ndarray, pair_pred: np.ndarray, pair_gt: np.ndarray, pair_dist: np.ndarray, num_gt: int
) -> np.ndarray:
    """Resolve the greedy matching given the candidate pairs (all with ``dist < threshold``).

    ``pred_rank`` P int: visiting order (lower first; only the order among predictions that share
    a candidate GT matters, so independent problems may reuse ranks). ``pair_*`` K arrays of candidate pairs; ties in distance go to the lower
    GT index, as in the devkit's loop. Returns P int64: the matched GT index, or -1.
    """
    match = np.full(len(pred_rank), -1, dtype=np.int64)
    # Pairs in visiting order: by prediction rank, then by that prediction's preference (the
    # prediction id keeps each prediction's pairs contiguous where ranks repeat).
    order = np.lexsort((pair_gt, pair_dist, pair_pred, pred_rank[pair_pred]))
    pp, pg = pair_pred[order], pair_gt[order]
    rank = pred_rank[pp]
    sentinel = np.iinfo(np.int64).max
    min_rank = np.full(num_gt, sentinel, dtype=np.int64)
    while len(pp):
        # First remaining pair of each prediction = its proposal.
        first = np.ones(len(pp), dtype=bool)
        first[1:] = pp[1:] != pp[:-1]
        # Best rank among unresolved predictions that still want each GT.
        min_rank[pg] = sentinel
        np.minimum.at(min_rank, pg, rank)
        accept = first & (min_rank[pg] == rank)
        match[pp[accept]] = pg[accept]
        taken = np.zeros(num_gt, dtype=bool)
        taken[pg[accept]] = True
        resolved = np.zeros(len(pred_rank), dtype=bool)
        resolved[pp[accept]] = True
        keep = ~(taken[pg] | resolved[pp])
        pp, pg, rank = pp[keep], pg[keep], rank[keep]
    return match


def greedy_match_reference(
    pred_rank: np.ndarray, pair_pred: np.ndarray, pair_gt: np.ndarray, pair_dist: np.ndarray, num_gt: int
) -> np.ndarray:
    """Plain sequential version of :func:`greedy_match` (same inputs and output)."""
    candidates: dict[int, list[tuple[float, int]]] = {}
    for p, g, d in zip(pair_pred.tolist(), pair_gt.tolist(), pair_dist.tolist()):
        candidates.setdefault(p, []).append((d, g))
    match = np.full(len(pred_rank), -1, dtype=np.int64)
    taken = np.zeros(num_gt, dtype=bool)
    for p in np.argsort(pred_rank, kind="stable").tolist():
        for _, g in sorted(candidates.get(p, [])):
            if not taken[g]:
                taken[g] = True
                match[p] = g
                break
    return match
