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
from collections.abc import Sequence
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

    @property
    def tokens(self) -> list[str]:
        return [s.token for s in self.samples]

    @property
    def num_scenes(self) -> int:
        return len({s.scene_token for s in self.samples})

    @property
    def num_boxes(self) -> int:
        return sum(len(s.gt) for s in self.samples)

    def gt_class_counts(self, classes: list[str] | tuple[str, ...], valid_only: bool = False) -> np.ndarray:
        """N x len(classes) int64 GT boxes per sample and class, only boxes with a LiDAR or radar
        point with ``valid_only`` (the plain reference of :meth:`ColumnarInfos.gt_class_counts`)."""
        out = np.zeros((len(self.samples), len(classes)), np.int64)
        for i, s in enumerate(self.samples):
            for name, valid in zip(s.gt.names, s.gt.valid):
                if name in classes and (valid or not valid_only):
                    out[i, classes.index(name)] += 1
        return out


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


def load_infos(path: str | Path, verify: bool = False) -> InfoFile | ColumnarInfos:
    """Read and validate an info file written by :func:`create_infos`: a columnar file (memory-
    mapped, see :class:`ColumnarInfos`) or a JSON one (parsed into an :class:`InfoFile`).

    Every field's type, shape and column length, and every array's values, are checked; a bad
    file raises a one-line :class:`DataError` naming the file, the sample and the field. Both
    give ``samples[i]`` as a :class:`SampleInfo`. A columnar file is opened in O(samples): its
    structure is checked at once and each sample's values when the sample is built, so that a
    loader process never reads pages it does not use; ``verify`` checks every value up front
    (as ``prepare`` does after writing). A JSON file is always checked in full.
    """
    path = Path(path)
    fix = "rebuild it with `bevsimdet prepare --dataroot D --version V --force`"
    if not path.is_file():
        raise DataError(f"info file {path} does not exist", fix="build it with `bevsimdet prepare --dataroot D --version V`")
    from bevsimdet.data.columnar import is_column_file

    if is_column_file(path):
        return load_columnar(path, verify=verify)
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


def _scene_infos(args: tuple[str, int]) -> tuple[str, list[SampleInfo]]:
    scene_token, max_sweeps = args
    nusc = _WORKER_NUSC
    scene = nusc.get("scene", scene_token)
    out = []
    token = scene["first_sample_token"]
    while token:
        sample = nusc.get("sample", token)
        out.append(build_sample_info(nusc, sample, scene["name"], max_sweeps))
        token = sample["next"]
    return scene_token, out


def _fingerprint(dataroot: Path, version: str, max_sweeps: int) -> dict:
    tables = {}
    for t in TABLES:
        st = (dataroot / version / f"{t}.json").stat()
        tables[t] = [st.st_size, st.st_mtime_ns]
    # "camera_sizes": files made before CameraInfo recorded width/height are rebuilt once
    return {"schema_version": SCHEMA_VERSION, "box_convention": BOX_CONVENTION, "version": version, "max_sweeps": max_sweeps, "tables": tables, "camera_sizes": True}


def info_path(out_dir: str | Path, split: str, compress: bool = False, fmt: str = "columnar") -> Path:
    """Where the info file of ``split`` goes: ``infos_<split>.cols`` (columnar) or
    ``infos_<split>.json[.gz]`` (``fmt="json"``, or ``compress`` which implies it)."""
    if fmt not in FORMATS:
        raise DataError(f"unknown info file format '{fmt}'", fix=f"use one of {', '.join(FORMATS)}")
    if fmt == "json" or compress:
        return Path(out_dir) / f"infos_{split}.json{'.gz' if compress else ''}"
    return Path(out_dir) / f"infos_{split}.cols"


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
    fmt: str = "columnar",
) -> dict[str, Path]:
    """Build the info files of every split of ``version`` (mini: mini_train/mini_val; trainval:
    train/val; test: test) under ``out_dir`` (default ``<dataroot>/bevsimdet_infos``).

    Scenes are processed by ``workers`` forked processes. Nothing is rebuilt when a manifest shows
    the files were made from the same tables with the same settings, unless ``force``. ``fmt``:
    "columnar" (the default, see :class:`ColumnarInfos`) or "json" (``compress`` gzips it).
    Returns ``{split: path}``.
    """
    dataroot = Path(dataroot)
    out_dir = Path(out_dir) if out_dir is not None else dataroot / DEFAULT_DIRNAME
    splits = split_scenes(version)

    check_dataroot(dataroot, version)
    paths = {s: info_path(out_dir, s, compress, fmt) for s in splits}
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
    results: dict[str, list[SampleInfo]] = {}
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
        samples = [r for s, tok in wanted if s == split for r in results[tok]]
        if paths[split].suffix == ".cols":
            save_columnar(paths[split], version, split, max_sweeps, samples)
            load_columnar(paths[split], verify=True)  # what the JSON format checks at every load
        else:
            _write_doc(paths[split], version, split, max_sweeps, [sample_to_json(r) for r in samples])
    from bevsimdet.io import atomic_write_json

    atomic_write_json(manifest_file, {"fingerprint": fingerprint, "files": {s: p.name for s, p in paths.items()}}, indent=1)
    return paths


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from bevsimdet.progress import progress_bar

    return progress_bar(total=total, desc=desc, unit="scene", allowed=enabled)


