"""The evaluation guard: camera-only models (baseline, student) are evaluated, trained and run
on batches without LiDAR whatever the loader holds; the oracle-depth diagnostic is refused for a
student and labelled in every output of a baseline that uses it; ``infer --dataroot`` checks the
model against its input as ``infer --images`` does."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from bevsimdet.config import load_config
from bevsimdet.errors import ConfigError, UserError
from bevsimdet.models.build import ORACLE_DIAGNOSTIC, build_detector, diagnostic, reads_lidar
from bevsimdet.models.detectors import model_input, uses_lidar
from bevsimdet.models.testing import random_batch

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
TINY = ["model.image.arch=tiny", "model.image.pretrained=null", "model.image.frozen_stages=-1"]  # no weight package needed


def _cfg(name: str, *overrides: str):
    return load_config(CONFIGS / name, [*TINY, *overrides])


def _spy(model: nn.Module) -> list:
    """``batch.points`` of every forward call of ``model`` (a pre-hook sees exactly its input)."""
    seen: list = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].points))
    return seen


MODELS = {  # config, overrides -> whether the built model reads LiDAR
    "camera": ("demo_camera.yaml", (), False),
    "camera_oracle": ("ablations/camera_oracle.yaml", (), True),
    "student": ("demo_student.yaml", (), False),
    "fusion": ("demo_fusion.yaml", (), True),
}


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_uses_lidar_is_declared_and_agrees_with_the_config(kind):
    name, overrides, expected = MODELS[kind]
    cfg = _cfg(name, *overrides)
    model = build_detector(cfg.model)
    assert uses_lidar(model) is expected and reads_lidar(cfg.model) is expected
    batch = random_batch(cfg.model, num_points=50, num_boxes=2)
    assert (model_input(model, batch).points is not None) is expected
    assert batch.points is not None  # the caller's batch is untouched


def test_a_module_that_does_not_declare_it_is_refused():
    with pytest.raises(TypeError, match="does not declare uses_lidar"):
        model_input(nn.Linear(2, 2), random_batch(num_points=5, num_boxes=1))


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_evaluation_gives_points_only_to_models_that_read_them(kind):
    """``predict`` (trainer validation, evaluate-model, infer, ablate, demo) on batches that hold
    LiDAR: a camera-only model's forward never sees them, the depth agreement still uses them."""
    from bevsimdet.engine.evaluate import DepthStats, predict
    from bevsimdet.models.build import build_postprocess, depth_bound

    name, overrides, expected = MODELS[kind]
    cfg = _cfg(name, *overrides, "model.head.score_threshold=0.5")
    model = build_detector(cfg.model)
    seen = _spy(model)
    loader = [random_batch(cfg.model, num_points=300, num_boxes=2, seed=s) for s in range(2)]
    stats = DepthStats(depth_bound(cfg.model))
    predict(model, build_postprocess(cfg.model), loader, torch.device("cpu"), progress=False, depth_stats=stats)
    assert len(seen) == 2 and all((p is not None) is expected for p in seen)
    assert "depth_within1" in stats.summary()  # the evaluator, not the model, read the LiDAR


def test_camera_training_step_sees_no_points_but_the_depth_term_does():
    from bevsimdet.engine.objective import DetectionObjective
    from bevsimdet.models.build import build_criterion

    cfg = _cfg("demo_camera.yaml", "model.depth_supervision=true")
    model = build_detector(cfg.model)
    seen = _spy(model)
    terms, _ = DetectionObjective(build_criterion(cfg.model)).terms(model, random_batch(cfg.model, num_points=300, num_boxes=2))
    assert seen == [None] and "det_depth" in terms and torch.isfinite(terms["det_depth"])


def test_visualize_gives_a_camera_model_no_points(tiny_world, tiny_infos, tmp_path, monkeypatch):
    import bevsimdet.infer
    from bevsimdet.viz.visualize import visualize

    cfg = _cfg("demo_camera.yaml", f"data.dataroot={tiny_world}", f"data.info_dir={tiny_infos['mini_val'].parent}", "model.head.score_threshold=0.5")
    model = build_detector(cfg.model).eval()
    seen = _spy(model)
    monkeypatch.setattr(bevsimdet.infer, "load_detector", lambda c, ckpt: (model, torch.device("cpu")))
    visualize(cfg, "unused.safetensors", tmp_path, index=0, progress=False)
    assert seen == [None]


