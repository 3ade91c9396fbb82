"""``bevsimdet claim``: the world with a val split that can tell, the rows' plans, the orchestration
(resumable, incremental, subprocess jobs) and the report with its paired intervals."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bevsimdet.claim import (
    ROWS,
    STUDENT,
    VERSION,
    DECIDING_CONTROLS,
    ClaimPlan,
    _worlds,
    decide,
    render_report,
    load_predictions,
    plan_tasks,
    run_claim,
    save_predictions,
    select_rows,
)
from bevsimdet.errors import DataError, UserError
from bevsimdet.eval.boxes import DETECTION_NAMES, BoxSet
from bevsimdet.eval.gt import instances_from_tables
from bevsimdet.eval.tables import EvalTables

# a world small enough for a test: 1 train scene of 1 keyframe, 3 val scenes of 2, no sweeps
TINY = ClaimPlan(train_scenes=1, samples_per_scene=1, val_scenes=3, val_samples_per_scene=2, image_scale=0.05, sweeps=0, bootstrap=30)


@pytest.fixture(scope="module")
def tiny_worlds(tmp_path_factory):
    """The folder of world 3 of plan TINY, simulated once for the tests that run the claim."""
    from bevsimdet.claim import execute_task, plan_tasks

    data = tmp_path_factory.mktemp("claim_worlds")
    out = tmp_path_factory.mktemp("claim_sim")
    task = plan_tasks(_worlds(out, data, 3, 1), [0], TINY, rows=select_rows(["baseline"]))[0]
    execute_task(task.kind, task.spec)
    return data


def _override(spec: dict, key: str) -> str:
    return next(o.split("=", 1)[1] for o in spec["overrides"] if o.startswith(key + "="))


def test_plan_gives_every_row_its_schedule_and_what_it_needs(tmp_path):
    worlds = _worlds(tmp_path, tmp_path / "data", 7, 2)
    tasks = {t.key: t for t in plan_tasks(worlds, [0, 1], ClaimPlan())}
    assert len(tasks) == 2 * 3 + 2 * 2 * len(ROWS)
    # seed 0 of every world is planned before seed 1 (a cut-short claim covers all worlds)
    keys = list(tasks)
    assert keys.index("world8/full/seed0") < keys.index("world7/baseline/seed1")
    steps = {name: int(_override(tasks[f"world7/{name}/seed0"].spec, "train.max_steps")) for name in (r.name for r in ROWS)}
    assert steps["baseline"] == steps[STUDENT] == 600 and steps["baseline_equal_compute"] == 720 + 600
    assert _override(tasks["world7/warm_start_model"].spec, "train.max_steps") == "720"  # the teacher's steps
    assert tasks["world7/warm_start_model"].spec["config"] == "ablations/no_distill.yaml"  # no LiDAR, no teacher
    warm = str(tmp_path / "world7" / "warm_start_model" / "checkpoints" / "latest.safetensors")
    for name, teacher, warm_start in [("baseline", False, False), ("baseline_equal_compute", False, False), ("warm_start", False, True),
                                      ("warm_start_distill", True, True), ("init_only", True, False), ("full_no_init", True, False),
                                      (STUDENT, True, False)]:
        t = tasks[f"world7/{name}/seed1"]
        assert ("world7/teacher" in t.deps) == teacher == ("teacher" in t.spec), name
        assert ("world7/warm_start_model" in t.deps) == warm_start == (f"distill.init_checkpoint={warm}" in t.spec["overrides"]), name
        assert _override(t.spec, "seed") == "1" and _override(t.spec, "data.val_split") == "val"
    half = {t.key: t for t in plan_tasks(worlds, [0], ClaimPlan(steps_scale=0.5), rows=select_rows(["baseline"]))}
    assert set(half) == {"world7/simulate", "world7/teacher", "world8/simulate", "world8/teacher", "world7/baseline/seed0", "world8/baseline/seed0"}
    assert _override(half["world7/baseline/seed0"].spec, "train.max_steps") == "300"
    with pytest.raises(UserError, match="unknown claim row"):
        select_rows(["nope"])


def test_longer_rows_keep_equal_compute_and_sit_beside_the_default_rows(tmp_path):
    worlds = _worlds(tmp_path, tmp_path / "data", 7, 1)
    rows = select_rows(["baseline_equal_compute", STUDENT])
    tasks = {t.key: t for t in plan_tasks(worlds, [0], ClaimPlan(row_steps_scale=2.2), rows=rows)}
    # the world and its teacher are the default claim's: no second teacher is trained
    assert set(tasks) == {"world7/simulate", "world7/teacher", "world7/baseline_equal_compute_x2.2/seed0", f"world7/{STUDENT}_x2.2/seed0"}
    assert _override(tasks["world7/teacher"].spec, "train.max_steps") == "720"
    assert _override(tasks[f"world7/{STUDENT}_x2.2/seed0"].spec, "train.max_steps") == "1320"
    # equal compute still: the baseline gets the teacher's steps plus the longer student's
    assert _override(tasks["world7/baseline_equal_compute_x2.2/seed0"].spec, "train.max_steps") == str(720 + 1320)
    assert tasks[f"world7/{STUDENT}_x2.2/seed0"].spec["work_dir"] == str(tmp_path / "world7" / f"{STUDENT}_x2.2" / "seed0")
    assert ClaimPlan().suffix == "" and ClaimPlan(row_steps_scale=0.5).suffix == "_x0.5"
    assert ClaimPlan(tag="vel", row_steps_scale=2).suffix == "_vel_x2"
    with pytest.raises(UserError, match="--row-steps-scale > 0"):
        run_claim(tmp_path, plan=ClaimPlan(row_steps_scale=0), log=lambda m: None)


def test_instances_count_objects_not_boxes():
    """Distinct instances within the class range with points: one car seen 3 times counts once."""
    samples = [{"token": f"s{i}", "scene_token": "sc"} for i in range(3)]

    def ann(i, inst, cat, x, pts):
        return {"token": f"a{i}{inst}", "instance_token": inst, "category_name": cat, "translation": [x, 0.0, 0.0],
                "num_lidar_pts": pts, "num_radar_pts": 0}

    anns = {
        "s0": [ann(0, "car1", "vehicle.car", 10, 5), ann(0, "bike", "vehicle.bicycle", 45, 3), ann(0, "ped", "human.pedestrian.adult", 5, 0)],
        "s1": [ann(1, "car1", "vehicle.car", 12, 5), ann(1, "bike", "vehicle.bicycle", 39, 3), ann(1, "car2", "vehicle.car", 60, 9)],
        "s2": [ann(2, "car1", "vehicle.car", 14, 5), ann(2, "ped", "human.pedestrian.adult", 6, 0)],
    }
    tables = EvalTables(samples, {"sc": "scene-0001"}, anns, {}, {}, {f"s{i}": [0.0, 0.0, 0.0] for i in range(3)})
    from bevsimdet.eval.gt import CVPR_2019_CLASS_RANGE

    counts = instances_from_tables(tables, {"scene-0001"}, CVPR_2019_CLASS_RANGE)
    # car2 is beyond 50 m, the pedestrian has no points, the bicycle is within 40 m once
    assert counts == {**{n: 0 for n in DETECTION_NAMES}, "car": 1, "bicycle": 1}


def test_predictions_round_trip_and_refuse_other_samples(tmp_path):
    preds = BoxSet.from_columns(sample=[0, 1], label=[0, 5], translation=np.ones((2, 3)), size=np.ones((2, 3)),
                                rotation=np.tile([1.0, 0, 0, 0], (2, 1)), velocity=np.zeros((2, 2)), attribute=[-1, 2],
                                score=[0.9, 0.4], num_pts=[-1, -1])
    save_predictions(tmp_path / "p.npz", preds, ["a", "b"])
    back = load_predictions(tmp_path / "p.npz", ["a", "b"])
    assert all(np.array_equal(getattr(back, f), getattr(preds, f)) for f in ("sample", "label", "translation", "score", "attribute"))
    with pytest.raises(DataError, match="other val samples"):
        load_predictions(tmp_path / "p.npz", ["a", "c"])


def _fake_training(calls: list):
    """Stand-in for train_and_evaluate: predictions = the GT boxes moved by noise (the student's
    0.1 m, every control's 1.2 m) and scored by the real evaluator."""
    from bevsimdet.claim import save_predictions
    from bevsimdet.engine.evaluate import summarize
    from bevsimdet.eval.gt import load_gt
    from bevsimdet.eval.metrics import evaluate
    from bevsimdet.io import atomic_write_json

    def fake(spec, progress=False):
        run = Path(spec["work_dir"])
        calls.append(spec)
        row = run.parent.name if run.name.startswith("seed") else run.name
        gt = load_gt(_override(spec, "data.dataroot"), VERSION, "val")
        rng = np.random.default_rng(len(calls))
        b = gt.boxes
        noise = 0.1 if row == STUDENT else 1.2
        preds = BoxSet(b.sample, b.label, b.translation + rng.normal(0, noise, b.translation.shape) * [1, 1, 0], b.size, b.rotation,
                       np.nan_to_num(b.velocity), b.attribute, rng.uniform(0.2, 1.0, len(b)), np.full(len(b), -1))
        save_predictions(run / "predictions.npz", preds, gt.sample_tokens)
        atomic_write_json(run / "eval.json", summarize(evaluate(preds, gt).to_dict()))

    return fake


@pytest.mark.slow
def test_claim_writes_rows_intervals_and_objects_and_resumes(tmp_path, monkeypatch, tiny_worlds):
    import bevsimdet.claim as claim

    calls: list = []
    monkeypatch.setattr(claim, "train_and_evaluate", _fake_training(calls))
    written = []
    real_write = claim.write_report
    monkeypatch.setattr(claim, "write_report", lambda *a, **k: written.append(1) or real_write(*a, **k))
    report = run_claim(tmp_path, worlds=1, seeds=2, world_seed=3, plan=TINY, data_dir=tiny_worlds, log=lambda m: None)
    assert len(calls) == 2 + 2 * len(ROWS)  # teacher, warm start, rows x seeds
    assert len(written) == len(calls) + 2  # after the world, after every run, and at the end

    manifest = json.loads((tiny_worlds / "world3" / "sim_manifest.json").read_text())
    assert manifest["summary"]["keyframes"] == 1 + 3 * 2 and set(manifest["summary"]["per_split"]) == {"train", "val"}
    on_disk = json.loads((tmp_path / "claim.json").read_text())
    assert on_disk["complete"] and on_disk["finished_runs"] == 2 * len(ROWS) == report["finished_runs"]
    world = on_disk["worlds"][0]
    assert world["val_scenes"] == 3 and world["val_samples"] == 6
    assert set(world["val_objects"]) == set(DETECTION_NAMES) and all(v >= 1 for v in world["val_objects"].values())
    assert {"teacher", "warm_start_model"} <= set(world)
    rows = {r["name"]: r for r in on_disk["rows"]}
    assert list(rows) == [r.name for r in ROWS] and all(len(r["runs"]) == 2 and r["question"] for r in rows.values())
    assert all("AP/car" in run["metrics"] for r in rows.values() for run in r["runs"])
    from bevsimdet.eval.metrics import nds_parts  # the report's NDS parts add up to each run's NDS

    assert all(sum(nds_parts(run["metrics"]).values()) == pytest.approx(run["metrics"]["NDS"]) for r in rows.values() for run in r["runs"])
    # the near objects' metrics: one evaluation per cap, against the GT within the cap
    from bevsimdet.claim import NEAR_RANGES, WorldData, load_predictions, near_metrics
    from bevsimdet.eval.metrics import MetricConfig, evaluate

    run = rows[STUDENT]["runs"][0]
    assert set(run["near"]) == {f"{c:g}" for c in NEAR_RANGES}
    data = WorldData(_worlds(tmp_path, tiny_worlds, 3, 1)[0], 30)
    run_dir = tmp_path / "world3" / STUDENT / "seed0"
    near = data.gt.within(NEAR_RANGES[0])
    direct = evaluate(load_predictions(run_dir / "predictions.npz", data.gt.sample_tokens), near, config=MetricConfig(class_range=dict(near.class_range)))
    assert run["near"][f"{NEAR_RANGES[0]:g}"]["mAP"] == pytest.approx(direct.mean_ap)
    assert near_metrics(run_dir, data) == run["near"]  # from near.json
    diffs = {(d["control"], d["metric"]): d for d in on_disk["differences"]}
    assert set(diffs) == {(r.name, k) for r in ROWS if r.name != STUDENT for k in ("mAP", "NDS", "mATE")}
    for control in ("baseline", "warm_start"):
        d = diffs[(control, "mATE")]
        # the student's boxes are 10x closer: it wins mATE by an interval that excludes zero
        assert d["low"] <= d["estimate"] <= d["high"] < 0 and d["excludes_zero"]
        assert diffs[(control, "mAP")]["estimate"] > 0
    # the rows' questions to each other: row minus control with the same bootstrap, outside the rule
    from bevsimdet.claim import CONTRASTS

    assert [(d["row"], d["control"], d["metric"]) for d in on_disk["contrasts"]] == [(a, b, k) for a, b, _ in CONTRASTS for k in ("mAP", "NDS", "mATE")]
    assert [{**d, "worlds": None} for d in on_disk["contrasts_per_world"]] == [{**d, "worlds": None} for d in on_disk["contrasts"]]
    assert all(d["low"] <= d["estimate"] <= d["high"] and d["runs"] == [2, 2] for d in on_disk["contrasts"])
    # one world: its own interval is the pooled one; no interval over worlds
    assert [{**d, "worlds": None} for d in on_disk["per_world"]] == [{**d, "worlds": None} for d in on_disk["differences"]]
    assert on_disk["between_worlds"] == []
    # the fake student wins mAP and mATE against every control; the verdict follows the intervals
    assert on_disk["decision"]["verdict"] == decide(on_disk["differences"])["verdict"]
    assert on_disk["decision"]["across_worlds"] is None
    md = (tmp_path / "claim.md").read_text()
    assert "baseline_equal_compute" in md and "Δ" + "mAP" in md and "distinct val objects" in md and "## Decision rule" in md and "## NDS by part" in md and "## Near objects" in md
    assert "## Between controls" in md and all(f"| {a} | {b} | " in md and q in md for a, b, q in CONTRASTS)
    for r in ROWS:
        assert r.question in md

    # a claim of some of the rows gives those rows' intervals: the generator follows the row
    from bevsimdet.claim import collect

    some = collect(_worlds(tmp_path, tiny_worlds, 3, 1), [0, 1], TINY, select_rows(["warm_start", STUDENT]))
    assert some["differences"] == [d for d in on_disk["differences"] if d["control"] == "warm_start"]
    calls.clear()  # resumable: everything is reused, the report is the same
    again = run_claim(tmp_path, worlds=1, seeds=2, world_seed=3, plan=TINY, data_dir=tiny_worlds, log=lambda m: None)
    assert calls == [] and again["differences"] == report["differences"]

    # longer rows beside these: the world's teacher is reused, the default report is left alone
    longer = replace(TINY, row_steps_scale=2)
    run_claim(tmp_path, worlds=1, seeds=1, world_seed=3, plan=longer, rows=["baseline", STUDENT], data_dir=tiny_worlds, log=lambda m: None)
    assert [Path(c["work_dir"]).parent.name for c in calls] == ["baseline_x2", f"{STUDENT}_x2"]
    assert json.loads((tmp_path / "claim.json").read_text())["differences"] == report["differences"]
    assert "the rows' steps x 2 more" in (tmp_path / "claim_x2.md").read_text()
    assert json.loads((tmp_path / "claim_x2.json").read_text())["complete"]


@pytest.mark.slow
def test_a_cut_short_claim_reports_what_finished(tmp_path, monkeypatch, tiny_worlds):
    import bevsimdet.claim as claim

    calls: list = []
    fake = _fake_training(calls)

    def dies_at_the_third(spec, progress=False):  # teacher, baseline, then the student is cut short
        if len(calls) == 2:
            raise KeyboardInterrupt
        fake(spec, progress)

    monkeypatch.setattr(claim, "train_and_evaluate", dies_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        run_claim(tmp_path, worlds=1, seeds=1, world_seed=3, plan=TINY, rows=["baseline", STUDENT], data_dir=tiny_worlds,
                  log=lambda m: None)
    report = json.loads((tmp_path / "claim.json").read_text())
    assert not report["complete"] and report["finished_runs"] == 1 and report["expected_runs"] == 2
    assert "1 of 2 runs finished (incomplete" in (tmp_path / "claim.md").read_text()


@pytest.mark.slow
def test_quick_claim_end_to_end_with_subprocess_jobs(tmp_path):
    """``bevsimdet claim --quick`` for real (2 rows, 1 world, 1 seed), trainings as 2 subprocesses."""
    from typer.testing import CliRunner

    from bevsimdet.cli import app

    result = CliRunner().invoke(app, ["claim", "--quick", "--worlds", "1", "--seeds", "1", "--out", str(tmp_path), "--jobs", "2",
                                        "--threads", "1", "--row", "baseline", "--row", STUDENT, "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "claim.json").read_text())
    assert report["complete"] and [r["name"] for r in report["rows"]] == ["baseline", STUDENT]
    assert {d["metric"] for d in report["differences"]} == {"mAP", "NDS", "mATE"}
    run = tmp_path / "world101" / STUDENT / "seed0"
    assert (run / "predictions.npz").is_file() and (run / "bootstrap.npz").is_file() and (run / "task.log").is_file()
    finished = json.loads((run / "eval.json").read_text())
    assert finished["steps"] == 3 and finished["settings"] == {"config": "ablations/full.yaml", "steps": 3, "seed": 0, "set": []}
    # the same output with a setting changed: refused in one line before anything trains
    again = CliRunner().invoke(app, ["claim", "--quick", "--worlds", "1", "--seeds", "1", "--out", str(tmp_path), "--row", "baseline",
                                     "--set", "train.lr=0.002", "--no-progress"])
    assert again.exit_code != 0 and "trained with other settings" in str(again.exception)  # cli.main prints it in one line


def test_val_scenes_take_official_val_names_after_the_train_scenes():
    from nuscenes.utils import splits

    from bevsimdet.data.sim import scene_names

    names = scene_names("v1.0-trainval", 5, val_scenes=3)
    assert names[:2] == list(splits.train[:2]) and names[2:] == list(splits.val[:3])
    assert scene_names("v1.0-trainval", 5) == scene_names("v1.0-trainval", 5, None)  # the old interleave is unchanged
    with pytest.raises(UserError, match="needs --version v1.0-trainval"):
        scene_names("v1.0-mini", 10, val_scenes=2)
    with pytest.raises(UserError, match="--val-scenes 6 of --scenes 5"):
        scene_names("v1.0-trainval", 5, val_scenes=6)


def _diffs(control: str, mAP: tuple, NDS: tuple, mATE: tuple) -> list[dict]:
    return [{"control": control, "metric": k, "estimate": (lo + hi) / 2, "low": lo, "high": hi}
            for k, (lo, hi) in (("mAP", mAP), ("NDS", NDS), ("mATE", mATE))]


def test_the_decision_rule_needs_both_controls_beaten_in_map_and_mate_and_nds_not_lower():
    good = dict(mAP=(0.01, 0.03), NDS=(-0.02, 0.01), mATE=(-0.1, -0.02))  # NDS level: allowed
    both = [d for c in DECIDING_CONTROLS for d in _diffs(c, **good)]
    assert decide(both)["verdict"] == "shown"
    assert decide(both + _diffs("init_only", mAP=(-1, -0.5), NDS=(-1, -0.5), mATE=(1, 2)))["verdict"] == "shown"  # other rows: no say
    for bad, why in ((dict(good, mAP=(-0.001, 0.03)), "mAP interval does not exclude zero"), (dict(good, mATE=(0.01, 0.1)), "mATE higher"),
                     (dict(good, NDS=(-0.03, -0.001)), "NDS lower")):
        d = decide(_diffs(DECIDING_CONTROLS[0], **good) + _diffs(DECIDING_CONTROLS[1], **bad))
        assert d["verdict"] == "not shown" and d["fails"] == {DECIDING_CONTROLS[0]: [], DECIDING_CONTROLS[1]: [why]}
    assert decide(_diffs(DECIDING_CONTROLS[0], **good))["verdict"] == "undecided"  # a control not run yet
    # over worlds as a sample: the same rule on the between-world intervals
    wide = [d for c in DECIDING_CONTROLS for d in _diffs(c, **dict(good, mAP=(-0.02, 0.05)))]
    assert decide(both, wide)["across_worlds"] is False and decide(both, both)["across_worlds"] is True


def test_the_report_shows_each_world_the_spread_between_worlds_and_the_verdict():
    from bevsimdet.eval.bootstrap import between_worlds

    rule = dict(mAP=(0.01, 0.03), NDS=(-0.02, 0.01), mATE=(-0.1, -0.02))
    per_world = [{**d, "worlds": [w], "runs": [3, 3], "excludes_zero": d["low"] > 0 or d["high"] < 0}
                 for w in (101, 102, 103) for c in DECIDING_CONTROLS for d in _diffs(c, **rule)]
    pooled = [{**d, "worlds": [101, 102, 103], "runs": [9, 9]} for d in per_world[:6]]
    spread = [{**d, "worlds": [101, 102, 103], "runs": [9, 9], "low": ci.low, "high": ci.high, "excludes_zero": ci.excludes_zero()}
              for d in pooled for ci in [between_worlds([d["estimate"], d["estimate"] + 0.05, d["estimate"] - 0.05])]]
    report = {"protocol": {"worlds": [101, 102, 103], "seeds": [0, 1, 2], "plan": {**vars(ClaimPlan())}, "interval": "bootstrap"},
              "finished_runs": 27, "expected_runs": 27, "complete": True, "rows": [], "worlds": [],
              "differences": pooled, "per_world": per_world, "between_worlds": spread, "decision": decide(pooled, spread)}
    md = render_report(report)
    assert "Pooled intervals (worlds fixed): **shown**" in md and "Over worlds as a sample: it does not hold" in md
    assert "| baseline_equal_compute | 102 | +0.020 [+0.010, +0.030]*" in md
    assert md.count("| warm_start |") == 5 and md.count("| warm_start | 10") == 3  # pooled, 3 worlds, between
    del report["decision"], report["per_world"], report["between_worlds"]  # a report written before these existed
    assert "## Decision rule" not in render_report(report)


def test_a_tagged_variant_sets_the_rows_only_and_sits_beside_the_default_rows(tmp_path):
    worlds = _worlds(tmp_path, tmp_path / "data", 7, 1)
    plan = ClaimPlan(tag="vel", row_overrides=("model.head.velocity_beta=2.0",))
    tasks = {t.key: t for t in plan_tasks(worlds, [0], plan, rows=select_rows(["baseline_equal_compute", STUDENT]))}
    assert set(tasks) == {"world7/simulate", "world7/teacher", "world7/baseline_equal_compute_vel/seed0", f"world7/{STUDENT}_vel/seed0"}
    assert "model.head.velocity_beta=2.0" not in tasks["world7/teacher"].spec["overrides"]
    for key in ("world7/baseline_equal_compute_vel/seed0", f"world7/{STUDENT}_vel/seed0"):
        assert tasks[key].spec["overrides"][-1] == "model.head.velocity_beta=2.0"
        assert tasks[key].spec["settings"]["set"] == ["model.head.velocity_beta=2.0"]
    with pytest.raises(UserError, match="--tag"):
        run_claim(tmp_path, plan=ClaimPlan(tag="a/b"), log=lambda m: None)
    with pytest.raises(UserError, match="nope"):  # a bad key is named before anything runs
        plan_tasks(worlds, [0], ClaimPlan(row_overrides=("model.nope=1",)), rows=select_rows([STUDENT]))


def test_a_finished_run_is_not_reused_with_other_settings(tmp_path):
    from bevsimdet.claim import check_reuse
    from bevsimdet.io import atomic_write_json

    worlds = _worlds(tmp_path, tmp_path / "data", 7, 1)
    rows = select_rows(["baseline"])
    tasks = plan_tasks(worlds, [0], ClaimPlan(), rows=rows, overrides=["train.lr=0.001"])
    run = next(t for t in tasks if t.key == "world7/baseline/seed0")
    atomic_write_json(Path(run.done_file), {"mAP": 0.1, "settings": run.spec["settings"]})
    check_reuse(tasks)  # the same settings: reused
    other = plan_tasks(worlds, [0], ClaimPlan(), rows=rows, overrides=["train.lr=0.002"])
    with pytest.raises(UserError, match=r"baseline/seed0 was trained with other settings \(set .*0.001.*0.002") as e:
        check_reuse(other)
    assert "--tag" in e.value.fix
    check_reuse(plan_tasks(worlds, [0], ClaimPlan(), rows=rows, overrides=["train.lr=0.001"], device="cpu"))  # the device may change
    atomic_write_json(Path(run.done_file), {"mAP": 0.1})  # a run from before settings were kept: not checked
    check_reuse(other)
