"""``bevsimdet claim``: does the student beat its controls, over worlds, seeds and validation scenes?

For each of ``--worlds`` world seeds: simulate a world with a held-out ``val`` split large enough to
tell (every class with >= 20 distinct objects in its evaluation range; :data:`ClaimPlan`), train
its fusion teacher and a LiDAR-free warm start (the student architecture, supervised only, the
teacher's steps: a camera-only model of the teacher's fuser / decoder / head shape), then every
row of :data:`ROWS` for each of ``--seeds`` training seeds. Every run keeps its predictions on
``val`` (``predictions.npz``), so the intervals are recomputed without retraining: the paired
differences (student minus each control) get 95 % intervals from a bootstrap over the world's
validation scenes and the runs (:mod:`bevsimdet.eval.bootstrap`).

Layout of ``OUT``::

    worlds/world<S>/                 the simulated world of seed S (unless --data-dir)
    world<S>/teacher, world<S>/warm_start_model, world<S>/<row>/seed<k>
        each: a training run, predictions.npz (val), eval.json (metrics), bootstrap.npz (replicates),
        near.json (metrics with every class range capped at 15 / 30 m)
    world<S>/val_objects.json        distinct objects per class in val
    claim.json, claim.md             rewritten after every finished run (a cut-short run still reports)
    world<S>/<row>_x<F>/seed<k>, claim_x<F>.{json,md}
                                     the same with --row-steps-scale F (longer rows beside the default ones)

Resumable: a run with ``eval.json`` is reused, an interrupted one continues from its checkpoint.
``--jobs N`` runs N trainings at once as subprocesses (``python -m bevsimdet.claim TASK.json``),
each with ``cores / N`` threads; a task starts once what it needs (world, teacher, warm start) is
done, in an order that finishes training seed 0 of every world first.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import typer

from bevsimdet.cli_options import progress_option, set_option
from bevsimdet.errors import UserError
from bevsimdet.progress import configure as configure_progress

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"
DEFAULT_WORLD_SEED = 101  # worlds 101, 102, ...: no figure in docs/results.md used them
VERSION = "v1.0-trainval"
KEYS = ("mAP", "NDS", "mATE", "mASE", "mAOE", "mAVE", "mAAE")
CI_KEYS = ("mAP", "NDS", "mATE")  # the claim's metrics (mATE: lower is better)
STUDENT = "full"


@dataclass(frozen=True)
class ClaimPlan:
    """Sizes of the claim's worlds and trainings.

    The val split: 20 scenes of 10 keyframes (5 s). Every scene places each class near the ego
    path at mid-scene, so 20 scenes hold >= 20 distinct objects of every class; measured on world
    seeds 0, 23-27: 22-26 objects of the rarest class, and 16-18 scenes were the least that reached
    20 per class (40-keyframe scenes: 15-16 scenes, 3.5x the keyframes; docs/claim.md). Train: the
    demo's 8 scenes of 40 keyframes.
    """

    train_scenes: int = 8
    samples_per_scene: int = 40
    val_scenes: int = 20
    val_samples_per_scene: int = 10
    image_scale: float = 0.25
    sweeps: int = 9
    steps_scale: float = 1.0  # every training's steps (teacher, warm start, rows) times this
    bootstrap: int = 1000  # bootstrap replicates
    # the rows' own schedule on top of steps_scale (teacher and warm start keep theirs): a longer
    # student at equal compute (the equal-compute baseline gets teacher + the longer student steps)
    row_steps_scale: float = 1.0
    # a variant of the rows (``--tag``, ``--row-set``): settings for the rows only (teacher and warm
    # start keep theirs), in folders named after the tag beside the default rows
    tag: str = ""
    row_overrides: tuple[str, ...] = ()

    @property
    def suffix(self) -> str:
        """Appended to the row folders and the report's file names when the rows are a variant (a
        tag, a longer schedule), so that they sit beside the default ones and share the world's
        teacher: ``_<tag>``, then ``_x<F>``."""
        return (f"_{self.tag}" if self.tag else "") + ("" if self.row_steps_scale == 1 else f"_x{self.row_steps_scale:g}")

    @staticmethod
    def quick(steps_scale: float = 0.005) -> "ClaimPlan":
        """Tiny worlds and a few steps per training (tests)."""
        return ClaimPlan(train_scenes=2, samples_per_scene=3, val_scenes=2, val_samples_per_scene=2, image_scale=0.1,
                         sweeps=3, steps_scale=steps_scale, bootstrap=200)


@dataclass(frozen=True)
class Row:
    """One control (or the student): a config under configs/, its schedule and its question."""

    name: str
    config: str
    question: str
    steps: str = "student"  # "student": the student's steps; "teacher+student": both together
    warm_start: bool = False  # fuser / decoder / head from the world's LiDAR-free warm start


ROWS: tuple[Row, ...] = (
    Row("baseline", "demo_camera.yaml", "camera-only baseline at the student's steps: the demo's comparison"),
    Row("baseline_equal_compute", "demo_camera.yaml",
        "camera-only baseline trained as many steps as teacher + student together: is the student ahead only by training longer?",
        steps="teacher+student"),
    Row("warm_start", "ablations/init_only.yaml",
        "fuser / decoder / head from a LiDAR-free model trained the teacher's steps, no teacher loss: does a warm start without LiDAR give the gain?",
        warm_start=True),
    Row("warm_start_distill", "ablations/full.yaml",
        "the same LiDAR-free warm start, then the full distillation from the real teacher: does distillation add to any warm start?",
        warm_start=True),
    Row("init_only", "ablations/init_only.yaml", "the teacher's fuser / decoder / head, no teacher loss: what the teacher's weights give alone"),
    Row("full_no_init", "ablations/full_no_init.yaml", "the distillation losses from a fresh fuser / decoder / head: what the losses give alone"),
    Row(STUDENT, "ablations/full.yaml", "the student (BEVSimDet): the teacher's weights and its distillation losses"),
)
TEACHER_CONFIG = "demo_fusion.yaml"
WARM_CONFIG = "ablations/no_distill.yaml"  # the student architecture, supervised only: no LiDAR, no teacher


def _scaled(steps: int, scale: float) -> int:
    return max(1, round(steps * scale))


def _config(name: str, overrides: Sequence[str] = ()):
    from bevsimdet.config import load_config

    path = CONFIG_DIR / name
    if not path.is_file():
        raise UserError(f"claim config not found: {path}", fix="run the claim from a source checkout of bevsimdet")
    return load_config(path, list(overrides))


# --------------------------------------------------------------------------------------------
# tasks: what one process does (simulate a world, or train + predict + evaluate one run)


@dataclass
class Task:
    key: str
    kind: str  # "simulate" | "train"
    spec: dict  # JSON-able arguments of execute_task
    deps: tuple[str, ...] = ()
    done_file: str = ""  # exists once the task is finished

    def done(self) -> bool:
        return bool(self.done_file) and Path(self.done_file).is_file()


def execute_task(kind: str, spec: dict, progress: bool = False) -> None:
    """Run one task in this process (what ``python -m bevsimdet.claim TASK.json`` does)."""
    if kind == "simulate":
        from bevsimdet.data.sim import simulate
        from bevsimdet.io import atomic_write_text

        simulate(spec["dataroot"], version=VERSION, scenes=spec["train_scenes"] + spec["val_scenes"],
                 samples_per_scene=spec["samples_per_scene"], seed=spec["seed"], image_scale=spec["image_scale"],
                 sweeps_per_sample=spec["sweeps"], progress=progress, workers=spec["workers"],
                 val_scenes=spec["val_scenes"], val_samples_per_scene=spec["val_samples_per_scene"])
        # the info files and the val GT cache now, once, rather than by every training that starts next
        from bevsimdet.data.dataset import ensure_infos
        from bevsimdet.eval.gt import load_gt

        ensure_infos(_config("demo_camera.yaml", spec["overrides"]).data, "train", progress=progress)
        load_gt(spec["dataroot"], VERSION, "val")
        atomic_write_text(spec["done_file"], "done\n")
    elif kind == "train":
        train_and_evaluate(spec, progress=progress)
    else:
        raise ValueError(f"unknown task kind {kind!r}")


def train_and_evaluate(spec: dict, progress: bool = False) -> dict[str, float]:
    """Train ``spec["config"]`` (resumable), then predict ``val`` into ``predictions.npz`` and
    score it into ``eval.json`` (mAP, NDS, TP errors, AP per class)."""
    from bevsimdet.config import teacher_config_from
    from bevsimdet.distill.run import run_distillation
    from bevsimdet.engine.evaluate import infer_results, summarize
    from bevsimdet.engine.train import run_training, train_stage
    from bevsimdet.eval.gt import load_gt
    from bevsimdet.eval.metrics import evaluate
    from bevsimdet.eval.results import results_to_boxes
    from bevsimdet.io import atomic_write_json

    run_dir = Path(spec["work_dir"])
    cfg = _config(spec["config"], spec["overrides"])
    t0 = time.perf_counter()
    if cfg.model.type == "student":
        ckpt = train_stage(run_dir, lambda r: run_distillation(cfg, lambda: teacher_config_from(spec["teacher"], cfg.distill.teacher_config), spec.get("teacher"), run_dir, resume=r, progress=progress, config_of=teacher_config_from), lambda m: None, cfg)
    else:
        ckpt = train_stage(run_dir, lambda r: run_training(cfg, run_dir, resume=r, progress=progress), lambda m: None, cfg)
    t1 = time.perf_counter()
    gt = load_gt(cfg.data.dataroot, cfg.data.version, cfg.data.val_split)
    preds = results_to_boxes(infer_results(cfg, ckpt, cfg.data.val_split, progress=progress), gt.sample_tokens)
    save_predictions(run_dir / "predictions.npz", preds, gt.sample_tokens)
    metrics = summarize(evaluate(preds, gt).to_dict())
    t2 = time.perf_counter()
    if "world_seed" in spec:  # the bootstrap replicates here, where the jobs share them out
        run_replicates(run_dir, WorldData(World(spec["world_seed"], Path(cfg.data.dataroot), run_dir), spec["replicates"]))
    summary = {**metrics, "train_s": round(t1 - t0, 1), "eval_s": round(t2 - t1, 1), "bootstrap_s": round(time.perf_counter() - t2, 1),
               "steps": cfg.train.max_steps, "seed": cfg.seed, **({"settings": spec["settings"]} if "settings" in spec else {})}
    atomic_write_json(run_dir / "eval.json", summary, indent=1)  # last: marks the run finished
    return summary


def save_predictions(path: Path, preds: Any, sample_tokens: Sequence[str]) -> None:
    """A run's val predictions as plain arrays (no pickle): the :class:`BoxSet` columns plus the
    sample tokens its ``sample`` column indexes."""
    import numpy as np

    from bevsimdet.io import atomic_path

    cols = {f: getattr(preds, f) for f in ("sample", "label", "translation", "size", "rotation", "velocity", "attribute", "score", "num_pts")}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, sample_tokens=np.array(list(sample_tokens), dtype=str), **cols)


def load_predictions(path: Path, sample_tokens: Sequence[str]) -> Any:
    """The :class:`BoxSet` of :func:`save_predictions`; its tokens must be ``sample_tokens``."""
    import numpy as np

    from bevsimdet.errors import DataError
    from bevsimdet.eval.boxes import BoxSet

    with np.load(path, allow_pickle=False) as z:
        if z["sample_tokens"].tolist() != list(sample_tokens):
            raise DataError("predictions were made on other val samples than the world's", path=path,
                            fix="delete the run's eval.json and predictions.npz to predict again")
        return BoxSet.from_columns(**{k: z[k] for k in z.files if k != "sample_tokens"})


def _task_main(argv: Sequence[str]) -> int:
    """Subprocess entry: ``python -m bevsimdet.claim TASK.json``."""
    import torch

    task = json.loads(Path(argv[0]).read_text())
    torch.set_num_threads(int(task.get("threads", 1)))
    execute_task(task["kind"], task["spec"], progress=False)
    return 0


# --------------------------------------------------------------------------------------------
# the plan: worlds, reference models and rows as tasks


@dataclass
class World:
    seed: int
    dataroot: Path
    dir: Path


def _run_dir(world: World, row: Row, seed: int, plan: ClaimPlan) -> Path:
    """A row's run folder for one training seed: ``world<S>/<row>[_x<F>]/seed<k>``."""
    return world.dir / (row.name + plan.suffix) / f"seed{seed}"


