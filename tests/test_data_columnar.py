"""Columnar info files: every sample equals the JSON record (the reference), bad files are one-line
errors, and loader workers read the shared memory map."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bevsimdet.data.classes import CLASSES
from bevsimdet.data.columnar import read_columns, write_columns
from bevsimdet.data.dataset import NuScenesDataset
from bevsimdet.data.infos import ColumnarInfos, InfoFile, SampleView, create_infos, load_infos
from bevsimdet.errors import DataError


@pytest.fixture(scope="module")
def both(tiny_world, tmp_path_factory) -> dict:
    """{'json': {split: path}, 'columnar': {split: path}} of the tiny simulated world."""
    out = tmp_path_factory.mktemp("both")
    return {fmt: create_infos(tiny_world, "v1.0-mini", out_dir=out / fmt, workers=1, progress=False, fmt=fmt) for fmt in ("json", "columnar")}


def assert_same_sample(a, b) -> None:
    """Every field of two SampleInfo records equal (arrays exactly, with their dtypes)."""
    for key in ("token", "scene_token", "scene_name", "timestamp", "lidar_path", "lidar_timestamp"):
        assert getattr(a, key) == getattr(b, key), key
    for key in ("lidar2ego", "ego2global"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert list(a.cams) == list(b.cams)
    for name in a.cams:
        ca, cb = a.cams[name], b.cams[name]
        assert (ca.path, ca.timestamp) == (cb.path, cb.timestamp)
        for key in ("intrinsics", "sensor2ego", "ego2global", "cam2ego"):
            np.testing.assert_array_equal(getattr(ca, key), getattr(cb, key))
    assert len(a.sweeps) == len(b.sweeps)
    for wa, wb in zip(a.sweeps, b.sweeps):
        assert (wa.path, wa.timestamp, wa.time_lag) == (wb.path, wb.timestamp, wb.time_lag)
        np.testing.assert_array_equal(wa.sensor2ego, wb.sensor2ego)
    for key in ("names", "categories", "attributes", "instance_tokens", "tokens"):
        assert getattr(a.gt, key) == getattr(b.gt, key), key
    for key in ("boxes", "num_lidar_pts", "num_radar_pts", "visibility"):
        x, y = getattr(a.gt, key), getattr(b.gt, key)
        assert x.dtype == y.dtype and x.shape == y.shape, key
        np.testing.assert_array_equal(x, y)


def test_columnar_samples_equal_json_records(both):
    for split in ("mini_train", "mini_val"):
        ref, cols = load_infos(both["json"][split]), load_infos(both["columnar"][split])
        assert isinstance(ref, InfoFile) and isinstance(cols, ColumnarInfos) and isinstance(cols.samples, SampleView)
        assert (cols.version, cols.split, cols.max_sweeps) == (ref.version, ref.split, ref.max_sweeps)
        assert len(cols) == len(ref) > 0 and cols.tokens == ref.tokens
        assert cols.num_scenes == ref.num_scenes and cols.num_boxes == ref.num_boxes > 0
        assert any(s.sweeps for s in ref.samples) and any(len(s.gt) for s in ref.samples)
        for a, b in zip(ref.samples, cols.samples):
            assert_same_sample(a, b)
        np.testing.assert_array_equal(cols.gt_class_counts(CLASSES), ref.gt_class_counts(CLASSES))
        np.testing.assert_array_equal(cols.gt_class_counts(CLASSES, valid_only=True), ref.gt_class_counts(CLASSES, valid_only=True))
        assert cols.gt_class_counts(CLASSES).sum() == sum(n in CLASSES for s in ref.samples for n in s.gt.names)


def test_columnar_round_trips_handmade_edge_cases(tmp_path, both):
    """Samples without sweeps or boxes, and a file of no samples at all."""
    from bevsimdet.data.infos import save_columnar

    ref = load_infos(both["json"]["mini_val"])
    samples = list(ref.samples)
    samples[0].sweeps, samples[0].gt = [], type(samples[0].gt)(np.zeros((0, 9)))
    save_columnar(tmp_path / "a.cols", ref.version, ref.split, ref.max_sweeps, samples)
    cols = load_infos(tmp_path / "a.cols")
    for a, b in zip(samples, cols.samples):
        assert_same_sample(a, b)
    save_columnar(tmp_path / "empty.cols", ref.version, ref.split, 0, [])
    empty = load_infos(tmp_path / "empty.cols")
    assert len(empty) == 0 and list(empty.samples) == [] and empty.gt_class_counts(CLASSES).shape == (0, len(CLASSES))


def test_sample_view_indexing_and_subsets(both):
    cols = load_infos(both["columnar"]["mini_train"])
    view = cols.samples
    assert view[-1].token == cols.tokens[-1] and [s.token for s in view[1:4]] == cols.tokens[1:4]
    sub = view.subset([3, 0])
    assert [s.token for s in sub] == [cols.tokens[3], cols.tokens[0]] and sub.tokens == [cols.tokens[3], cols.tokens[0]]
    assert sub.subset([1])[0].token == cols.tokens[0]
    with pytest.raises(IndexError):
        view[len(view)]
    # arrays are read-only views of the mapped file, not copies
    assert not view[0].ego2global.flags.writeable


def _rewrite(src, dst, meta_edit=None, array_edit=None):
    meta, arrays = read_columns(src)
    arrays = {k: np.array(v) for k, v in arrays.items()}
    if meta_edit:
        meta_edit(meta)
    if array_edit:
        array_edit(arrays)
    write_columns(dst, meta, arrays)
    return dst


def _nan_sweep(a):
    a["sweep_sensor2ego"][1, 0, 0] = np.nan


BAD = {  # edit -> what the one-line message must say
    "schema version 0": dict(meta_edit=lambda m: m.update(schema_version=0)),
    "box convention": dict(meta_edit=lambda m: m.update(box_convention="lidar-bottom")),
    "column gt_boxes is missing": dict(array_edit=lambda a: a.pop("gt_boxes")),
    "column sweep_start must rise": dict(array_edit=lambda a: a["sweep_start"].__setitem__(1, -1)),
    "column cam2ego must be <f8 of shape": dict(array_edit=lambda a: a.update(cam2ego=a["cam2ego"][:, :5])),
    "column gt_name has codes outside": dict(array_edit=lambda a: a["gt_name"].__setitem__(0, 99)),
    "column token is not UTF-8": dict(array_edit=lambda a: a["token.bytes"].__setitem__(0, 0xFF)),
    "more than the file's max_sweeps": dict(meta_edit=lambda m: m.update(max_sweeps=1)),
    "sample 0: sweeps[1].sensor2ego must be a finite rigid": dict(array_edit=_nan_sweep),
    "cams.CAM_FRONT_RIGHT.intrinsics must be a finite 3 x 3": dict(array_edit=lambda a: a["cam_intrinsics"].__setitem__((2, 1, 0, 0), -5)),
    "gt.boxes[0] must hold finite": dict(array_edit=lambda a: a["gt_boxes"].__setitem__((0, 3), np.inf)),
    "token repeats an earlier sample's token": dict(array_edit=lambda a: a["token.bytes"].__setitem__(
        slice(int(a["token.offsets"][1]), int(a["token.offsets"][2])), a["token.bytes"][: int(a["token.offsets"][1])])),
}


# found by load_infos itself (structure); the others by verify() and, for values, when the
# sample is built
AT_LOAD = [k for k in BAD if "column" in k and "UTF-8" not in k] + ["schema version 0", "box convention", "more than the file's max_sweeps"]
PER_SAMPLE = {"sample 0: sweeps[1].sensor2ego must be a finite rigid": 0, "cams.CAM_FRONT_RIGHT.intrinsics must be a finite 3 x 3": 2,
              "gt.boxes[0] must hold finite": None, "column token is not UTF-8": 0}


def _one_line(e, bad, needle) -> None:
    msg = str(e.value)
    assert needle in msg and str(bad) in msg and "prepare" in msg and "--force" in msg and "\n" not in msg


@pytest.mark.parametrize("needle", BAD)
def test_bad_columnar_files_are_one_line_errors(tmp_path, both, needle):
    src = both["columnar"]["mini_train"]
    assert len(load_infos(src).samples[0].sweeps) > 1
    bad = _rewrite(src, tmp_path / "bad.cols", **BAD[needle])
    if needle in AT_LOAD:
        with pytest.raises(DataError) as e:
            load_infos(bad)
        return _one_line(e, bad, needle)
    info = load_infos(bad)  # opening reads no values
    with pytest.raises(DataError) as e:
        info.verify()
    _one_line(e, bad, needle)
    with pytest.raises(DataError) as e:
        load_infos(bad, verify=True)
    _one_line(e, bad, needle)
    if needle in PER_SAMPLE:  # building the sample checks its values too
        i = PER_SAMPLE[needle]
        if i is None:
            i = int(np.searchsorted(info.arrays["gt_start"], 0, side="right") - 1)
        with pytest.raises(DataError) as e:
            info.samples[i]
        _one_line(e, bad, "a path or token is not UTF-8" if "UTF-8" in needle else needle.split(": ")[-1])
        assert f"sample {i}" in str(e.value)


def test_truncated_or_foreign_columnar_files(tmp_path, both):
    raw = both["columnar"]["mini_val"].read_bytes()
    for cut, needle in ((len(raw) - 100, "runs past the end"), (12, "corrupt"), (40, "runs past the end")):
        path = tmp_path / f"cut{cut}.cols"
        path.write_bytes(raw[:cut])
        with pytest.raises(DataError, match=needle):
            load_infos(path)
    write_columns(tmp_path / "other.cols", {"format": "something else"}, {})
    with pytest.raises(DataError, match="not a bevsimdet info file"):
        load_infos(tmp_path / "other.cols")


def test_json_infos_still_load_and_prepare_writes_columnar(both, tiny_infos):
    assert all(p.suffix == ".cols" for p in tiny_infos.values())
    assert json.loads(both["json"]["mini_val"].read_text())["samples"]  # the old format is still plain JSON


def test_dataset_over_columnar_infos_matches_json(both, tiny_world):
    """The same items from both formats, in the main process and through forked loader workers."""
    from bevsimdet.data.loader import build_dataloader

    kw = dict(image_size=(32, 64), sweeps=2, point_cloud_range=None)
    ref = NuScenesDataset(load_infos(both["json"]["mini_val"]), tiny_world, **kw)
    cols = NuScenesDataset(both["columnar"]["mini_val"], tiny_world, skip_bad_samples=True, **kw)
    assert cols.sample_tokens == ref.sample_tokens and cols.index_of(ref.sample_tokens[-1]) == len(ref) - 1
    a, b = ref[1], cols[1]
    for key in ("images", "intrinsics", "cam2ego", "points", "gt_boxes", "gt_labels"):
        assert torch_equal(getattr(a, key), getattr(b, key)), key
    for key in ("sample_token", "scene_token", "timestamp", "image_paths", "lidar_path"):
        assert getattr(a.meta, key) == getattr(b.meta, key), key
    np.testing.assert_array_equal(a.meta.ego2global, b.meta.ego2global)
    loader = build_dataloader(cols, batch_size=2, shuffle=False, seed=0, num_workers=2)
    tokens = [m.sample_token for batch in loader for m in batch.meta]
    assert tokens == ref.sample_tokens


def torch_equal(x, y) -> bool:
    import torch

    return bool(torch.equal(x, y))


def test_tables_only_world_has_real_table_proportions_and_prepares(tmp_path):
    """write_tables(sensor_tables=True): 76 sample_data and ego_pose rows a keyframe, chained per
    channel, and `prepare` builds infos from the tables alone (no sensor file exists)."""
    from bevsimdet.eval import synthetic
    from bevsimdet.eval.tables import split_scenes

    names = split_scenes()
    scenes = {names["train"][0]: 3, names["val"][0]: 2}
    counts = synthetic.write_tables(tmp_path, "v1.0-trainval", scenes, seed=1, actors_per_scene=10, sweeps=9,
                                    sensor_tables=True, camera_sweeps=5, radar_sweeps=5)
    assert counts["sample_data"] == 76 * counts["samples"]
    rows = json.loads((tmp_path / "v1.0-trainval" / "ego_pose.json").read_text())
    assert len(rows) == counts["sample_data"]
    paths = create_infos(tmp_path, "v1.0-trainval", out_dir=tmp_path / "infos", workers=1, progress=False)
    train = load_infos(paths["train"], verify=True)
    assert len(train) == 3 and not list(tmp_path.glob("samples"))  # no sensor file was written
    s = train.samples[1]
    assert len(s.sweeps) == 9 and s.sweeps[0].path.startswith("sweeps/LIDAR_TOP/") and s.sweeps[0].time_lag == 0.05
    assert s.cams["CAM_FRONT"].path.startswith("samples/CAM_FRONT/") and s.cams["CAM_FRONT"].intrinsics[0, 0] > 0
    # newest first, 20 Hz, all after the previous keyframe (0.5 s earlier)
    assert [w.timestamp for w in s.sweeps] == [s.lidar_timestamp - 50_000 * j for j in range(1, 10)]
    assert min(w.timestamp for w in s.sweeps) > train.samples[0].lidar_timestamp


def test_simulate_tables_only_cli(tmp_path):
    from typer.testing import CliRunner

    from bevsimdet.cli import app

    args = ["simulate", "--out", str(tmp_path), "--version", "v1.0-trainval", "--scenes", "5", "--samples-per-scene", "2",
            "--tables-only"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "5 scenes, 10 keyframes, 760 sample_data rows" in res.output and not (tmp_path / "samples").exists()
    res = CliRunner().invoke(app, args)
    assert res.exit_code != 0 and "--force" in str(res.exception) and "\n" not in str(res.exception)
    assert CliRunner().invoke(app, [*args, "--force"]).exit_code == 0
    paths = create_infos(tmp_path, "v1.0-trainval", out_dir=tmp_path / "infos", workers=1, progress=False)
    assert (len(load_infos(paths["train"])), len(load_infos(paths["val"]))) == (8, 2)  # 1 val scene in 5
    prep = ["prepare", "--dataroot", str(tmp_path), "--version", "v1.0-trainval", "--out", str(tmp_path / "j"), "--workers", "1"]
    res = CliRunner().invoke(app, [*prep, "--format", "json"])
    assert res.exit_code == 0, res.output
    assert isinstance(load_infos(tmp_path / "j" / "infos_val.json"), InfoFile)
    res = CliRunner().invoke(app, [*prep, "--format", "parquet"])
    assert res.exit_code != 0 and "unknown info file format 'parquet'" in str(res.exception)


def test_tables_only_placeholder_files_pass_the_file_checks(tmp_path):
    """`simulate --tables-only --placeholder-files`: every sample_data row has a file, hard-linked
    from one written file per kind, that passes the readers' integrity checks; a second run with the
    tables present only adds what is missing."""
    import os

    from typer.testing import CliRunner

    from bevsimdet.cli import app
    from bevsimdet.data.files import read_image, read_points

    args = ["simulate", "--out", str(tmp_path), "--version", "v1.0-trainval", "--scenes", "2", "--samples-per-scene", "2",
            "--tables-only", "--placeholder-files", "--no-progress"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = json.loads((tmp_path / "v1.0-trainval" / "sample_data.json").read_text())
    assert "placeholder files: 304 hard links and 0 copies of 3 files (0 files already there)" in res.output
    inodes = {}
    for row in rows:
        path = tmp_path / row["filename"]
        inodes.setdefault(path.suffix, set()).add(os.stat(path).st_ino)
    assert {k: len(v) for k, v in inodes.items()} == {".jpg": 1, ".bin": 1, ".pcd": 1}
    cam = next(r for r in rows if r["filename"].endswith(".jpg"))
    assert read_image(tmp_path / cam["filename"], size=(cam["height"], cam["width"])).shape == (900, 1600, 3)
    points = read_points(tmp_path / next(r for r in rows if r["filename"].endswith(".pcd.bin"))["filename"], 5)
    assert points.shape == (2048, 5) and np.isfinite(points).all() and 4.99 < np.hypot(points[:, 0], points[:, 1]).min()
    (tmp_path / rows[0]["filename"]).unlink()
    res = CliRunner().invoke(app, args)  # tables kept, one file restored
    assert res.exit_code == 0 and "1 hard links and 0 copies of 1 files (303 files already there)" in res.output, res.output
    res = CliRunner().invoke(app, ["simulate", "--out", str(tmp_path / "x"), "--placeholder-files"])
    assert res.exit_code != 0 and "--tables-only" in str(res.exception)


def test_placeholder_link_limit_falls_back_to_a_fresh_file(tmp_path, monkeypatch):
    """Past a file system's link limit (EMLINK) a new source file is written and linked; where
    links fail otherwise (EXDEV, EPERM) the file is copied."""
    import errno
    import os

    from bevsimdet.data.sim import placeholders
    from bevsimdet.eval import synthetic
    from bevsimdet.eval.tables import split_scenes

    synthetic.write_tables(tmp_path, "v1.0-trainval", {split_scenes()["val"][0]: 1}, seed=1, actors_per_scene=2, sweeps=1,
                           sensor_tables=True, camera_sweeps=0, radar_sweeps=0)
    real_link, calls = os.link, []

    def link(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise OSError(errno.EMLINK, "Too many links")
        if len(calls) == 4:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_link(src, dst)

    monkeypatch.setattr(placeholders.os, "link", link)
    c = placeholders.write_placeholder_files(tmp_path, "v1.0-trainval", progress=False)
    rows = json.loads((tmp_path / "v1.0-trainval" / "sample_data.json").read_text())
    assert c["links"] + c["copies"] == len(rows) and c["copies"] == 1 and c["sources"] == 3  # lidar, camera, camera again
    assert all((tmp_path / r["filename"]).stat().st_size > 0 for r in rows)
