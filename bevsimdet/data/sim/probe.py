"""Re-render what the simulator saw: depth and instance buffers of one camera of one sample.

The world is a pure function of (seed, scene index, time), so any camera of a written dataset can
be rendered again from its ``sim_manifest.json`` without storing buffers on disk.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bevsimdet.errors import DataError


@dataclass
class CameraBuffers:
    """``rgb`` H x W x 3 uint8 (before JPEG), ``depth`` H x W camera z in metres (inf: sky),
    ``instance`` H x W index into ``instance_tokens`` (-1: ground or clutter)."""

    rgb: np.ndarray
    depth: np.ndarray
    instance: np.ndarray
    instance_tokens: list[str]


def render_buffers(dataroot: str | os.PathLike, sample_token: str, channel: str) -> CameraBuffers:
    """Render camera ``channel`` of keyframe ``sample_token`` of the simulated world in ``dataroot``."""
    from bevsimdet.data.sim.render import render_camera, world_at
    from bevsimdet.data.sim.rig import camera_spec
    from bevsimdet.data.sim.simulate import MANIFEST, long_tail, read_manifest, scene_absent, world_revision
    from bevsimdet.data.sim.writer import KEYFRAME_DT, SceneJob, sim_scene, token

    root = Path(dataroot)
    manifest = read_manifest(root)
    if manifest is None:
        raise DataError(f"{root / MANIFEST} is missing or unreadable", fix="re-run `bevsimdet simulate` into this folder")
    p = manifest["params"]
    table = root / p["version"]
    samples = {s["token"]: s for s in json.loads((table / "sample.json").read_text())}
    scenes = {s["token"]: s for s in json.loads((table / "scene.json").read_text())}
    if sample_token not in samples:
        raise DataError(f"sample {sample_token} is not in {table / 'sample.json'}", fix="pass a keyframe token of this world")
    k, prev = 0, samples[sample_token]["prev"]
    while prev:
        k, prev = k + 1, samples[prev]["prev"]
    name = scenes[samples[sample_token]["scene_token"]]["name"]
    idx = manifest["scene_index"][name]
    names = sorted(manifest["scene_index"], key=manifest["scene_index"].get)
    absent = scene_absent(p["version"], names, p["seed"], long_tail(p))[idx]
    job = SceneJob(str(root), p["seed"], idx, name, p["samples_per_scene"], p["sweeps_per_sample"], p["image_scale"],
                   world_revision(p), absent)
    scene = sim_scene(job)
    t = k * KEYFRAME_DT
    img = render_camera(scene, world_at(scene, t), camera_spec(channel, p["image_scale"]), scene.ego_pose(t),
                        np.random.default_rng(0))
    tokens = [token(p["seed"], "instance", idx, a) for a in range(len(scene.actors))]
    return CameraBuffers(img.rgb, img.depth, img.instance, tokens)
