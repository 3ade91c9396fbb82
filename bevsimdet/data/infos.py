"""Info files: everything the dataset needs per sample, extracted once from the nuScenes tables.

This plays the role of mmdet3d's ``nuscenes_infos_{train,val}.pkl`` in a safe, versioned format:
JSON (optionally gzipped), no pickle. The file carries :data:`SCHEMA_VERSION` and
:data:`BOX_CONVENTION`; :func:`load_infos` refuses files whose stamps differ. Paths are relative
to the dataroot. All transforms are 4 x 4 row-major lists; every geometric quantity of a sample
is expressed in (or mapped into) its keyframe ego frame (the LIDAR_TOP ego pose), see
:mod:`bevsimdet.data.batch`.

Layout of one sample record (``samples[i]``)::

    token, scene_token, scene_name, timestamp (us)
    lidar: {path, timestamp, sensor2ego, ego2global}         # LIDAR_TOP keyframe
    cams:  {CAM_*: {path, timestamp, intrinsics (3 x 3), sensor2ego, ego2global,
                    cam2ego}}                               # cam2ego: camera -> keyframe ego
    sweeps: [{path, timestamp, time_lag (s), sensor2ego}]   # newest first; sensor -> keyframe ego
    gt: {boxes (M x 9), names, categories, attributes, num_lidar_pts, num_radar_pts,
         visibility, instance_tokens, tokens}
"""

from __future__ import annotations

import gzip
import json
import multiprocessing
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bevsimdet.data.classes import CAMERAS, LIDAR
from bevsimdet.data.nusc import TABLES, check_dataroot, open_nuscenes, split_scenes
from bevsimdet.errors import DataError
from bevsimdet.geometry.boxes import global_to_ego
from bevsimdet.geometry.transforms import invert, pose_matrix

SCHEMA_VERSION = 1
BOX_CONVENTION = "bevsimdet/v1: keyframe-ego xyz-centre wlh yaw-ccw-from-x vxvy"
DEFAULT_DIRNAME = "bevsimdet_infos"


def manifest_path(out_dir: str | Path, version: str) -> Path:
    """The manifest of ``version``'s info files: one per version, so that preparing v1.0-test
    into the folder of v1.0-trainval's infos does not make the next trainval prepare rebuild."""
    return Path(out_dir) / f"manifest_{version}.json"


# --------------------------------------------------------------------------------------------
# typed records


@dataclass
class CameraInfo:
    """One camera of a keyframe. ``cam2ego`` (4 x 4) maps camera coordinates into the *keyframe*
    ego frame (it folds in the camera's own ego pose); ``sensor2ego``/``ego2global`` are the raw
    calibration and the ego pose at the camera timestamp."""

    path: str
    timestamp: int
    intrinsics: np.ndarray  # 3 x 3
    sensor2ego: np.ndarray  # 4 x 4
    ego2global: np.ndarray  # 4 x 4
    cam2ego: np.ndarray  # 4 x 4
    # the stored image's size (``sample_data`` width/height) the reader checks; 0: not recorded
    # (info files written before it was), then unchecked
    width: int = 0
    height: int = 0


@dataclass
class SweepInfo:
    """A previous LIDAR_TOP sweep; ``sensor2ego`` maps its points into the keyframe ego frame."""

    path: str
    timestamp: int
    time_lag: float  # seconds before the keyframe, >= 0
    sensor2ego: np.ndarray  # 4 x 4


@dataclass
class Annotations:
    """GT of one sample: ``boxes`` M x 9 in the keyframe ego frame, the rest length-M columns.
    ``names`` are detection classes ('' for categories the detection benchmark ignores)."""

    boxes: np.ndarray
    names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    attributes: list[str] = field(default_factory=list)
    num_lidar_pts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    num_radar_pts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    visibility: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # 1..4, 0 unknown
    instance_tokens: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def valid(self) -> np.ndarray:
        """M bool: the box has at least one LiDAR or radar point (mmdet3d's ``valid_flag``)."""
        return (self.num_lidar_pts + self.num_radar_pts) > 0