# --------------------------------------------------------------------------------------------
# the columnar format: arrays in one memory-mapped file instead of per-sample Python objects
#
# A JSON info file of nuScenes trainval is hundreds of MB that every process (each rank and each
# of its loader workers) parses into millions of Python objects, which then drift out of the
# pages a forked worker shares with its parent as soon as they are touched (reference counts are
# writes). Here every field is one array over all samples (N samples, C cameras, S sweeps and M
# boxes in all): per-sample variable-length data is a flat array plus N + 1 start offsets,
# strings are bytes plus offsets, the small category/attribute vocabularies are codes. A
# :class:`SampleInfo` is built on demand from the arrays, so a process holds only what it reads.
#
#   token (str N), scene (int32 N) -> scene_token / scene_name (str K)
#   timestamp, lidar_timestamp (int64 N), lidar_path (str N), lidar2ego, ego2global (N x 4 x 4)
#   cam_path (str N*C), cam_timestamp (N x C), cam_intrinsics (N x C x 3 x 3), cam_size (N x C x 2:
#   the stored image's width, height; 0 where not recorded),
#   cam_sensor2ego, cam_ego2global, cam2ego (N x C x 4 x 4)
#   sweep_start (N + 1), sweep_path (str S), sweep_timestamp (S), sweep_time_lag (S),
#   sweep_sensor2ego (S x 4 x 4)
#   gt_start (N + 1), gt_boxes (M x 9), gt_name / gt_category / gt_attribute (int32 M codes into
#   the vocabularies name_vocab / category_vocab / attribute_vocab (str)), gt_num_lidar_pts,
#   gt_num_radar_pts, gt_visibility (int64 M), gt_instance_token, gt_token (str M)

FORMATS = ("columnar", "json")
COLUMNAR_FORMAT = "bevsimdet-infos-columnar"
_CHECK_CHUNK = 1 << 16  # rows per value-check pass: bounds the temporary memory of the check
# samples whose values are checked together when the first of them is built: one vectorised pass
# instead of one per sample (whose numpy overhead would exceed building the sample)
_SAMPLE_CHUNK = 256


def _strings_to(out: dict, name: str, strings: list[str]) -> None:
    from bevsimdet.data.columnar import encode_strings

    out[f"{name}.bytes"], out[f"{name}.offsets"] = encode_strings(strings)


def _codes(values: list[str]) -> tuple[np.ndarray, list[str]]:
    vocab = sorted(set(values))
    index = {v: i for i, v in enumerate(vocab)}
    return np.array([index[v] for v in values], dtype=np.int32), vocab