# --------------------------------------------------------------------------------------------
# the oracle-depth diagnostic


def test_oracle_depth_is_refused_for_a_student_in_one_line():
    cfg = _cfg("demo_student.yaml", "model.camera.oracle_depth=true")
    with pytest.raises(ConfigError) as err:
        build_detector(cfg.model)
    assert "oracle_depth" in str(err.value) and "camera-only" in str(err.value) and "\n" not in str(err.value)


def test_ablate_refuses_an_oracle_student_before_any_run(tmp_path):
    from bevsimdet.distill.ablate import run_ablation

    with pytest.raises(ConfigError, match="oracle_depth"):
        run_ablation([CONFIGS / "demo_camera.yaml", CONFIGS / "ablations" / "full.yaml"], [0], tmp_path,
                     overrides=["model.camera.oracle_depth=true"], log=lambda m: None)
    assert not any(tmp_path.iterdir())


def test_only_the_oracle_is_labelled_a_diagnostic():
    assert diagnostic(_cfg("ablations/camera_oracle.yaml").model) == ORACLE_DIAGNOSTIC
    for name in ("demo_camera.yaml", "demo_student.yaml", "demo_fusion.yaml"):
        assert diagnostic(_cfg(name).model) is None


def test_demo_and_ablate_tables_mark_the_diagnostic():
    from bevsimdet.demo import METRIC_KEYS, model_row, render_table
    from bevsimdet.distill.ablate import AblationRow, render_ablation

    metrics = {k: 0.5 for k in METRIC_KEYS} | {"depth_within1": 1.0}
    oracle = model_row("baseline", _cfg("ablations/camera_oracle.yaml"), metrics, 1.0, 2.0)
    plain = model_row("baseline", _cfg("demo_camera.yaml"), metrics, 1.0, 2.0)
    assert (oracle.modality, oracle.diagnostic) == ("camera+LiDAR", ORACLE_DIAGNOSTIC) and "depth_within1" not in oracle.metrics
    assert (plain.modality, plain.diagnostic) == ("camera", None) and plain.metrics["depth_within1"] == 1.0
    table = render_table([plain, oracle])
    assert table.count(ORACLE_DIAGNOSTIC) == 1 and f"| baseline ({ORACLE_DIAGNOSTIC}) | camera+LiDAR |" in table

    values = {k: [0.5] for k in METRIC_KEYS}
    ablation = render_ablation([AblationRow("camera_oracle", [0], values, ORACLE_DIAGNOSTIC), AblationRow("full", [0], values)])
    assert ablation.count(ORACLE_DIAGNOSTIC) == 2  # the mean table and the per-seed table
    assert "| full |" in ablation


@pytest.mark.slow
def test_oracle_baseline_metrics_and_log_carry_the_diagnostic(tiny_world, tiny_infos, tmp_path):
    """Trainer validation and ``evaluate-model`` of the oracle baseline: metrics.json, the ``val``
    rows of log.jsonl and the evaluate-model output all say it is a diagnostic."""
    from bevsimdet.cli import main
    from bevsimdet.engine.runlog import read_log
    from bevsimdet.engine.train import run_training

    overrides = [f"data.dataroot={tiny_world}", f"data.info_dir={tiny_infos['mini_val'].parent}", "train.max_steps=1",
                 "train.checkpoint_interval=1", "train.log_interval=1", "train.num_workers=0", "model.head.score_threshold=0.5"]
    cfg = _cfg("ablations/camera_oracle.yaml", *overrides)
    ckpt = run_training(cfg, tmp_path / "run", progress=False)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["diagnostic"] == ORACLE_DIAGNOSTIC and "mAP" in metrics
    assert [r["diagnostic"] for r in read_log(tmp_path / "run", "val")] == [ORACLE_DIAGNOSTIC]

    out = tmp_path / "eval.json"
    args = ["evaluate-model", str(tmp_path / "run" / "config.yaml"), "--checkpoint", str(ckpt), "--out", str(out), "--no-progress"]
    try:
        main(args)
    except SystemExit as e:
        assert not e.code
    assert json.loads(out.read_text())["diagnostic"] == ORACLE_DIAGNOSTIC