@dataclass
class SampleInfo:
    token: str
    scene_token: str
    scene_name: str
    timestamp: int
    lidar_path: str
    lidar_timestamp: int
    lidar2ego: np.ndarray  # 4 x 4
    ego2global: np.ndarray  # 4 x 4, keyframe ego pose
    cams: dict[str, CameraInfo]  # in CAMERAS order
    sweeps: list[SweepInfo]  # newest first
    gt: Annotations


@dataclass
class InfoFile:
    schema_version: int
    box_convention: str
    version: str
    split: str
    max_sweeps: int
    samples: list[SampleInfo]

    def __len__(self) -> int:
        return len(self.samples)


# --------------------------------------------------------------------------------------------
# JSON (de)serialisation


def _arr(x: Any, dtype: Any = np.float64) -> np.ndarray:
    return np.asarray(x, dtype=dtype)


def sample_to_json(s: SampleInfo) -> dict:
    g = s.gt
    return {
        "token": s.token,
        "scene_token": s.scene_token,
        "scene_name": s.scene_name,
        "timestamp": s.timestamp,
        "lidar": {"path": s.lidar_path, "timestamp": s.lidar_timestamp, "sensor2ego": s.lidar2ego.tolist(), "ego2global": s.ego2global.tolist()},
        "cams": {
            name: {
                "path": c.path,
                "timestamp": c.timestamp,
                "intrinsics": c.intrinsics.tolist(),
                "sensor2ego": c.sensor2ego.tolist(),
                "ego2global": c.ego2global.tolist(),
                "cam2ego": c.cam2ego.tolist(),
                **({"width": c.width, "height": c.height} if c.width and c.height else {}),
            }
            for name, c in s.cams.items()
        },
        "sweeps": [{"path": w.path, "timestamp": w.timestamp, "time_lag": w.time_lag, "sensor2ego": w.sensor2ego.tolist()} for w in s.sweeps],
        "gt": {
            "boxes": g.boxes.tolist(),
            "names": g.names,
            "categories": g.categories,
            "attributes": g.attributes,
            "num_lidar_pts": g.num_lidar_pts.tolist(),
            "num_radar_pts": g.num_radar_pts.tolist(),
            "visibility": g.visibility.tolist(),
            "instance_tokens": g.instance_tokens,
            "tokens": g.tokens,
        },
    }


class MalformedRecord(ValueError):
    """A field of an info record with the wrong type, shape or value; :func:`load_infos` adds
    the file, the sample and the fix to make it a :class:`DataError`."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field} {problem}")


def _show(value: Any) -> str:
    """A bad JSON value, shortened for a one-line message (repr escapes newlines)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _join(at: str, key: str) -> str:
    return f"{at}.{key}" if at else key


def _field(d: Any, key: str, at: str = "") -> Any:
    if not isinstance(d, dict):
        raise MalformedRecord(at or "the record", f"must be a JSON object, got {_show(d)}")
    if key not in d:
        raise MalformedRecord(_join(at, key), "is missing")
    return d[key]


def _string(d: Any, key: str, at: str = "") -> str:
    value = _field(d, key, at)
    if not isinstance(value, str):
        raise MalformedRecord(_join(at, key), f"must be a string, got {_show(value)}")
    return value


def _integer(d: Any, key: str, at: str = "", minimum: int | None = None) -> int:
    value = _field(d, key, at)
    if type(value) is not int or (minimum is not None and value < minimum):
        kind = "an integer" if minimum is None else f"an integer >= {minimum}"
        raise MalformedRecord(_join(at, key), f"must be {kind}, got {_show(value)}")
    return value


