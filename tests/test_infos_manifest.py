"""Info files of several nuScenes versions in one folder: one manifest per version."""

from __future__ import annotations

import json

from bevsimdet.data.infos import create_infos, manifest_path


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