def _worlds(out: Path, data_dir: Path, first: int, count: int) -> list[World]:
    return [World(first + i, data_dir / f"world{first + i}", out / f"world{first + i}") for i in range(count)]


def _run_overrides(world: World, seed: int, steps: int, device: str, extra: Sequence[str]) -> list[str]:
    return [f"data.dataroot={world.dataroot}", f"data.version={VERSION}", "data.train_split=train", "data.val_split=val",
            f"seed={seed}", f"train.max_steps={steps}", "train.validate=false", "train.keep_checkpoints=1",
            f"train.device={device}", *extra]


def _settings(config: str, steps: int, seed: int, overrides: Sequence[str]) -> dict[str, Any]:
    """What makes a finished run reusable (kept in its eval.json): its config, steps, seed and the
    user's settings; not the device or the paths, which may change between calls."""
    return {"config": config, "steps": steps, "seed": seed, "set": list(overrides)}


def check_reuse(tasks: Sequence[Task]) -> None:
    """Refuse to reuse a finished run made with other settings (another --set, --row-set, steps):
    the report would mix them silently. Runs from before settings were kept are not checked."""
    from bevsimdet.io import load_json

    for task in tasks:
        if task.kind != "train" or not task.done() or "settings" not in task.spec:
            continue
        had = load_json(Path(task.done_file)).get("settings")
        if had is not None and had != task.spec["settings"]:
            diff = ", ".join(f"{k} {had.get(k)!r} -> {v!r}" for k, v in task.spec["settings"].items() if had.get(k) != v)
            raise UserError(f"{Path(task.done_file).parent} was trained with other settings ({diff})",
                            fix="use another --out, the options it was run with, or --tag NAME to put rows with new settings beside it")