def _array(d: Any, key: str, at: str, shape: tuple[int | None, ...], integer: bool = False) -> np.ndarray:
    """``d[key]`` as a float64 (int64 with ``integer``) array of ``shape`` (None: any length).

    Type-checks the whole nested list in one numpy conversion: strings, nulls, booleans-only and
    ragged lists give a non-numeric dtype or a ValueError instead of being coerced.
    """
    value = _field(d, key, at)
    name = _join(at, key)
    want = " x ".join("M" if n is None else str(n) for n in shape)
    noun = "integers" if integer else "numbers"
    what = f"a list of {want} {noun}" if len(shape) == 1 else f"a {want} matrix of {noun}".replace("a M", "an M")
    try:
        arr = np.asarray(value)
    except ValueError:  # ragged nesting
        raise MalformedRecord(name, f"must be {what}, got a ragged list {_show(value)}") from None
    if isinstance(value, list) and not value and shape[0] is None:  # [] has no inner shape
        return np.zeros((0, *shape[1:]), np.int64 if integer else np.float64)
    if arr.dtype.kind not in ("iu" if integer else "iuf") or arr.ndim != len(shape) or any(
        n is not None and n != m for n, m in zip(shape, arr.shape)
    ):
        got = f"shape {arr.shape}" if arr.dtype.kind in "iuf" else _show(value)
        raise MalformedRecord(name, f"must be {what}, got {got}")
    return arr.astype(np.int64 if integer else np.float64, copy=False)


def _strings(d: Any, key: str, at: str, count: int) -> list[str]:
    value = _field(d, key, at)
    if not isinstance(value, list) or not set(map(type, value)) <= {str}:
        raise MalformedRecord(_join(at, key), f"must be a list of strings, got {_show(value)}")
    if len(value) != count:
        raise MalformedRecord(_join(at, key), f"has {len(value)} entries for {count} boxes")
    return value


def _camera(c: Any, at: str) -> CameraInfo:
    # width/height are optional: older info files lack them
    size = {key: _integer(c, key, at, minimum=1) for key in ("width", "height") if isinstance(c, dict) and key in c}
    return CameraInfo(
        _string(c, "path", at),
        _integer(c, "timestamp", at),
        _array(c, "intrinsics", at, (3, 3)),
        *(_array(c, key, at, (4, 4)) for key in ("sensor2ego", "ego2global", "cam2ego")),
        **size,
    )


def _sweep(w: Any, at: str) -> SweepInfo:
    lag = _field(w, "time_lag", at)
    if type(lag) not in (int, float) or not 0 <= lag < float("inf"):
        raise MalformedRecord(f"{at}.time_lag", f"must be a finite number of seconds >= 0, got {_show(lag)}")
    return SweepInfo(_string(w, "path", at), _integer(w, "timestamp", at), float(lag), _array(w, "sensor2ego", at, (4, 4)))


def _annotations(g: Any) -> Annotations:
    boxes = _array(g, "boxes", "gt", (None, 9))
    m = len(boxes)
    ints = {key: _array(g, key, "gt", (None,), integer=True) for key in ("num_lidar_pts", "num_radar_pts", "visibility")}
    for key, arr in ints.items():
        if len(arr) != m:
            raise MalformedRecord(f"gt.{key}", f"has {len(arr)} entries for {m} boxes")
    return Annotations(boxes, *(_strings(g, key, "gt", m) for key in ("names", "categories", "attributes")), **ints,
                       instance_tokens=_strings(g, "instance_tokens", "gt", m), tokens=_strings(g, "tokens", "gt", m))