def _starts(counts: list[int]) -> np.ndarray:
    out = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def columns_from_samples(samples: list[SampleInfo]) -> dict[str, np.ndarray]:
    """The arrays of the columnar format (see above) of ``samples``."""
    n = len(samples)
    out: dict[str, np.ndarray] = {}
    _strings_to(out, "token", [s.token for s in samples])
    scene_of: dict[tuple[str, str], int] = {}
    out["scene"] = np.array([scene_of.setdefault((s.scene_token, s.scene_name), len(scene_of)) for s in samples], np.int32)
    _strings_to(out, "scene_token", [t for t, _ in scene_of])
    _strings_to(out, "scene_name", [name for _, name in scene_of])
    out["timestamp"] = np.array([s.timestamp for s in samples], np.int64)
    out["lidar_timestamp"] = np.array([s.lidar_timestamp for s in samples], np.int64)
    _strings_to(out, "lidar_path", [s.lidar_path for s in samples])
    out["lidar2ego"] = np.array([s.lidar2ego for s in samples], np.float64).reshape(n, 4, 4)
    out["ego2global"] = np.array([s.ego2global for s in samples], np.float64).reshape(n, 4, 4)
    cams = [s.cams[c] for s in samples for c in CAMERAS]
    _strings_to(out, "cam_path", [c.path for c in cams])
    out["cam_timestamp"] = np.array([c.timestamp for c in cams], np.int64).reshape(n, len(CAMERAS))
    out["cam_intrinsics"] = np.array([c.intrinsics for c in cams], np.float64).reshape(n, len(CAMERAS), 3, 3)
    out["cam_size"] = np.array([(c.width, c.height) for c in cams], np.int32).reshape(n, len(CAMERAS), 2)
    for key in ("sensor2ego", "ego2global", "cam2ego"):
        name = "cam2ego" if key == "cam2ego" else f"cam_{key}"
        out[name] = np.array([getattr(c, key) for c in cams], np.float64).reshape(n, len(CAMERAS), 4, 4)
    sweeps = [w for s in samples for w in s.sweeps]
    out["sweep_start"] = _starts([len(s.sweeps) for s in samples])
    _strings_to(out, "sweep_path", [w.path for w in sweeps])
    out["sweep_timestamp"] = np.array([w.timestamp for w in sweeps], np.int64)
    out["sweep_time_lag"] = np.array([w.time_lag for w in sweeps], np.float64)
    out["sweep_sensor2ego"] = np.array([w.sensor2ego for w in sweeps], np.float64).reshape(-1, 4, 4)
    out["gt_start"] = _starts([len(s.gt) for s in samples])
    out["gt_boxes"] = np.concatenate([s.gt.boxes.reshape(-1, 9) for s in samples] or [np.zeros((0, 9))]).astype(np.float64)
    for key in ("name", "category", "attribute"):
        codes, vocab = _codes([v for s in samples for v in getattr(s.gt, f"{key}s" if key != "category" else "categories")])
        out[f"gt_{key}"] = codes
        _strings_to(out, f"{key}_vocab", vocab)
    for key in ("num_lidar_pts", "num_radar_pts", "visibility"):
        out[f"gt_{key}"] = np.concatenate([getattr(s.gt, key) for s in samples] or [np.zeros(0)]).astype(np.int64)
    _strings_to(out, "gt_instance_token", [t for s in samples for t in s.gt.instance_tokens])
    _strings_to(out, "gt_token", [t for s in samples for t in s.gt.tokens])
    return out


def save_columnar(path: str | Path, version: str, split: str, max_sweeps: int, samples: list[SampleInfo]) -> None:
    """Write ``samples`` as a columnar info file (atomically)."""
    from bevsimdet.data.columnar import write_columns

    meta = {"format": COLUMNAR_FORMAT, "schema_version": SCHEMA_VERSION, "box_convention": BOX_CONVENTION,
            "version": version, "split": split, "max_sweeps": max_sweeps, "cameras": list(CAMERAS)}
    write_columns(path, meta, columns_from_samples(samples))


# name -> (dtype, shape with N, C, S, M, K or a vocabulary size V standing for the sizes)
_STRING_COLUMNS = {"token": "N", "scene_token": "K", "scene_name": "K", "lidar_path": "N", "cam_path": "NC",
                   "sweep_path": "S", "gt_instance_token": "M", "gt_token": "M",
                   "name_vocab": None, "category_vocab": None, "attribute_vocab": None}
