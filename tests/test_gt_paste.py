"""GT database (``bevsimdet prepare --gt-database``) and GT-paste (``data.gt_paste``) on the tiny world."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from bevsimdet.data.classes import CLASS_TO_LABEL, CLASSES
from bevsimdet.data.dataset import NuScenesDataset, build_object_paste
from bevsimdet.data.gt_database import (
    INDEX,
    create_gt_database,
    from_box_frame,
    load_gt_database,
    points_in_moving_boxes,
    points_in_moving_boxes_reference,
    to_box_frame,
)
from bevsimdet.data.gt_paste import ObjectPaste, bev_boxes, sweep_indices
from bevsimdet.data.infos import load_infos, save_columnar
from bevsimdet.errors import ConfigError, DataError
from bevsimdet.geometry.bev import bev_iou_reference

SWEEPS = 3  # stored sweeps of the subset (the tiny world stores 9): keeps the build to seconds
ALL = {c: 30 for c in CLASSES}  # fill every class far beyond what fits: collisions decide


@pytest.fixture(scope="module")
def subset(tiny_world, tiny_infos, tmp_path_factory):
    """An info file of the first 8 training samples with 3 stored sweeps, and its GT database."""
    info = load_infos(tiny_infos["mini_train"])
    samples = [dataclasses.replace(s, sweeps=s.sweeps[:SWEEPS]) for s in info.samples[:8]]
    out = tmp_path_factory.mktemp("gt_db")
    path = out / "infos_mini_train.cols"  # the name training looks for (ensure_infos)
    save_columnar(path, info.version, info.split, SWEEPS, samples)
    db_dir = create_gt_database(path, tiny_world, workers=1, progress=False)
    return path, db_dir


def dataset(subset, tiny_world, paste=None, sweeps=2, stride=1):
    return NuScenesDataset(subset[0], tiny_world, image_size=(64, 128), train=True, sweeps=sweeps, sweep_stride=stride, object_paste=paste)


def paste_of(subset, groups=ALL, min_points=None, sweeps=2, stride=1, stop_epoch=None):
    db = load_gt_database(subset[1])
    return ObjectPaste(
        db,
        {CLASS_TO_LABEL[c]: n for c, n in groups.items()},
        {CLASS_TO_LABEL[c]: n for c, n in (min_points or {}).items()},
        sweep_indices(sweeps, stride),
        stop_epoch,
    )


# --------------------------------------------------------------------------------------------
# database


def test_database_holds_each_objects_points_in_its_box_frame(subset, tiny_world):
    """Per sample: every detection-class box with points is in the database, with exactly the
    sample's points inside it (keyframe and all stored sweeps), back in the ego frame."""
    info_path, db_dir = subset
    db = load_gt_database(db_dir)
    infos = load_infos(info_path)
    index = json.loads((db_dir / INDEX).read_text())
    assert index["schema_version"] == 1 and index["max_sweeps"] == SWEEPS and len(index["sample_tokens"]) == 8
    assert sum(index["objects_per_class"].values()) == len(db)
    ds = dataset(subset, tiny_world, sweeps=SWEEPS)
    for si in (0, 5):
        info = infos.samples[si]
        points = ds.load_lidar(info)
        mine = np.flatnonzero(db.sample_index == si)
        keep = [i for i, n in enumerate(info.gt.names) if n in CLASS_TO_LABEL]
        inside = points_in_moving_boxes(points, info.gt.boxes[keep])
        assert len(mine) == int((inside.sum(0) > 0).sum()) > 0
        for k in mine:
            j = int(np.flatnonzero(np.all(info.gt.boxes[keep] == db.boxes[k], axis=1))[0])
            local, sweep = db.points_of(int(k))
            assert len(local) == int(db.counts[k].sum()) == int(inside[:, j].sum())
            back = from_box_frame(local, db.boxes[k])
            want = points[inside[:, j]]
            np.testing.assert_allclose(back[np.lexsort(back.T)], want[np.lexsort(want.T)], atol=2e-4)
            assert set(np.unique(sweep)) <= set(range(SWEEPS + 1))