def select_rows(names: Sequence[str] | None) -> tuple[Row, ...]:
    """The rows named (all of :data:`ROWS` for ``None`` or empty), in table order."""
    if not names:
        return ROWS
    known = {r.name for r in ROWS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"unknown claim row {unknown[0]!r}", fix="choose from " + ", ".join(r.name for r in ROWS))
    return tuple(r for r in ROWS if r.name in names)


def plan_tasks(worlds: Sequence[World], seeds: Sequence[int], plan: ClaimPlan, *, device: str = "auto",
               overrides: Sequence[str] = (), sim_workers: int = 1, rows: Sequence[Row] = ROWS) -> list[Task]:
    """Every task of the claim, in the order they should start (seed 0 of every world first):
    per world its simulation and the reference models the ``rows`` need (teacher, warm start)."""
    from bevsimdet.distill.run import needs_teacher

    teacher_steps = _scaled(_config(TEACHER_CONFIG).train.max_steps, plan.steps_scale)
    student_steps = _scaled(_config("demo_student.yaml").train.max_steps, plan.steps_scale * plan.row_steps_scale)
    steps = {"student": student_steps, "teacher+student": teacher_steps + student_steps}
    row_configs: dict[str, Any] = {}  # what each row needs of the teacher does not depend on the world
    tasks: list[Task] = []
    for w in worlds:
        tasks.append(Task(f"world{w.seed}/simulate", "simulate", dict(
            dataroot=str(w.dataroot), seed=w.seed, train_scenes=plan.train_scenes, samples_per_scene=plan.samples_per_scene,
            val_scenes=plan.val_scenes, val_samples_per_scene=plan.val_samples_per_scene, image_scale=plan.image_scale,
            sweeps=plan.sweeps, workers=sim_workers, done_file=str(w.dir / "WORLD_DONE"),
            overrides=[f"data.prepare_workers={sim_workers}", *_run_overrides(w, w.seed, 1, device, overrides)]),
            done_file=str(w.dir / "WORLD_DONE")))
        sim = (tasks[-1].key,)
        for key, config in (("teacher", TEACHER_CONFIG), ("warm_start_model", WARM_CONFIG)):
            if key == "warm_start_model" and not any(r.warm_start for r in rows):
                continue
            run = w.dir / key
            tasks.append(Task(f"world{w.seed}/{key}", "train", dict(
                config=config, work_dir=str(run), overrides=_run_overrides(w, w.seed, teacher_steps, device, overrides),
                settings=_settings(config, teacher_steps, w.seed, overrides)),
                deps=sim, done_file=str(run / "eval.json")))
    for seed in seeds:
        for w in worlds:
            teacher_ckpt = str(w.dir / "teacher" / "checkpoints" / "latest.safetensors")
            warm_ckpt = str(w.dir / "warm_start_model" / "checkpoints" / "latest.safetensors")
            for row in rows:
                run = _run_dir(w, row, seed, plan)
                row_set = [*overrides, *plan.row_overrides]
                extra = _run_overrides(w, seed, steps[row.steps], device, row_set)
                deps = [f"world{w.seed}/simulate"]
                spec: dict[str, Any] = dict(config=row.config, work_dir=str(run), overrides=extra, world_seed=w.seed,
                                            replicates=plan.bootstrap,
                                            settings=_settings(row.config, steps[row.steps], seed, row_set))
                if row.warm_start:
                    extra.append(f"distill.init_checkpoint={warm_ckpt}")
                    deps.append(f"world{w.seed}/warm_start_model")
                cfg = row_configs[row.name] if row.name in row_configs else row_configs.setdefault(row.name, _config(row.config, extra))
                if cfg.model.type == "student" and needs_teacher(cfg):
                    spec["teacher"] = teacher_ckpt
                    deps.append(f"world{w.seed}/teacher")
                tasks.append(Task(f"world{w.seed}/{row.name}{plan.suffix}/seed{seed}", "train", spec, tuple(deps), str(run / "eval.json")))
    return tasks