_NUMERIC_COLUMNS = {
    "scene": ("<i4", ("N",)), "timestamp": ("<i8", ("N",)), "lidar_timestamp": ("<i8", ("N",)),
    "lidar2ego": ("<f8", ("N", 4, 4)), "ego2global": ("<f8", ("N", 4, 4)),
    "cam_timestamp": ("<i8", ("N", "C")), "cam_intrinsics": ("<f8", ("N", "C", 3, 3)), "cam_size": ("<i4", ("N", "C", 2)),
    "cam_sensor2ego": ("<f8", ("N", "C", 4, 4)), "cam_ego2global": ("<f8", ("N", "C", 4, 4)), "cam2ego": ("<f8", ("N", "C", 4, 4)),
    "sweep_start": ("<i8", ("N+1",)), "sweep_timestamp": ("<i8", ("S",)), "sweep_time_lag": ("<f8", ("S",)),
    "sweep_sensor2ego": ("<f8", ("S", 4, 4)),
    "gt_start": ("<i8", ("N+1",)), "gt_boxes": ("<f8", ("M", 9)), "gt_name": ("<i4", ("M",)), "gt_category": ("<i4", ("M",)),
    "gt_attribute": ("<i4", ("M",)), "gt_num_lidar_pts": ("<i8", ("M",)), "gt_num_radar_pts": ("<i8", ("M",)),
    "gt_visibility": ("<i8", ("M",)),
}


def _check_columns(a: dict[str, np.ndarray], max_sweeps: int) -> str | None:
    """The first structural problem of the arrays of a columnar info file, else None: a missing
    column, a wrong dtype or shape, offsets out of order, codes outside their vocabulary."""
    from bevsimdet.data.columnar import StringColumn

    for name in [f"{s}.{p}" for s in _STRING_COLUMNS for p in ("bytes", "offsets")] + list(_NUMERIC_COLUMNS):
        if name not in a:
            return f"column {name} is missing"
    for name in _STRING_COLUMNS:
        if a[f"{name}.bytes"].dtype != np.uint8 or a[f"{name}.offsets"].dtype != np.int64:
            return f"column {name} has the wrong dtype"
    n, c = len(a["timestamp"]), len(CAMERAS)
    for key in ("sweep", "gt"):
        st = a[f"{key}_start"]
        if len(st) != n + 1 or st[0] != 0 or (np.diff(st) < 0).any():
            return f"column {key}_start must rise from 0 over N + 1 = {n + 1} entries"
    sizes = {"N": n, "C": c, "N+1": n + 1, "S": int(a["sweep_start"][-1]), "M": int(a["gt_start"][-1]),
             "K": len(a["scene_token.offsets"]) - 1}
    for name, (dtype, shape) in _NUMERIC_COLUMNS.items():
        want = tuple(sizes[d] if isinstance(d, str) else d for d in shape)
        if a[name].dtype.str != dtype or a[name].shape != want:
            return f"column {name} must be {dtype} of shape {want}, got {a[name].dtype.str} {a[name].shape}"
    for name, size in _STRING_COLUMNS.items():
        col = StringColumn(a[f"{name}.bytes"], a[f"{name}.offsets"])
        problem = col.check()
        if problem:
            return f"column {name} {problem}"
        want = n * c if size == "NC" else sizes.get(size or "", len(col))
        if len(col) != want:
            return f"column {name} has {len(col)} strings, expected {want}"
    k = sizes["K"]
    if n and (a["scene"].min() < 0 or a["scene"].max() >= k):
        return "column scene indexes past the scene table"
    for key in ("name", "category", "attribute"):
        codes, size = a[f"gt_{key}"], len(a[f"{key}_vocab.offsets"]) - 1
        if len(codes) and (codes.min() < 0 or codes.max() >= size):
            return f"column gt_{key} has codes outside its vocabulary of {size}"
    counts = np.diff(a["sweep_start"])
    if len(counts) and counts.max() > max_sweeps:
        i = int(np.argmax(counts))
        return f"sample {i}: sweeps has {counts[i]} entries, more than the file's max_sweeps {max_sweeps}"
    lags = a["sweep_time_lag"]
    if len(lags) and not (np.isfinite(lags) & (lags >= 0)).all():
        i = int(np.searchsorted(a["sweep_start"], np.flatnonzero(~(np.isfinite(lags) & (lags >= 0)))[0], side="right") - 1)
        return f"sample {i}: sweeps time_lag must be a finite number of seconds >= 0"
    return None