def test_moving_box_membership_matches_reference_and_frames_invert():
    rng = np.random.default_rng(0)
    boxes = np.concatenate([rng.uniform(-5, 5, (6, 3)), rng.uniform(0.5, 4, (6, 3)), rng.uniform(-3, 3, (6, 1)), rng.uniform(-8, 8, (6, 2))], 1)
    points = np.concatenate([rng.uniform(-7, 7, (400, 3)), rng.uniform(0, 1, (400, 1)), rng.choice([0.0, 0.05, 0.3], (400, 1))], 1).astype(np.float32)
    fast, ref = points_in_moving_boxes(points, boxes), points_in_moving_boxes_reference(points, boxes)
    assert fast.any() and (fast == ref).all()
    for b in boxes:
        local = to_box_frame(points, b)
        np.testing.assert_allclose(from_box_frame(local, b), points, atol=1e-4)
        inside = points_in_moving_boxes(points, b[None])[:, 0]
        assert (np.abs(local[inside, :3]) <= b[[4, 3, 5]] / 2 + 1e-4).all()


def test_reader_rejects_corrupt_truncated_and_foreign_files(subset, tmp_path):
    import shutil

    def broken(edit) -> str:
        d = tmp_path / f"db{len(list(tmp_path.iterdir()))}"
        shutil.copytree(subset[1], d)
        edit(d, next(d.glob("objects-*.safetensors")))
        with pytest.raises(DataError) as e:
            load_gt_database(d)
        msg = str(e.value)
        assert "\n" not in msg and str(d) in msg and "--gt-database" in msg
        return msg

    def truncate(d, f):
        f.write_bytes(f.read_bytes()[:-100])

    def garble_index(d, f):
        (d / INDEX).write_text('{"schema_version": 1, "box_conv')

    def schema(d, f):
        index = json.loads((d / INDEX).read_text())
        (d / INDEX).write_text(json.dumps({**index, "schema_version": 99}))

    def other_build(d, f):
        index = json.loads((d / INDEX).read_text())
        (d / INDEX).write_text(json.dumps({**index, "build_id": "0" * 12}))

    assert "corrupt" in broken(truncate)
    assert "corrupt" in broken(garble_index)
    assert "schema version 99" in broken(schema)
    assert "not the build" in broken(other_build)
    assert "missing" in broken(lambda d, f: f.unlink())
    assert "does not exist" in broken(lambda d, f: (d / INDEX).unlink())


def test_rebuild_is_skipped_when_up_to_date(subset, tiny_world):
    before = sorted(p.name for p in subset[1].iterdir())
    assert create_gt_database(subset[0], tiny_world, workers=1, progress=False) == subset[1]
    assert sorted(p.name for p in subset[1].iterdir()) == before


# --------------------------------------------------------------------------------------------
# pasting


def pasted_sample(subset, tiny_world, paste, index, seed=0):
    ds = dataset(subset, tiny_world)
    info = ds.samples[index]
    points = ds.load_lidar(info)
    boxes, labels = ds.gt_of(info)
    out = paste(points, boxes, labels, info.gt.boxes, np.random.default_rng(seed))
    return info, points, boxes, labels, out


