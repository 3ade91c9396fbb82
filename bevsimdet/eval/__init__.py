"""nuScenes detection evaluation: exact (equal to the devkit's ``DetectionEval``) and vectorised.

* :mod:`.gt` — :func:`~.gt.load_gt`: ground truth of a split as arrays.
* :mod:`.tables` — the few nuScenes tables evaluation reads (no ``NuScenes`` object); :mod:`.cache` — the GT cache.
* :mod:`.results` — detections -> official submission boxes; results files and their validation.
* :mod:`.metrics` — :func:`~.metrics.evaluate`: mAP, TP errors, NDS and the curves behind them.
* :mod:`.dist` — :func:`~.dist.gather_results`: merge results from DDP ranks.
* :mod:`.report` — terminal table and PNG plots; :mod:`.commands` — ``bevsimdet evaluate``.
* :mod:`.devkit` and :mod:`.synthetic` — cross-checks against the devkit, random test cases.
"""
