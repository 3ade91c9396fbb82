"""``bevsimdet ablate``: train several configs over several seeds against one frozen teacher and
report every metric as mean and spread, so a gain can be told apart from seed noise.

Each (config, seed) run lives in ``<out>/<config name>/seed<k>`` and is resumable exactly like a
demo stage: a finished run (``DONE`` marker) and its evaluation (``eval.json``) are reused, so the
command can be re-run to add seeds or configs. Camera/LiDAR/fusion configs are trained with the
plain engine, student configs with the distillation objective.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import typer

from bevsimdet.cli_options import dataroot_option, progress_option, set_option
from bevsimdet.errors import UserError
from bevsimdet.eval.metrics import SUMMARY_KEYS as METRIC_KEYS
from bevsimdet.progress import configure as configure_progress


# The paper's ablation rows (Table 4) over the camera-only baseline, with the depth term on/off and GCM off.
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
DEFAULT_CONFIGS = tuple(
    str(CONFIG_DIR / name)
    for name in ("demo_camera.yaml", "ablations/no_distill.yaml", "ablations/depth_only.yaml", "ablations/imd.yaml",
                 "ablations/imd_cmd.yaml", "ablations/imd_cmd_mmdf.yaml", "ablations/full_no_depth.yaml",
                 "ablations/full_no_gcm.yaml", "ablations/full_no_init.yaml", "ablations/init_only.yaml",
                 "ablations/init_depth.yaml", "ablations/full.yaml")
)


@dataclass
class AblationRow:
    """One config: its name and, per metric, the values of every seed (in seed order)."""

    name: str
    seeds: list[int]
    values: dict[str, list[float]]
    diagnostic: str | None = None  # set for a diagnostic config (oracle depth): not a camera-only result

    @property
    def label(self) -> str:
        """The name as tables show it: a diagnostic row says so."""
        return f"{self.name} ({self.diagnostic})" if self.diagnostic else self.name

    def mean(self, key: str) -> float:
        return statistics.fmean(self.values[key])

    def spread(self, key: str) -> float:
        """Sample standard deviation over seeds (0 with a single seed)."""
        vals = self.values[key]
        return statistics.stdev(vals) if len(vals) > 1 else 0.0


def render_ablation(rows: Sequence[AblationRow]) -> str:
    """Markdown: ``mean ± std`` per metric, then every seed's mAP / NDS / mATE."""
    n = {len(r.seeds) for r in rows}
    head = ["config", "seeds", *METRIC_KEYS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r.mean(k):.4f} ± {r.spread(k):.4f}" for k in METRIC_KEYS]
        lines.append("| " + " | ".join([r.label, ",".join(map(str, r.seeds)), *cells]) + " |")
    lines += ["", "Per seed (mAP / NDS / mATE):", "", "| config | " + " | ".join(f"seed {s}" for s in rows[0].seeds) + " |",
              "|" + "---|" * (1 + len(rows[0].seeds))]
    for r in rows:
        per = [f"{a:.4f} / {b:.4f} / {c:.3f}" for a, b, c in zip(r.values["mAP"], r.values["NDS"], r.values["mATE"])]
        lines.append("| " + " | ".join([r.label, *per]) + " |")
    if len(n) > 1:
        lines.append("\n(configs have different numbers of seeds)")
    return "\n".join(lines)


def _run_one(cfg: Any, run_dir: Path, teacher: Path | None, progress: bool, log: Callable[[str], None]) -> dict[str, Any]:
    from bevsimdet.config import teacher_config_from
    from bevsimdet.distill.run import run_distillation
    from bevsimdet.engine.evaluate import final_or_evaluate
    from bevsimdet.engine.train import run_training, train_stage
    from bevsimdet.io import atomic_write_json

    if cfg.model.type == "student":
        ckpt = train_stage(run_dir, lambda r: run_distillation(cfg, lambda: teacher_config_from(teacher, cfg.distill.teacher_config), teacher, run_dir, resume=r, progress=progress, config_of=teacher_config_from), log, cfg)
    else:
        ckpt = train_stage(run_dir, lambda r: run_training(cfg, run_dir, resume=r, progress=progress), log, cfg)
    cached = run_dir / "eval.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    metrics = final_or_evaluate(cfg, ckpt, progress=progress)
    summary: dict[str, Any] = {k: float(metrics[k]) for k in METRIC_KEYS}
    if metrics.get("diagnostic"):
        summary["diagnostic"] = metrics["diagnostic"]
    atomic_write_json(cached, summary, indent=2)
    return summary