def test_pasted_objects_never_overlap_and_bring_their_points(subset, tiny_world):
    paste = paste_of(subset)
    total = 0
    for index in range(8):
        info, points, boxes, labels, (p2, b2, l2) = pasted_sample(subset, tiny_world, paste, index, seed=index)
        new = b2[len(boxes):]
        total += len(new)
        # the original GT is kept, in order, and pasted boxes overlap neither it (every annotated
        # box, any class) nor each other
        np.testing.assert_array_equal(b2[: len(boxes)], boxes)
        np.testing.assert_array_equal(l2[: len(labels)], labels)
        others = np.concatenate([info.gt.boxes, new])
        reach = np.hypot(others[:, 3], others[:, 4]) / 2  # circumscribed radii: farther pairs cannot meet
        near = np.linalg.norm(new[:, None, :2] - others[None, :, :2], axis=-1) < reach[len(info.gt.boxes) :, None] + reach[None]
        for i, j in zip(*np.nonzero(near)):
            if j != len(info.gt.boxes) + i:  # not the box with itself
                assert bev_iou_reference(bev_boxes(new[i : i + 1]), bev_boxes(others[j : j + 1]))[0, 0] < 1e-4
        # pasted points come first and lie in their (moving) boxes; no old point is left in one
        n_new = len(p2) - int((~points_in_moving_boxes(points, new).any(1)).sum())
        inside_new = points_in_moving_boxes(p2[:n_new], new)
        assert inside_new.any(1).all()
        assert not points_in_moving_boxes(p2[n_new:], new).any()
        np.testing.assert_array_equal(p2[n_new:], points[~points_in_moving_boxes(points, new).any(1)])
        # the pasted objects' points of the loaded sweep indices (keyframe and 2 sweeps) only
        chosen = paste.choose(labels, info.gt.boxes, np.random.default_rng(index))
        assert n_new == int(paste.database.counts[chosen][:, :3].sum())
    assert total >= 8  # the test pastes something


def test_per_class_counts_fill_up_to_the_group(subset, tiny_world):
    groups = {"pedestrian": 6, "motorcycle": 3, "car": 0}
    paste = paste_of(subset, groups)
    pasted = np.zeros(len(CLASSES), int)
    for index in range(8):
        _, _, boxes, labels, (_, b2, l2) = pasted_sample(subset, tiny_world, paste, index, seed=index)
        before, after = np.bincount(labels, minlength=10), np.bincount(l2, minlength=10)
        for c, n in groups.items():
            k = CLASS_TO_LABEL[c]
            assert after[k] - before[k] <= max(0, n - before[k])
        pasted += after - before
    assert pasted[CLASS_TO_LABEL["pedestrian"]] > 0
    assert pasted[[CLASS_TO_LABEL[c] for c in CLASSES if c not in ("pedestrian", "motorcycle")]].sum() == 0


def test_min_points_counts_only_the_loaded_sweeps(subset, tiny_world):
    db = load_gt_database(subset[1])
    used = db.counts[:, [0, 2]].sum(1)  # keyframe + 1 sweep at stride 2
    label = CLASS_TO_LABEL["car"]
    cut = int(np.median(used[db.labels == label]))
    paste = paste_of(subset, {"car": 30}, {"car": cut}, sweeps=1, stride=2)
    assert set(paste.pools[label]) == set(np.flatnonzero((db.labels == label) & (used >= cut)))
    assert 0 < len(paste.pools[label]) < int((db.labels == label).sum())
    chosen = np.concatenate([paste.choose(np.zeros(0, int), np.zeros((0, 9)), np.random.default_rng(s)) for s in range(5)])
    assert len(chosen) and (used[chosen] >= cut).all()


def test_paste_stops_on_time_and_leaves_other_augmentations_alone(subset, tiny_world):
    plain = dataset(subset, tiny_world)
    pasting = dataset(subset, tiny_world, paste_of(subset, stop_epoch=2))
    for index in (0, 3):
        for epoch in (0, 1, 2, 5):
            a, b = plain[(index, (7, epoch))], pasting[(index, (7, epoch))]
            assert torch.equal(a.images, b.images) and torch.equal(a.bev_aug, b.bev_aug)
            if epoch < 2:
                assert len(b.gt_labels) > len(a.gt_labels)
            else:
                assert torch.equal(a.points, b.points) and torch.equal(a.gt_boxes, b.gt_boxes)