def sample_from_json(d: Any) -> SampleInfo:
    """Parse one ``samples[i]`` record, checking every field's type, shape and column length.

    Raises :class:`MalformedRecord` naming the field. Values (finiteness, rigid transforms) are
    checked file-wide by :func:`check_values`, on stacked arrays.
    """
    cams = _field(d, "cams")
    if not isinstance(cams, dict) or set(cams) != set(CAMERAS):
        got = sorted(cams) if isinstance(cams, dict) else _show(cams)
        raise MalformedRecord("cams", f"must map exactly {', '.join(CAMERAS)} to camera records, got {got}")
    sweeps = _field(d, "sweeps")
    if not isinstance(sweeps, list):
        raise MalformedRecord("sweeps", f"must be a list, got {_show(sweeps)}")
    lidar = _field(d, "lidar")
    return SampleInfo(
        token=_string(d, "token"),
        scene_token=_string(d, "scene_token"),
        scene_name=_string(d, "scene_name"),
        timestamp=_integer(d, "timestamp"),
        lidar_path=_string(lidar, "path", "lidar"),
        lidar_timestamp=_integer(lidar, "timestamp", "lidar"),
        lidar2ego=_array(lidar, "sensor2ego", "lidar", (4, 4)),
        ego2global=_array(lidar, "ego2global", "lidar", (4, 4)),
        cams={name: _camera(cams[name], f"cams.{name}") for name in CAMERAS},
        sweeps=[_sweep(w, f"sweeps[{k}]") for k, w in enumerate(sweeps)],
        gt=_annotations(_field(d, "gt")),
    )


# What each kind of array must hold.
VALUE_RULES = {
    "transform": "must be a finite rigid 4 x 4 transform (orthonormal rotation, last row [0, 0, 0, 1])",
    "intrinsics": "must be a finite 3 x 3 camera matrix (positive focal lengths, last row [0, 0, 1])",
    "boxes": "must hold finite numbers",
}


def _stack(kind: str, arrays: list[np.ndarray]) -> np.ndarray:
    """N x 4 x 4 / N x 3 x 3 from matrices, N x 9 from M x 9 box arrays."""
    return np.concatenate(arrays) if kind == "boxes" else np.array(arrays)


def bad_values(kind: str, x: np.ndarray) -> np.ndarray:
    """N bool: which of ``x`` (N x 4 x 4 transforms, N x 3 x 3 intrinsics or N x 9 boxes) break
    :data:`VALUE_RULES`."""
    with np.errstate(invalid="ignore", over="ignore"):
        ok = np.isfinite(x).all(axis=tuple(range(1, x.ndim)))
        if kind == "transform":
            rot = x[:, :3, :3]
            ok &= np.abs(x[:, 3] - (0.0, 0.0, 0.0, 1.0)).max(axis=1) <= 1e-6
            # loose: only a scaled, sheared or garbage rotation is wrong, not float round-off
            ok &= np.abs(rot @ rot.transpose(0, 2, 1) - np.eye(3)).max(axis=(1, 2)) <= 1e-3
        elif kind == "intrinsics":
            ok &= (np.abs(x[:, 2] - (0.0, 0.0, 1.0)).max(axis=1) <= 1e-6) & (x[:, 0, 0] > 0) & (x[:, 1, 1] > 0)
    return ~ok


def _arrays(s: SampleInfo) -> Any:
    """(field, kind, array) of every numeric array of a sample, ``kind`` a key of VALUE_RULES."""
    yield "lidar.sensor2ego", "transform", s.lidar2ego
    yield "lidar.ego2global", "transform", s.ego2global
    for name, c in s.cams.items():
        yield f"cams.{name}.intrinsics", "intrinsics", c.intrinsics
        yield f"cams.{name}.sensor2ego", "transform", c.sensor2ego
        yield f"cams.{name}.ego2global", "transform", c.ego2global
        yield f"cams.{name}.cam2ego", "transform", c.cam2ego
    for k, w in enumerate(s.sweeps):
        yield f"sweeps[{k}].sensor2ego", "transform", w.sensor2ego
    yield "gt.boxes", "boxes", s.gt.boxes


