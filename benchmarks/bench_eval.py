"""Speed of the nuScenes detection metric: bevsimdet's vectorised evaluator vs the devkit's.

Same boxes for both: random ground truth around random ego poses and predictions made by
perturbing it, with false positives up to 500 predictions per sample (the submission limit).
Two stages are timed (see the notes in the result): from the ``results`` mapping (what
``DetectionEval`` does once the ground truth is loaded) and the metric alone on filtered boxes.
Every metric of the two is compared as well.
"""

from __future__ import annotations

import statistics
import time

import numpy as np


def _case(num_samples: int, seed: int = 0):
    from bevsimdet.eval import synthetic

    rng = np.random.default_rng(seed)
    gt = synthetic.random_ground_truth(rng, num_samples, boxes_per_sample=60.0)
    # A BEV detector's output: boxes on a 108 m grid around the ego, capped at 500 per sample.
    model = synthetic.PredictionModel(false_positives=520.0, fp_range=54.0, duplicates=0.5, score_levels=1000)
    return gt, synthetic.random_predictions(rng, gt, model)


def _max_diff(ours: dict, theirs: dict) -> float:
    worst = max(abs(ours["mean_ap"] - theirs["mean_ap"]), abs(ours["nd_score"] - theirs["nd_score"]))
    for c, aps in theirs["label_aps"].items():
        worst = max([worst] + [abs(ours["label_aps"][c][str(th)] - ap) for th, ap in aps.items()])
        for m, e in theirs["label_tp_errors"][c].items():
            o = ours["label_tp_errors"][c][m]
            worst = max(worst, 0.0 if np.isnan(o) and np.isnan(e) else abs(o - e))
    return worst


def run(quick: bool) -> dict:
    from bevsimdet.eval import devkit, metrics, results
    from bevsimdet.eval.gt import filter_boxes

    num_samples = 40 if quick else 400
    repeats = 3 if quick else 5
    gt, res = _case(num_samples)
    preds = results.results_to_boxes(res, gt.sample_tokens)
    kept = filter_boxes(preds, gt.ego_translation, gt.racks, gt.class_range)
    gt_eb = devkit.to_eval_boxes(gt.boxes, gt.sample_tokens)
    pred_eb = devkit.to_eval_boxes(kept, gt.sample_tokens)

    # The devkit once each (slow, and its spread is small next to the ratio).
    t0 = time.perf_counter()
    dk_full, _ = devkit.devkit_load_and_evaluate(res, gt, gt_boxes=gt_eb)
    dk_full_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    dk_core, _ = devkit.devkit_evaluate(gt_eb, pred_eb)
    dk_core_s = time.perf_counter() - t0

    full_s, core_s = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ours = metrics.evaluate(res, gt)
        full_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        metrics.evaluate(preds, gt)
        core_s.append(time.perf_counter() - t0)
    diff = max(_max_diff(ours.to_dict(), dk_full.serialize()), _max_diff(ours.to_dict(), dk_core.serialize()))
    common = {"samples": num_samples, "GT boxes": len(gt.boxes), "predictions (all / in range)": f"{len(preds)} / {len(kept)}"}
    rows = [
        {"stage": "results mapping -> metrics", **common, "devkit s": dk_full_s,
         "bevsimdet s": statistics.median(full_s), "speed-up": dk_full_s / statistics.median(full_s),
         "max abs metric diff": diff},
        {"stage": "filtered boxes -> metrics", **common, "devkit s": dk_core_s,
         "bevsimdet s": statistics.median(core_s), "speed-up": dk_core_s / statistics.median(core_s),
         "max abs metric diff": diff},
    ]
    return {
        "title": "nuScenes detection metric (detection_cvpr_2019): bevsimdet vs nuscenes-devkit",
        "rows": rows,
        "notes": [
            "results mapping -> metrics: devkit = EvalBoxes.deserialize + add_center_dist + filter_eval_boxes + "
            "DetectionEval.evaluate; bevsimdet = eval.metrics.evaluate(results, gt) (validation, conversion, filtering, metric).",
            "filtered boxes -> metrics: devkit = DetectionEval.evaluate on filtered EvalBoxes; bevsimdet = "
            "evaluate(BoxSet, gt) (still filters the predictions).",
            f"devkit timed once, bevsimdet median of {repeats}; 1 thread; target speed-up >= 20x.",
        ],
    }


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, default=str))
