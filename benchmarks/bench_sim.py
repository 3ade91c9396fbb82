"""Simulator throughput: keyframes written per second (6 JPEG cameras + LiDAR keyframe + sweeps).

The target (issue 2) is the 10-scene x 20-keyframe v1.0-mini world with 9 sweeps per keyframe at
--image-scale 0.25 in under 3 minutes on 2 cores. ``quick`` writes 2 scenes x 4 keyframes instead.
"""

from __future__ import annotations

import os
import tempfile
import time


def run(quick: bool) -> dict:
    from bevsimdet.data.sim import simulate

    cores = os.cpu_count() or 1
    cases = [dict(scenes=2, samples_per_scene=4, workers=1)] if quick else [
        dict(scenes=2, samples_per_scene=4, workers=1),
        dict(scenes=10, samples_per_scene=20, workers=min(2, cores)),
    ]
    rows = []
    for case in cases:
        with tempfile.TemporaryDirectory(prefix="bench_sim_") as tmp:
            t0 = time.perf_counter()
            s = simulate(tmp, version="v1.0-mini", seed=0, image_scale=0.25, sweeps_per_sample=9, progress=False,
                         force=True, **case)
            seconds = time.perf_counter() - t0
        rows.append({
            "world": f"{case['scenes']} scenes x {case['samples_per_scene']} keyframes, scale 0.25, 9 sweeps",
            "workers": case["workers"],
            "keyframes": s["keyframes"],
            "seconds": round(seconds, 1),
            "keyframes/s": round(s["keyframes"] / seconds, 2),
            "keyframes/s/worker": round(s["keyframes"] / seconds / case["workers"], 2),
        })
    return {
        "title": "Simulator (bevsimdet simulate)",
        "rows": rows,
        "notes": ["target: 10 x 20 mini world with sweeps < 180 s on 2 cores",
                  "each keyframe = 6 rendered 400x225 JPEGs + 10 ray-cast LiDAR sweeps (~28k points each)"],
    }


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
