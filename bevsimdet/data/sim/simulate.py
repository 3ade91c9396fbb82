"""``simulate``: write a complete synthetic nuScenes-format dataset (tables, images, LiDAR, maps).

The world is complete only once ``sim_manifest.json`` exists (written last, atomically). A run with
the same parameters finds it and reuses the world; an interrupted run leaves ``.sim_in_progress``
behind, which marks the folder as ours to overwrite.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from bevsimdet.data.classes import CLASSES, LIDAR, SIM_CATEGORY
from bevsimdet.data.sim.scene import WORLD_REVISION, WORLD_REVISIONS, long_tail_absent
from bevsimdet.errors import UserError
from bevsimdet.io import atomic_write_json

MANIFEST = "sim_manifest.json"
IN_PROGRESS = ".sim_in_progress"
SCHEMA = 1
VERSIONS = ("v1.0-mini", "v1.0-trainval")
TABLES = ("attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample",
          "sample_annotation", "sample_data", "scene", "sensor", "visibility")
_OWN_DIRS = ("samples", "sweeps", "maps")

_CATEGORY_DESCRIPTIONS = {
    "vehicle.car": "Vehicle designed primarily for personal use, e.g. sedans, hatch-backs, SUVs, vans.",
    "vehicle.truck": "Vehicles primarily designed to haul cargo including pick-ups, lorries, trucks and semi-tractors.",
    "vehicle.construction": "Vehicles primarily designed for construction, e.g. excavators, cranes, dump trucks.",
    "vehicle.bus.rigid": "Rigid bus.",
    "vehicle.trailer": "Any vehicle trailer, for cars, motorcycles, trucks etc.",
    "movable_object.barrier": "Temporary road barrier placed in the scene in order to redirect traffic.",
    "vehicle.motorcycle": "Gasoline or electric powered 2-wheeled vehicle designed to move rapidly.",
    "vehicle.bicycle": "Human or electric powered 2-wheeled vehicle designed to travel at lower speeds.",
    "human.pedestrian.adult": "Adult subcategory.",
    "movable_object.trafficcone": "All types of traffic cones.",
}


def scene_names(version: str, scenes: int, val_scenes: int | None = None) -> list[str]:
    """Scene names taken from the devkit's splits so that its split lists apply to the world.

    v1.0-mini: the 10 mini scenes in name order (the 2 ``mini_val`` scenes fall at positions 2 and 7).
    v1.0-trainval: one ``val`` scene for every four ``train`` scenes; with ``val_scenes``, the first
    ``scenes - val_scenes`` names are ``train`` scenes and the last ``val_scenes`` are ``val`` scenes
    (a held-out split sized on its own, e.g. to hold enough objects of every class).
    """
    from nuscenes.utils import splits

    if version == "v1.0-mini":
        names = sorted(splits.mini_train + splits.mini_val)
        if val_scenes is not None:
            raise UserError("--val-scenes needs --version v1.0-trainval (v1.0-mini has a fixed 8 / 2 split)",
                            fix="add --version v1.0-trainval, or drop --val-scenes")
        if scenes > len(names):
            raise UserError(f"v1.0-mini has only {len(names)} scenes, asked for {scenes}",
                            fix="use --scenes 10 or less, or --version v1.0-trainval")
        return names[:scenes]
    if version == "v1.0-trainval":
        train, val = list(splits.train), list(splits.val)
        if val_scenes is not None:
            if not 0 <= val_scenes <= scenes or scenes - val_scenes > len(train) or val_scenes > len(val):
                raise UserError(f"--val-scenes {val_scenes} of --scenes {scenes}: v1.0-trainval has {len(train)} train "
                                f"and {len(val)} val scene names", fix="use 0 <= --val-scenes <= --scenes within those counts")
            return train[:scenes - val_scenes] + val[:val_scenes]
        out = []
        for i in range(scenes):
            src = val if i % 5 == 1 and val else train
            if not src:
                raise UserError(f"v1.0-trainval has only {len(splits.train) + len(splits.val)} scenes, asked for {scenes}",
                                fix="use fewer --scenes")
            out.append(src.pop(0))
        return out
    raise UserError(f"unknown version {version!r}", fix=f"use one of {', '.join(VERSIONS)}")


def _shared_tables(seed: int, image_scale: float) -> dict[str, list]:
    from bevsimdet.data.sim.rig import build_rig
    from bevsimdet.data.sim.writer import ATTRIBUTES, VISIBILITY, quat, shared_tokens

    rig = build_rig(image_scale)
    tok = shared_tokens(seed, rig)
    sensors, calibs = [], []
    for cam in rig.cameras:
        sensors.append(dict(token=tok[f"sensor/{cam.channel}"], channel=cam.channel, modality="camera"))
        calibs.append(dict(token=tok[f"calibrated_sensor/{cam.channel}"], sensor_token=tok[f"sensor/{cam.channel}"],
                           translation=cam.cam2ego[:3, 3].tolist(), rotation=quat(cam.cam2ego),
                           camera_intrinsic=cam.intrinsics.tolist()))
    sensors.append(dict(token=tok[f"sensor/{LIDAR}"], channel=LIDAR, modality="lidar"))
    calibs.append(dict(token=tok[f"calibrated_sensor/{LIDAR}"], sensor_token=tok[f"sensor/{LIDAR}"],
                       translation=rig.lidar.lidar2ego[:3, 3].tolist(), rotation=quat(rig.lidar.lidar2ego),
                       camera_intrinsic=[]))
    return dict(
        sensor=sensors, calibrated_sensor=calibs,
        category=[dict(token=tok[f"category/{n}"], name=n, description=_CATEGORY_DESCRIPTIONS[n]) for n in SIM_CATEGORY.values()],
        attribute=[dict(token=tok[f"attribute/{n}"], name=n, description=n.replace(".", ": ").replace("_", " "))
                   for n in ATTRIBUTES],
        visibility=[dict(token=t, level=level, description=f"visibility of whole object is between {level[1:].replace('-', ' and ')} %")
                    for t, level, _ in VISIBILITY],
    )


def _params(version: str, scenes: int, samples_per_scene: int, seed: int, image_scale: float, sweeps: int,
            revision: int, val_scenes: int | None = None, val_samples_per_scene: int | None = None,
            long_tail: float = 1.0) -> dict:
    params = dict(version=version, scenes=scenes, samples_per_scene=samples_per_scene, seed=seed,
                  image_scale=float(image_scale), sweeps_per_sample=sweeps, schema=SCHEMA, world_revision=revision)
    if val_scenes is not None:  # only then: the manifests of worlds written before keep matching
        params.update(val_scenes=val_scenes, val_samples_per_scene=val_samples_per_scene)
    if long_tail != 1.0:  # likewise: a full world's manifest is the one it always was
        params.update(long_tail=float(long_tail))
    return params


def world_revision(params: dict) -> int:
    """The world revision a manifest's parameters were written with (1 before revisions were recorded)."""
    return int(params.get("world_revision", 1))


