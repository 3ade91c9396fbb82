"""Evaluation without the devkit's NuScenes: the table reader, the split lists, the GT cache and
the fast ``bevsimdet evaluate`` start-up, each against its plain reference."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bevsimdet.errors import DataError, UserError
from bevsimdet.eval import cache as gt_cache
from bevsimdet.eval import synthetic
from bevsimdet.eval.boxes import BoxSet
from bevsimdet.eval.gt import GroundTruth, load_gt
from bevsimdet.eval.tables import split_scenes

VERSION = "v1.0-mini"
FIELDS = ("sample", "label", "translation", "size", "rotation", "velocity", "attribute", "score", "num_pts")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """All 10 mini scenes x 6 keyframes, annotations only (racks, ignored categories, time gaps)."""
    root = tmp_path_factory.mktemp("eval_world")
    scenes = {name: 6 for name in sorted(split_scenes()["mini_train"] + split_scenes()["mini_val"])}
    synthetic.write_tables(root, VERSION, scenes, seed=3, actors_per_scene=40, sweeps=2, gap_prob=0.2)
    return root


@pytest.fixture(scope="module")
def nusc(world):
    from nuscenes import NuScenes

    return NuScenes(version=VERSION, dataroot=str(world), verbose=False)


def assert_same_gt(a, b) -> None:
    assert a.sample_tokens == b.sample_tokens
    np.testing.assert_array_equal(a.ego_translation, b.ego_translation)
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(a.boxes, f), getattr(b.boxes, f), err_msg=f)
        np.testing.assert_array_equal(getattr(a.racks, f), getattr(b.racks, f), err_msg=f)


def test_split_lists_equal_the_devkit():
    from nuscenes.utils.splits import create_splits_scenes

    assert split_scenes() == create_splits_scenes()


@pytest.mark.parametrize("split", ["mini_val", "mini_train"])
def test_table_reader_equals_devkit(world, nusc, split):
    """The tables read without NuScenes give the devkit's boxes (via the NuScenes path, which
    tests/test_eval_e2e.py checks box by box against the devkit's own loaders)."""
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.common.loaders import add_center_dist, filter_eval_boxes
    from nuscenes.eval.common.loaders import load_gt as dk_load_gt
    from nuscenes.eval.detection.data_classes import DetectionBox

    ours = load_gt(world, VERSION, split, cache=False)
    assert_same_gt(ours, load_gt(world, VERSION, split, nusc=nusc))
    theirs = filter_eval_boxes(nusc, add_center_dist(nusc, dk_load_gt(nusc, split, DetectionBox)),
                               config_factory("detection_cvpr_2019").class_range)
    assert list(ours.sample_tokens) == theirs.sample_tokens
    assert len(ours.boxes) == len(theirs.all) > 50
    np.testing.assert_array_equal(ours.boxes.velocity, [b.velocity for b in theirs.all])
    assert np.isnan(ours.boxes.velocity).any() and len(ours.racks) > 0


def test_cache_round_trip_and_invalidation(world, tmp_path, monkeypatch):
    monkeypatch.setenv("BEVSIMDET_CACHE_DIR", str(tmp_path / "cache"))
    first = load_gt(world, VERSION, "mini_val")
    files = list((tmp_path / "cache").glob("gt-mini_val-*.npz"))
    assert len(files) == 1
    again = load_gt(world, VERSION, "mini_val")
    assert_same_gt(again, first)
    assert again.version == VERSION and again.split == "mini_val"

    # a cache file that is not what it claims is ignored and rebuilt
    files[0].write_bytes(b"not an npz")
    assert_same_gt(load_gt(world, VERSION, "mini_val"), first)

    # rewriting a table (same content, new file) makes a new key; the stale file is removed
    table = world / VERSION / "sample_annotation.json"
    stamp = os.stat(table).st_mtime_ns
    os.utime(table, ns=(stamp + 10**9, stamp + 10**9))
    try:
        assert_same_gt(load_gt(world, VERSION, "mini_val"), first)
        now = list((tmp_path / "cache").glob("gt-mini_val-*.npz"))
        assert len(now) == 1 and now[0] != files[0]
    finally:
        os.utime(table, ns=(stamp, stamp))


