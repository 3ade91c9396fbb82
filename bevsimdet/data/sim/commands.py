"""``bevsimdet simulate``: write the synthetic nuScenes-format world."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    def simulate_cmd(
        out: Path = typer.Option(..., "--out", help="Dataroot to write (tables go to OUT/VERSION/)."),
        scenes: int = typer.Option(10, "--scenes", min=1, help="Number of scenes (v1.0-mini: at most 10)."),
        samples_per_scene: int = typer.Option(20, "--samples-per-scene", min=1, help="Keyframes (2 Hz) per scene."),
        seed: int = typer.Option(0, "--seed", help="Random seed; the same seed writes the same dataset."),
        image_scale: float = typer.Option(0.25, "--image-scale", min=0.01, max=1.0,
                                          help="Camera resolution as a fraction of nuScenes' 1600x900."),
        version: str = typer.Option("v1.0-mini", "--version",
                                    help="v1.0-mini (the 10 mini scene names) or v1.0-trainval (train/val scene names)."),
        sweeps: int = typer.Option(9, "--sweeps", min=0, help="LiDAR sweeps (20 Hz) before every keyframe."),
        workers: int = typer.Option(0, "--workers", min=0, help="Parallel processes (0: one per CPU core)."),
        force: bool = typer.Option(False, "--force", help="Rebuild even if OUT already holds this world."),
    ) -> None:
        """Write a synthetic nuScenes-format dataset (6 cameras, LIDAR_TOP with sweeps, 3D boxes).

        It loads with nuscenes.NuScenes(version, dataroot=OUT) and evaluates with the devkit's
        DetectionEval; with --version v1.0-mini the devkit's mini_train / mini_val splits apply.
        """
        from bevsimdet.data.sim import simulate

        if workers == 0:
            import os

            workers = min(scenes, os.cpu_count() or 1)
        s = simulate(out, version=version, scenes=scenes, samples_per_scene=samples_per_scene, seed=seed,
                     image_scale=image_scale, sweeps_per_sample=sweeps, progress=True, workers=workers, force=force)
        if s["reused"]:
            return
        rate = s["keyframes"] / max(s["seconds"], 1e-9)
        typer.echo(f"wrote {s['scenes']} scenes, {s['keyframes']} keyframes, {s['sweeps']} sweeps, "
                   f"{s['annotations']} boxes to {out} in {s['seconds']:.1f} s ({rate:.2f} keyframes/s)")
        typer.echo("boxes per class: " + ", ".join(f"{k} {v}" for k, v in s["per_class"].items()))