def _check_column_values(a: dict[str, np.ndarray], base: int = 0) -> str | None:
    """The first sample whose transforms, intrinsics or boxes break :data:`VALUE_RULES`, else
    None: the same rules as for JSON files, checked in bounded chunks of the stacked arrays.
    ``a`` may hold samples ``base ..`` only (starts relative to its own sweeps and boxes)."""
    c = len(CAMERAS)
    checks = [("lidar2ego", "transform", "lidar.sensor2ego", None), ("ego2global", "transform", "lidar.ego2global", None)]
    for key, field in (("cam_intrinsics", "intrinsics"), ("cam_sensor2ego", "sensor2ego"), ("cam_ego2global", "ego2global"), ("cam2ego", "cam2ego")):
        checks.append((key, "intrinsics" if field == "intrinsics" else "transform", field, "cams"))
    checks += [("sweep_sensor2ego", "transform", "sensor2ego", "sweep_start"), ("gt_boxes", "boxes", "gt.boxes", "gt_start")]
    for key, kind, field, group in checks:
        x = a[key]
        flat = x.reshape(-1, *x.shape[-2:]) if kind != "boxes" else x
        for lo in range(0, len(flat), _CHECK_CHUNK):
            bad = np.flatnonzero(bad_values(kind, flat[lo : lo + _CHECK_CHUNK]))
            if not len(bad):
                continue
            row = lo + int(bad[0])
            if group is None:
                return f"sample {base + row}: {field} {VALUE_RULES[kind]}"
            if group == "cams":
                return f"sample {base + row // c}: cams.{CAMERAS[row % c]}.{field} {VALUE_RULES[kind]}"
            i = int(np.searchsorted(a[group], row, side="right") - 1)
            where = f"sweeps[{row - int(a[group][i])}].{field}" if group == "sweep_start" else f"{field}[{row - int(a[group][i])}]"
            return f"sample {base + i}: {where} {VALUE_RULES[kind]}"
    return None