def test_cache_key_names_every_table_and_a_stale_key_misses(world, tmp_path, monkeypatch):
    monkeypatch.setenv("BEVSIMDET_CACHE_DIR", str(tmp_path))
    folder = world / VERSION
    key = gt_cache.cache_key(folder, VERSION, "mini_val", sorted(split_scenes()["mini_val"]))
    assert set(key["tables"]) >= {"sample", "sample_annotation", "sample_data", "ego_pose", "scene"}
    gt = load_gt(world, VERSION, "mini_val", cache=False)
    assert gt_cache.write(key, gt.to_arrays()) is not None
    back = GroundTruth.from_arrays(gt_cache.read(key), VERSION, "mini_val")
    assert back.sample_tokens == gt.sample_tokens and np.array_equal(back.boxes.translation, gt.boxes.translation)
    other = {**key, "tables": {**key["tables"], "sample": [1, 2, 3]}}
    assert gt_cache.read(other) is None


def test_unwritable_cache_folder_still_evaluates(world, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("BEVSIMDET_CACHE_DIR", str(blocker / "cache"))
    assert len(load_gt(world, VERSION, "mini_val").boxes) > 0


def test_custom_class_range_is_not_cached(world, tmp_path, monkeypatch):
    monkeypatch.setenv("BEVSIMDET_CACHE_DIR", str(tmp_path))
    from bevsimdet.eval.gt import CVPR_2019_CLASS_RANGE

    narrow = {k: 20.0 for k in CVPR_2019_CLASS_RANGE}
    gt = load_gt(world, VERSION, "mini_val", class_range=narrow)
    assert dict(gt.class_range) == narrow and not list(tmp_path.glob("*.npz"))


@pytest.mark.parametrize("cap", [15.0, 30.0])
def test_within_a_range_equals_loading_with_the_capped_ranges(world, cap):
    from bevsimdet.eval.gt import CVPR_2019_CLASS_RANGE

    full = load_gt(world, VERSION, "mini_val", cache=False)
    capped = {k: min(v, cap) for k, v in CVPR_2019_CLASS_RANGE.items()}
    near = full.within(cap)
    assert_same_gt(near, load_gt(world, VERSION, "mini_val", class_range=capped))
    assert dict(near.class_range) == capped and 0 < len(near.boxes) < len(full.boxes)
    assert full.within(100.0) is full  # no class range is narrower: the same object


def test_bad_tables_one_line_errors(world, tmp_path):
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(world / VERSION, root / VERSION)
    (root / VERSION / "ego_pose.json").unlink()
    with pytest.raises(DataError, match="ego_pose.json is missing"):
        load_gt(root, VERSION, "mini_val", cache=False)
    (root / VERSION / "ego_pose.json").write_text("[{")
    with pytest.raises(DataError, match="not valid JSON"):
        load_gt(root, VERSION, "mini_val", cache=False)
    shutil.copy(world / VERSION / "ego_pose.json", root / VERSION / "ego_pose.json")
    (root / VERSION / "instance.json").write_text("[]")
    with pytest.raises(DataError, match="inconsistent"):
        load_gt(root, VERSION, "mini_val", cache=False)
    with pytest.raises(UserError, match="does not belong to version"):
        load_gt(world, VERSION, "val")
    with pytest.raises(UserError, match="unknown split"):
        load_gt(world, VERSION, "nope")


def test_evaluate_imports_neither_torch_nor_the_devkit(world, tmp_path):
    """Start-up: the evaluate command reads tables itself and needs no torch."""
    from bevsimdet.eval.results import write_results

    gt = load_gt(world, VERSION, "mini_val", cache=False)
    path = tmp_path / "r.json"
    write_results(path, synthetic.random_predictions(np.random.default_rng(1), gt))
    code = (
        "import sys; from bevsimdet.cli import main; "
        f"main(['evaluate', '--dataroot', {str(world)!r}, '--version', {VERSION!r}, '--split', 'mini_val', "
        f"'--results', {str(path)!r}]); "
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'nuscenes', 'matplotlib', 'scipy', 'pydantic'}); "
        "print('HEAVY', heavy)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout and "NDS" in r.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["--dataroot", "d", "--results", "r.json"],
        ["--dataroot=d", "--results", "r.json", "--version", "v1.0-mini", "--split=mini_val", "--no-cache"],
        ["--results", "r.json", "--dataroot", "d", "--out", "m.json", "--plots", "p", "--cache"],
        ["--dataroot", "d", "--results", "r.json", "--no-progress"],
        ["--progress", "--dataroot", "d", "--results", "r.json"],
    ],
)
def test_fast_options_equal_typer(argv, monkeypatch):
    """The fast start-up path passes the command exactly what typer would."""
    from typer.testing import CliRunner

    import bevsimdet.cli as cli
    import bevsimdet.eval.commands as commands

    seen = {}
    real = commands.evaluate_command

    @functools.wraps(real)
    def spy(**kwargs):
        seen.update(kwargs)

    monkeypatch.setattr(commands, "evaluate_command", spy)
    res = CliRunner().invoke(cli._build_app(), ["evaluate", *argv])
    assert res.exit_code == 0, res.output
    assert cli.fast_options(real, argv) == seen


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["--dataroot", "d"], ["--dataroot", "d", "--results"], ["--dataroot", "d", "--results", "r", "--bogus", "1"],
     ["--dataroot", "d", "--dataroot", "e", "--results", "r"], ["--dataroot", "d", "--results", "r", "--cache=1"]],
)
def test_fast_options_leave_the_rest_to_typer(argv):
    import bevsimdet.cli as cli
    from bevsimdet.eval.commands import evaluate_command

    assert cli.fast_options(evaluate_command, argv) is None


