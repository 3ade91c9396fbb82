"""``bevsimdet infer``: run a trained detector and write a nuScenes detection results file.

Two sources of input:

* ``--dataroot D [--split S]``: a split of a nuScenes-format dataset (DDP under torchrun), through
  the engine's prediction path (:func:`bevsimdet.engine.evaluate.infer_results`), for any model:
  a camera-only model is given each batch without LiDAR, a model that reads LiDAR needs
  ``data.load_points`` (:func:`check_dataroot_input`);
* ``--images DIR --calib calib.json``: your own 6-camera frames (see :mod:`bevsimdet.data.custom`),
  for camera-only models (the camera baseline or the BEVSimDet student).

Either way the file is the official submission format (:func:`bevsimdet.eval.results.write_results`)
and can be scored with ``bevsimdet evaluate`` when GT exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from bevsimdet.cli_options import checkpoint_option, config_argument, dataroot_option, progress_option, set_option
from bevsimdet.errors import UserError
from bevsimdet.progress import configure as configure_progress

CAMERA_ONLY = ("camera", "student")  # model types whose forward pass reads no LiDAR


def results_meta(model_cfg: Any) -> dict[str, bool]:
    """The submission's ``meta`` block for the detector of ``model:`` config ``model_cfg`` (a
    camera model with the oracle-depth diagnostic reads LiDAR, and says so)."""
    from bevsimdet.models.build import reads_lidar

    return {
        "use_camera": model_cfg.type != "lidar",
        "use_lidar": reads_lidar(model_cfg),
        "use_radar": False,
        "use_map": False,
        "use_external": False,
    }


def check_camera_only(cfg: Any, what: str = "--images") -> None:
    """Refuse a model that needs LiDAR input where there is none (``--images``, ``export``)."""
    if cfg.model.type not in CAMERA_ONLY:
        raise UserError(
            f"{what} runs camera-only models, but model.type is '{cfg.model.type}', which needs LiDAR input",
            fix=f"use a config with model.type {' or '.join(CAMERA_ONLY)} (e.g. configs/demo_student.yaml)",
        )
    if cfg.model.camera.oracle_depth:
        raise UserError(f"{what} runs camera-only models, but model.camera.oracle_depth reads LiDAR depth (a diagnostic)",
                        fix="use a config without oracle_depth (e.g. configs/demo_camera.yaml)")


def check_dataroot_input(cfg: Any) -> None:
    """``--dataroot``: a model that reads LiDAR (lidar, fusion, the oracle-depth diagnostic) needs
    the split's points loaded; a camera-only model runs on the same split and is never given
    them (:func:`bevsimdet.models.detectors.model_input`)."""
    from bevsimdet.models.build import reads_lidar

    if reads_lidar(cfg.model) and not cfg.data.load_points:
        what = "model.camera.oracle_depth" if cfg.model.type == "camera" else f"model.type '{cfg.model.type}'"
        raise UserError(f"--dataroot: {what} reads LiDAR, but data.load_points is false",
                        fix="pass --set data.load_points=true, or use a camera-only config (model.type camera or student)")


def load_detector(cfg: Any, checkpoint: str | Path) -> tuple[Any, Any]:
    """``(model, device)``: the detector of ``cfg.model`` with the checkpoint's weights (EMA when
    present), in eval mode on ``cfg.train.device``. Incompatible weights raise a one-line error
    naming the mismatched keys."""
    from bevsimdet.engine import dist
    from bevsimdet.engine.checkpoint import load_checkpoint
    from bevsimdet.models.build import build_detector

    device = dist.select_device(cfg.train.device)
    model = build_detector(cfg.model)
    load_checkpoint(checkpoint, model=model, prefer_ema=True)
    return model.to(device).eval(), device


def infer_images(cfg: Any, checkpoint: str | Path, images: str | Path, calib: str | Path, *, resize: float | None = None, progress: bool = True) -> dict[str, list[dict]]:
    """Results (frame token -> nuScenes boxes) of a camera-only model on a custom image folder.

    Boxes are in the global frame of the calibration's ``ego_poses`` where a frame has one, in
    the frame's ego frame otherwise.
    """
    check_camera_only(cfg)
    import torch

    from bevsimdet.data.custom import build_custom_dataset
    from bevsimdet.data.loader import build_dataloader
    from bevsimdet.engine.evaluate import predict
    from bevsimdet.models.build import build_postprocess

    dataset = build_custom_dataset(cfg.data, images, calib, resize=resize)
    model, device = load_detector(cfg, checkpoint)
    loader = build_dataloader(dataset, cfg.train.batch_size, shuffle=False, seed=cfg.seed, num_workers=cfg.train.num_workers)
    amp = getattr(torch, cfg.train.amp_dtype) if cfg.train.amp else None
    return predict(model, build_postprocess(cfg.model), loader, device, amp_dtype=amp, progress=progress)


def register(app: typer.Typer) -> None:
    @app.command("infer")
    def infer(
        config: Path = config_argument(),
        checkpoint: Path = checkpoint_option(),
        out: Path = typer.Option(..., "--out", help="Results file to write (nuScenes detection submission JSON)."),
        dataroot: Optional[Path] = dataroot_option(),
        split: Optional[str] = typer.Option(None, "--split", help="Split to run on (default: data.val_split); annotations are not needed."),
        images: Optional[Path] = typer.Option(None, "--images", help="Folder of your own 6-camera frames: DIR/<CAMERA>/<frame>.jpg or DIR/<CAMERA>.jpg (camera-only models)."),
        calib: Optional[Path] = typer.Option(None, "--calib", help="calib.json of the rig for --images (template: configs/calib_template.json)."),
        resize: Optional[float] = typer.Option(None, "--resize", help="With --images: resize factor before the centred crop (default data.test_resize; set it when your images have another resolution than the training data)."),
        set_: list[str] = set_option("train.batch_size=1"),
        progress: bool | None = progress_option(),
    ) -> None:
        """Run a checkpoint on a dataset split or on your own camera images; write a nuScenes results file."""
        progress = configure_progress(progress)
        from bevsimdet.config import load_config
        from bevsimdet.engine import dist
        from bevsimdet.eval.results import write_results

        custom = images is not None or calib is not None
        if custom and (images is None or calib is None):
            raise UserError("--images and --calib go together", fix="pass both: --images DIR --calib calib.json")
        if custom and (dataroot is not None or split is not None):
            raise UserError("--images/--calib cannot be combined with --dataroot/--split", fix="pick one input")
        if resize is not None and not (custom and resize > 0):
            raise UserError("--resize needs --images and a positive factor")
        cfg = load_config(config, set_)
        if dataroot is not None:
            cfg.data.dataroot = str(dataroot)
        if custom:
            results = infer_images(cfg, checkpoint, images, calib, resize=resize, progress=progress)
            main = True
        else:
            from bevsimdet.engine.evaluate import infer_results

            check_dataroot_input(cfg)
            try:
                results = infer_results(cfg, checkpoint, split, progress=progress)
                main = dist.is_main()
            finally:
                dist.destroy_distributed()
        if main:
            write_results(out, results, results_meta(cfg.model))
            typer.echo(f"{sum(len(v) for v in results.values())} boxes for {len(results)} samples written to {out}")
