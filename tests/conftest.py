"""Shared fixtures: a tiny synthetic nuScenes-format world and its info files, made once per run.

The world is written by the project's own simulator (``bevsimdet simulate``) in the real
nuScenes on-disk format, with the 10 v1.0-mini scene names so that the devkit's
``mini_train``/``mini_val`` splits apply. It is small (few samples, low-resolution images)
so the whole suite stays fast on 2 CPU cores.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

TINY_WORLD = dict(version="v1.0-mini", scenes=10, samples_per_scene=3, seed=7, image_scale=0.1)


@pytest.fixture(scope="session", autouse=True)
def _gt_cache_dir(tmp_path_factory) -> Path:
    """Evaluation GT cache files (bevsimdet.eval.cache) go to a temporary folder, not ~/.cache."""
    path = tmp_path_factory.mktemp("gt_cache")
    os.environ["BEVSIMDET_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """Dataroot of a tiny simulated nuScenes-format dataset (v1.0-mini scene names)."""
    from bevsimdet.data.sim import simulate

    root = tmp_path_factory.mktemp("tiny_world")
    simulate(root, progress=False, **TINY_WORLD)
    return root


@pytest.fixture(scope="session")
def tiny_infos(tiny_world, tmp_path_factory) -> dict:
    """Info files of the tiny world: {'mini_train': path, 'mini_val': path}."""
    from bevsimdet.data.infos import create_infos

    out = tmp_path_factory.mktemp("tiny_infos")
    return create_infos(tiny_world, version="v1.0-mini", out_dir=out, workers=1, progress=False)


@pytest.fixture(scope="session")
def tiny_infos_json(tiny_world, tmp_path_factory) -> dict:
    """The same info files in the JSON format, for tests that edit records as JSON."""
    from bevsimdet.data.infos import create_infos

    out = tmp_path_factory.mktemp("tiny_infos_json")
    return create_infos(tiny_world, version="v1.0-mini", out_dir=out, workers=1, progress=False, fmt="json")
