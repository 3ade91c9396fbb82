"""Table of benchmarks/recipe_seed_runs.sh: each recipe's final validation over seeds (mean +- std)
and the recipe's paired difference to today's recipe, seed by seed, for mAP, NDS, mATE and the AP
of each class (the rare ones are where CBGS and GT-paste should show).

    python benchmarks/recipe_table.py OUT
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

PAIRS = (("lidar", "lidar_recipe"), ("fusion", "fusion_recipe"))
RARE = ("bus", "trailer", "construction_vehicle", "motorcycle", "bicycle")
COMMON = ("car", "truck", "pedestrian", "traffic_cone", "barrier")
KEYS = ("mAP", "NDS", "mATE", *(f"AP/{c}" for c in RARE), "rare mean AP", *(f"AP/{c}" for c in COMMON))


def _runs(out: Path) -> dict[str, dict[int, dict]]:
    runs: dict[str, dict[int, dict]] = {}
    for path in sorted(out.glob("*_s*/metrics.json")):
        m = re.fullmatch(r"(.+)_s(\d+)", path.parent.name)
        if m:
            metrics = json.loads(path.read_text())
            metrics["rare mean AP"] = statistics.fmean(metrics[f"AP/{c}"] for c in RARE)
            runs.setdefault(m.group(1), {})[int(m.group(2))] = metrics
    return runs


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(out: Path) -> str:
    runs = _runs(out)
    lines = []
    for base, recipe in PAIRS:
        a, b = runs.get(base, {}), runs.get(recipe, {})
        seeds = sorted(set(a) & set(b))
        lines += [f"### {base}: today's recipe vs {recipe} (seeds {', '.join(map(str, seeds)) or 'none'})", "",
                  f"| metric | {base} | {recipe} | paired difference (mean; per seed) |", "|---|---|---|---|"]
        for key in KEYS:
            diffs = [b[s][key] - a[s][key] for s in seeds]
            per_seed = ", ".join(f"{d:+.3f}" for d in diffs)
            lines.append(f"| {key} | {_mean_std([a[s][key] for s in sorted(a)])} | {_mean_std([b[s][key] for s in sorted(b)])} | "
                         f"{statistics.fmean(diffs):+.3f} ({per_seed}) |" if diffs else f"| {key} | - | - | - |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1])))