def run_tasks(tasks: Sequence[Task], jobs: int, *, threads: int, on_done: Callable[[Task], None],
              log: Callable[[str], None], progress: bool = False) -> list[str]:
    """Run ``tasks`` (in-process when ``jobs == 1``, else up to ``jobs`` subprocesses at once),
    each once its dependencies are done; returns the keys of tasks that failed or were skipped
    because a dependency failed. ``on_done`` is called after every finished task."""
    done = {t.key for t in tasks if t.done()}
    pending = [t for t in tasks if t.key not in done]
    failed: list[str] = []
    running: dict[str, tuple[Task, subprocess.Popen]] = {}
    total, t0 = len(pending), time.perf_counter()

    def finish(task: Task, ok: bool, note: str = "") -> None:
        (done.add if ok else failed.append)(task.key)
        n = len(done) - (len(tasks) - total)
        log(f"[{n}/{total}] {'done' if ok else 'FAILED'} {task.key} ({(time.perf_counter() - t0) / 60:.1f} min){note}")
        if ok:
            on_done(task)

    try:
        while pending or running:
            for key, (task, proc) in list(running.items()):
                if proc.poll() is not None:
                    del running[key]
                    tail = "" if proc.returncode == 0 else f": exit {proc.returncode}, see {_task_log(task)}"
                    finish(task, proc.returncode == 0 and task.done(), tail)
            started = False
            for task in list(pending):
                if len(running) >= jobs:
                    break
                if any(d in failed for d in task.deps):
                    pending.remove(task)
                    failed.append(task.key)
                    log(f"skipped {task.key}: a task it needs failed")
                    continue
                if not all(d in done for d in task.deps):
                    continue
                pending.remove(task)
                started = True
                log(f"start {task.key}")
                if jobs == 1:
                    execute_task(task.kind, task.spec, progress=progress)  # errors surface as they are
                    finish(task, True)
                    break
                running[task.key] = (task, _spawn(task, threads))
            if running:
                time.sleep(1.0)
            elif not started and pending:
                for task in pending:  # cannot start: a dependency is neither done nor pending
                    failed.append(task.key)
                    log(f"skipped {task.key}: its dependencies cannot finish")
                pending.clear()
    finally:
        for _, proc in running.values():  # interrupted: stop the children this call started
            proc.terminate()
        for _, proc in running.values():
            proc.wait()
    return failed


def _task_log(task: Task) -> Path:
    return Path(task.done_file).parent / "task.log"


def _spawn(task: Task, threads: int) -> subprocess.Popen:
    from bevsimdet.io import atomic_write_json

    folder = Path(task.done_file).parent
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "task.json"
    atomic_write_json(path, {"kind": task.kind, "spec": task.spec, "threads": threads}, indent=1)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    with open(_task_log(task), "a") as out:
        return subprocess.Popen([sys.executable, "-m", "bevsimdet.claim", str(path)], stdout=out, stderr=subprocess.STDOUT, env=env)


# --------------------------------------------------------------------------------------------
# the report: means, per-class APs, objects, paired bootstrap intervals


def world_counts(world: World) -> dict[str, int]:
    """Distinct val objects per class of a simulated world (cached in ``val_objects.json``)."""
    from bevsimdet.eval.gt import count_instances
    from bevsimdet.io import atomic_write_json, load_json

    path = world.dir / "val_objects.json"
    if path.is_file():
        return load_json(path)
    counts = count_instances(world.dataroot, VERSION, "val")
    atomic_write_json(path, counts, indent=1)
    return counts


class WorldData:
    """A world's val ground truth, the scene of each sample, and its scene draws."""

    def __init__(self, world: World, replicates: int):
        import numpy as np

        from bevsimdet.eval.bootstrap import scene_draws
        from bevsimdet.eval.gt import load_gt
        from bevsimdet.eval.tables import read_table, table_folder

        self.gt = load_gt(world.dataroot, VERSION, "val")
        scene_of = {s["token"]: s["scene_token"] for s in read_table(table_folder(world.dataroot, VERSION), "sample")}
        scenes = [scene_of[t] for t in self.gt.sample_tokens]
        ids = {s: i for i, s in enumerate(dict.fromkeys(scenes))}
        self.scene_of_sample = np.array([ids[s] for s in scenes])
        self.num_scenes = len(ids)
        self.draw_seed = [world.seed, replicates, 0xB007]
        self.draws = scene_draws(self.scene_of_sample, replicates, np.random.default_rng(self.draw_seed))


def run_replicates(run_dir: Path, data: WorldData) -> dict[str, Any]:
    """CI_KEYS -> (1 + R) array: the run's metric on val, then on every scene draw of its world
    (cached in ``bootstrap.npz``, recomputed when the draws change)."""
    import numpy as np

    from bevsimdet.eval.bootstrap import PreparedRun
    from bevsimdet.io import atomic_path

    path = run_dir / "bootstrap.npz"
    stamp = np.array([*data.draw_seed, len(data.gt.sample_tokens)])
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            if np.array_equal(z["stamp"], stamp):
                return {k: z[k] for k in CI_KEYS}
    prepared = PreparedRun(load_predictions(run_dir / "predictions.npz", data.gt.sample_tokens), data.gt)
    rows = [prepared.metrics()] + [prepared.metrics(w) for w in data.draws]
    out = {k: np.array([r[k] for r in rows]) for k in CI_KEYS}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, stamp=stamp, **out)
    return out


NEAR_RANGES = (15.0, 30.0)  # metres: every class range capped, to see where a difference comes from


def near_metrics(run_dir: Path, data: WorldData) -> dict[str, dict[str, float]]:
    """mAP, NDS and mATE of a run with every class range capped at each of :data:`NEAR_RANGES`
    (the near objects only), keyed by the cap; cached in ``near.json``."""
    from bevsimdet.eval.bootstrap import summary_of
    from bevsimdet.eval.metrics import evaluate
    from bevsimdet.io import atomic_write_json, load_json

    path = run_dir / "near.json"
    stamp = {"caps": list(NEAR_RANGES), "samples": len(data.gt.sample_tokens)}
    if path.is_file():
        cached = load_json(path)
        if cached.get("stamp") == stamp:
            return cached["metrics"]
    preds = load_predictions(run_dir / "predictions.npz", data.gt.sample_tokens)
    out = {}
    for cap in NEAR_RANGES:
        gt = data.gt.within(cap)
        summary = summary_of(evaluate(preds, gt))
        out[f"{cap:g}"] = {k: summary[k] for k in CI_KEYS}
    atomic_write_json(path, {"stamp": stamp, "metrics": out}, indent=1)
    return out


