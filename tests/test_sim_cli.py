"""Determinism of the simulator and the ``bevsimdet simulate`` command."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

SMALL = dict(version="v1.0-mini", scenes=2, samples_per_scene=2, seed=11, image_scale=0.05, sweeps_per_sample=1)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "sim_manifest.json"}


def test_same_seed_same_dataset(tmp_path):
    from bevsimdet.data.sim import simulate

    a = simulate(tmp_path / "a", progress=False, **SMALL)
    b = simulate(tmp_path / "b", progress=False, workers=2, **SMALL)
    fa, fb = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert fa.keys() == fb.keys() and all(fa[k] == fb[k] for k in fa)
    assert a["per_class"] == b["per_class"] and not a["reused"]
    c = simulate(tmp_path / "c", progress=False, **dict(SMALL, seed=12))
    fc = _files(tmp_path / "c")
    assert fc["v1.0-mini/sample_annotation.json"] != fa["v1.0-mini/sample_annotation.json"]
    assert c["keyframes"] == 4


def test_cli_help_and_tiny_run(tmp_path):
    from bevsimdet.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["simulate", "--help"])
    assert res.exit_code == 0 and "--samples-per-scene" in res.output and "--force" in res.output
    args = ["simulate", "--out", str(tmp_path / "w"), "--scenes", "1", "--samples-per-scene", "1", "--sweeps", "0",
            "--image-scale", "0.05", "--seed", "3", "--workers", "1"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "wrote 1 scenes" in res.output and (tmp_path / "w" / "sim_manifest.json").exists()
    assert len(list((tmp_path / "w" / "samples" / "CAM_FRONT").glob("*.jpg"))) == 1
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "reusing" in res.output
    res = runner.invoke(app, [*args[:-4], "--seed", "4", "--workers", "1"])
    assert res.exit_code != 0 and "--force" in str(res.exception)
    res = runner.invoke(app, [*args[:-4], "--seed", "4", "--workers", "1", "--force"])
    assert res.exit_code == 0 and "wrote 1 scenes" in res.output


def test_refuses_to_overwrite_foreign_data(tmp_path):
    import pytest

    from bevsimdet.data.sim import simulate
    from bevsimdet.errors import UserError

    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "keep.txt").write_text("not ours")
    with pytest.raises(UserError, match="did not simulate"):
        simulate(tmp_path, progress=False, **dict(SMALL, scenes=1, samples_per_scene=1))
    assert (tmp_path / "samples" / "keep.txt").exists()


def test_world_revision_is_recorded_and_old_manifests_read_as_revision_1(tmp_path):
    import json

    import pytest

    from bevsimdet.cli import app
    from bevsimdet.data.sim import WorldMismatchError, read_manifest, simulate
    from bevsimdet.errors import UserError

    tiny = dict(SMALL, scenes=1, samples_per_scene=1, sweeps_per_sample=0)
    simulate(tmp_path / "w", progress=False, world_revision=1, **tiny)
    manifest = read_manifest(tmp_path / "w")
    assert manifest["params"]["world_revision"] == 1
    # a world written before revisions were recorded has no key: it is revision 1
    del manifest["params"]["world_revision"]
    (tmp_path / "w" / "sim_manifest.json").write_text(json.dumps(manifest))
    assert simulate(tmp_path / "w", progress=False, world_revision=1, **tiny)["reused"]
    with pytest.raises(WorldMismatchError):
        simulate(tmp_path / "w", progress=False, **tiny)  # the default is the newest revision
    with pytest.raises(UserError, match="unknown world revision"):
        simulate(tmp_path / "x", progress=False, world_revision=7, **tiny)
    res = CliRunner().invoke(app, ["simulate", "--out", str(tmp_path / "w"), "--scenes", "1", "--samples-per-scene", "1",
                                   "--sweeps", "0", "--image-scale", "0.05", "--seed", "11", "--world-revision", "2", "--force"])
    assert res.exit_code == 0, res.output
    assert read_manifest(tmp_path / "w")["params"]["world_revision"] == 2
