"""The objective diagnostics hook: per-term gradient norms and shares, logged as their own rows."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from bevsimdet.engine.objective import diagnostics_interval, gradient_norms, run_objective, weigh, weighted_terms
from test_engine_toy import ToyBatch, ToyObjective, make_trainer


def _reference_norms(model: nn.Module, terms: dict[str, torch.Tensor]) -> dict[str, float]:
    """One full backward per term through ``.grad`` (the plain way), rebuilding the graph each time."""
    out = {}
    for name in terms:
        model.zero_grad(set_to_none=True)
        _, fresh = _toy_terms(model)
        fresh[name].backward()
        out[name] = float(torch.sqrt(sum(p.grad.square().sum() for p in model.parameters() if p.grad is not None)))
    model.zero_grad(set_to_none=True)
    return out


def _toy_terms(model: nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=g)
    y = torch.randn(6, generator=g)
    pred = model.head(model.backbone(x)).squeeze(-1)
    raw = {"mse": (pred - y).square().mean(), "l1": (pred - y).abs().mean(), "wd": sum(p.square().sum() for p in model.head.parameters())}
    return pred, weighted_terms(raw, {"mse": 1.0, "l1": 3.0, "wd": 0.1})


def _toy_model() -> nn.Module:
    from test_engine_toy import ToyModel

    torch.manual_seed(0)
    return ToyModel(hidden=8, dropout=0.0)


def test_gradient_norms_match_one_backward_per_term():
    model = _toy_model()
    _, weighted = _toy_terms(model)
    got = gradient_norms(weighted, list(model.parameters()))
    ref = _reference_norms(model, weighted)
    for name, v in ref.items():
        assert got[f"grad_norm/{name}"] == pytest.approx(v, rel=1e-5)
    assert sum(got[f"grad_share/{n}"] for n in ref) == pytest.approx(1.0)
    assert got["grad_share/l1"] == pytest.approx(ref["l1"] / sum(ref.values()), rel=1e-5)
    # the total is the norm of the summed gradient (<= sum of the norms)
    model.zero_grad(set_to_none=True)
    sum(_toy_terms(model)[1].values()).backward()
    total = float(torch.sqrt(sum(p.grad.square().sum() for p in model.parameters())))
    assert got["grad_norm/total"] == pytest.approx(total, rel=1e-5)
    assert got["grad_norm/total"] <= sum(ref.values()) + 1e-6


def test_gradient_norms_leave_grad_untouched_and_the_graph_usable():
    model = _toy_model()
    _, weighted = _toy_terms(model)
    gradient_norms(weighted, list(model.parameters()))
    assert all(p.grad is None for p in model.parameters())
    loss, _ = weigh({k: v for k, v in weighted.items()}, {})
    loss.backward()  # the graph was retained
    assert all(p.grad is not None for p in model.parameters())


def test_gradient_norms_of_terms_that_do_not_reach_the_parameters_are_zero():
    model = _toy_model()
    _, weighted = _toy_terms(model)
    weighted["const"] = torch.tensor(2.0)
    got = gradient_norms(weighted, list(model.head.parameters()))
    assert got["grad_norm/const"] == 0.0 and got["grad_share/const"] == 0.0
    assert got["grad_norm/wd"] > 0  # wd reaches the head


class DiagnosedToy(ToyObjective):
    diagnostics_kind = "toyterms"

    def __init__(self, every: int):
        super().__init__()
        self.diagnostics_interval = every
        self.diagnosed = 0

    def diagnostics(self, model, weighted):
        self.diagnosed += 1
        return gradient_norms(weighted, [p for p in model.parameters() if p.requires_grad])


def test_run_objective_diagnoses_only_when_asked():
    torch.manual_seed(0)
    from test_engine_toy import ToyModel

    model, obj = ToyModel(8, 0.0), DiagnosedToy(5)
    batch = ToyBatch(torch.randn(4, 4), torch.randn(4))
    assert run_objective(obj, model, batch).diagnostics == {}
    res = run_objective(obj, model, batch, diagnose=True)
    assert set(res.diagnostics) == {"grad_norm/mse", "grad_norm/l1", "grad_share/mse", "grad_share/l1", "grad_norm/total"}
    assert "grad_norm/mse" not in res.terms  # never summed into the loss
    assert diagnostics_interval(obj) == 5 and diagnostics_interval(ToyObjective()) == 0


def test_trainer_logs_diagnostics_rows_at_the_interval_and_trains_the_same(tmp_path):
    plain = make_trainer(tmp_path / "plain", max_steps=7, accum_steps=2, dropout=0.0, tensorboard=False)
    plain.fit()
    obj = DiagnosedToy(3)
    diag = make_trainer(tmp_path / "diag", max_steps=7, accum_steps=2, dropout=0.0, objective=obj, tensorboard=False)
    diag.fit()
    rows = [json.loads(line) for line in (tmp_path / "diag" / "log.jsonl").read_text().splitlines()]
    diag_rows = [r for r in rows if r["kind"] == "toyterms"]
    assert [r["step"] for r in diag_rows] == [3, 6]
    assert obj.diagnosed == 2  # once per diagnosed step (first micro-batch only)
    for r in diag_rows:
        assert r["grad_share/mse"] + r["grad_share/l1"] == pytest.approx(1.0)
    assert not any("grad_share/mse" in r for r in rows if r["kind"] == "train")
    # the diagnostics do not change the update
    for k, v in plain.model.state_dict().items():
        torch.testing.assert_close(diag.model.state_dict()[k], v, rtol=0, atol=0)
