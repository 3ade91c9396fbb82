"""``bevsimdet demo``: the whole method on the built-in synthetic world, in one command.

1. simulate the world (or reuse it): 8 training scenes of 40 keyframes, as nuScenes' mini_train,
   and a held-out val split of 20 scenes x 10 keyframes with at least 20 distinct objects of every
   class in range (``--quick``: the v1.0-mini world with its 2 mini_val scenes),
2. train the LiDAR+camera fusion teacher,
3. train the camera-only baseline (BEVFusion-C) with the same schedule as the student,
4. distil the camera-only BEVSimDet student from the frozen teacher,
5. evaluate all three on the val split and write a table (markdown + PNG bar chart): model, modality
   at test time, mAP, NDS, mATE..mAAE, parameters, CPU latency.

Every stage is resumable: a finished stage is reused, an interrupted one continues from its last
checkpoint, so re-running ``bevsimdet demo`` after a crash only does the missing work.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import typer

from bevsimdet.cli_options import progress_option
from bevsimdet.errors import UserError
from bevsimdet.eval.metrics import SUMMARY_KEYS as METRIC_KEYS
from bevsimdet.progress import configure as configure_progress

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"

# the demo's world and training seed. It was new for the first revision-1 demo run (the recipe was
# tuned on other worlds, seed 5 chose the teacher initialisation), but it was later used to develop
# the teacher recipe and world revision 2, so it is not an untouched world (docs/results.md)
DEMO_SEED = 23
DEPTH_KEY = "depth_within1"  # camera models: share of LiDAR cells whose depth is within one bin
RUNS = (("teacher", "teacher (BEVFusion)"), ("camera", "baseline (BEVFusion-C)"), ("student", "BEVSimDet student"))


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo run (default: the full demo; ``quick``: a few minutes, used by tests)."""

    scenes: int = 8  # training scenes (with val_scenes None: all scenes of a v1.0-mini world, 8 + 2)
    samples_per_scene: int = 40  # 20 s scenes, as nuScenes'
    # A val split that can tell (issue 22): 2 mini_val scenes hold 5 or fewer physical objects of
    # the rare classes; 20 short scenes of the same street kind hold >= 20 of every class.
    val_scenes: int | None = 20
    val_samples_per_scene: int = 10
    image_scale: float = 0.25
    teacher_overrides: tuple[str, ...] = ()
    student_overrides: tuple[str, ...] = ()  # shared by the camera baseline and the student

    @staticmethod
    def quick() -> "DemoPlan":
        steps = ("train.max_steps=6", "train.checkpoint_interval=3", "train.log_interval=2")
        return DemoPlan(scenes=10, samples_per_scene=3, val_scenes=None, image_scale=0.1, teacher_overrides=steps,
                        student_overrides=steps)

    @property
    def version(self) -> str:
        return "v1.0-mini" if self.val_scenes is None else "v1.0-trainval"

    @property
    def val_split(self) -> str:
        return "mini_val" if self.val_scenes is None else "val"

    def simulate_args(self) -> dict[str, Any]:
        """Keyword arguments of :func:`bevsimdet.data.sim.simulate` for this plan's world."""
        if self.val_scenes is None:
            return dict(version=self.version, scenes=self.scenes, samples_per_scene=self.samples_per_scene,
                        image_scale=self.image_scale)
        return dict(version=self.version, scenes=self.scenes + self.val_scenes, samples_per_scene=self.samples_per_scene,
                    val_scenes=self.val_scenes, val_samples_per_scene=self.val_samples_per_scene, image_scale=self.image_scale)

    def data_overrides(self) -> list[str]:
        """Config overrides that point the demo configs (written for v1.0-mini) at this plan's splits."""
        if self.val_scenes is None:
            return []
        return [f"data.version={self.version}", "data.train_split=train", f"data.val_split={self.val_split}"]


@dataclass
class ModelRow:
    name: str
    modality: str
    metrics: dict[str, float]
    params_m: float
    latency_ms: float
    diagnostic: str | None = None  # set for a diagnostic model (oracle depth): not a camera-only result

    @property
    def label(self) -> str:
        """The name as tables show it: a diagnostic row says so."""
        return f"{self.name} ({self.diagnostic})" if self.diagnostic else self.name


