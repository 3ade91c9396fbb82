"""Feature-map heatmaps, the teacher/student comparison figure, GIFs and sample selection."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from bevsimdet.errors import UserError
from bevsimdet.viz.features import available_pairs, channel_norm, render_feature_comparison
from bevsimdet.viz.gif import write_gif
from bevsimdet.viz.visualize import select_indices


def test_channel_norm_is_the_per_cell_l2_norm_scaled_by_its_percentile():
    feat = torch.zeros(2, 3, 4)
    feat[0, 1, 2], feat[1, 1, 2] = 3.0, 4.0  # norm 5 at row 1, column 2
    feat[0, 0, 0] = 1.0
    out = channel_norm(feat, percentile=100.0)
    expected = np.zeros((3, 4))
    expected[1, 2], expected[0, 0] = 1.0, 0.2
    np.testing.assert_allclose(out, expected)
    assert (channel_norm(torch.zeros(4, 2, 2)) == 0).all()  # an all-zero (empty scene) map stays black
    with pytest.raises(ValueError, match="C x Ny x Nx"):
        channel_norm(torch.zeros(2, 2))


def test_feature_comparison_pairs_lidar_with_sim_lidar(tmp_path):
    g = torch.Generator().manual_seed(0)
    teacher = {n: torch.randn(1, 8, 6, 5, generator=g) for n in ("camera_bev", "lidar_bev", "fused_bev", "decoder_bev")}
    student = {n: torch.randn(1, 8, 6, 5, generator=g) for n in ("camera_bev", "sim_lidar_bev", "fused_bev")}
    pairs = available_pairs(teacher, student)
    assert [(t, s) for t, s, _ in pairs] == [("camera_bev", "camera_bev"), ("lidar_bev", "sim_lidar_bev"), ("fused_bev", "fused_bev")]
    out = render_feature_comparison(teacher, student, tmp_path / "f.png", bev_range=(-10, -12, 10, 12), title="t")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (800, 3 * 380)  # three rows of two panels
    with pytest.raises(ValueError, match="no paired BEV features"):
        render_feature_comparison({"lidar_bev": teacher["lidar_bev"]}, {"camera_bev": student["camera_bev"]}, tmp_path / "g.png")


def test_gif_has_one_frame_per_png(tmp_path):
    frames = []
    for k in range(3):
        path = tmp_path / f"{k}.png"
        Image.fromarray(np.full((40, 1200, 3), 80 * k, np.uint8)).save(path)
        frames.append(path)
    out = write_gif(frames, tmp_path / "scene.gif", duration_ms=200)
    with Image.open(out) as im:
        assert im.format == "GIF" and im.n_frames == 3 and im.width == 1000 and im.info["duration"] == 200
    with pytest.raises(ValueError):
        write_gif([], tmp_path / "x.gif")


def _fake_dataset():
    samples = [SimpleNamespace(scene_name=name, timestamp=ts, token=f"t{i}") for i, (name, ts) in enumerate([("a", 2), ("b", 1), ("a", 1), ("b", 0)])]

    class Fake:
        def __init__(self):
            self.samples = samples
            self.infos = SimpleNamespace(split="mini_val")

        def __len__(self):
            return len(samples)

        def index_of(self, token):
            return [s.token for s in samples].index(token)

    return Fake()


def test_select_indices():
    ds = _fake_dataset()
    assert select_indices(ds) == [0]
    assert select_indices(ds, index=-1) == [3]
    assert select_indices(ds, sample="t2") == [2]
    assert select_indices(ds, scene="a") == [2, 0]  # time order
    with pytest.raises(UserError, match="out of range"):
        select_indices(ds, index=4)
    with pytest.raises(UserError, match="scene 'c' is not in split 'mini_val'.*use one of a, b"):
        select_indices(ds, scene="c")
    with pytest.raises(UserError, match="at most one"):
        select_indices(ds, index=0, scene="a")