def _difference(control: str, metric: str, ci: Any, worlds: list[int], runs: list[int], row: str | None = None) -> dict[str, Any]:
    """One interval of ``row`` (the student when None) minus ``control``."""
    d = {"control": control, "metric": metric, "estimate": ci.estimate, "low": ci.low, "high": ci.high,
         "excludes_zero": ci.excludes_zero(), "worlds": worlds, "runs": runs}
    return d if row is None else {"row": row, **d}


def _by_control(differences: Sequence[dict], by_world: bool = False) -> dict[tuple, dict[str, dict]]:
    """(control,) or (control, world) -> metric -> difference, in the order first seen; a contrast
    between two controls keys as (row, control[, world])."""
    groups: dict[tuple, dict[str, dict]] = {}
    for d in differences:
        key = (*((d["row"],) if "row" in d else ()), d["control"], *((d["worlds"][0],) if by_world else ()))
        groups.setdefault(key, {})[d["metric"]] = d
    return groups


# The decision rule (issue 22, docs/results.md): the student beats both controls in mAP and mATE
# with intervals that exclude zero, and its NDS is not lower (the NDS interval reaches zero or above).
DECIDING_CONTROLS = ("baseline_equal_compute", "warm_start")


# Contrasts between two controls (row minus control), reported beside the student's differences:
# the questions the rows ask of each other rather than of the student. They do not enter the rule.
CONTRASTS: tuple[tuple[str, str, str], ...] = (
    ("warm_start_distill", "warm_start", "the teacher's distillation on a LiDAR-free warm start: does LiDAR knowledge add when both start alike?"),
    ("init_only", "warm_start", "the teacher's LiDAR-trained layers vs LiDAR-free layers of the same steps, neither with a teacher loss"),
    ("full_no_init", "baseline", "the distillation losses from fresh layers vs camera-only supervision, the same steps"),
)


def _passes(ds: dict[str, dict]) -> list[str]:
    """What a control's differences (metric -> difference) fail of the rule; empty: it passes."""
    fails = []
    if not ds["mAP"]["low"] > 0:
        fails.append("mAP interval does not exclude zero" if ds["mAP"]["high"] > 0 else "mAP lower")
    if not ds["mATE"]["high"] < 0:
        fails.append("mATE interval does not exclude zero" if ds["mATE"]["low"] < 0 else "mATE higher")
    if ds["NDS"]["high"] < 0:
        fails.append("NDS lower")
    return fails


def decide(differences: Sequence[dict], between: Sequence[dict] = ()) -> dict[str, Any]:
    """The decision rule applied to the pooled intervals (val scenes and runs resampled, worlds
    fixed), control by control; ``verdict`` is ``shown``, ``not shown`` or ``undecided`` (a
    deciding control has no difference yet). ``across_worlds`` applies the same rule to the
    between-world intervals (worlds as a sample): whether it would hold on a new world."""

    pooled = {key[0]: ds for key, ds in _by_control(differences).items()}
    worlds = {key[0]: ds for key, ds in _by_control(between).items()}
    controls = {c: (_passes(pooled[c]) if c in pooled else None) for c in DECIDING_CONTROLS}
    if any(f is None for f in controls.values()):
        verdict = "undecided"
    else:
        verdict = "shown" if not any(controls.values()) else "not shown"
    across = {c: _passes(worlds[c]) for c in DECIDING_CONTROLS if c in worlds}
    return {"verdict": verdict, "fails": controls,
            "across_worlds": None if len(across) < len(DECIDING_CONTROLS) else not any(across.values()), "fails_across_worlds": across}


def collect(worlds: Sequence[World], seeds: Sequence[int], plan: ClaimPlan, rows: Sequence[Row] = ROWS) -> dict[str, Any]:
    """Everything finished so far, as the JSON-able content of ``claim.json``."""
    from bevsimdet.eval.bootstrap import between_worlds
    from bevsimdet.io import load_json

    report: dict[str, Any] = {
        "protocol": {"version": VERSION, "plan": asdict(plan), "worlds": [w.seed for w in worlds], "seeds": list(seeds),
                     "rows": [r.name for r in rows], "student": STUDENT, "interval": "95 % percentile bootstrap: val scenes (same draw for both rows) "
                     "and each row's runs resampled within every world; worlds fixed"},
        "worlds": [], "rows": [], "differences": [],
    }
    replicates: dict[str, dict[int, list[dict]]] = {r.name: {} for r in rows}
    near: dict[tuple[str, int, int], dict] = {}
    for w in worlds:
        entry: dict[str, Any] = {"seed": w.seed, "dataroot": str(w.dataroot)}
        if (w.dir / "WORLD_DONE").is_file():
            entry["val_objects"] = world_counts(w)
            data = WorldData(w, plan.bootstrap)
            entry["val_scenes"], entry["val_samples"] = data.num_scenes, len(data.gt.sample_tokens)
            for key in ("teacher", "warm_start_model"):
                if (w.dir / key / "eval.json").is_file():
                    entry[key] = load_json(w.dir / key / "eval.json")
            for row in rows:
                for seed in seeds:
                    run = _run_dir(w, row, seed, plan)
                    if (run / "eval.json").is_file():
                        replicates[row.name].setdefault(w.seed, []).append(run_replicates(run, data))
                        near[(row.name, w.seed, seed)] = near_metrics(run, data)
        report["worlds"].append(entry)
    for row in rows:
        runs = []
        for w in worlds:
            for seed in seeds:
                path = _run_dir(w, row, seed, plan) / "eval.json"
                if path.is_file():
                    runs.append({"world": w.seed, "seed": seed, "metrics": load_json(path), "near": near.get((row.name, w.seed, seed), {})})
        stats = {}
        for k in KEYS:
            vals = [r["metrics"][k] for r in runs]
            if vals:
                stats[k] = {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0}
        report["rows"].append({"name": row.name, "config": row.config, "question": row.question, "runs": runs, "summary": stats})
    report["per_world"], report["between_worlds"] = [], []
    order = [r.name for r in ROWS]  # the generator follows the row, not the rows chosen: a claim of some rows gives their intervals
    for row in rows:
        if row.name != STUDENT and STUDENT in replicates:
            pooled, per_world = _compare(replicates, STUDENT, row.name, [plan.bootstrap, order.index(row.name)])
            report["differences"] += pooled
            report["per_world"] += per_world
            for d in pooled:  # over worlds as a sample, from 2 worlds on
                estimates = [w["estimate"] for w in per_world if w["metric"] == d["metric"]]
                if len(estimates) >= 2:
                    report["between_worlds"].append(_difference(row.name, d["metric"], between_worlds(estimates), d["worlds"], d["runs"]))
    report["contrasts"], report["contrasts_per_world"] = [], []
    for i, (a, b, _) in enumerate(CONTRASTS):
        if a in replicates and b in replicates:
            pooled, per_world = _compare(replicates, a, b, [plan.bootstrap, 100 + i], named=True)
            report["contrasts"] += pooled
            report["contrasts_per_world"] += per_world
    report["decision"] = decide(report["differences"], report["between_worlds"])
    expected = len(worlds) * len(seeds) * len(rows)
    report["finished_runs"] = sum(len(r["runs"]) for r in report["rows"])
    report["complete"] = report["finished_runs"] == expected
    report["expected_runs"] = expected
    return report