def long_tail(params: dict) -> float:
    """The ``--long-tail`` fraction a manifest's parameters were written with (1: the full world)."""
    return float(params.get("long_tail", 1.0))


def scene_absent(version: str, names: list[str], seed: int, fraction: float) -> list[tuple[str, ...]]:
    """Per scene, the rare classes it lacks: only scenes outside the evaluation split (``mini_val``
    for v1.0-mini, ``val`` for v1.0-trainval) lose any (:func:`scene.long_tail_absent`)."""
    from nuscenes.utils import splits as nsplits

    held_out = set(nsplits.mini_val if version == "v1.0-mini" else nsplits.val)
    absent = long_tail_absent(seed, [n not in held_out for n in names], fraction)
    return [tuple(sorted(a)) for a in absent]


def read_manifest(out_dir: str | os.PathLike) -> dict | None:
    path = Path(out_dir) / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


class WorldMismatchError(UserError):
    """The output folder holds a simulated world made with other parameters."""


def _prepare_target(out: Path, version: str, params: dict, force: bool) -> dict | None:
    """Return the manifest of a reusable world, or clear the target for a new one."""
    manifest = read_manifest(out)
    if manifest is not None and isinstance(manifest.get("params"), dict):
        manifest["params"]["world_revision"] = world_revision(manifest["params"])
    if manifest is not None and manifest.get("params") == params and not force and (out / version / "sample.json").exists():
        return manifest
    ours = manifest is not None or (out / IN_PROGRESS).exists()
    occupied = (out / version).exists() or any((out / d).exists() for d in _OWN_DIRS)
    if occupied and not ours and not force:
        raise UserError(f"{out} already holds data that bevsimdet did not simulate",
                        fix="choose another --out, or pass --force to overwrite it")
    if occupied and manifest is not None and manifest.get("params") != params and not force:
        raise WorldMismatchError(f"{out} holds a simulated world with other parameters ({manifest.get('params')})",
                        fix="pass --force to replace it, or choose another --out")
    for d in (*_OWN_DIRS, version):
        if (out / d).exists():
            shutil.rmtree(out / d)
    (out / MANIFEST).unlink(missing_ok=True)
    return None


