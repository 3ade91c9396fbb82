"""The distillation criterion's normalisers, depth branches, grid check and gradient-share rows.

Stand-in student and teacher modules come from test_distill_objective (same shapes as the real
ones); the grid check and the device fix use the real demo / nuScenes configs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bevsimdet.distill.criterion import RELEASED_NORMALIZE, DistillationCriterion
from bevsimdet.distill.losses import gather_cells, regression_code
from bevsimdet.distill.masks import object_mask
from bevsimdet.distill.objective import DistillationObjective
from bevsimdet.engine.objective import run_objective
from bevsimdet.errors import ConfigError
from bevsimdet.models.output import DetectorOutput
from test_distill_objective import RANGE, TASKS, Supervised, Teacher, head_targets, make_student, random_batch

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FEATURE_TERMS = ("imd", "cmd", "mmd_f", "mmd_p_cls", "mmd_p_box")
BEFORE = {"imd": "elements", "cmd": "elements", "mmd_f": "elements", "mmd_p_cls": "teacher_pos", "mmd_p_box": "objects"}
CODE_W = [1.0] * 8 + [0.2, 0.2]


def _outputs(seed=0):
    torch.manual_seed(seed)
    teacher, student = Teacher().eval(), make_student().train()
    batch = random_batch()
    with torch.no_grad():
        t = teacher(batch)
    return student(batch.without_lidar()), t, batch


def _crit(normalize, terms=FEATURE_TERMS, **kw):
    return DistillationCriterion(terms, bev_range=RANGE, targets=head_targets, dbound=(1.0, 6.0, 1.0), normalize=normalize, **kw)


def _reference(s, t, batch, normalize, max_objs=500):
    """The terms written out plainly from the formulas in docs/distill.md."""
    m = object_mask(batch.gt_boxes, batch.gt_labels, RANGE, tuple(s.feats["sim_lidar_bev"].shape[-2:]))
    out = {}
    for term, (sn, tn) in {"imd": ("camera_bev", "camera_bev"), "cmd": ("sim_lidar_bev", "lidar_bev"), "mmd_f": ("fused_bev", "fused_bev")}.items():
        a, b = s.feats[sn], t.feats[tn]
        mask = m if (term == "cmd" or normalize[term] == "mask") else torch.ones_like(m)
        sq = ((a - b) * mask).square().sum()
        out[term] = sq / a.numel() if normalize[term] == "elements" else sq / (a.shape[1] * mask.square().sum())
    tg = head_targets(batch)
    cls, box = 0.0, 0.0
    for k, (sp, tp) in enumerate(zip(s.preds, t.preds)):
        p = tp["heatmap"].sigmoid()
        q = F.binary_cross_entropy_with_logits(sp["heatmap"], p, reduction="none") * (sp["heatmap"].sigmoid() - p).abs().square()
        n = {"teacher_pos": (p > 0.1).sum(), "gt_centres": tg[k].heatmap.eq(1).sum(),
             "teacher_peaks": ((F.max_pool2d(p, 3, 1, 1) == p) & (p > 0.1)).sum()}[normalize["mmd_p_cls"]]
        cls = cls + q.sum() / n.clamp(min=1)
        sl = F.smooth_l1_loss(gather_cells(regression_code(sp), tg[k].indices), gather_cells(regression_code(tp), tg[k].indices),
                              reduction="none", beta=1 / 9) * torch.tensor(CODE_W)
        err = (sl * tg[k].slots[..., None]).sum()
        box = box + err / (tg[k].slots.sum() if normalize["mmd_p_box"] == "objects" else max_objs)
    out["mmd_p_cls"], out["mmd_p_box"] = cls, box
    return out


@pytest.mark.parametrize("normalize", [
    BEFORE,
    RELEASED_NORMALIZE,
    {"imd": "elements", "cmd": "mask", "mmd_f": "elements", "mmd_p_cls": "gt_centres", "mmd_p_box": "objects"},
    {"imd": "mask", "cmd": "mask", "mmd_f": "mask", "mmd_p_cls": "teacher_peaks", "mmd_p_box": "max_objs"},
], ids=["before", "released", "default", "masked"])
def test_criterion_matches_the_plain_formulas(normalize):
    s, t, batch = _outputs()
    got = _crit(normalize)(s, t, batch)
    ref = _reference(s, t, batch, normalize)
    for term in FEATURE_TERMS:
        assert got[term].detach().item() == pytest.approx(float(ref[term].detach()), rel=1e-5), term
        assert got[term].requires_grad


def test_released_factors_convert_a_released_weight():
    """released_factor x (term as configured) == term under the released normaliser."""
    s, t, batch = _outputs(1)
    default = _crit({})
    terms = default(s, t, batch)
    factors = default.released_factors()
    released = _crit(RELEASED_NORMALIZE)(s, t, batch)
    assert set(factors) == {"released_factor/cmd", "released_factor/mmd_p_cls", "released_factor/mmd_p_box"}
    for term in ("cmd", "mmd_p_cls", "mmd_p_box"):
        assert factors[f"released_factor/{term}"] * terms[term].item() == pytest.approx(released[term].item(), rel=1e-5)
    # CMD: the factor is the mask mass per cell, sum M^2 / (B H W)
    m = object_mask(batch.gt_boxes, batch.gt_labels, RANGE, tuple(s.feats["sim_lidar_bev"].shape[-2:]))
    assert factors["released_factor/cmd"] == pytest.approx(float(m.square().mean()), rel=1e-5)
    assert _crit(RELEASED_NORMALIZE).released_factors() == {}


@pytest.mark.parametrize("mode", ["elements", "mask"])
def test_every_normaliser_is_zero_when_student_equals_teacher(mode):
    torch.manual_seed(0)
    teacher = Teacher().eval()
    batch = random_batch()
    t = teacher(batch)
    s = DetectorOutput(t.preds, {**t.feats, "sim_lidar_bev": t.feats["lidar_bev"]})
    for cls_mode in ("teacher_pos", "gt_centres", "teacher_peaks"):
        for box_mode in ("objects", "max_objs"):
            normalize = {"imd": mode, "cmd": mode, "mmd_f": mode, "mmd_p_cls": cls_mode, "mmd_p_box": box_mode}
            for name, v in _crit(normalize)(s, t, batch).items():
                assert v.item() == pytest.approx(0.0, abs=1e-7), (name, normalize)


def test_masked_imd_and_mmd_f_ignore_the_background():
    s, t, batch = _outputs(2)
    crit = _crit({"imd": "mask", "mmd_f": "mask"}, terms=("imd", "mmd_f"))
    m = crit.object_mask(batch, tuple(s.feats["camera_bev"].shape[-2:]), torch.device("cpu"))
    assert 0 < (m > 0).sum() < m.numel()
    base = crit(s, t, batch)
    far = {k: (v + 7.0 * (m == 0)).detach() for k, v in s.feats.items()}  # change only background cells
    moved = crit(DetectorOutput(s.preds, far), t, batch)
    for term in ("imd", "mmd_f"):
        assert moved[term].item() == pytest.approx(base[term].item(), rel=1e-6)
    whole = _crit({}, terms=("imd",))
    assert whole(DetectorOutput(s.preds, far), t, batch)["imd"] > whole(s, t, batch)["imd"]


# ---------------------------------------------------------------------------- depth branches


def _depth_batch():
    batch = random_batch()
    batch.points[0][:, 4] = 0.0
    batch.points[0][:, :3] = torch.tensor([3.0, 0.0, 0.0]) + 0.1 * batch.points[0][:, :3]
    batch.cam2ego[:, :, :3, :3] = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    batch.intrinsics[:] = torch.tensor([[16.0, 0.0, 16.0], [0.0, 16.0, 8.0], [0.0, 0.0, 1.0]])
    return batch


def _depth_grads(branch):
    torch.manual_seed(0)
    student = make_student().train()
    batch = _depth_batch()
    out = student(batch.without_lidar())
    assert set(out.depths) == {"camera", "sim_lidar"} and out.depth is out.depths["sim_lidar"]
    crit = DistillationCriterion(["depth"], bev_range=RANGE, dbound=(1.0, 6.0, 1.0), depth_branch=branch)
    v = crit(out, None, batch)["depth"]
    v.backward()
    cam = student.camera_vt.depth.weight.grad
    sim = student.sim_lidar_vt.depth.weight.grad
    return v.item(), cam is not None and cam.abs().sum() > 0, sim is not None and sim.abs().sum() > 0


def test_depth_branch_selects_the_supervised_distributions():
    v_cam, cam_a, sim_a = _depth_grads("camera")
    v_sim, cam_b, sim_b = _depth_grads("sim_lidar")
    v_both, cam_c, sim_c = _depth_grads("both")
    assert (cam_a, sim_a) == (True, False)
    assert (cam_b, sim_b) == (False, True)
    assert (cam_c, sim_c) == (True, True)
    assert v_cam > 0 and v_sim > 0 and v_both == pytest.approx(v_cam + v_sim, rel=1e-6)


def test_depth_branch_the_student_lacks_is_a_config_error():
    torch.manual_seed(0)
    batch = _depth_batch()
    out = make_student()(batch.without_lidar())
    single = DetectorOutput(out.preds, out.feats, depth=out.depth)  # a one-branch detector
    crit = DistillationCriterion(["depth"], bev_range=RANGE, dbound=(1.0, 6.0, 1.0), depth_branch="camera")
    with pytest.raises(ConfigError, match="distill.depth_branch 'camera'.*sim_lidar"):
        crit(single, None, batch)
    sim_only = DistillationCriterion(["depth"], bev_range=RANGE, dbound=(1.0, 6.0, 1.0), depth_branch="sim_lidar")
    assert sim_only(single, None, batch)["depth"] > 0


# ---------------------------------------------------------------------------- grid check


def test_teacher_on_another_grid_is_a_one_line_config_error():
    from bevsimdet.config import load_config
    from bevsimdet.distill.run import check_same_grid

    student, teacher = load_config(CONFIGS / "demo_student.yaml"), load_config(CONFIGS / "nuscenes_fusion.yaml")
    check_same_grid(student.model, load_config(CONFIGS / "demo_fusion.yaml").model)  # same grid: fine
    with pytest.raises(ConfigError) as e:
        check_same_grid(student.model, teacher.model, student.name, teacher.name)
    msg = str(e.value)
    assert "\n" not in msg and "demo_student" in msg and "nuscenes_fusion" in msg
    assert "64x64" in msg and "180x180" in msg and "xbound" in msg
    moved = load_config(CONFIGS / "demo_fusion.yaml", ["model.camera.xbound=[-48.0, 54.4, 0.8]", "model.lidar.point_cloud_range=[-48.0, -51.2, -5.0, 54.4, 51.2, 3.0]"])
    with pytest.raises(ConfigError, match="x \\[-51.2, 51.2\\].*x \\[-48, 54.4\\]"):
        check_same_grid(student.model, moved.model)  # same shape, shifted range


def test_teacher_trained_on_other_sweeps_is_a_one_line_config_error():
    from bevsimdet.config import load_config
    from bevsimdet.distill.run import check_same_lidar_input

    student = load_config(CONFIGS / "demo_student.yaml")
    check_same_lidar_input(student.data, load_config(CONFIGS / "demo_fusion.yaml").data)  # same input: fine
    motion = load_config(CONFIGS / "demo_fusion_motion.yaml")
    with pytest.raises(ConfigError) as e:
        check_same_lidar_input(student.data, motion.data, student.name, motion.name)
    msg = str(e.value)
    assert "\n" not in msg and "sweep_stride=1" in msg and "sweep_stride=3" in msg and "demo_fusion_motion" in msg
    matched = load_config(CONFIGS / "demo_student.yaml", ["data.sweep_stride=3"])
    check_same_lidar_input(matched.data, motion.data)


# ---------------------------------------------------------------------------- gradient shares


def _objective(interval=2, teacher=None):
    torch.manual_seed(0)
    teacher = teacher or Teacher()
    crit = DistillationCriterion(FEATURE_TERMS, bev_range=RANGE, targets=head_targets)
    weights = dict(imd=1.0, cmd=0.2, mmd_f=1.0, mmd_p_cls=0.025, mmd_p_box=0.0075)
    return DistillationObjective(teacher, Supervised(), crit, weights, grad_log_interval=interval)


def test_diagnostics_give_every_weighted_term_a_gradient_share():
    obj = _objective()
    student = make_student().train()
    res = run_objective(obj, student, random_batch(), diagnose=True)
    names = {"heatmap", "bbox", *FEATURE_TERMS}
    assert {f"grad_share/{n}" for n in names} <= set(res.diagnostics)
    assert sum(res.diagnostics[f"grad_share/{n}"] for n in names) == pytest.approx(1.0)
    assert all(res.diagnostics[f"grad_norm/{n}"] > 0 for n in names)
    assert res.diagnostics["loss/cmd"] == pytest.approx(float(res.terms["cmd"]))
    assert {"released_factor/cmd", "released_factor/mmd_p_cls", "released_factor/mmd_p_box"} <= set(res.diagnostics)
    assert not any(k.startswith("grad_") for k in res.terms)
    assert obj.diagnostics_kind == "distill" and obj.diagnostics_interval == 2


def test_trainer_writes_distill_rows_and_the_report_reads_them(tmp_path):
    from torch.utils.data import DataLoader

    from bevsimdet.distill.report import load_shares, render_shares
    from bevsimdet.engine.trainer import Trainer

    torch.manual_seed(0)
    student = make_student()
    loader = DataLoader(list(range(4)), batch_size=1, shuffle=False, collate_fn=lambda idx: random_batch(seed=idx[0]))
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    Trainer(student, _objective(interval=2), loader, opt, sched, work_dir=tmp_path, max_steps=5, log_interval=1,
            progress=False, tensorboard=False).fit()
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    distill = [r for r in rows if r["kind"] == "distill"]
    assert [r["step"] for r in distill] == [2, 4]
    assert all(sum(v for k, v in r.items() if k.startswith("grad_share/")) == pytest.approx(1.0) for r in distill)
    table = render_shares(load_shares(tmp_path))
    for term in ("heatmap", "cmd", "mmd_p_box"):
        assert f"| {term} |" in table
    assert "2 rows, steps 2-4" in table


def test_distill_terms_command_prints_the_table(tmp_path):
    from typer.testing import CliRunner

    from bevsimdet.cli import app

    rows = [{"kind": "train", "step": 1, "loss": 1.0}]
    for step, share in ((50, 0.9), (100, 0.7)):
        rows.append({"kind": "distill", "step": step, "grad_norm/det_heatmap": 30 * share, "grad_share/det_heatmap": share,
                     "grad_norm/cmd": 30 * (1 - share), "grad_share/cmd": 1 - share, "grad_norm/total": 29.0,
                     "loss/cmd": 0.1, "released_factor/cmd": 0.03})
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{\"kind\": \"dis")  # a torn last line
    res = CliRunner().invoke(app, ["distill-terms", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "| det_heatmap | 0.800 | 0.900 | 0.700 | 24 | " in res.output
    assert "| cmd | 0.200 | 0.100 | 0.300 | 6 | 0.1 | 0.03 | 3 |" in res.output  # released weight 100 x 0.03
    assert res.output.index("| det_heatmap |") < res.output.index("| cmd |")
    res = CliRunner().invoke(app, ["distill-terms", str(tmp_path / "nowhere")])
    assert res.exit_code != 0 and "no run log" in str(res.exception)


# ---------------------------------------------------------------------------- device


def test_supervised_criterion_follows_the_student_device():
    """CPU stand-in for the CUDA test below: a student on the 'meta' device gets its criterion there."""
    from bevsimdet.config import load_config
    from bevsimdet.distill.run import build_distillation_objective
    from bevsimdet.models import build

    scfg = load_config(CONFIGS / "demo_student.yaml")
    student = build.build_detector(scfg.model).to("meta")
    objective = build_distillation_objective(scfg, student, nn.Linear(1, 1))
    assert objective.criterion.code_weights.device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_distillation_step_on_cuda():
    """The supervised criterion (its code_weights buffer) lives on the student's device."""
    from bevsimdet.config import load_config
    from bevsimdet.distill.run import build_distillation_objective
    from bevsimdet.models import build, testing

    scfg, tcfg = load_config(CONFIGS / "demo_student.yaml"), load_config(CONFIGS / "demo_fusion.yaml")
    torch.manual_seed(0)
    student = build.build_detector(scfg.model).cuda().train()
    teacher = build.build_detector(tcfg.model).cuda()
    objective = build_distillation_objective(scfg, student, teacher, tcfg)
    assert objective.criterion.code_weights.device.type == "cuda"
    res = run_objective(objective, student, testing.random_batch(scfg.model, batch_size=2).to("cuda"), diagnose=True)
    res.loss.backward()
    assert torch.isfinite(res.loss) and res.diagnostics["grad_norm/cmd"] > 0