def _config(name: str, overrides: list[str]):
    from bevsimdet.config import load_config

    path = CONFIG_DIR / name
    if not path.is_file():
        raise UserError(f"demo config not found: {path}", fix="run the demo from a source checkout of bevsimdet")
    return load_config(path, overrides)


def _measure(cfg: Any, ckpt: Path, repeats: int = 5) -> tuple[float, float]:
    """(parameters in millions, median CPU forward latency in ms for one sample)."""
    import torch

    from bevsimdet.data.dataset import build_dataset
    from bevsimdet.data.loader import build_dataloader
    from bevsimdet.engine.checkpoint import load_checkpoint
    from bevsimdet.models.build import build_detector
    from bevsimdet.models.detectors import model_input

    model = build_detector(cfg.model)
    load_checkpoint(ckpt, model=model, prefer_ema=True)
    model.eval()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    dataset = build_dataset(cfg.data, cfg.data.val_split, train=False)
    batch = model_input(model, next(iter(build_dataloader(dataset, 1, shuffle=False, seed=0, num_workers=0))))
    times = []
    with torch.inference_mode():
        model(batch)  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(batch)
            times.append(time.perf_counter() - t0)
    times.sort()
    return params, 1000 * times[len(times) // 2]


def model_row(name: str, cfg: Any, metrics: dict[str, Any], params_m: float, latency_ms: float) -> ModelRow:
    """The table row of a model: its test-time modality and diagnostic label from its config."""
    from bevsimdet.models.build import diagnostic, reads_lidar

    camera_only = not reads_lidar(cfg.model)
    modality = "camera" if camera_only else ("camera+LiDAR" if cfg.model.type != "lidar" else "LiDAR")
    # depth agreement with LiDAR means something only for a depth the model learned
    keys = [*METRIC_KEYS, *([DEPTH_KEY] if DEPTH_KEY in metrics and camera_only else [])]
    return ModelRow(name, modality, {k: float(metrics[k]) for k in keys}, params_m, latency_ms, diagnostic(cfg.model))


def render_table(rows: list[ModelRow]) -> str:
    head = ["model", "modality (test)", *METRIC_KEYS, "depth within 1 bin", "params (M)", "CPU latency (ms)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        vals = [f"{r.metrics.get(k, float('nan')):.4f}" for k in METRIC_KEYS]
        depth = f"{r.metrics[DEPTH_KEY]:.3f}" if DEPTH_KEY in r.metrics else "-"
        lines.append("| " + " | ".join([r.label, r.modality, *vals, depth, f"{r.params_m:.2f}", f"{r.latency_ms:.0f}"]) + " |")
    return "\n".join(lines)


def plot_bars(rows: list[ModelRow], path: Path, split: str = "val") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from bevsimdet.io import atomic_path

    keys = ["mAP", "NDS", "mATE", "mAOE"]
    x = np.arange(len(keys))
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=120)
    for i, r in enumerate(rows):
        ax.bar(x + i * width, [r.metrics.get(k, 0.0) for k in keys], width, label=f"{r.label} ({r.modality})")
    ax.set_xticks(x + width * (len(rows) - 1) / 2, keys)
    ax.set_title(f"bevsimdet demo on the synthetic world ({split}); errors: lower is better")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def run_demo(
    out_dir: Path,
    dataroot: Path,
    *,
    plan: DemoPlan = DemoPlan(),
    seed: int = DEMO_SEED,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[ModelRow]:
    from bevsimdet.data.sim import WorldMismatchError, simulate
    from bevsimdet.distill.run import run_distillation
    from bevsimdet.engine.curves import plot_curves, read_val_rows
    from bevsimdet.engine.evaluate import final_or_evaluate
    from bevsimdet.engine.train import run_training, train_stage
    from bevsimdet.io import atomic_write_json, atomic_write_text

    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    common = [f"data.dataroot={dataroot}", f"seed={seed}", *plan.data_overrides()]

    log(f"[1/5] synthetic world -> {dataroot}")
    try:
        simulate(dataroot, seed=seed, progress=progress, **plan.simulate_args())
    except WorldMismatchError:
        raise UserError(f"{dataroot} holds a synthetic world with other parameters than this demo's (an older demo, or another --seed)",
                        fix=f"pass --dataroot with a new folder, or delete {dataroot}") from None

    teacher_cfg = _config("demo_fusion.yaml", [*common, *plan.teacher_overrides])
    camera_cfg = _config("demo_camera.yaml", [*common, *plan.student_overrides])
    student_cfg = _config("demo_student.yaml", [*common, *plan.student_overrides])

    log("[2/5] teacher: LiDAR + camera fusion")
    teacher_ckpt = train_stage(out_dir / "teacher", lambda r: run_training(teacher_cfg, out_dir / "teacher", resume=r, progress=progress), log, teacher_cfg)
    log("[3/5] baseline: camera-only BEVFusion-C")
    camera_ckpt = train_stage(out_dir / "camera", lambda r: run_training(camera_cfg, out_dir / "camera", resume=r, progress=progress), log, camera_cfg)
    log("[4/5] student: BEVSimDet distilled from the frozen teacher")
    student_ckpt = train_stage(
        out_dir / "student",
        lambda r: run_distillation(student_cfg, teacher_cfg, teacher_ckpt, out_dir / "student", resume=r, progress=progress),
        log,
        student_cfg,
    )

    log(f"[5/5] evaluation on {plan.val_split}")
    rows = []
    for name, cfg, ckpt in (
        ("teacher (BEVFusion)", teacher_cfg, teacher_ckpt),
        ("baseline (BEVFusion-C)", camera_cfg, camera_ckpt),
        ("BEVSimDet student", student_cfg, student_ckpt),
    ):
        metrics = final_or_evaluate(cfg, ckpt, progress=progress)
        params, latency = _measure(cfg, ckpt)
        row = model_row(name, cfg, metrics, params, latency)
        if row.diagnostic:
            log(f"note: {name}: {row.diagnostic}")
        rows.append(row)
    curves = plot_curves({label: read_val_rows(out_dir / run / "log.jsonl") for run, label in RUNS}, out_dir / "curves.png",
                         title=f"bevsimdet demo: validation ({plan.val_split}) during training")

    minutes = (time.perf_counter() - t_start) / 60
    table = render_table(rows)
    pictures = "\n\n![results](results.png)" + ("\n\n![learning curves](curves.png)" if curves else "")
    counts = _val_objects(dataroot, plan)
    atomic_write_text(out_dir / "results.md", f"# bevsimdet demo\n\n{table}\n\nValidation: `{plan.val_split}`, distinct objects "
                      f"per class in range: {_counts_text(counts)}.\n\nTotal time: {minutes:.1f} min (seed {seed}).{pictures}\n")
    atomic_write_json(out_dir / "results.json", {"minutes": minutes, "seed": seed, "val_split": plan.val_split,
                                                 "val_objects": counts, "rows": [r.__dict__ for r in rows]}, indent=2)
    plot_bars(rows, out_dir / "results.png", plan.val_split)
    log(table)
    log(f"validation: {plan.val_split}, distinct objects per class in range: {_counts_text(counts)}")
    log(f"total time {minutes:.1f} min; wrote {out_dir / 'results.md'}, {out_dir / 'results.png'}" + (f" and {curves}" if curves else ""))
    return rows


def _val_objects(dataroot: Path, plan: DemoPlan) -> dict[str, int]:
    from bevsimdet.eval.gt import count_instances

    return count_instances(dataroot, plan.version, plan.val_split)


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items())


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        out: Path = typer.Option(Path("demo_out"), "--out", help="Where the three runs and the results table go."),
        dataroot: Path = typer.Option(Path("data/sim-mini"), "--dataroot", help="Where the synthetic world is written (reused if present)."),
        quick: bool = typer.Option(False, "--quick", help="A few-minute version (tiny world, a few steps per model)."),
        seed: int = typer.Option(DEMO_SEED, "--seed", help="Seed of the world and of all three trainings."),
        progress: bool | None = progress_option(),
    ) -> None:
        """Simulate the world, train teacher + camera baseline, distil the student, compare all three."""
        progress = configure_progress(progress)
        run_demo(out, dataroot, plan=DemoPlan.quick() if quick else DemoPlan(), seed=seed, progress=progress,
                 log=lambda m: typer.echo(m, err=True))


__all__ = ["run_demo", "DemoPlan", "ModelRow", "model_row", "render_table"]
