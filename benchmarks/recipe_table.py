"""Table of benchmarks/recipe_seed_runs.sh: each recipe's final validation over seeds (mean +- std)
and the recipe's paired difference to today's recipe, seed by seed, for mAP, NDS, mATE and the AP
of each class (the rare ones are where CBGS and GT-paste should show). The paired difference
carries a 95 % t-interval over seeds (Student's t with seeds - 1 degrees of freedom: with 2 or 3
seeds it is wide, and it says only what those seeds can; a `*` marks one that excludes zero). With
``--world``, the distinct objects per class of the world's train and val splits (the counts that
bound what a rare-class AP can say).

    python benchmarks/recipe_table.py OUT [--world WORLD]
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

# (control, recipe): the recipe against today's recipe at the same steps, and the staged fusion
# recipe (720 LiDAR-only + 720 fusion steps) against today's fusion recipe at 1440 steps.
PAIRS = (("lidar", "lidar_recipe"), ("fusion", "fusion_recipe"), ("fusion_1440", "fusion_recipe"))
RARE = ("bus", "trailer", "construction_vehicle", "motorcycle", "bicycle")
COMMON = ("car", "truck", "pedestrian", "traffic_cone", "barrier")
# Two-sided 95 % Student-t quantiles by degrees of freedom (seeds - 1).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
KEYS = ("mAP", "NDS", "mATE", "mASE", "mAOE", "mAVE", "mAAE", *(f"AP/{c}" for c in RARE), "rare mean AP", *(f"AP/{c}" for c in COMMON))


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


def _interval(diffs: list[float]) -> str:
    if len(diffs) < 2 or len(diffs) - 1 not in T95:
        return "-"
    half = T95[len(diffs) - 1] * statistics.stdev(diffs) / len(diffs) ** 0.5
    mean = statistics.fmean(diffs)
    excludes_zero = mean - half > 0 or mean + half < 0
    return f"[{mean - half:+.3f}, {mean + half:+.3f}]" + ("*" if excludes_zero else "")


def object_counts(world: Path) -> str:
    """Distinct objects per class within the evaluation range, train and val splits of ``world``."""
    from bevsimdet.eval.gt import count_instances

    version = "v1.0-trainval" if (world / "v1.0-trainval").is_dir() else "v1.0-mini"
    splits = ("train", "val") if version == "v1.0-trainval" else ("mini_train", "mini_val")
    lines = ["| split | " + " | ".join(RARE + COMMON) + " |", "|---" * (1 + len(RARE + COMMON)) + "|"]
    for split in splits:
        counts = count_instances(world, version, split)
        lines.append(f"| {split} objects | " + " | ".join(str(counts.get(c, 0)) for c in RARE + COMMON) + " |")
    return "\n".join(lines) + "\n"


def table(out: Path) -> str:
    runs = _runs(out)
    lines = []
    for base, recipe in PAIRS:
        a, b = runs.get(base, {}), runs.get(recipe, {})
        seeds = sorted(set(a) & set(b))
        lines += [f"### {recipe} vs {base} (seeds {', '.join(map(str, seeds)) or 'none'})", "",
                  f"| metric | {base} | {recipe} | paired difference (mean; per seed) | 95 % t-interval |", "|---|---|---|---|---|"]
        for key in KEYS:
            diffs = [b[s][key] - a[s][key] for s in seeds]
            per_seed = ", ".join(f"{d:+.3f}" for d in diffs)
            lines.append(f"| {key} | {_mean_std([a[s][key] for s in sorted(a)])} | {_mean_std([b[s][key] for s in sorted(b)])} | "
                         f"{statistics.fmean(diffs):+.3f} ({per_seed}) | {_interval(diffs)} |" if diffs else f"| {key} | - | - | - | - |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) not in (1, 3) or (len(args) == 3 and args[1] != "--world"):
        sys.exit("usage: python benchmarks/recipe_table.py OUT [--world WORLD]")
    if len(args) == 3:
        print(object_counts(Path(args[2])))
    print(table(Path(args[0])))