def test_depth_object_weight_reweights_cells_on_objects():
    """With a GT box over part of the returns, the weighted term equals the plain per-cell BCE
    averaged with weight 1 + w on the object cells; with no box it is the plain term."""
    from bevsimdet.models.depth import depth_bce, lidar_depth_targets

    torch.manual_seed(0)
    student = make_student().eval()
    batch = _depth_batch()
    with torch.no_grad():
        out = student(batch.without_lidar())
    d = out.depths["sim_lidar"]
    batch.gt_boxes = [torch.tensor([[3.0, 0.5, 0.0, 0.5, 2.0, 2.0, 0.0, 0.0, 0.0]])]  # grown by the margin: the returns with y >= 0
    bins, on_object = lidar_depth_targets(batch, tuple(d.shape[-2:]), (1.0, 6.0, 1.0))
    assert 0 < int(on_object.sum()) < int((bins >= 0).sum())

    def term(w):
        crit = DistillationCriterion(["depth"], bev_range=RANGE, dbound=(1.0, 6.0, 1.0), depth_branch="sim_lidar", depth_object_weight=w)
        return crit(out, None, batch)["depth"].item()

    assert term(0.0) == pytest.approx(depth_bce(d, bins).item(), rel=1e-6)
    assert term(4.0) == pytest.approx(depth_bce(d, bins, 1.0 + 4.0 * on_object.float()).item(), rel=1e-6)
    assert term(4.0) != pytest.approx(term(0.0), rel=1e-3)