def _compare(replicates: dict[str, dict[int, list[dict]]], row: str, control: str, seed: list[int],
             named: bool = False) -> tuple[list[dict], list[dict]]:
    """``row`` minus ``control`` over the worlds where both ran: the pooled difference of each
    CI_KEY, and each world's alone (metric by metric); both empty when no world has both.
    ``named``: the differences carry ``row`` (a contrast between controls; else the row is the student)."""
    import numpy as np

    from bevsimdet.eval.bootstrap import paired_difference

    common = [s for s in replicates[row] if s in replicates[control]]
    name = row if named else None
    pooled: list[dict] = []
    per_world: list[dict] = []
    if not common:
        return pooled, per_world
    for j, k in enumerate(CI_KEYS):
        a = {s: np.stack([r[k] for r in replicates[row][s]]) for s in common}
        b = {s: np.stack([r[k] for r in replicates[control][s]]) for s in common}
        runs = [sum(len(replicates[row][s]) for s in common), sum(len(replicates[control][s]) for s in common)]
        ci = paired_difference(list(a.values()), list(b.values()), np.random.default_rng([*seed, j]))
        pooled.append(_difference(control, k, ci, common, runs, name))
        # each world alone, with the generator a one-world claim would use: the same interval
        per_world += [_difference(control, k, paired_difference([a[s]], [b[s]], np.random.default_rng([*seed, j])), [s],
                                  [len(replicates[row][s]), len(replicates[control][s])], name) for s in common]
    return pooled, per_world


def _pm(s: dict | None, digits: int = 3) -> str:
    return "-" if not s else f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def _difference_rows(differences: Sequence[dict], by_world: bool = False, notes: dict[tuple, str] | None = None) -> list[str]:
    """Table rows of differences, a row per control (and world): each CI_KEY's estimate [low, high];
    ``notes`` (group key -> text) adds a last cell."""
    lines = []
    for key, ds in _by_control(differences, by_world).items():
        cells = [f"{ds[k]['estimate']:+.3f} [{ds[k]['low']:+.3f}, {ds[k]['high']:+.3f}]{'*' if ds[k]['excludes_zero'] else ''}"
                 if k in ds else "-" for k in CI_KEYS]
        runs = next(iter(ds.values()))["runs"]
        note = "" if notes is None else f" {notes.get(key, '')} |"
        lines.append("| " + " | ".join(map(str, key)) + " | " + " | ".join(cells) + f" | {runs[0]} / {runs[1]} |" + note)
    return lines


def _nds_part_rows(rows: Sequence[dict]) -> list[str]:
    """What each metric adds to NDS, mean over a row's runs: an error >= 1 adds nothing, so NDS is
    blind to a gain in mATE above 1 m or in mAVE above 1 m/s."""
    from bevsimdet.eval.metrics import TP_SUMMARY, nds_parts

    lines = ["", "## NDS by part (mean over runs): 0.5 mAP and 0.1 max(0, 1 - error) for each TP error; they sum to NDS", "",
             "| row | mAP | " + " | ".join(TP_SUMMARY) + " | NDS |", "|" + "---|" * (3 + len(TP_SUMMARY))]
    for r in rows:
        if r["runs"]:
            parts = [nds_parts(run["metrics"]) for run in r["runs"]]
            lines.append(f"| {r['name']} | " + " | ".join(f"{statistics.fmean(p[k] for p in parts):.3f}" for k in parts[0])
                         + f" | {statistics.fmean(run['metrics']['NDS'] for run in r['runs']):.3f} |")
    return lines


def _near_rows(rows: Sequence[dict]) -> list[str]:
    """Means over runs of mAP / mATE with every class range capped (NEAR_RANGES): where a gain is."""
    caps = [f"{c:g}" for c in NEAR_RANGES]
    if not any(run.get("near") for r in rows for run in r["runs"]):
        return []  # a report written before these were computed
    lines = ["", "## Near objects: every class range capped (mean over runs; the full ranges are the rows table's)", "",
             "| row | " + " | ".join(f"mAP <= {c} m | mATE <= {c} m" for c in caps) + " |", "|" + "---|" * (1 + 2 * len(caps))]
    for r in rows:
        runs = [run["near"] for run in r["runs"] if run.get("near")]
        if runs:
            lines.append(f"| {r['name']} | " + " | ".join(f"{statistics.fmean(n[c]['mAP'] for n in runs):.3f} | "
                                                          f"{statistics.fmean(n[c]['mATE'] for n in runs):.3f}" for c in caps) + " |")
    return lines


