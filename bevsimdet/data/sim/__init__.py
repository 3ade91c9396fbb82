"""The synthetic nuScenes-format world (``bevsimdet simulate``); see docs/sim.md."""

from bevsimdet.data.sim.probe import CameraBuffers, render_buffers
from bevsimdet.data.sim.simulate import read_manifest, scene_names, simulate

__all__ = ["simulate", "render_buffers", "CameraBuffers", "read_manifest", "scene_names"]
