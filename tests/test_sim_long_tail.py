"""``simulate --long-tail F``: rare classes in a fraction of the training scenes, every class in val."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from bevsimdet.data.classes import CLASSES
from bevsimdet.data.sim.scene import RARE_CLASSES, build_scene
from bevsimdet.data.sim.simulate import scene_absent, scene_names
from bevsimdet.data.sim.writer import SceneJob, map_size, scene_duration, sim_scene
from bevsimdet.errors import UserError

MINI = scene_names("v1.0-mini", 10)  # 8 mini_train + 2 mini_val scenes
VAL = {"scene-0103", "scene-0916"}  # the devkit's mini_val


def actors_of(scene) -> list[tuple]:
    return [(a.cls, a.shape, *a.size, *a.xy0, a.z0, a.yaw, *a.vel, a.attribute, *a.colors.ravel()) for a in scene.actors]


def test_full_fraction_is_the_default_world_draw_for_draw():
    absent = scene_absent("v1.0-mini", MINI, 11, 1.0)
    assert absent == [()] * len(MINI)
    for i in (0, 2, 5):
        default = sim_scene(SceneJob("", 11, i, MINI[i], 4, 0, 0.05))
        full = sim_scene(SceneJob("", 11, i, MINI[i], 4, 0, 0.05, absent=absent[i]))
        assert actors_of(default) == actors_of(full)
        assert np.array_equal(default.static_box, full.static_box) and np.array_equal(default.noise_tex, full.noise_tex)


def test_quarter_fraction_makes_rare_classes_rare_in_training_scenes_only():
    absent = scene_absent("v1.0-mini", MINI, 11, 0.25)
    assert absent == scene_absent("v1.0-mini", MINI, 11, 0.25)  # deterministic
    holding: Counter = Counter()
    for i, name in enumerate(MINI):
        scene = build_scene(11, i, scene_duration(3), map_size(3), absent=frozenset(absent[i]))
        classes = {a.cls for a in scene.actors}
        if name in VAL:
            assert absent[i] == () and classes == set(CLASSES)
            continue
        # no object of an absent class at all (not forced, parked, ridden nor in a work zone)
        assert not classes & set(absent[i])
        assert classes == set(CLASSES) - set(absent[i])  # the others are still forced near the ego
        holding.update(classes)
    train = len(MINI) - len(VAL)
    for cls in RARE_CLASSES:
        assert 1 <= holding[cls] <= train // 2, (cls, holding[cls])  # rare, yet in some training scene
    assert sum(holding[c] for c in RARE_CLASSES) <= 0.4 * train * len(RARE_CLASSES)
    for cls in set(CLASSES) - set(RARE_CLASSES):
        assert holding[cls] == train


def test_every_rare_class_gets_a_training_scene_even_at_a_tiny_fraction():
    absent = scene_absent("v1.0-mini", MINI, 3, 1e-6)
    train = [a for a, n in zip(absent, MINI) if n not in VAL]
    for cls in RARE_CLASSES:
        assert sum(cls not in a for a in train) == 1
    assert all(a == () for a, n in zip(absent, MINI) if n in VAL)


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5])
def test_bad_fraction_is_a_user_error(tmp_path, bad):
    from bevsimdet.data.sim import simulate

    with pytest.raises(UserError, match="--long-tail"):
        simulate(tmp_path, progress=False, scenes=1, samples_per_scene=1, long_tail=bad)
    assert not (tmp_path / "v1.0-mini").exists()


def test_manifest_records_long_tail_only_when_not_full():
    from bevsimdet.data.sim.simulate import _params, long_tail

    full = _params("v1.0-mini", 10, 2, 0, 0.05, 0, 2)
    assert "long_tail" not in full and long_tail(full) == 1.0  # old manifests read as the full world
    assert full == _params("v1.0-mini", 10, 2, 0, 0.05, 0, 2, long_tail=1.0)
    assert long_tail(_params("v1.0-mini", 10, 2, 0, 0.05, 0, 2, long_tail=0.25)) == 0.25


def _train_class_sets(root, tmp_path) -> list[frozenset[int]]:
    from bevsimdet.data.dataset import NuScenesDataset
    from bevsimdet.data.infos import create_infos

    infos = create_infos(root, version="v1.0-mini", out_dir=tmp_path / "infos", workers=1, progress=False)
    ds = NuScenesDataset(infos["mini_train"], root, image_size=(32, 64), load_points=False)
    return ds.sample_classes()


@pytest.mark.slow
def test_simulated_long_tail_world_and_cbgs(tmp_path):
    """A 10-scene mini world at F = 0.25: the CLI line, then CBGS raises the rare classes' share
    of the drawn training keyframes, which it cannot do on the full world."""
    from typer.testing import CliRunner

    from bevsimdet.cli import app
    from bevsimdet.data.loader import ClassBalancedSampler
    from bevsimdet.data.sim import read_manifest

    root = tmp_path / "lt"
    res = CliRunner().invoke(app, ["simulate", "--out", str(root), "--scenes", "10", "--samples-per-scene", "2",
                                   "--sweeps", "0", "--image-scale", "0.05", "--seed", "11", "--long-tail", "0.25",
                                   "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert "mini_train: scenes holding each class: car 8/8" in res.output
    assert "mini_val: scenes holding each class: car 2/2" in res.output
    manifest = read_manifest(root)
    assert manifest["params"]["long_tail"] == 0.25
    assert all(v == 2 for v in manifest["summary"]["scenes_per_class"]["mini_val"].values())

    # the probe re-renders a long-tailed training scene as written (it recomputes the absent classes)
    import json

    from PIL import Image

    from bevsimdet.data.sim import render_buffers

    absent = scene_absent("v1.0-mini", MINI, 11, 0.25)
    name = next(n for n, a in zip(MINI, absent) if n not in VAL and len(a) >= 2)
    table = root / "v1.0-mini"
    first = next(sc["first_sample_token"] for sc in json.loads((table / "scene.json").read_text()) if sc["name"] == name)
    cam = next(sd for sd in json.loads((table / "sample_data.json").read_text())
               if sd["sample_token"] == first and sd["filename"].startswith("samples/CAM_FRONT/"))
    rgb = np.asarray(Image.open(root / cam["filename"]), dtype=np.float64)
    assert np.abs(rgb - render_buffers(root, first, "CAM_FRONT").rgb).mean() < 12

    sets = _train_class_sets(root, tmp_path)
    rare = [CLASSES.index(c) for c in RARE_CLASSES]
    order = [i for i, _ in ClassBalancedSampler(sets, seed=0)]

    def shares(idx: list[int]) -> dict[int, float]:  # per class, the fraction of the keyframes holding it
        return {c: sum(c in sets[i] for i in idx) / len(idx) for c in range(len(CLASSES))}

    before, after = shares(list(range(len(sets)))), shares(order)
    common = set(range(len(CLASSES))) - set(rare)
    # every training keyframe holds the common classes (the every-class placement), none holds all rare ones
    assert all(before[c] == after[c] == 1.0 for c in common)
    assert all(before[c] < 0.5 and after[c] > before[c] for c in rare), (before, after)
    # measured (seed 11): the rare classes' mean share goes from 0.225 to 0.316
    assert np.mean([after[c] for c in rare]) > np.mean([before[c] for c in rare]) + 0.05


def test_cli_rejects_long_tail_with_tables_only(tmp_path):
    from typer.testing import CliRunner

    from bevsimdet.cli import app

    # the CLI's entry point turns a UserError into one line; the runner hands back the exception
    res = CliRunner().invoke(app, ["simulate", "--out", str(tmp_path), "--tables-only", "--long-tail", "0.5"])
    assert isinstance(res.exception, UserError) and "--long-tail" in str(res.exception)
    assert not (tmp_path / "v1.0-mini").exists()
    res = CliRunner().invoke(app, ["simulate", "--out", str(tmp_path), "--long-tail", "0", "--scenes", "1"])
    assert isinstance(res.exception, UserError) and "--long-tail must be in (0, 1]" in str(res.exception)