def test_range_weight_is_one_plus_gain_times_cell_distance():
    from bevsimdet.distill.masks import RANGE_REFERENCE, range_weight

    shape = (6, 4)
    w = range_weight(RANGE, shape, 2.0)
    xmin, ymin, xmax, ymax = RANGE
    assert w.shape == (1, 1, *shape)
    for iy in range(shape[0]):
        for ix in range(shape[1]):
            x = xmin + (ix + 0.5) * (xmax - xmin) / shape[1]
            y = ymin + (iy + 0.5) * (ymax - ymin) / shape[0]
            assert float(w[0, 0, iy, ix]) == pytest.approx(1.0 + 2.0 * (x * x + y * y) ** 0.5 / RANGE_REFERENCE, rel=1e-6)


def test_mask_range_weight_weights_cmd_by_the_cell_distance():
    """CMD with a range weight is the plain formula under mask x range weight (normalised by the
    weighted mask's mass); 0 leaves the term as it was."""
    from bevsimdet.distill.masks import range_weight

    s, t, batch = _outputs()
    normalize = {"imd": "elements", "cmd": "mask", "mmd_f": "elements", "mmd_p_cls": "gt_centres", "mmd_p_box": "objects"}
    a, b = s.feats["sim_lidar_bev"], t.feats["lidar_bev"]
    hw = tuple(a.shape[-2:])
    plain = _crit(normalize, terms=("cmd",))(s, t, batch)["cmd"]
    assert float(_crit(normalize, terms=("cmd",), mask_range_weight=0.0)(s, t, batch)["cmd"]) == pytest.approx(float(plain), rel=1e-6)
    m = object_mask(batch.gt_boxes, batch.gt_labels, RANGE, hw) * range_weight(RANGE, hw, 3.0)
    ref = ((a - b) * m).square().sum() / (a.shape[1] * m.square().sum())
    crit = _crit(normalize, terms=("cmd",), mask_range_weight=3.0)
    assert float(crit(s, t, batch)["cmd"]) == pytest.approx(float(ref), rel=1e-5)
    assert torch.allclose(crit.object_mask(batch, hw, a.device), m)
    ratio = m / object_mask(batch.gt_boxes, batch.gt_labels, RANGE, hw).clamp(min=1e-12)
    assert float(ratio[m > 0].max()) > float(ratio[m > 0].min()) > 1.0  # object cells farther out weigh more


