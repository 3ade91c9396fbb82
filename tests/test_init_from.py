"""``train.init_from``: staged training, a model started from (part of) another run's checkpoint.

The LiDAR-only -> fusion case uses the real demo configs (random image weights: no package file
is read); the key-mapping rules use small modules; one slow test runs the real training entry.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from bevsimdet.config import load_config
from bevsimdet.engine.checkpoint import save_checkpoint
from bevsimdet.engine.config import InitFromConfig
from bevsimdet.engine.train import init_from
from bevsimdet.errors import UserError
from bevsimdet.models.build import build_detector
from bevsimdet.weights import CheckpointError, init_from_checkpoint, map_weights

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
NO_WEIGHTS = ["model.image.pretrained=null"]
LIDAR_PARTS = {"lidar_encoder": "lidar_encoder", "decoder": "decoder", "head": "head"}


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_lidar_run_starts_the_fusion_model(tmp_path):
    torch.manual_seed(0)
    lidar = build_detector(load_config(CONFIGS / "demo_lidar.yaml", NO_WEIGHTS).model)
    for m in lidar.modules():  # BatchNorm statistics are weights too
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
    ckpt = save_checkpoint(tmp_path / "lidar.safetensors", model=lidar, step=7)
    torch.manual_seed(1)
    fusion = build_detector(load_config(CONFIGS / "demo_fusion.yaml", NO_WEIGHTS).model)
    before = {k: v.clone() for k, v in fusion.state_dict().items()}
    (report,) = init_from(InitFromConfig(path=str(ckpt), prefix_map=LIDAR_PARTS, strict=True), fusion)
    assert _same(fusion.lidar_encoder, lidar.lidar_encoder) and _same(fusion.decoder, lidar.decoder) and _same(fusion.head, lidar.head)
    after = fusion.state_dict()
    camera_side = [k for k in after if k.startswith(("image_encoder.", "view_transform.", "fuser."))]
    assert camera_side and all(torch.equal(after[k], before[k]) for k in camera_side)
    assert report.loaded == sorted(lidar.state_dict()) and not (report.missing or report.unexpected or report.shape_mismatched)
    assert report.untouched == len(camera_side)
    assert "loaded %d tensors" % len(report.loaded) in report.summary()
    # copies: training the fusion model leaves the source module alone
    fusion.head.task_heads[0]["heatmap"][-1].bias.data.add_(1.0)
    assert not _same(fusion.head, lidar.head)


class Source(nn.Module):
    def __init__(self, width: int = 3):
        super().__init__()
        self.enc = nn.Linear(4, width)
        self.extra = nn.Linear(2, 2)


class Target(nn.Module):
    def __init__(self, width: int = 3):
        super().__init__()
        self.branch = nn.Linear(4, width)
        self.twin = nn.Linear(4, width)
        self.other = nn.Linear(3, 3)


def test_prefix_map_renames_and_reports():
    src = Source().state_dict()
    own = Target().state_dict()
    # one source module may fill two model modules; a trailing dot is the same prefix
    taken, r = map_weights(src, own, {"branch.": "enc", "twin": "enc."})
    assert sorted(taken) == r.loaded == ["branch.bias", "branch.weight", "twin.bias", "twin.weight"]
    assert torch.equal(taken["twin.weight"], src["enc.weight"])
    assert r.untouched == 2 and not (r.missing or r.unexpected or r.shape_mismatched)
    # empty map: every key by its own name
    taken, r = map_weights(src, own, {})
    assert not taken and r.missing == sorted(own) and r.unexpected == sorted(src)
    # the longest model prefix wins
    _, r = map_weights({"a.weight": torch.zeros(3, 4), "a.bias": torch.zeros(3)}, own, {"": "nowhere", "branch": "a"})
    assert r.loaded == ["branch.bias", "branch.weight"] and "other.weight" in r.missing


def test_shape_mismatches_strict_and_not(tmp_path):
    ckpt = save_checkpoint(tmp_path / "w.safetensors", model=Source(width=3))
    model = Target(width=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as e:
        init_from_checkpoint(model, ckpt, {"branch": "enc"}, strict=True)
    msg = str(e.value)
    assert "\n" not in msg and "shape-mismatched 2 keys (branch.bias, branch.weight)" in msg and "strict: false" in msg
    assert all(torch.equal(model.state_dict()[k], before[k]) for k in before)  # nothing changed
    r = init_from_checkpoint(model, ckpt, {"branch": "enc"}, strict=False)
    assert r.shape_mismatched == ["branch.bias", "branch.weight"] and r.loaded == []
    # strict also fails on keys missing from the checkpoint
    with pytest.raises(CheckpointError, match="missing 2 keys \\(other.bias, other.weight\\)"):
        init_from_checkpoint(Target(), ckpt, {"other": "gone"}, strict=True)


def test_missing_file_is_a_one_line_user_error(tmp_path):
    with pytest.raises(UserError) as e:
        init_from(InitFromConfig(path=str(tmp_path / "nope.safetensors")), Target())
    assert "\n" not in str(e.value) and "train.init_from.path" in str(e.value) and "nope.safetensors" in str(e.value)
    assert init_from(InitFromConfig(), Target()) == []  # no path: off


def test_config_keys():
    cfg = load_config(CONFIGS / "nuscenes_fusion.yaml")
    assert cfg.train.init_from.prefix_map == LIDAR_PARTS and cfg.train.init_from.strict
    assert cfg.train.init_from.path.endswith("nuscenes_lidar/checkpoints/latest.safetensors")
    assert cfg.data.sampler == "cbgs" and load_config(CONFIGS / "nuscenes_student.yaml").data.sampler == "cbgs"
    assert load_config(CONFIGS / "demo_fusion.yaml").train.init_from.path is None
    with pytest.raises(UserError, match="prefix_mapp"):
        load_config(CONFIGS / "demo_fusion.yaml", ["train.init_from.prefix_mapp={a: b}"])


@pytest.mark.slow
def test_training_writes_the_report_and_resume_ignores_init_from(tiny_world, tmp_path):
    from bevsimdet.engine.train import run_training

    def cfg(*extra):
        return load_config(CONFIGS / "demo_lidar.yaml", [
            f"data.dataroot={tiny_world}", "train.num_workers=0", "train.validate=false", "train.checkpoint_interval=1", *extra])

    first = run_training(cfg("train.max_steps=1"), tmp_path / "a", progress=False)
    staged = cfg("train.max_steps=2", f"train.init_from.path={first}")
    staged.train.max_steps = 1
    run_training(staged, tmp_path / "b", progress=False)
    report_path = tmp_path / "b" / "init_report.json"
    (report,) = json.loads(report_path.read_text())
    assert report["source"] == str(first) and len(report["loaded"]) > 100 and report["missing"] == []
    written = report_path.stat().st_mtime_ns
    first.unlink()  # the resumed state wins: the init file is neither needed nor read
    staged.train.max_steps = 2
    latest = run_training(staged, tmp_path / "b", resume=True, progress=False)
    assert latest.is_file() and report_path.stat().st_mtime_ns == written


def test_teacher_parts_go_through_the_same_mechanism_and_report(tmp_path):
    from bevsimdet.distill.run import distillation_objective_factory
    from bevsimdet.engine.train import write_init_reports

    teacher_cfg = load_config(CONFIGS / "demo_fusion.yaml", NO_WEIGHTS)
    torch.manual_seed(0)
    teacher = build_detector(teacher_cfg.model)
    ckpt = save_checkpoint(tmp_path / "teacher.safetensors", model=teacher, config={"model": {}})
    cfg = load_config(CONFIGS / "demo_student.yaml", NO_WEIGHTS)
    assert cfg.distill.init_from_teacher == ["fuser", "decoder", "head"]
    student = build_detector(cfg.model)
    objective = distillation_objective_factory(teacher_cfg, ckpt)(cfg, student)
    (report,) = objective.init_reports
    assert _same(student.fuser, teacher.fuser) and _same(student.head, teacher.head)
    assert len(report.loaded) == sum(len(m.state_dict()) for m in (teacher.fuser, teacher.decoder, teacher.head))
    assert report.prefix_map == {"fuser": "fuser", "decoder": "decoder", "head": "head"} and report.source == "the frozen teacher"
    write_init_reports(tmp_path, [report])
    assert json.loads((tmp_path / "init_report.json").read_text())[0]["loaded"] == report.loaded