class ColumnarInfos:
    """A columnar info file: the same attributes as :class:`InfoFile`, but ``samples`` is a lazy
    sequence (:class:`SampleView`) that builds each :class:`SampleInfo` from the arrays when it is
    indexed. ``arrays`` are read-only views of the file's memory map."""

    def __init__(self, meta: dict, arrays: dict[str, np.ndarray], path: str | Path = "<memory>"):
        from bevsimdet.data.columnar import StringColumn

        self.path = Path(path)

        self.schema_version: int = meta["schema_version"]
        self.box_convention: str = meta["box_convention"]
        self.version: str = meta["version"]
        self.split: str = meta["split"]
        self.max_sweeps: int = meta["max_sweeps"]
        self.arrays = arrays
        self.strings = {name: StringColumn(arrays[f"{name}.bytes"], arrays[f"{name}.offsets"]) for name in _STRING_COLUMNS}
        # the vocabularies are a few dozen strings: decoded once
        self.vocab = {key: self.strings[f"{key}_vocab"].all() for key in ("name", "category", "attribute")}
        self.samples = SampleView(self)
        # per process: which chunks of samples had their values checked (see sample())
        self._checked = np.zeros(-(-len(self) // _SAMPLE_CHUNK), bool)

    def __len__(self) -> int:
        return len(self.arrays["timestamp"])

    @property
    def tokens(self) -> list[str]:
        """The N sample tokens, in file order."""
        return self.strings["token"].all()

    @property
    def num_scenes(self) -> int:
        return len(self.strings["scene_token"])

    @property
    def num_boxes(self) -> int:
        return int(self.arrays["gt_start"][-1])

    def _error(self, problem: str) -> DataError:
        return DataError(f"info file {self.path}: {problem}", fix="rebuild it with `bevsimdet prepare --dataroot D --version V --force`")

    def _check_chunk(self, k: int) -> None:
        """Check the values of samples ``k * _SAMPLE_CHUNK ..`` (one vectorised pass) before any of
        them is first built in this process; a DataError names the first bad one."""
        a, lo = self.arrays, k * _SAMPLE_CHUNK
        hi = min(lo + _SAMPLE_CHUNK, len(self))
        sub = {key: a[key][lo:hi] for key in ("lidar2ego", "ego2global", "cam_intrinsics", "cam_sensor2ego", "cam_ego2global", "cam2ego")}
        for key, rows in (("sweep", "sweep_sensor2ego"), ("gt", "gt_boxes")):
            start = a[f"{key}_start"][lo : hi + 1]
            sub[f"{key}_start"], sub[rows] = start - start[0], a[rows][start[0] : start[-1]]
        problem = _check_column_values(sub, base=lo)
        if problem is not None:
            raise self._error(problem)
        self._checked[k] = True

    def verify(self) -> None:
        """Check every value of the file (transforms, intrinsics, boxes, UTF-8, unique tokens)
        in bounded chunks; the first problem is a one-line DataError. Reads the whole file."""
        problem = _check_column_values(self.arrays)
        for name, col in self.strings.items():
            problem = problem or (f"column {name} {col.check_utf8()}" if col.check_utf8() else None)
        if problem is None:
            tokens = self.tokens
            if len(set(tokens)) != len(tokens):
                seen: set[str] = set()
                first = next(i for i, t in enumerate(tokens) if t in seen or seen.add(t))  # type: ignore[func-returns-value]
                problem = f"sample {first}: token repeats an earlier sample's token"
        if problem is not None:
            raise self._error(problem)

    def sample(self, i: int) -> SampleInfo:
        """Sample ``i`` as the :class:`SampleInfo` that the JSON format would give, after
        checking its values with those of its chunk of :data:`_SAMPLE_CHUNK` samples (a
        DataError naming the file, sample and field otherwise). Its arrays are read-only views
        of the file (copy one to change it)."""
        try:
            return self._sample(i)
        except UnicodeDecodeError:
            raise self._error(f"sample {i}: a path or token is not UTF-8") from None

    def _sample(self, i: int) -> SampleInfo:
        a, s = self.arrays, self.strings
        c = len(CAMERAS)
        if not self._checked[i // _SAMPLE_CHUNK]:
            self._check_chunk(i // _SAMPLE_CHUNK)
        lo, hi = int(a["sweep_start"][i]), int(a["sweep_start"][i + 1])
        intr, s2e, e2g, c2e = a["cam_intrinsics"][i], a["cam_sensor2ego"][i], a["cam_ego2global"][i], a["cam2ego"][i]
        cam_paths = s["cam_path"].slice(i * c, (i + 1) * c)
        stamps = a["cam_timestamp"][i].tolist()
        size = a["cam_size"][i].tolist()
        cams = {name: CameraInfo(cam_paths[k], stamps[k], intr[k], s2e[k], e2g[k], c2e[k], width=size[k][0], height=size[k][1])
                for k, name in enumerate(CAMERAS)}
        sweeps = [SweepInfo(p, t, lag, m) for p, t, lag, m in
                  zip(s["sweep_path"].slice(lo, hi), a["sweep_timestamp"][lo:hi].tolist(), a["sweep_time_lag"][lo:hi].tolist(), a["sweep_sensor2ego"][lo:hi])]
        scene = int(a["scene"][i])
        return SampleInfo(
            token=s["token"][i],
            scene_token=s["scene_token"][scene],
            scene_name=s["scene_name"][scene],
            timestamp=int(a["timestamp"][i]),
            lidar_path=s["lidar_path"][i],
            lidar_timestamp=int(a["lidar_timestamp"][i]),
            lidar2ego=a["lidar2ego"][i],
            ego2global=a["ego2global"][i],
            cams=cams,
            sweeps=sweeps,
            gt=self.annotations(i),
        )

    def annotations(self, i: int) -> Annotations:
        a, v = self.arrays, self.vocab
        lo, hi = int(a["gt_start"][i]), int(a["gt_start"][i + 1])
        return Annotations(
            boxes=a["gt_boxes"][lo:hi],
            names=[v["name"][k] for k in a["gt_name"][lo:hi].tolist()],
            categories=[v["category"][k] for k in a["gt_category"][lo:hi].tolist()],
            attributes=[v["attribute"][k] for k in a["gt_attribute"][lo:hi].tolist()],
            num_lidar_pts=a["gt_num_lidar_pts"][lo:hi],
            num_radar_pts=a["gt_num_radar_pts"][lo:hi],
            visibility=a["gt_visibility"][lo:hi],
            instance_tokens=self.strings["gt_instance_token"].slice(lo, hi),
            tokens=self.strings["gt_token"].slice(lo, hi),
        )

    def gt_class_counts(self, classes: list[str] | tuple[str, ...], valid_only: bool = False) -> np.ndarray:
        """N x len(classes) int64: how many GT boxes of each detection class every sample has
        (e.g. for class-balanced sampling), only boxes with a LiDAR or radar point with
        ``valid_only``; one vectorised pass, no per-sample objects."""
        a = self.arrays
        col = np.array([classes.index(v) if v in classes else -1 for v in self.vocab["name"]] + [-1], np.int64)
        cls = col[a["gt_name"]] if len(a["gt_name"]) else np.zeros(0, np.int64)
        sample = np.repeat(np.arange(len(self)), np.diff(a["gt_start"]))
        keep = cls >= 0
        if valid_only:
            keep &= (np.asarray(a["gt_num_lidar_pts"]) + np.asarray(a["gt_num_radar_pts"])) > 0
        out = np.zeros((len(self), len(classes)), np.int64)
        np.add.at(out, (sample[keep], cls[keep]), 1)
        return out


class SampleView(Sequence[SampleInfo]):
    """The samples of a :class:`ColumnarInfos` (or a subset, by ``index``) as a read-only
    sequence of :class:`SampleInfo`, each built when indexed."""

    def __init__(self, infos: ColumnarInfos, index: np.ndarray | None = None):
        self.infos = infos
        self.index = index

    def __len__(self) -> int:
        return len(self.infos) if self.index is None else len(self.index)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return self.subset(range(len(self))[i])
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} of {len(self)}")
        i %= len(self)
        return self.infos.sample(i if self.index is None else int(self.index[i]))

    def __iter__(self) -> Any:
        return (self[i] for i in range(len(self)))

    def subset(self, keep: Any) -> SampleView:
        """The samples at positions ``keep`` of this view."""
        keep = np.asarray(list(keep) if not isinstance(keep, np.ndarray) else keep, dtype=np.int64)
        return SampleView(self.infos, keep if self.index is None else self.index[keep])

    @property
    def tokens(self) -> list[str]:
        tokens = self.infos.tokens
        return tokens if self.index is None else [tokens[i] for i in self.index.tolist()]


def load_columnar(path: Path, verify: bool = False) -> ColumnarInfos:
    """Open a columnar info file (memory-mapped), checking its stamps and structure (every
    column's dtype and shape, offsets, vocabulary codes, sweep counts and lags: a few MB at
    trainval size, none of the transforms, boxes or strings), raising one-line DataErrors. The values are checked per sample when
    it is built (:meth:`ColumnarInfos.sample`), or all at once with ``verify``."""
    from bevsimdet.data.columnar import ColumnFormatError, read_columns

    fix = "rebuild it with `bevsimdet prepare --dataroot D --version V --force`"
    try:
        meta, arrays = read_columns(path)
    except ColumnFormatError as e:
        raise DataError(f"info file {path} is corrupt ({e})", fix=fix) from None
    if meta.get("format") != COLUMNAR_FORMAT or "schema_version" not in meta:
        raise DataError(f"{path} is not a bevsimdet info file (format {_show(meta.get('format'))})", fix=fix)
    if meta["schema_version"] != SCHEMA_VERSION:
        raise DataError(f"info file {path} has schema version {_show(meta['schema_version'])}, this bevsimdet reads {SCHEMA_VERSION}", fix=fix)
    if meta.get("box_convention") != BOX_CONVENTION:
        raise DataError(f"info file {path} uses box convention {_show(meta.get('box_convention'))}, expected {BOX_CONVENTION!r}", fix=fix)
    if meta.get("cameras") != list(CAMERAS):
        raise DataError(f"info file {path} stores cameras {_show(meta.get('cameras'))}, expected {', '.join(CAMERAS)}", fix=fix)
    try:
        _string(meta, "version"), _string(meta, "split"), _integer(meta, "max_sweeps", minimum=0)
    except MalformedRecord as e:
        raise DataError(f"info file {path}: {e}", fix=fix) from None
    problem = _check_columns(arrays, meta["max_sweeps"])
    if problem is not None:
        raise DataError(f"info file {path}: {problem}", fix=fix)
    infos = ColumnarInfos(meta, arrays, path)
    if verify:
        infos.verify()
    return infos
