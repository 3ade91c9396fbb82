"""``bevsimdet simulate``: write the synthetic nuScenes-format world."""

from __future__ import annotations

from pathlib import Path

import typer

from bevsimdet.cli_options import progress_option
from bevsimdet.progress import configure as configure_progress


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    def simulate_cmd(
        out: Path = typer.Option(..., "--out", help="Dataroot to write (tables go to OUT/VERSION/)."),
        scenes: int = typer.Option(10, "--scenes", help="Number of scenes (v1.0-mini: at most 10)."),
        samples_per_scene: int = typer.Option(20, "--samples-per-scene", help="Keyframes (2 Hz) per scene."),
        seed: int = typer.Option(0, "--seed", help="Random seed; the same seed writes the same dataset."),
        image_scale: float = typer.Option(0.25, "--image-scale",
                                          help="Camera resolution as a fraction of nuScenes' 1600x900."),
        version: str = typer.Option("v1.0-mini", "--version",
                                    help="v1.0-mini (the 10 mini scene names) or v1.0-trainval (train/val scene names)."),
        sweeps: int = typer.Option(9, "--sweeps", help="LiDAR sweeps (20 Hz) before every keyframe."),
        workers: int = typer.Option(0, "--workers", help="Parallel processes (0: one per CPU core)."),
        force: bool = typer.Option(False, "--force", help="Rebuild even if OUT already holds this world."),
        world_revision: int | None = typer.Option(None, "--world-revision",
                                                  help="World rules (default: the newest); 1 is the world measured before 2026-11-29 (docs/sim.md)."),
        val_scenes: int | None = typer.Option(None, "--val-scenes",
                                              help="v1.0-trainval: the last N of --scenes are val scenes (default: 1 in 5)."),
        val_samples_per_scene: int | None = typer.Option(None, "--val-samples-per-scene",
                                                         help="Keyframes per val scene (default: --samples-per-scene)."),
        long_tail: float = typer.Option(1.0, "--long-tail",
                                        help="Each training scene holds each rare class (bus, trailer, construction vehicle, motorcycle, bicycle) with this probability; val scenes hold every class (docs/sim.md)."),
        tables_only: bool = typer.Option(False, "--tables-only",
                                         help="Only the nuScenes tables, at the real dataset's sizes (camera and radar sweeps included), no image or point file: for prepare/evaluate at trainval scale (docs/data.md)."),
        placeholder_files: bool = typer.Option(False, "--placeholder-files",
                                               help="With --tables-only: give every sample_data row a file (one grey JPEG, one small point file, hard-linked), so training can read any sample; with tables already in OUT, only adds the files. Figures then do not depend on image content (docs/data.md)."),
        progress: bool | None = progress_option(),
    ) -> None:
        """Write a synthetic nuScenes-format dataset (6 cameras, LIDAR_TOP with sweeps, 3D boxes).

        It loads with nuscenes.NuScenes(version, dataroot=OUT) and evaluates with the devkit's
        DetectionEval; with --version v1.0-mini the devkit's mini_train / mini_val splits apply.
        """
        from bevsimdet.data.sim import simulate
        from bevsimdet.data.sim.scene import WORLD_REVISION

        progress = configure_progress(progress)
        if placeholder_files and not tables_only:
            from bevsimdet.errors import UserError

            raise UserError("--placeholder-files belongs to --tables-only", fix="add --tables-only (a rendered world has real files)")
        if tables_only and long_tail != 1.0:
            from bevsimdet.errors import UserError

            raise UserError("--long-tail shapes the rendered world; --tables-only writes tables of its own",
                            fix="drop --long-tail or --tables-only")
        if tables_only:
            if not (placeholder_files and (out / version / "sample_data.json").exists() and not force):
                _tables_only(out, version, scenes, samples_per_scene, seed, sweeps, force)
            if placeholder_files:
                _placeholders(out, version, progress)
            return
        # ranges are checked here and in simulate() (one-line errors) rather than by typer, whose
        # range columns would crowd the option names out of an 80-column --help
        if workers < 0:
            from bevsimdet.errors import UserError

            raise UserError(f"--workers must be 0 (one per CPU core) or more, got {workers}")
        if workers == 0:
            import os

            workers = min(scenes, os.cpu_count() or 1)
        s = simulate(out, version=version, scenes=scenes, samples_per_scene=samples_per_scene, seed=seed,
                     image_scale=image_scale, sweeps_per_sample=sweeps, progress=progress, workers=workers, force=force,
                     world_revision=WORLD_REVISION if world_revision is None else world_revision,
                     val_scenes=val_scenes, val_samples_per_scene=val_samples_per_scene, long_tail=long_tail)
        if s["reused"]:
            return
        rate = s["keyframes"] / max(s["seconds"], 1e-9)
        typer.echo(f"wrote {s['scenes']} scenes, {s['keyframes']} keyframes, {s['sweeps']} sweeps, "
                   f"{s['annotations']} boxes to {out} in {s['seconds']:.1f} s ({rate:.2f} keyframes/s)")
        typer.echo("boxes per class: " + ", ".join(f"{k} {v}" for k, v in s["per_class"].items()))
        from bevsimdet.eval.gt import count_instances

        for split in s["per_split"]:
            if split != "other":  # distinct objects an evaluation of the split can see (in range, with points)
                counts = count_instances(out, version, split)
                typer.echo(f"{split}: objects in evaluation range per class: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        if long_tail != 1.0:
            for split, holding in s["scenes_per_class"].items():
                n = s["scenes_per_split"][split]
                typer.echo(f"{split}: scenes holding each class: " + ", ".join(f"{k} {v}/{n}" for k, v in holding.items()))


def _placeholders(out: Path, version: str, progress: bool) -> None:
    import time

    from bevsimdet.data.sim.placeholders import write_placeholder_files

    t = time.perf_counter()
    c = write_placeholder_files(out, version, progress=progress)
    typer.echo(f"placeholder files: {c['links']} hard links and {c['copies']} copies of {c['sources']} files "
               f"({c['kept']} files already there) in {time.perf_counter() - t:.1f} s; their content carries no information")


def _tables_only(out: Path, version: str, scenes: int, samples_per_scene: int, seed: int, sweeps: int, force: bool) -> None:
    """The tables of a world of ``scenes`` x ``samples_per_scene`` keyframes, named as the
    simulator names them (trainval: the official split proportions, 850 scenes = train + val),
    with nuScenes' table sizes per keyframe and no sensor file (one process: tables are cheap)."""
    import time

    from bevsimdet.data.sim.simulate import scene_names
    from bevsimdet.errors import UserError
    from bevsimdet.eval import synthetic

    if (out / version).exists() and not force:
        raise UserError(f"{out / version} already exists", fix="pass --force to overwrite its tables, or another --out")
    names = scene_names(version, scenes)
    t = time.perf_counter()
    counts = synthetic.write_tables(out, version, {n: samples_per_scene for n in names}, seed=seed, actors_per_scene=60,
                                    sweeps=sweeps, sensor_tables=True, camera_sweeps=5, radar_sweeps=5)
    typer.echo(f"wrote the tables of {len(names)} scenes, {counts['samples']} keyframes, {counts['sample_data']} sample_data rows, "
               f"{counts['annotations']} boxes to {out / version} in {time.perf_counter() - t:.1f} s (no sensor files)")