# --------------------------------------------------------------------------------------------
# infer: --dataroot checks the model against its input as --images does


def _infer(capsys, *args) -> tuple[int, str]:
    from bevsimdet.cli import main

    try:
        main(["infer", *args])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("model", ["{type: fusion}", "{type: lidar}", "{type: camera, camera: {oracle_depth: true}}"])
def test_infer_dataroot_refuses_a_lidar_model_without_points(capsys, tmp_path, model):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {model}\ndata: {{load_points: false}}\n")
    code, err = _infer(capsys, str(cfg), "--checkpoint", "c.safetensors", "--out", str(tmp_path / "r.json"), "--dataroot", str(tmp_path))
    assert code == 2 and "reads LiDAR, but data.load_points is false" in err and err.count("\n") == 1
    assert not (tmp_path / "r.json").exists()


def test_infer_images_and_export_refuse_the_oracle_diagnostic(capsys, tmp_path):
    from bevsimdet.infer import check_camera_only

    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {type: camera, camera: {oracle_depth: true}}\n")
    code, err = _infer(capsys, str(cfg), "--checkpoint", "c.safetensors", "--out", str(tmp_path / "r.json"),
                       "--images", str(tmp_path), "--calib", str(CONFIGS / "calib_template.json"))
    assert code == 2 and "oracle_depth reads LiDAR depth" in err and err.count("\n") == 1
    with pytest.raises(UserError, match="export runs camera-only models"):
        check_camera_only(_cfg("ablations/camera_oracle.yaml"), "export")


def test_results_meta_says_the_oracle_reads_lidar():
    from bevsimdet.infer import results_meta

    assert results_meta(_cfg("ablations/camera_oracle.yaml").model)["use_lidar"] is True
    assert results_meta(_cfg("demo_camera.yaml").model)["use_lidar"] is False
    assert results_meta(_cfg("demo_student.yaml").model)["use_lidar"] is False
    assert results_meta(_cfg("demo_fusion.yaml").model)["use_lidar"] is True


def test_depth_stats_split_object_cells_by_the_return_depth():
    """One object cell per depth band, right near and wrong far: each band reports its own cell,
    the object total pools them, and a background cell counts only in the overall figure."""
    import torch.nn.functional as F

    from bevsimdet.engine.evaluate import DepthStats

    dbound = (1.0, 57.0, 2.0)  # bin k covers [1 + 2k, 3 + 2k): centres 2, 4, ...
    bins = torch.tensor([[[3, 10, 20, 5]]])  # centres 8, 22, 42, 12 m
    on_object = torch.tensor([[[True, True, True, False]]])
    guess = torch.tensor([[[3, 11, 25, 5]]])  # exact, one bin off, five bins (10 m) off, exact
    probs = F.one_hot(guess, 28).permute(0, 3, 1, 2).float()
    stats = DepthStats(dbound)
    stats.add_targets(probs, bins, on_object)
    got = stats.summary()
    assert got["depth_within1_obj_lt15"] == 1.0 and got["depth_mae_obj_lt15"] == 0.0
    assert got["depth_within1_obj_15to30"] == 1.0 and got["depth_mae_obj_15to30"] == pytest.approx(2.0)
    assert got["depth_within1_obj_ge30"] == 0.0 and got["depth_mae_obj_ge30"] == pytest.approx(10.0)
    assert got["depth_bias_obj_ge30"] == pytest.approx(10.0) and got["depth_bias_obj_15to30"] == pytest.approx(2.0)
    assert [got[f"depth_cells{s}"] for s in ("", "_obj", "_obj_lt15", "_obj_15to30", "_obj_ge30")] == [4, 3, 1, 1, 1]
    assert got["depth_within1_obj"] == pytest.approx(2 / 3) and got["depth_mae_obj"] == pytest.approx(4.0)
    assert got["depth_within1"] == pytest.approx(3 / 4) and got["depth_mae"] == pytest.approx(3.0)
