"""Bridges to the official ``nuscenes-devkit`` evaluation, for cross-checks and benchmarks.

Nothing in the evaluation path uses this module; tests and ``benchmarks/bench_eval.py`` use it
to run the devkit's own code on the same boxes.
"""

from __future__ import annotations

from typing import Any, Sequence

from bevsimdet.eval.boxes import ATTRIBUTE_NAMES, DETECTION_NAMES, BoxSet
from bevsimdet.eval.gt import BIKE_RACK, GroundTruth


def to_eval_boxes(boxes: BoxSet, sample_tokens: Sequence[str], *, ego_translation: Any = None) -> Any:
    """A devkit ``EvalBoxes`` of ``DetectionBox`` with the same boxes, samples and order.

    Every sample gets an entry (possibly empty). With ``ego_translation`` (S x 3) the boxes'
    ``ego_translation`` is set as the devkit's ``add_center_dist`` does.
    """
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.detection.data_classes import DetectionBox

    per_sample: list[list] = [[] for _ in sample_tokens]
    for i in range(len(boxes)):
        s = int(boxes.sample[i])
        t = boxes.translation[i].tolist()
        ego = (0.0, 0.0, 0.0)
        if ego_translation is not None:
            e = ego_translation[s]
            ego = (t[0] - e[0], t[1] - e[1], t[2] - e[2])
        a = int(boxes.attribute[i])
        per_sample[s].append(
            DetectionBox(
                sample_token=sample_tokens[s],
                translation=tuple(t),
                size=tuple(boxes.size[i].tolist()),
                rotation=tuple(boxes.rotation[i].tolist()),
                velocity=tuple(boxes.velocity[i].tolist()),
                ego_translation=ego,
                num_pts=int(boxes.num_pts[i]),
                detection_name=DETECTION_NAMES[int(boxes.label[i])],
                detection_score=float(boxes.score[i]),
                attribute_name="" if a < 0 else ATTRIBUTE_NAMES[a],
            )
        )
    out = EvalBoxes()
    for token, lst in zip(sample_tokens, per_sample):
        out.add_boxes(token, lst)
    return out


def devkit_evaluate(gt_boxes: Any, pred_boxes: Any) -> tuple[Any, Any]:
    """Run ``DetectionEval.evaluate`` (detection_cvpr_2019) on already loaded and filtered
    ``EvalBoxes``; returns the devkit's ``(DetectionMetrics, DetectionMetricDataList)``."""
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval

    ev = DetectionEval.__new__(DetectionEval)  # skip __init__: it wants files and a NuScenes object
    ev.cfg = config_factory("detection_cvpr_2019")
    ev.gt_boxes, ev.pred_boxes, ev.verbose = gt_boxes, pred_boxes, False
    ev.sample_tokens = gt_boxes.sample_tokens
    return ev.evaluate()


class TablesOf:
    """The few ``NuScenes.get`` tables that ``add_center_dist`` and ``filter_eval_boxes`` read
    (sample, sample_data, ego_pose, and bicycle-rack annotations), built from a :class:`GroundTruth`,
    so those devkit functions run without a dataset on disk."""

    def __init__(self, gt: GroundTruth):
        self.tables: dict[str, dict[str, dict]] = {"sample": {}, "sample_data": {}, "ego_pose": {}, "sample_annotation": {}}
        racks_of: dict[int, list[str]] = {}
        for r in range(len(gt.racks)):
            token = f"rack-{r}"
            racks_of.setdefault(int(gt.racks.sample[r]), []).append(token)
            self.tables["sample_annotation"][token] = {
                "category_name": BIKE_RACK,
                "translation": gt.racks.translation[r].tolist(),
                "size": gt.racks.size[r].tolist(),
                "rotation": gt.racks.rotation[r].tolist(),
            }
        for s, token in enumerate(gt.sample_tokens):
            self.tables["sample"][token] = {"data": {"LIDAR_TOP": f"sd-{token}"}, "anns": racks_of.get(s, [])}
            self.tables["sample_data"][f"sd-{token}"] = {"ego_pose_token": f"ep-{token}"}
            self.tables["ego_pose"][f"ep-{token}"] = {"translation": gt.ego_translation[s].tolist()}

    def get(self, table: str, token: str) -> dict:
        return self.tables[table][token]


def devkit_load_and_evaluate(results: dict, gt: GroundTruth, gt_boxes: Any = None) -> tuple[Any, Any]:
    """What ``DetectionEval`` does with a results mapping once the GT is loaded: deserialise the
    predictions, ``add_center_dist``, ``filter_eval_boxes``, then ``evaluate``. ``gt_boxes``:
    ``to_eval_boxes(gt.boxes, gt.sample_tokens)`` if already made."""
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.common.loaders import add_center_dist, filter_eval_boxes
    from nuscenes.eval.detection.data_classes import DetectionBox

    nusc = TablesOf(gt)
    preds = EvalBoxes.deserialize(results, DetectionBox)
    preds = filter_eval_boxes(nusc, add_center_dist(nusc, preds), config_factory("detection_cvpr_2019").class_range)
    return devkit_evaluate(gt_boxes if gt_boxes is not None else to_eval_boxes(gt.boxes, gt.sample_tokens), preds)
