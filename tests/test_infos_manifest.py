"""Info files of several nuScenes versions in one folder (one manifest per version), and the
test split, which has no annotations: prepare, infer and the submission file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bevsimdet.data.infos import create_infos, load_infos, manifest_path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_one_manifest_per_version(tiny_world, tmp_path):
    paths = create_infos(tiny_world, version="v1.0-mini", out_dir=tmp_path, workers=1, progress=False)
    own = manifest_path(tmp_path, "v1.0-mini")
    assert own.name == "manifest_v1.0-mini.json" and own.is_file() and not (tmp_path / "manifest.json").exists()
    assert json.loads(own.read_text())["files"] == {s: p.name for s, p in paths.items()}
    # what preparing v1.0-test into the same folder leaves: its own manifest and info file
    other = manifest_path(tmp_path, "v1.0-test")
    other.write_text(json.dumps({"fingerprint": {"version": "v1.0-test"}, "files": {"test": "infos_test.json"}}))
    stamps = {p: p.stat().st_mtime_ns for p in paths.values()}
    again = create_infos(tiny_world, version="v1.0-mini", out_dir=tmp_path, workers=1, progress=False)
    assert again == paths and {p: p.stat().st_mtime_ns for p in paths.values()} == stamps  # reused, not rebuilt
    assert json.loads(other.read_text())["fingerprint"] == {"version": "v1.0-test"}  # untouched


def test_world(tiny_world: Path, root: Path, scenes: int = 2) -> Path:
    """``root`` holding the tiny world's files with its tables as ``v1.0-test``: no annotations
    (as the real test download) and ``scenes`` scenes renamed into the devkit's test split."""
    from nuscenes.utils.splits import create_splits_scenes

    root.mkdir()
    for d in ("samples", "sweeps", "maps"):
        os.symlink(tiny_world / d, root / d)
    (root / "v1.0-test").mkdir()
    test_names = create_splits_scenes(verbose=False)["test"]
    for table in (tiny_world / "v1.0-mini").glob("*.json"):
        rows = json.loads(table.read_text())
        if table.stem in ("sample_annotation", "instance"):
            rows = []
        elif table.stem == "scene":
            for r, name in zip(rows, test_names[:scenes]):
                r["name"] = name
        (root / "v1.0-test" / table.name).write_text(json.dumps(rows))
    return root


test_world.__test__ = False  # a helper, not a test


@pytest.mark.slow
def test_test_split_prepare_and_submission(tiny_world, tmp_path):
    from bevsimdet.config import load_config
    from bevsimdet.engine.checkpoint import save_checkpoint
    from bevsimdet.engine.evaluate import infer_results
    from bevsimdet.eval.results import load_results, write_results
    from bevsimdet.infer import results_meta
    from bevsimdet.models.build import build_detector

    root = test_world(tiny_world, tmp_path / "nusc")
    out = root / "bevsimdet_infos"
    test = create_infos(root, version="v1.0-test", out_dir=out, workers=1, progress=False)
    assert list(test) == ["test"] and manifest_path(out, "v1.0-test").is_file()
    infos = load_infos(test["test"])
    assert infos.version == "v1.0-test" and len(infos.samples) == 6 and all(len(s.gt) == 0 for s in infos.samples)

    cfg = load_config(CONFIGS / "demo_camera.yaml", ["model.image.pretrained=null", f"data.dataroot={root}",
                                                      "data.version=v1.0-test", "train.num_workers=0", "train.device=cpu"])
    ckpt = save_checkpoint(tmp_path / "camera.safetensors", model=build_detector(cfg.model))
    results = infer_results(cfg, ckpt, "test", progress=False)
    assert sorted(results) == sorted(s.token for s in infos.samples)  # every test keyframe has an entry
    write_results(tmp_path / "results_test.json", results, results_meta(cfg.model))
    sub = load_results(tmp_path / "results_test.json")
    assert sub["meta"]["use_camera"] is True and sub["meta"]["use_lidar"] is False
    assert all(len(v) <= 500 for v in sub["results"].values())