def test_write_tables_world_loads_in_the_devkit(world, nusc):
    assert len(nusc.sample) == 60 and len(nusc.scene) == 10
    lidar = [sd for sd in nusc.sample_data if sd["channel"] == "LIDAR_TOP"]
    assert sum(sd["is_key_frame"] for sd in lidar) == 60 and len(lidar) == 60 * 3  # 2 sweeps + keyframe
    assert {"static_object.bicycle_rack", "movable_object.debris"} <= {a["category_name"] for a in nusc.sample_annotation}
    assert isinstance(load_gt(world, VERSION, "mini_val", cache=False).boxes, BoxSet)


@pytest.mark.parametrize("problem", [None, ("size", [1.0, -2.0, 1.0]), ("rotation", [0, 0, 0, 0]), ("velocity", [1.0]),
                                     ("translation", "abc"), ("velocity", [float("nan"), 0.0]), ("size", [1, [2], 3])])
def test_one_pass_box_columns_equal_the_per_key_reference(problem):
    """results_to_boxes converts the list-valued keys in one pass; same arrays, same first error."""
    from bevsimdet.eval import results as R

    rng = np.random.default_rng(0)
    gt = synthetic.random_ground_truth(rng, 6)
    flat = [b for boxes in synthetic.random_predictions(rng, gt).values() for b in boxes]
    if problem is not None:
        flat[len(flat) // 2] = {**flat[len(flat) // 2], problem[0]: problem[1]}

    def where(i):
        return f"box {i}"

    def outcome(fn):
        try:
            return fn()
        except R.ResultsError as e:
            return str(e)

    fast = outcome(lambda: R._vector_columns(flat, where))
    slow = outcome(lambda: {k: R._numeric_column(flat, k, w, where) for k, w in R.NUMERIC_KEYS if w})
    if problem is None:
        assert fast.keys() == slow.keys()
        for k in fast:
            np.testing.assert_array_equal(fast[k], slow[k])
            assert fast[k].flags.c_contiguous
    else:
        assert isinstance(fast, str) and fast == slow


def _lidar_cs(folder: Path) -> set[str]:
    from bevsimdet.eval.tables import read_table

    channel = {s["token"]: s["channel"] for s in read_table(folder, "sensor")}
    return {c["token"] for c in read_table(folder, "calibrated_sensor") if channel[c["sensor_token"]] == "LIDAR_TOP"}


def _rewrite(folder: Path, name: str, edit, **dump) -> None:
    import json

    path = folder / f"{name}.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text())), **dump))


def _odd_layouts():
    """(name, table edits, whether the byte scan must still answer): the answer must always be the
    full parse's; where the scan cannot be sure it must say so (None) rather than guess."""
    def reorder(rows):
        return [dict(reversed(list(r.items()))) for r in rows]

    def braces(rows):  # braces, quotes and backslashes inside strings
        return [{**r, "filename": 'a{"b}\\c' + r["filename"]} for r in rows]

    def int_flag(rows):
        rows = [dict(r) for r in rows]
        sweep = next(r for r in rows if not r["is_key_frame"])
        sweep["is_key_frame"] = 1  # truthy for the devkit and the full parse
        return rows

    def two_keyframes(rows):
        rows = [dict(r) for r in rows]
        sweep = next(r for r in rows if not r["is_key_frame"] and r["fileformat"] == "pcd")
        sweep["is_key_frame"] = True
        return rows

    same = lambda rows: rows  # noqa: E731
    return [
        ("as written", {}, True),
        ("json.dump indent=4", {"sample_data": (same, {"indent": 4}), "ego_pose": (same, {"indent": 4})}, True),
        ("compact, no spaces", {"sample_data": (same, {"separators": (",", ":")}), "ego_pose": (same, {"separators": (",", ":")})}, True),
        ("reversed key order", {"sample_data": (reorder, {}), "ego_pose": (reorder, {})}, True),
        ("ego poses in reverse table order", {"ego_pose": (lambda rows: rows[::-1], {})}, None),
        ("braces and escapes in strings", {"sample_data": (braces, {})}, None),
        ("is_key_frame: 1", {"sample_data": (int_flag, {})}, False),
        ("a sample with two LIDAR_TOP keyframes", {"sample_data": (two_keyframes, {})}, False),
    ]


@pytest.mark.parametrize("case", _odd_layouts(), ids=lambda c: c[0])
def test_lidar_ego_scan_equals_the_full_parse(world, tmp_path, case):
    """The byte scan of sample_data/ego_pose gives the full parse's ego translations on any layout,
    or declines (and the full parse answers)."""
    import shutil

    from bevsimdet.eval.tables import lidar_ego_translations, read_table, scan_lidar_keyframes, scan_records

    _, edits, scans = case
    folder = tmp_path / VERSION
    shutil.copytree(world / VERSION, folder)
    for name, (edit, dump) in edits.items():
        _rewrite(folder, name, edit, **dump)
    cs, expected = _lidar_cs(folder), len(read_table(folder, "sample"))
    reference = lidar_ego_translations(folder, cs, expected, scan=False)
    assert reference and lidar_ego_translations(folder, cs, expected) == reference
    pose_of = scan_lidar_keyframes(folder / "sample_data.json", cs, expected)
    if scans is not None:
        assert (pose_of is not None) == scans
    if pose_of is not None:
        poses = scan_records(folder / "ego_pose.json", list(dict.fromkeys(pose_of.values())))
        if scans:
            assert poses is not None
        if poses is not None:
            assert {s: poses[p]["translation"] for s, p in pose_of.items()} == reference


def test_scan_records_declines_missing_and_far_out_of_order_tokens(tmp_path):
    import json

    from bevsimdet.eval.tables import scan_records

    rows = [{"token": f"{i:032x}", "translation": [i, 0.5, -1e-3]} for i in range(50)]
    path = tmp_path / "ego_pose.json"
    path.write_text(json.dumps(rows))
    tokens = [r["token"] for r in rows]
    assert scan_records(path, tokens) == {r["token"]: r for r in rows}
    assert scan_records(path, tokens[::-1], budget=2.0) is None  # each token a pass back round
    assert scan_records(path, tokens[::-1], budget=100.0) == {r["token"]: r for r in rows}
    assert scan_records(path, [*tokens[:3], "f" * 32]) is None
    # a token that is also another field's value: the record whose token it is
    path.write_text(json.dumps([{"token": "a" * 32, "other": "b" * 32}, {"token": "b" * 32, "v": 1}]))
    assert scan_records(path, ["b" * 32]) == {"b" * 32: {"token": "b" * 32, "v": 1}}


def _annotation_layouts():
    """(name, sample_annotation edit, dump options, whether the split-only scan must answer)."""
    def reorder(rows):
        return [dict(reversed(list(r.items()))) for r in rows]

    def braces(rows):  # a brace and escaped quotes inside a string value
        return [{**r, "visibility_token": '}{"x\\"' + r["visibility_token"]} for r in rows]

    def key_as_value(rows):  # the key's name as a string value: counted, not a key
        return [{**rows[0], "note": "sample_token"}, *rows[1:]]

    def nested(rows):
        return [{**r, "extra": {"sample_token": r["sample_token"]}} if i == 0 else r for i, r in enumerate(rows)]

    def cross_scene(rows):  # tracks that run into the first record's scene (mini_train): not read for mini_val
        return [{**r, "next": r["next"] or rows[0]["token"]} if i else r for i, r in enumerate(rows)]

    same = lambda rows: rows  # noqa: E731
    return [
        ("as written", same, {}, True),
        ("json.dump indent=4", same, {"indent": 4}, True),
        ("compact, no spaces", same, {"separators": (",", ":")}, True),
        ("reversed key order", reorder, {}, True),
        ("braces and escapes in strings", braces, {}, None),
        ("the key's name as a value", key_as_value, {}, False),
        ("a nested object", nested, {}, None),  # declines where the split holds it
        ("a neighbour outside the split", cross_scene, {}, None),
    ]


@pytest.mark.parametrize("split", ["mini_val", "mini_train"])
@pytest.mark.parametrize("case", _annotation_layouts(), ids=lambda c: c[0])
def test_split_only_annotation_scan_equals_the_full_parse(world, tmp_path, case, split):
    """Reading only the split's annotations gives the full parse's ground truth on any layout, and
    the scan declines (the full parse answers) where it cannot be sure."""
    import shutil

    from bevsimdet.eval.gt import gt_from_tables
    from bevsimdet.eval.tables import read_eval_tables, read_table, scan_annotations

    name, edit, dump, scans = case
    folder = tmp_path / VERSION
    shutil.copytree(world / VERSION, folder)
    _rewrite(folder, "sample_annotation", edit, **dump)
    scenes = set(split_scenes()[split])
    reference = gt_from_tables(read_eval_tables(folder), scenes, VERSION, split)
    assert len(reference.boxes) > 20
    assert_same_gt(gt_from_tables(read_eval_tables(folder, scenes), scenes, VERSION, split), reference)
    assert_same_gt(gt_from_tables(read_eval_tables(folder, scenes, scan=False), scenes, VERSION, split), reference)
    scene_tokens = {s["token"] for s in read_table(folder, "scene") if s["name"] in scenes}
    wanted = {s["token"] for s in read_table(folder, "sample") if s["scene_token"] in scene_tokens}
    records = scan_annotations(folder / "sample_annotation.json", wanted)
    if scans is not None:
        assert (records is not None) == scans, name
    if records is not None:
        full = [a for a in read_table(folder, "sample_annotation") if a["sample_token"] in wanted]
        assert records == full and 0 < len(full) < len(read_table(folder, "sample_annotation"))


def test_parallel_read_equals_the_sequential_one_and_fails_the_same(world, tmp_path):
    """``parallel`` reads the ego poses in a forked child: same ground truth; a broken table raises
    the same one-line error from this process (the child's failure is recomputed here)."""
    import shutil

    from bevsimdet.eval.gt import gt_from_tables
    from bevsimdet.eval.tables import _in_background, read_eval_tables

    scenes = set(split_scenes()["mini_val"])
    seq = gt_from_tables(read_eval_tables(world / VERSION, scenes), scenes, VERSION, "mini_val")
    par = gt_from_tables(read_eval_tables(world / VERSION, scenes, parallel=True), scenes, VERSION, "mini_val")
    assert_same_gt(par, seq)
    folder = tmp_path / VERSION
    shutil.copytree(world / VERSION, folder)
    _rewrite(folder, "sample_data", lambda rows: [{k: v for k, v in r.items() if k != "ego_pose_token"} for r in rows])
    errors = []
    for parallel in (False, True):
        with pytest.raises(DataError) as e:
            read_eval_tables(folder, scenes, parallel=parallel)
        errors.append(str(e.value))
    assert errors[0] == errors[1] and "ego_pose_token" in errors[0] and "\n" not in errors[0]
    # a result that comes back, one that fails in the child and is recomputed, one cancelled
    assert _in_background(lambda x: {"a": [x, 0.1]}, 2.5, enabled=True).result() == {"a": [2.5, 0.1]}
    with pytest.raises(ZeroDivisionError):
        _in_background(lambda: 1 / 0, enabled=True).result()
    job = _in_background(lambda: __import__("time").sleep(30), enabled=True)
    assert job.pid > 0
    job.cancel()
    assert job.pid == 0