def _decision_text(decision: dict[str, Any]) -> str:
    rule = ("The student must beat " + " and ".join(DECIDING_CONTROLS) + " in mAP and mATE with intervals that exclude zero, "
            "and its NDS must not be lower (interval reaching zero or above).")
    if decision["verdict"] == "undecided":
        missing = [c for c, f in decision["fails"].items() if f is None]
        return f"{rule} **Undecided**: no difference for {', '.join(missing)} yet (run those rows)."
    why = "; ".join(f"{c}: {', '.join(f)}" for c, f in decision["fails"].items() if f)
    text = f"{rule} Pooled intervals (worlds fixed): **{decision['verdict']}**" + (f" ({why})." if why else ".")
    if decision["across_worlds"] is not None:
        why = "; ".join(f"{c}: {', '.join(f)}" for c, f in decision["fails_across_worlds"].items() if f)
        text += (" Over worlds as a sample: " + ("the rule holds too." if decision["across_worlds"] else f"it does not hold ({why})."))
    return text


def render_report(report: dict[str, Any]) -> str:
    """claim.md: rows (mean ± std over all runs), paired differences with intervals, per-class AP
    and the val objects of every world."""
    from bevsimdet.eval.boxes import DETECTION_NAMES

    p = report["protocol"]
    plan = p["plan"]
    row_scale = plan.get("row_steps_scale", 1)  # absent in reports written before the option
    lines = [
        "# bevsimdet claim",
        "",
        f"Worlds (seeds) {', '.join(map(str, p['worlds']))}, training seeds {', '.join(map(str, p['seeds']))}; "
        f"train {plan['train_scenes']} scenes x {plan['samples_per_scene']} keyframes, val {plan['val_scenes']} scenes x "
        f"{plan['val_samples_per_scene']} keyframes; steps x {plan['steps_scale']:g}"
        + (f", the rows' steps x {row_scale:g} more (teacher and warm start not)" if row_scale != 1 else "")
        + (f"; variant `{plan['tag']}`" if plan.get("tag") else "")
        + (f", the rows only with {' '.join('`--row-set ' + o + '`' for o in plan['row_overrides'])}" if plan.get("row_overrides") else "")
        + ". "
        f"{report['finished_runs']} of {report['expected_runs']} runs finished" + ("." if report["complete"] else " (incomplete: re-run the same command to continue)."),
        "",
        "## Rows (mean ± std over every run of every world)",
        "",
        "| row | question | runs | " + " | ".join(KEYS) + " |",
        "|" + "---|" * (3 + len(KEYS)),
    ]
    for r in report["rows"]:
        lines.append(f"| {r['name']} | {r['question']} | {len(r['runs'])} | " + " | ".join(_pm(r["summary"].get(k)) for k in KEYS) + " |")
    lines += _nds_part_rows(report["rows"])
    lines += ["", f"## Student ({STUDENT}) minus each control, {p['interval']}", "",
              "mAP and NDS: higher is better; mATE: lower is better (a negative difference favours the student). "
              "`*`: the interval excludes zero.", "",
              "| control | " + " | ".join(f"Δ{k} [95 % CI]" for k in CI_KEYS) + " | runs (student / control) |",
              "|" + "---|" * (2 + len(CI_KEYS))]
    lines += _difference_rows(report["differences"])
    decision = report.get("decision")  # absent in reports written before the rule was coded
    if decision:
        lines += ["", "## Decision rule", "", _decision_text(decision)]
    if len(report["protocol"]["worlds"]) > 1 and report.get("per_world"):
        lines += ["", "## Each world alone (the same bootstrap, one world)", "",
                  "| control | world | " + " | ".join(f"Δ{k} [95 % CI]" for k in CI_KEYS) + " | runs (student / control) |",
                  "|" + "---|" * (3 + len(CI_KEYS))]
        lines += _difference_rows(report["per_world"], by_world=True)
    if report.get("between_worlds"):
        lines += ["", "## Over worlds as a sample (mean of the per-world differences, 95 % Student-t interval, worlds - 1 degrees of freedom)", "",
                  "| control | " + " | ".join(f"Δ{k} [95 % CI]" for k in CI_KEYS) + " | runs (student / control) |",
                  "|" + "---|" * (2 + len(CI_KEYS))]
        lines += _difference_rows(report["between_worlds"])
    if report.get("contrasts"):
        lines += ["", "## Between controls: row minus control, the same bootstrap (not part of the rule)", "",
                  "| row | control | " + " | ".join(f"Δ{k} [95 % CI]" for k in CI_KEYS) + " | runs (row / control) | question |",
                  "|" + "---|" * (4 + len(CI_KEYS))]
        lines += _difference_rows(report["contrasts"], notes={(a, b): q for a, b, q in CONTRASTS})
    lines += _near_rows(report["rows"])
    lines += ["", "## AP per class (mean over runs)", "", "| row | " + " | ".join(DETECTION_NAMES) + " |", "|" + "---|" * (1 + len(DETECTION_NAMES))]
    for r in report["rows"]:
        if r["runs"]:
            aps = [statistics.fmean(run["metrics"].get(f"AP/{c}", float("nan")) for run in r["runs"]) for c in DETECTION_NAMES]
            lines.append(f"| {r['name']} | " + " | ".join(f"{a:.3f}" for a in aps) + " |")
    lines += ["", "## Worlds: distinct val objects per class (in evaluation range, with LiDAR points) and reference models", "",
              "| world | " + " | ".join(DETECTION_NAMES) + " | teacher mAP / NDS / mATE | LiDAR-free warm start mAP / NDS / mATE |",
              "|" + "---|" * (3 + len(DETECTION_NAMES))]
    for w in report["worlds"]:
        counts = w.get("val_objects", {})
        ref = ["-" if key not in w else f"{w[key]['mAP']:.3f} / {w[key]['NDS']:.3f} / {w[key]['mATE']:.3f}"
               for key in ("teacher", "warm_start_model")]
        lines.append(f"| {w['seed']} | " + " | ".join(str(counts.get(c, "-")) for c in DETECTION_NAMES) + " | " + " | ".join(ref) + " |")
    return "\n".join(lines) + "\n"


def write_report(out: Path, worlds: Sequence[World], seeds: Sequence[int], plan: ClaimPlan, rows: Sequence[Row] = ROWS) -> dict[str, Any]:
    from bevsimdet.io import atomic_write_json, atomic_write_text

    report = collect(worlds, seeds, plan, rows)
    atomic_write_json(out / f"claim{plan.suffix}.json", report, indent=1)
    atomic_write_text(out / f"claim{plan.suffix}.md", render_report(report))
    return report