def test_depth_range_power_weights_cells_by_their_return_depth():
    from bevsimdet.models.depth import depth_bce, lidar_depth_targets

    torch.manual_seed(0)
    student = make_student().eval()
    batch = _depth_batch()
    batch.points[0][:, 0] += torch.linspace(0.0, 2.5, batch.points[0].shape[0])  # returns over several depth bins
    with torch.no_grad():
        out = student(batch.without_lidar())
    d = out.depths["sim_lidar"]
    dbound = (10.0, 30.0, 5.0)  # bins centred at 12.5, 17.5, 22.5 and 27.5 m
    batch.points[0][:, 0] *= 5.0  # returns at 15-28 m
    bins, on_object = lidar_depth_targets(batch, tuple(d.shape[-2:]), dbound)
    assert len(set(bins[bins >= 0].tolist())) > 1

    def term(**kw):
        crit = DistillationCriterion(["depth"], bev_range=RANGE, dbound=dbound, depth_branch="sim_lidar", **kw)
        return crit(out, None, batch)["depth"].item()

    far = ((10.0 + (bins.clamp(min=0).float() + 0.5) * 5.0).clamp(min=15.0) / 15.0) ** 2
    assert float(far[bins == 0].max()) == 1.0 and float(far.max()) > 1.0  # near cells keep weight 1
    assert term(depth_range_power=2.0) == pytest.approx(depth_bce(d, bins, far).item(), rel=1e-6)
    both = far * (1.0 + 2.0 * on_object.float())
    assert term(depth_range_power=2.0, depth_object_weight=2.0) == pytest.approx(depth_bce(d, bins, both).item(), rel=1e-6)
    assert term(depth_range_power=2.0) != pytest.approx(term(), rel=1e-4)


@pytest.mark.parametrize("key", ["depth_object_weight", "mask_range_weight", "depth_range_power"])
def test_negative_cell_weights_are_a_one_line_config_error(key):
    with pytest.raises(ConfigError, match=f"distill.{key} is -1"):
        _crit(BEFORE, **{key: -1.0})