def check_values(samples: list[SampleInfo]) -> tuple[int, str] | None:
    """The first (sample index, problem) whose arrays break :data:`VALUE_RULES`, else None.

    Every array of a kind is stacked and checked in one numpy pass; the per-sample scan that
    names the culprit only runs once something is wrong.
    """
    groups: dict[str, list[np.ndarray]] = {kind: [] for kind in VALUE_RULES}
    for s in samples:
        for _, kind, arr in _arrays(s):
            groups[kind].append(arr)
    if not any(bad_values(kind, _stack(kind, g)).any() for kind, g in groups.items() if g):
        return None
    for i, s in enumerate(samples):
        for name, kind, arr in _arrays(s):
            bad = np.flatnonzero(bad_values(kind, _stack(kind, [arr])))
            if len(bad):
                row = f"[{bad[0]}]" if kind == "boxes" else ""
                value = arr[bad[0]] if kind == "boxes" else arr
                return i, f"{name}{row} {VALUE_RULES[kind]}, got {_show(value.tolist())}"
    raise AssertionError("bad_values flagged a stacked array but no single one")  # pragma: no cover


def save_infos(info: InfoFile, path: str | Path) -> None:
    """Write atomically; a ``.gz`` suffix gzips the JSON."""
    _write_doc(path, info.version, info.split, info.max_sweeps, [sample_to_json(s) for s in info.samples])


def _write_doc(path: str | Path, version: str, split: str, max_sweeps: int, samples: list[dict]) -> None:
    from bevsimdet.io import atomic_write_bytes

    doc = {
        "schema_version": SCHEMA_VERSION,
        "box_convention": BOX_CONVENTION,
        "version": version,
        "split": split,
        "max_sweeps": max_sweeps,
        "samples": samples,
    }
    data = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    atomic_write_bytes(path, gzip.compress(data, compresslevel=5, mtime=0) if str(path).endswith(".gz") else data)


def load_infos(path: str | Path) -> InfoFile:
    """Read and validate an info file written by :func:`create_infos`.

    Every field's type, shape and column length, and every array's values, are checked; a bad
    file raises a one-line :class:`DataError` naming the file, the sample and the field.
    """
    path = Path(path)
    fix = "rebuild it with `bevsimdet prepare --dataroot D --version V --force`"
    if not path.is_file():
        raise DataError(f"info file {path} does not exist", fix="build it with `bevsimdet prepare --dataroot D --version V`")
    try:
        raw = path.read_bytes()
        doc = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    except (OSError, EOFError, ValueError, zlib.error) as e:
        raise DataError(f"info file {path} is corrupt ({type(e).__name__})", fix=fix) from None
    except RecursionError:
        raise DataError(f"info file {path} is corrupt (JSON nested too deeply)", fix=fix) from None
    if not isinstance(doc, dict) or "schema_version" not in doc:
        raise DataError(f"{path} is not a bevsimdet info file (no schema_version)", fix=fix)
    if doc["schema_version"] != SCHEMA_VERSION:
        raise DataError(f"info file {path} has schema version {_show(doc['schema_version'])}, this bevsimdet reads {SCHEMA_VERSION}", fix=fix)
    if doc.get("box_convention") != BOX_CONVENTION:
        raise DataError(f"info file {path} uses box convention {_show(doc.get('box_convention'))}, expected {BOX_CONVENTION!r}", fix=fix)
    try:
        version, split = _string(doc, "version"), _string(doc, "split")
        max_sweeps = _integer(doc, "max_sweeps", minimum=0)
        records = _field(doc, "samples")
        if not isinstance(records, list):
            raise MalformedRecord("samples", f"must be a list of sample records, got {_show(records)}")
    except MalformedRecord as e:
        raise DataError(f"info file {path}: {e}", fix=fix) from None

    def where(i: int) -> str:
        token = records[i].get("token") if isinstance(records[i], dict) else None
        return f"info file {path}: sample {i}" + (f" (token {_show(token)})" if isinstance(token, str) else "")

    samples, seen = [], set()
    for i, record in enumerate(records):
        try:
            sample = sample_from_json(record)
            if len(sample.sweeps) > max_sweeps:
                raise MalformedRecord("sweeps", f"has {len(sample.sweeps)} entries, more than the file's max_sweeps {max_sweeps}")
            if sample.token in seen:
                raise MalformedRecord("token", "repeats an earlier sample's token")
        except MalformedRecord as e:
            raise DataError(f"{where(i)}: {e}", fix=fix) from None
        seen.add(sample.token)
        samples.append(sample)
    bad = check_values(samples)
    if bad is not None:
        raise DataError(f"{where(bad[0])}: {bad[1]}", fix=fix)
    return InfoFile(SCHEMA_VERSION, BOX_CONVENTION, version, split, max_sweeps, samples)