def simulate(out_dir: str | os.PathLike, *, version: str = "v1.0-mini", scenes: int = 10, samples_per_scene: int = 20,
             seed: int = 0, image_scale: float = 0.25, sweeps_per_sample: int = 9, progress: bool = True,
             workers: int = 0, force: bool = False, world_revision: int = WORLD_REVISION,
             val_scenes: int | None = None, val_samples_per_scene: int | None = None, long_tail: float = 1.0) -> dict:
    """Write a synthetic nuScenes-format dataset to ``out_dir`` (the dataroot) and return a summary.

    ``val_scenes`` (v1.0-trainval only): of the ``scenes``, this many are ``val`` scenes (the rest
    ``train``), each ``val_samples_per_scene`` keyframes long (default: ``samples_per_scene``);
    a held-out split that holds enough distinct objects of every class costs scenes, not frames.

    ``world_revision`` picks the world's rules (:data:`bevsimdet.data.sim.scene.WORLD_REVISIONS`;
    the newest by default, 1 rebuilds the worlds measured before 2026-11-29).

    ``long_tail`` F in (0, 1]: each training scene holds each rare class (bus, trailer,
    construction_vehicle, motorcycle, bicycle) only with probability F, and at least one training
    scene holds each; evaluation-split scenes keep every class. 1 (the default) is the full world.

    ``workers`` processes simulate scenes in parallel (0: automatic). An existing complete world
    with the same parameters is reused (``summary["reused"]``) unless ``force``.
    Summary keys: ``version, scenes, keyframes, sweeps, annotations, instances, per_class,
    per_split, scenes_per_split, scenes_per_class, seconds, reused, out`` (``scenes_per_class``:
    per split, how many of its scenes hold at least one box of each class).
    """
    from nuscenes.utils import splits as nsplits

    from bevsimdet.data.sim.writer import SceneJob, write_scene

    if scenes < 1 or samples_per_scene < 1 or sweeps_per_sample < 0 or not 0.01 <= image_scale <= 1.0:
        raise UserError("simulate needs scenes >= 1, samples per scene >= 1, sweeps >= 0 and 0.01 <= image scale <= 1",
                        fix="fix the arguments")
    if world_revision not in WORLD_REVISIONS:
        raise UserError(f"unknown world revision {world_revision}",
                        fix=f"use one of {', '.join(map(str, sorted(WORLD_REVISIONS)))}")
    if not 0.0 < long_tail <= 1.0:
        raise UserError(f"--long-tail must be in (0, 1], got {long_tail}",
                        fix="pass a fraction such as 0.25 (1: every class in every scene)")
    if val_scenes is not None and val_samples_per_scene is None:
        val_samples_per_scene = samples_per_scene
    if val_samples_per_scene is not None and (val_scenes is None or val_samples_per_scene < 1):
        raise UserError("--val-samples-per-scene needs --val-scenes and must be >= 1", fix="fix the arguments")
    names = scene_names(version, scenes, val_scenes)
    first_val = scenes - val_scenes if val_scenes is not None else scenes
    samples = [val_samples_per_scene if i >= first_val else samples_per_scene for i in range(scenes)]
    out = Path(out_dir)
    params = _params(version, scenes, samples_per_scene, seed, image_scale, sweeps_per_sample, world_revision,
                     val_scenes, val_samples_per_scene, long_tail)
    t0 = time.perf_counter()
    manifest = _prepare_target(out, version, params, force)
    if manifest is not None:
        summary = dict(manifest["summary"], reused=True, out=str(out))
        if progress:
            print(f"reusing the simulated world in {out} (same parameters; pass --force to rebuild)")
        return summary
    out.mkdir(parents=True, exist_ok=True)
    (out / IN_PROGRESS).write_text("bevsimdet simulate is writing this folder\n")

    absent = scene_absent(version, names, seed, long_tail)
    jobs = [SceneJob(str(out), seed, i, name, samples[i], sweeps_per_sample, image_scale, world_revision, absent[i])
            for i, name in enumerate(names)]
    if workers <= 0:
        workers = 1 if sum(samples) <= 60 else min(scenes, os.cpu_count() or 1)
    workers = max(1, min(workers, scenes))
    bar = None
    from bevsimdet.progress import enabled, progress_bar

    if enabled(progress):
        bar = progress_bar(total=sum(samples), desc="simulate", unit="keyframe")
    results: list[dict | None] = [None] * scenes
    if workers == 1:
        for job in jobs:
            results[job.index] = write_scene(job, progress=(lambda: bar.update(1)) if bar else None)
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(write_scene, job): job.index for job in jobs}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                if bar:
                    bar.update(samples[futures[fut]])
    if bar:
        bar.close()

    tables = _shared_tables(seed, image_scale)
    for name in TABLES:
        tables.setdefault(name, [])
    per_class = {c: 0 for c in CLASSES}
    per_split: dict[str, dict[str, int]] = {}
    scenes_per_split: dict[str, int] = {}
    scenes_per_class: dict[str, dict[str, int]] = {}
    split_of = {n: s for s in ("mini_train", "mini_val", "train", "val") for n in getattr(nsplits, s)
                if s.startswith("mini") == (version == "v1.0-mini")}
    sweeps = 0
    for name, res in zip(names, results):
        assert res is not None
        for table, records in res["tables"].items():
            tables[table] += records
        split_name = split_of.get(name, "other")
        split = per_split.setdefault(split_name, {c: 0 for c in CLASSES})
        holding = scenes_per_class.setdefault(split_name, {c: 0 for c in CLASSES})
        scenes_per_split[split_name] = scenes_per_split.get(split_name, 0) + 1
        for cls, n in res["counts"].items():
            per_class[cls] += n
            split[cls] += n
            holding[cls] += n > 0
        sweeps += res["sweeps"]
    for name in TABLES:
        atomic_write_json(out / version / f"{name}.json", tables[name], indent=0)
    summary = dict(version=version, scenes=scenes, keyframes=sum(samples), sweeps=sweeps,
                   annotations=len(tables["sample_annotation"]), instances=len(tables["instance"]),
                   per_class=per_class, per_split=per_split, scenes_per_split=scenes_per_split,
                   scenes_per_class=scenes_per_class, seconds=round(time.perf_counter() - t0, 2),
                   reused=False, out=str(out))
    atomic_write_json(out / MANIFEST, dict(format="bevsimdet-sim", params=params, summary=summary,
                                           scene_index={name: i for i, name in enumerate(names)}), indent=1)
    (out / IN_PROGRESS).unlink(missing_ok=True)
    return summary