def run_ablation(
    configs: Sequence[str | Path],
    seeds: Sequence[int],
    out_dir: Path,
    *,
    teacher: Path | None = None,
    overrides: Sequence[str] = (),
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[AblationRow]:
    """Train and evaluate every config for every seed; write ``ablation.md`` / ``ablation.json``."""
    from bevsimdet.config import load_config
    from bevsimdet.distill.run import needs_teacher
    from bevsimdet.io import atomic_write_json, atomic_write_text
    from bevsimdet.models.build import check_student, diagnostic

    if not seeds:
        raise UserError("no seeds given", fix="pass --seed once per seed, e.g. --seed 0 --seed 1 --seed 2")
    cfgs = []
    for path in configs:
        if not Path(path).is_file():
            raise UserError(f"ablation config not found: {path}", fix="pass paths such as configs/ablations/full.yaml")
        cfg = load_config(path, list(overrides))
        check_student(cfg.model)  # refused before any run starts, not after the others have trained
        if cfg.model.type == "student" and needs_teacher(cfg) and (teacher is None or not Path(teacher).is_file()):
            raise UserError(f"{path} distils from a teacher, but --teacher {teacher} is not a file",
                            fix="train the fusion teacher first (bevsimdet train configs/demo_fusion.yaml ...)")
        cfgs.append((path, cfg.name, diagnostic(cfg.model)))
    names = [n for _, n, _ in cfgs]
    if len(set(names)) != len(names):
        raise UserError(f"two configs share a name ({names})", fix="give each config a distinct name: key")

    out_dir = Path(out_dir)
    rows = []
    for i, (path, name, diag) in enumerate(cfgs):
        if diag:
            log(f"note: {name}: {diag}")
        values: dict[str, list[float]] = {k: [] for k in METRIC_KEYS}
        for seed in seeds:
            log(f"[{i + 1}/{len(cfgs)}] {name} seed {seed}")
            cfg = load_config(path, [*overrides, f"seed={seed}"])
            summary = _run_one(cfg, out_dir / name / f"seed{seed}", teacher, progress, log)
            for k in METRIC_KEYS:
                values[k].append(summary[k])
        rows.append(AblationRow(name, list(seeds), values, diag))

    table = render_ablation(rows)
    atomic_write_text(out_dir / "ablation.md", f"# bevsimdet ablation\n\n{table}\n")
    atomic_write_json(out_dir / "ablation.json", {"seeds": list(seeds), "rows": [r.__dict__ for r in rows]}, indent=2)  # diagnostic included
    log(table)
    return rows


def register(app: typer.Typer) -> None:
    @app.command("ablate")
    def ablate(
        configs: list[Path] = typer.Argument(None, help="Configs to compare (default: the camera baseline and the paper's ablation rows)."),
        teacher: Path = typer.Option(None, "--teacher", help="Checkpoint of the trained fusion teacher (for configs that distil)."),
        seeds: list[int] = typer.Option([0, 1, 2], "--seed", help="Training seeds (repeatable; default 0, 1, 2)."),
        out: Path = typer.Option(Path("runs/ablation"), "--out", help="One run directory per config and seed, plus ablation.md."),
        dataroot: Path = dataroot_option(),
        set_: list[str] = set_option(None, scope=" in every run"),
        progress: bool | None = progress_option(),
    ) -> None:
        """Train several configs over several seeds; report each metric as mean ± std."""
        progress = configure_progress(progress)
        overrides = list(set_) + ([f"data.dataroot={dataroot}"] if dataroot is not None else [])
        run_ablation(configs or list(DEFAULT_CONFIGS), seeds, out, teacher=teacher, overrides=overrides, progress=progress,
                     log=lambda m: typer.echo(m, err=True))


__all__ = ["run_ablation", "render_ablation", "AblationRow", "DEFAULT_CONFIGS"]