# --------------------------------------------------------------------------------------------
# building from the devkit


def build_sample_info(nusc: Any, sample: dict, scene_name: str, max_sweeps: int) -> SampleInfo:
    """One :class:`SampleInfo` from a devkit ``sample`` record."""
    from nuscenes.eval.detection.utils import category_to_detection_name

    def calib_pose(sd: dict) -> tuple[np.ndarray, np.ndarray]:
        return (
            pose_matrix(nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])),
            pose_matrix(nusc.get("ego_pose", sd["ego_pose_token"])),
        )

    lidar_sd = nusc.get("sample_data", sample["data"][LIDAR])
    lidar2ego, ego2global = calib_pose(lidar_sd)
    global2ego = invert(ego2global)

    cams = {}
    for name in CAMERAS:
        sd = nusc.get("sample_data", sample["data"][name])
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        sensor2ego, cam_pose = calib_pose(sd)
        cams[name] = CameraInfo(sd["filename"], int(sd["timestamp"]), _arr(cs["camera_intrinsic"]), sensor2ego, cam_pose, global2ego @ cam_pose @ sensor2ego,
                                width=int(sd.get("width") or 0), height=int(sd.get("height") or 0))

    sweeps = []
    sd = lidar_sd
    while len(sweeps) < max_sweeps and sd["prev"]:
        sd = nusc.get("sample_data", sd["prev"])
        s2e, pose = calib_pose(sd)
        lag = (lidar_sd["timestamp"] - sd["timestamp"]) / 1e6
        sweeps.append(SweepInfo(sd["filename"], int(sd["timestamp"]), float(lag), global2ego @ pose @ s2e))

    anns = [nusc.get("sample_annotation", t) for t in sample["anns"]]
    vel = np.array([nusc.box_velocity(a["token"])[:2] for a in anns], dtype=np.float64).reshape(-1, 2)
    boxes = global_to_ego(
        [a["translation"] for a in anns], [a["size"] for a in anns], [a["rotation"] for a in anns], vel, ego2global
    )
    gt = Annotations(
        boxes=boxes,
        names=[category_to_detection_name(a["category_name"]) or "" for a in anns],
        categories=[a["category_name"] for a in anns],
        attributes=[nusc.get("attribute", a["attribute_tokens"][0])["name"] if a["attribute_tokens"] else "" for a in anns],
        num_lidar_pts=_arr([a["num_lidar_pts"] for a in anns], np.int64),
        num_radar_pts=_arr([a["num_radar_pts"] for a in anns], np.int64),
        visibility=_arr([int(a["visibility_token"]) if str(a.get("visibility_token", "")).isdigit() else 0 for a in anns], np.int64),
        instance_tokens=[a["instance_token"] for a in anns],
        tokens=[a["token"] for a in anns],
    )
    return SampleInfo(
        token=sample["token"],
        scene_token=sample["scene_token"],
        scene_name=scene_name,
        timestamp=int(sample["timestamp"]),
        lidar_path=lidar_sd["filename"],
        lidar_timestamp=int(lidar_sd["timestamp"]),
        lidar2ego=lidar2ego,
        ego2global=ego2global,
        cams=cams,
        sweeps=sweeps,
        gt=gt,
    )


_WORKER_NUSC: Any = None  # the devkit object a forked worker inherits


def _scene_infos(args: tuple[str, int]) -> tuple[str, list[dict]]:
    scene_token, max_sweeps = args
    nusc = _WORKER_NUSC
    scene = nusc.get("scene", scene_token)
    out = []
    token = scene["first_sample_token"]
    while token:
        sample = nusc.get("sample", token)
        out.append(sample_to_json(build_sample_info(nusc, sample, scene["name"], max_sweeps)))
        token = sample["next"]
    return scene_token, out


