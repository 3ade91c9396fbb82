"""The synthetic nuScenes-format world (``bevsimdet simulate``); see docs/sim.md."""

from bevsimdet.data.sim.probe import CameraBuffers, render_buffers
from bevsimdet.data.sim.simulate import WorldMismatchError, read_manifest, scene_names, simulate

__all__ = ["simulate", "WorldMismatchError", "render_buffers", "CameraBuffers", "read_manifest", "scene_names"]
