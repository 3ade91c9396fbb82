"""Distillation objective and criterion with tiny stand-in modules (no dependency on model sizes).

The stand-ins follow the shapes of the real components (see bevsimdet.models.student.Student), so
these tests pin down the wiring: what is frozen, what gets gradients, what is in the state dict.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bevsimdet.data.batch import Batch
from bevsimdet.distill.criterion import TERMS, DistillationCriterion, TaskTargets
from bevsimdet.distill.objective import DistillationObjective
from bevsimdet.engine.objective import run_objective
from bevsimdet.errors import ConfigError
from bevsimdet.models.gcm import GCM
from bevsimdet.models.output import DetectorOutput
from bevsimdet.models.student import Student, bev_projection

B, N, IMG, FEAT, BEV, C, CL, D = 2, 2, (16, 32), (4, 8), (8, 8), 6, 10, 5
TASKS = (1, 2)  # classes per head task
RANGE = (-8.0, -8.0, 8.0, 8.0)


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 4, stride=4)

    def forward(self, images):
        return self.conv(images.flatten(0, 1))


class ViewTransform(nn.Module):
    """(B*N) x 8 x h x w -> (B x C x Ny x Nx, depth (B*N) x D x h x w)."""

    def __init__(self, c):
        super().__init__()
        self.depth = nn.Conv2d(8, D, 1)
        self.ctx = nn.Conv2d(8, c, 1)

    def forward(self, img, batch):
        depth = self.depth(img).softmax(1)
        ctx = self.ctx(img) * depth.mean(1, keepdim=True)
        bev = ctx.view(batch.batch_size, batch.num_cams, *ctx.shape[1:]).mean(1)
        return nn.functional.interpolate(bev, size=BEV), depth


class Fuser(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, feats):
        return self.conv(torch.cat(feats, 1))


class Head(nn.Module):
    def __init__(self, c):
        super().__init__()
        sizes = dict(reg=2, height=1, dim=3, rot=2, vel=2)
        self.tasks = nn.ModuleList(
            nn.ModuleDict({"heatmap": nn.Conv2d(c, k, 1), **{n: nn.Conv2d(c, s, 1) for n, s in sizes.items()}}) for k in TASKS
        )

    def forward(self, x):
        return [{n: m(x) for n, m in task.items()} for task in self.tasks]


def make_student(gcm=True, adapters=None, sim_c=CL, image_gcm=False):
    return Student(
        image_encoder=Encoder(), camera_vt=ViewTransform(C), sim_lidar_vt=ViewTransform(C),
        projection=bev_projection(C, sim_c), fuser=Fuser(C + sim_c, C), decoder=nn.Conv2d(C, C, 3, padding=1), head=Head(C),
        gcm=GCM(C, *BEV, num_heads=2, num_points=2) if gcm else None, adapters=adapters,
        image_gcm=GCM(8, *FEAT, num_heads=2, num_points=2) if image_gcm else None,
    )


class Teacher(nn.Module):
    """A fusion stand-in: it *does* read LiDAR (a per-sample point count goes into its LiDAR BEV)."""

    def __init__(self):
        super().__init__()
        self.enc, self.vt = Encoder(), ViewTransform(C)
        self.lidar = nn.Conv2d(1, CL, 1)
        self.fuser, self.head = Fuser(C + CL, C), Head(C)
        self.bn = nn.BatchNorm2d(C)

    def forward(self, batch):
        cam, _ = self.vt(self.enc(batch.images), batch)
        occ = torch.stack([torch.full(BEV, float(p.shape[0]), device=p.device) for p in batch.points])[:, None]
        lidar = self.lidar(occ)
        fused = self.bn(self.fuser([cam, lidar]))
        return DetectorOutput(self.head(fused), {"camera_bev": cam, "lidar_bev": lidar, "fused_bev": fused, "decoder_bev": fused})


class Supervised(nn.Module):
    def forward(self, out, batch):
        return {"heatmap": sum(p["heatmap"].sigmoid().mean() for p in out.preds), "bbox": sum(p["reg"].abs().mean() for p in out.preds)}


def head_targets(batch):
    idx = torch.tensor([[3, 10, 0], [5, 0, 0]])
    slots = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    out = []
    for k in TASKS:
        heat = torch.zeros(B, k, *BEV)
        heat.view(B, k, -1)[0, 0, 3] = heat.view(B, k, -1)[0, 0, 10] = heat.view(B, k, -1)[1, 0, 5] = 1.0
        out.append(TaskTargets(idx, slots, heat))
    return out


def random_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    boxes = [torch.tensor([[1.0, 2.0, 0.5, 1.8, 4.5, 1.5, 0.2, 0.0, 0.0]]), torch.zeros(0, 9)]
    return Batch(
        images=torch.randn(B, N, 3, *IMG, generator=g), intrinsics=torch.eye(3).repeat(B, N, 1, 1),
        cam2ego=torch.eye(4).repeat(B, N, 1, 1), img_aug=torch.eye(3).repeat(B, N, 1, 1), bev_aug=torch.eye(4).repeat(B, 1, 1),
        points=[torch.randn(50, 5, generator=g), torch.randn(30, 5, generator=g)],
        gt_boxes=boxes, gt_labels=[torch.tensor([0]), torch.zeros(0, dtype=torch.long)],
    )


def make_objective(teacher, terms=("imd", "cmd", "mmd_f", "mmd_p_cls", "mmd_p_box")):
    crit = DistillationCriterion(terms, bev_range=RANGE, targets=head_targets, dbound=(1.0, 6.0, 1.0))
    weights = dict(imd=1.0, cmd=100.0, mmd_f=1.0, mmd_p_cls=0.25, mmd_p_box=0.25, depth=1.0)
    return DistillationObjective(teacher, Supervised(), crit, weights)


# ---------------------------------------------------------------------------------------------


def test_student_runs_without_lidar_and_has_all_feats():
    torch.manual_seed(0)
    student = make_student().eval()
    out = student(random_batch().without_lidar())
    assert set(out.feats) == {"camera_bev", "sim_lidar_bev", "fused_bev", "decoder_bev"}
    assert out.feats["sim_lidar_bev"].shape == (B, CL, *BEV)
    assert out.depth.shape == (B * N, D, *FEAT)
    assert [p["heatmap"].shape[1] for p in out.preds] == list(TASKS)


def test_student_ignores_points():
    torch.manual_seed(0)
    student = make_student().eval()
    batch = random_batch()
    a = student(batch).preds[0]["heatmap"]
    b = student(batch.without_lidar()).preds[0]["heatmap"]
    torch.testing.assert_close(a, b)


def test_terms_zero_when_student_output_equals_teacher_output():
    torch.manual_seed(0)
    teacher = Teacher().eval()
    batch = random_batch()
    t = teacher(batch)
    s = DetectorOutput(t.preds, {**t.feats, "sim_lidar_bev": t.feats["lidar_bev"]})
    crit = DistillationCriterion(TERMS[:-1], bev_range=RANGE, targets=head_targets)
    terms = crit(s, t, batch)
    assert set(terms) == {"imd", "cmd", "mmd_f", "mmd_p_cls", "mmd_p_box"}
    for name, v in terms.items():
        assert v.item() == pytest.approx(0.0, abs=1e-7), name


def test_distillation_step_freezes_teacher_and_trains_student():
    torch.manual_seed(0)
    teacher, student = Teacher(), make_student()
    teacher.train()  # the objective must put it in eval mode itself
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    objective = make_objective(teacher)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    opt = torch.optim.AdamW(student.parameters(), lr=1e-2)
    s_before = {k: v.clone() for k, v in student.state_dict().items()}
    student.train()
    res = run_objective(objective, student, random_batch())
    assert set(res.terms) == {"heatmap", "bbox", "imd", "cmd", "mmd_f", "mmd_p_cls", "mmd_p_box"}
    assert torch.isfinite(res.loss) and res.terms["cmd"] > 0
    res.loss.backward()
    opt.step()
    assert all(p.grad is None for p in teacher.parameters())
    for k, v in teacher.state_dict().items():  # BatchNorm running stats included
        assert torch.equal(v, before[k]), k
    assert not torch.equal(student.state_dict()["gcm.attn.value_proj.weight"], s_before["gcm.attn.value_proj.weight"])
    assert student.gcm.attn.sampling_offsets.weight.grad.abs().sum() > 0
    # the teacher is held by the objective only
    assert not any("teacher" in k for k in student.state_dict())
    assert {id(p) for p in teacher.parameters()}.isdisjoint(id(p) for g in opt.param_groups for p in g["params"])


def test_depth_term_needs_no_teacher():
    torch.manual_seed(0)
    objective = make_objective(None, terms=("depth",))
    batch = random_batch()
    batch.points[0][:, 4] = 0.0
    batch.points[0][:, :3] = torch.tensor([3.0, 0.0, 0.0]) + 0.1 * batch.points[0][:, :3]
    batch.cam2ego[:, :, :3, :3] = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    batch.intrinsics[:] = torch.tensor([[16.0, 0.0, 16.0], [0.0, 16.0, 8.0], [0.0, 0.0, 1.0]])
    terms, _ = objective.terms(make_student(), batch)
    assert set(terms) == {"heatmap", "bbox", "depth"} and terms["depth"] > 0
    with pytest.raises(ValueError, match="need a teacher"):
        make_objective(None)


def test_width_mismatch_needs_a_declared_adapter():
    torch.manual_seed(0)
    teacher = Teacher()
    narrow = make_student(sim_c=CL)
    with torch.no_grad():
        t = teacher.eval()(random_batch())
    t.feats["camera_bev"] = torch.cat([t.feats["camera_bev"]] * 2, 1)  # teacher camera BEV twice as wide
    crit = DistillationCriterion(["imd"], bev_range=RANGE)
    with pytest.raises(ConfigError, match="adapters.camera_bev: 12"):
        crit(narrow(random_batch()), t, random_batch())
    adapted = make_student(adapters={"camera_bev": nn.Conv2d(C, 2 * C, 1)}).train()
    s = adapted(random_batch())
    assert s.feats["adapted/camera_bev"].shape[1] == 2 * C
    assert crit(s, t, random_batch())["imd"] > 0
    assert "adapted/camera_bev" not in adapted.eval()(random_batch()).feats


def test_image_gcm_acts_on_the_sim_lidar_branch_only():
    torch.manual_seed(0)
    student = make_student(image_gcm=True).eval()
    batch = random_batch().without_lidar()
    out = student(batch)
    with torch.no_grad():
        student.image_gcm.attn.output_proj.weight.mul_(3.0)
    changed = student(batch)
    torch.testing.assert_close(out.feats["camera_bev"], changed.feats["camera_bev"])
    assert not torch.allclose(out.feats["sim_lidar_bev"], changed.feats["sim_lidar_bev"])


def test_student_without_gcm():
    student = make_student(gcm=False)
    assert student.gcm is None and not any(k.startswith("gcm.") for k in student.state_dict())
    student(random_batch().without_lidar())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="teacher autocast is CUDA only")
def test_teacher_runs_in_bf16_on_cuda():
    teacher = Teacher().cuda()
    obj = DistillationObjective(teacher, Supervised(), DistillationCriterion(["imd"], bev_range=RANGE), {}, teacher_amp=torch.bfloat16)
    out = obj.teacher_output(random_batch().to("cuda"))
    assert out.feats["lidar_bev"].dtype == torch.bfloat16  # a conv output (camera_bev comes from an fp32 interpolate)