def _fingerprint(dataroot: Path, version: str, max_sweeps: int) -> dict:
    tables = {}
    for t in TABLES:
        st = (dataroot / version / f"{t}.json").stat()
        tables[t] = [st.st_size, st.st_mtime_ns]
    # "camera_sizes": files made before CameraInfo recorded width/height are rebuilt once
    return {"schema_version": SCHEMA_VERSION, "box_convention": BOX_CONVENTION, "version": version, "max_sweeps": max_sweeps, "tables": tables, "camera_sizes": True}


def info_path(out_dir: str | Path, split: str, compress: bool = False) -> Path:
    return Path(out_dir) / f"infos_{split}.json{'.gz' if compress else ''}"


def create_infos(
    dataroot: str | Path,
    version: str = "v1.0-mini",
    out_dir: str | Path | None = None,
    max_sweeps: int = 9,
    workers: int = 2,
    progress: bool = True,
    *,
    force: bool = False,
    compress: bool = False,
) -> dict[str, Path]:
    """Build the info files of every split of ``version`` (mini: mini_train/mini_val; trainval:
    train/val; test: test) under ``out_dir`` (default ``<dataroot>/bevsimdet_infos``).

    Scenes are processed by ``workers`` forked processes. Nothing is rebuilt when a manifest shows
    the files were made from the same tables with the same settings, unless ``force``. Returns
    ``{split: path}``.
    """
    dataroot = Path(dataroot)
    out_dir = Path(out_dir) if out_dir is not None else dataroot / DEFAULT_DIRNAME
    splits = split_scenes(version)

    check_dataroot(dataroot, version)
    paths = {s: info_path(out_dir, s, compress) for s in splits}
    fingerprint = _fingerprint(dataroot, version, max_sweeps)
    manifest_file = manifest_path(out_dir, version)
    if not force and manifest_file.is_file() and all(p.is_file() for p in paths.values()):
        try:
            manifest = json.loads(manifest_file.read_text())
        except ValueError:
            manifest = {}
        if manifest.get("fingerprint") == fingerprint and manifest.get("files") == {s: p.name for s, p in paths.items()}:
            return paths

    global _WORKER_NUSC
    nusc = open_nuscenes(dataroot, version)
    scene_by_name = {s["name"]: s["token"] for s in nusc.scene}
    wanted = [(s, scene_by_name[n]) for s, names in splits.items() for n in names if n in scene_by_name]
    if not wanted:
        raise DataError(f"none of the scenes of {version}'s splits ({', '.join(splits)}) are in {dataroot / version}", fix="pass the --version the dataset was made for")
    jobs = [(tok, max_sweeps) for _, tok in wanted]
    results: dict[str, list[dict]] = {}
    _WORKER_NUSC = nusc
    try:
        bar = _progress(len(jobs), f"prepare {version}", progress)
        if workers > 1 and len(jobs) > 1 and "fork" in multiprocessing.get_all_start_methods():
            # fork shares the (large) devkit index with the workers instead of re-reading the tables
            with multiprocessing.get_context("fork").Pool(min(workers, len(jobs))) as pool:
                for tok, recs in pool.imap_unordered(_scene_infos, jobs):
                    results[tok] = recs
                    bar.update(1)
        else:
            for job in jobs:
                tok, recs = _scene_infos(job)
                results[tok] = recs
                bar.update(1)
        bar.close()
    finally:
        _WORKER_NUSC = None

    for split in splits:
        _write_doc(paths[split], version, split, max_sweeps, [r for s, tok in wanted if s == split for r in results[tok]])
    from bevsimdet.io import atomic_write_json

    atomic_write_json(manifest_file, {"fingerprint": fingerprint, "files": {s: p.name for s, p in paths.items()}}, indent=1)
    return paths


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from bevsimdet.progress import progress_bar

    return progress_bar(total=total, desc=desc, unit="scene", allowed=enabled)