def test_paste_is_deterministic_in_seed_epoch_index(subset, tiny_world):
    ds = dataset(subset, tiny_world, paste_of(subset))
    a, b = ds[(2, (3, 1))], ds[(2, (3, 1))]
    assert torch.equal(a.points, b.points) and torch.equal(a.gt_boxes, b.gt_boxes)
    others = [ds[(2, (3, e))].gt_boxes for e in (2, 3, 4)]
    assert any(o.shape != a.gt_boxes.shape or not torch.equal(o, a.gt_boxes) for o in others)


def test_config_builds_the_paste_and_rejects_mistakes(subset, tiny_world):
    from bevsimdet.config import load_config

    base = [f"data.dataroot={tiny_world}", f"data.info_dir={subset[0].parent}", "data.sweeps=2", "data.gt_paste.enabled=true"]
    paste = build_object_paste(load_config("configs/demo_lidar.yaml", base).data, progress=False)
    assert paste.database.path == subset[1] and list(paste.sample_groups)[:2] == [0, 1]
    for bad, words in (
        ("data.gt_paste.sample_groups={lorry: 2}", "not a detection class"),
        ("data.gt_paste.min_points={car: 0}", "must be >= 1"),
        ("data.gt_paste.stop_epoch=-1", "stop_epoch"),
    ):
        with pytest.raises(ConfigError, match=words):
            build_object_paste(load_config("configs/demo_lidar.yaml", base + [bad]).data, progress=False)
    with pytest.raises(DataError, match="stores 3 sweeps"):
        build_object_paste(load_config("configs/demo_lidar.yaml", base + ["data.sweeps=2", "data.sweep_stride=2"]).data, progress=False)


def test_paste_in_a_loader_worker_matches_the_main_process(subset, tiny_world):
    """A forked loader worker reopens the database's data file itself and pastes the same."""
    from bevsimdet.config import load_config
    from bevsimdet.data.dataset import build_dataset
    from bevsimdet.data.loader import SeededSampler, build_dataloader

    sets = [f"data.dataroot={tiny_world}", f"data.info_dir={subset[0].parent}", "data.sweeps=2", "data.image_size=[64,128]"]
    ds = build_dataset(load_config("configs/demo_lidar_paste.yaml", sets).data, "mini_train", train=True)
    plain = build_dataset(load_config("configs/demo_lidar.yaml", sets).data, "mini_train", train=True)
    assert ds.object_paste is not None and ds.object_paste.stop_epoch == 4 and plain.object_paste is None
    ds.object_paste.database.points_of(0)  # the main process opens the file before the fork
    batch = next(iter(build_dataloader(ds, 2, shuffle=True, seed=5, num_workers=1)))
    keys = list(SeededSampler(len(ds), shuffle=True, seed=5))[:2]
    for got, key in zip(batch.gt_boxes, keys):
        assert torch.equal(got, ds[key].gt_boxes)
    assert sum(len(b) for b in batch.gt_boxes) > sum(len(plain[key].gt_boxes) for key in keys)


@pytest.mark.parametrize("config", ["configs/demo_camera.yaml", "configs/demo_student.yaml"])
def test_camera_and_student_models_refuse_gt_paste(config, tmp_path):
    from bevsimdet.config import load_config
    from bevsimdet.engine.train import run_training

    cfg = load_config(config, ["data.gt_paste.enabled=true"])
    with pytest.raises(ConfigError, match="LiDAR and fusion models"):
        run_training(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_prepare_gt_database_cli(tiny_world, tmp_path):
    from typer.testing import CliRunner

    from bevsimdet.cli import app

    args = ["prepare", "--dataroot", str(tiny_world), "--out", str(tmp_path), "--max-sweeps", "1", "--workers", "2", "--gt-database", "--no-progress"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    db = load_gt_database(tmp_path / "gt_database_mini_train")
    assert db.split == "mini_train" and db.max_sweeps == 1 and len(db) > 100
    assert "GT database of mini_train" in res.output and "construction_vehicle" in res.output