def run_claim(out: Path, *, worlds: int = 3, seeds: int = 3, world_seed: int = DEFAULT_WORLD_SEED, plan: ClaimPlan = ClaimPlan(),
              device: str = "auto", jobs: int = 1, threads: int | None = None, overrides: Sequence[str] = (),
              data_dir: Path | None = None, rows: Sequence[str] | None = None, progress: bool = False,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or continue) the whole claim (or the ``rows`` named) and write ``claim.json`` /
    ``claim.md``; returns the report."""
    if worlds < 1 or seeds < 1 or jobs < 1 or plan.steps_scale <= 0 or plan.row_steps_scale <= 0 or plan.bootstrap < 10:
        raise UserError("claim needs --worlds >= 1, --seeds >= 1, --jobs >= 1, --steps-scale > 0, --row-steps-scale > 0 and --bootstrap >= 10",
                        fix="fix the arguments")
    if plan.tag and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*", plan.tag):
        raise UserError(f"claim --tag {plan.tag!r} is not a folder-name word", fix="use letters, digits, '.' and '-', e.g. --tag vel-smoothl1")
    row_list = select_rows(rows)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    threads = threads or max(1, cores // jobs)
    world_list = _worlds(out, Path(data_dir) if data_dir else out / "worlds", world_seed, worlds)
    seed_list = list(range(seeds))
    # the worlds are simulated first, all at once when jobs allow: share the cores among them
    sim_workers = max(1, cores // min(jobs, worlds))
    tasks = plan_tasks(world_list, seed_list, plan, device=device, overrides=overrides, sim_workers=sim_workers,
                       rows=row_list)
    check_reuse(tasks)
    log(f"claim: {len(world_list)} worlds x {len(seed_list)} seeds x {len(row_list)} rows, {sum(not t.done() for t in tasks)} of "
        f"{len(tasks)} tasks to run, {jobs} at once ({threads} threads each) -> {out}")

    def on_done(task: Task) -> None:
        report = write_report(out, world_list, seed_list, plan, row_list)  # after every task: a cut-short claim still reports
        if task.kind == "simulate":
            w = next(w for w in report["worlds"] if task.key == f"world{w['seed']}/simulate")
            log(f"world {w['seed']}: val objects per class: " + ", ".join(f"{k} {v}" for k, v in w.get("val_objects", {}).items()))

    failed = run_tasks(tasks, jobs, threads=threads, on_done=on_done, log=log, progress=progress)
    report = write_report(out, world_list, seed_list, plan, row_list)
    log(render_report(report))
    if failed:
        raise UserError(f"{len(failed)} claim tasks failed or were skipped (first: {failed[0]})",
                        fix=f"see task.log in the run folders under {out}, then re-run the same command to continue")
    return report


def register(app: typer.Typer) -> None:
    @app.command("claim")
    def claim(
        out: Path = typer.Option(Path("runs/claim"), "--out", help="Run folders, claim.json and claim.md."),
        worlds: int = typer.Option(3, "--worlds", help="World seeds (each its own world, teacher and warm start)."),
        seeds: int = typer.Option(3, "--seeds", help="Training seeds per row and world (0, 1, ...)."),
        world_seed: int = typer.Option(DEFAULT_WORLD_SEED, "--world-seed", help="Seed of the first world (then +1, +2, ...)."),
        quick: bool = typer.Option(False, "--quick", help="Tiny worlds and a few steps (checks the pipeline, not the claim)."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda, for every training."),
        jobs: int = typer.Option(1, "--jobs", help="Trainings at once, as subprocesses (a GPU machine: 8-16; 1 on 2 CPU cores)."),
        threads: int = typer.Option(0, "--threads", help="Torch threads per job (0: cores / jobs)."),
        steps_scale: float = typer.Option(1.0, "--steps-scale", help="Multiply every training's steps (teacher, warm start, rows)."),
        row_steps_scale: float = typer.Option(1.0, "--row-steps-scale", help="Multiply the rows' steps only (a longer student at equal compute; "
                                              "folders <row>_x<F>, report claim_x<F>.md; the world, teacher and warm start are shared)."),
        bootstrap: int = typer.Option(None, "--bootstrap", help="Bootstrap replicates of the intervals (default 1000; --quick 200)."),
        data_dir: Path = typer.Option(None, "--data-dir", help="Where the worlds are written (default OUT/worlds)."),
        rows: list[str] = typer.Option([], "--row", help="Only these rows (repeatable; default all: " + ", ".join(r.name for r in ROWS) + ")."),
        set_: list[str] = set_option("train.batch_size=8", scope=" in every training"),
        row_set: list[str] = typer.Option([], "--row-set", help="KEY=VALUE for the rows only, not the teacher or the warm start "
                                          "(repeatable; with --tag, e.g. --tag vel --row-set model.head.velocity_beta=2)."),
        tag: str = typer.Option("", "--tag", help="Name of a variant of the rows: folders <row>_<tag>, report claim_<tag>.md; "
                                "the world, teacher and warm start are shared."),
        progress: bool | None = progress_option(),
    ) -> None:
        """Student vs controls over worlds x seeds, with paired bootstrap intervals (docs/claim.md)."""
        progress = configure_progress(progress)
        plan = ClaimPlan.quick(0.005 * steps_scale) if quick else ClaimPlan(steps_scale=steps_scale)
        plan = replace(plan, row_steps_scale=row_steps_scale, tag=tag, row_overrides=tuple(row_set))
        if bootstrap is not None:
            plan = replace(plan, bootstrap=bootstrap)
        run_claim(out, worlds=worlds, seeds=seeds, world_seed=world_seed, plan=plan, device=device, jobs=jobs,
                  threads=threads or None, overrides=list(set_), data_dir=data_dir, rows=rows, progress=progress,
                  log=lambda m: typer.echo(m, err=True))


__all__ = ["run_claim", "ClaimPlan", "ROWS", "Row", "select_rows", "plan_tasks", "run_tasks", "collect", "decide", "DECIDING_CONTROLS", "render_report",
           "train_and_evaluate",
           "check_reuse", "near_metrics", "NEAR_RANGES", "save_predictions", "load_predictions", "world_counts"]


if __name__ == "__main__":
    sys.exit(_task_main(sys.argv[1:]))
