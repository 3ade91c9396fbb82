"""The few nuScenes tables detection evaluation reads, without the devkit's ``NuScenes`` object.

``nuscenes.NuScenes`` imports matplotlib, OpenCV, scikit-learn and friends (about 2 s) and loads
all 13 tables before building its reverse indexes. Evaluation needs only the scenes and samples
of a split, their annotations (with category, attribute and the neighbouring annotations for the
velocity), and the ego position of each sample's LIDAR_TOP keyframe. :func:`read_eval_tables`
reads exactly those tables with :mod:`json` and rebuilds the two reverse-index facts the devkit
adds (``sample["anns"]``, ``sample["data"]["LIDAR_TOP"]``, ``annotation["category_name"]``) with
the same rules (table order; the last keyframe of a channel wins).

:func:`split_scenes` reads the devkit's split lists from its ``splits.py`` source without
importing the ``nuscenes`` package (whose ``__init__`` imports ``NuScenes``), falling back to the
import when the file is not in the expected form. Both are checked against the devkit in
``tests/test_eval_tables.py``.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import signal
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from pathlib import Path
from typing import Any, Callable

from bevsimdet.errors import DataError, UserError
from bevsimdet.io import load_json, parse_json

LIDAR = "LIDAR_TOP"
# Tables read by :func:`read_eval_tables`; a GT cache is keyed by their sizes and mtimes.
EVAL_TABLES = ("scene", "sample", "sample_annotation", "instance", "category", "attribute", "sensor",
               "calibrated_sensor", "sample_data", "ego_pose")
SPLIT_VERSION = {"train": "trainval", "val": "trainval", "train_detect": "trainval", "train_track": "trainval",
                 "mini_train": "mini", "mini_val": "mini", "test": "test"}
_LITERAL_SPLITS = ("train_detect", "train_track", "val", "test", "mini_train", "mini_val")


@lru_cache(maxsize=1)
def split_scenes() -> dict[str, list[str]]:
    """``nuscenes.utils.splits.create_splits_scenes()``: split name -> scene names."""
    try:
        return _parse_devkit_splits()
    except (OSError, ValueError, SyntaxError, KeyError, TypeError):  # another devkit layout: import it
        from nuscenes.utils.splits import create_splits_scenes

        return create_splits_scenes(verbose=False)


def _parse_devkit_splits() -> dict[str, list[str]]:
    spec = importlib.util.find_spec("nuscenes")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the nuscenes-devkit is not installed", fix="pip install nuscenes-devkit (see requirements.lock)")
    path = Path(list(spec.submodule_search_locations)[0]) / "utils" / "splits.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: dict[str, list[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in _LITERAL_SPLITS:
                found[name] = list(ast.literal_eval(node.value))
    splits = {s: found[s] for s in _LITERAL_SPLITS}  # KeyError when one is missing -> fallback
    # splits.py: train = list(sorted(set(train_detect + train_track)))
    splits["train"] = sorted(set(splits["train_detect"] + splits["train_track"]))
    every = splits["train"] + splits["val"] + splits["test"]
    if len(every) != 1000 or len(set(every)) != 1000 or not all(isinstance(s, str) for s in every):
        raise ValueError("unexpected split lists")
    order = ("train", "val", "test", "mini_train", "mini_val", "train_detect", "train_track")
    return {s: splits[s] for s in order}


def check_split(split: str, version: str) -> list[str]:
    """The scene names of ``split``, after checking it belongs to ``version`` (as the devkit does)."""
    splits = split_scenes()
    if split not in splits:
        raise UserError(f"unknown split '{split}'", fix=f"use one of: {', '.join(sorted(splits))}")
    required = SPLIT_VERSION.get(split)
    if required and not version.endswith(required):
        raise UserError(f"split '{split}' does not belong to version '{version}'", fix=f"use a v1.0-{required} dataset")
    return splits[split]


def table_folder(dataroot: str | Path, version: str) -> Path:
    root = Path(dataroot)
    folder = root / version
    if not folder.is_dir():
        raise DataError(f"no '{version}' table folder in {root}", fix="pass --dataroot of a nuScenes-format dataset and its --version")
    return folder


def read_table(folder: Path, name: str) -> list[dict]:
    path = folder / f"{name}.json"
    try:
        data = load_json(path)
    except FileNotFoundError:
        raise DataError(f"nuScenes table {path} is missing", fix="re-extract the dataset's metadata (or re-run `bevsimdet simulate`)") from None
    except OSError as e:
        raise DataError(f"cannot read nuScenes table {path}: {e.strerror or e}") from None
    except (ValueError, RecursionError) as e:
        raise DataError(f"nuScenes table {path} is not valid JSON ({str(e).splitlines()[0][:120]})",
                        fix="re-extract or re-simulate the dataset") from None
    if not isinstance(data, list):
        raise DataError(f"nuScenes table {path} must be a JSON list of records, got {type(data).__name__}")
    return data


@dataclass
class EvalTables:
    """What :func:`bevsimdet.eval.gt.load_gt` reads, in the devkit's orders.

    * ``samples``           the ``sample`` table (records with ``token``, ``scene_token``, ``timestamp``).
    * ``scene_name``        scene token -> name.
    * ``anns``              sample token -> its annotations in ``sample_annotation`` table order, each with
                            ``category_name`` set (the devkit's ``sample["anns"]``).
    * ``ann_table``         annotation token -> record (for the velocity's neighbours).
    * ``attribute_name``    attribute token -> name.
    * ``lidar_ego``         sample token -> ego translation of its LIDAR_TOP keyframe (absent: none).
    """

    samples: list[dict]
    scene_name: dict[str, str]
    anns: dict[str, list[dict]]
    ann_table: dict[str, dict]
    attribute_name: dict[str, str]
    lidar_ego: dict[str, list[float]]

    @classmethod
    def from_nuscenes(cls, nusc: Any) -> "EvalTables":
        """The same facts from a loaded ``nuscenes.NuScenes`` (its reverse indexes)."""
        ann_table = {a["token"]: a for a in nusc.sample_annotation}
        lidar_ego = {}
        for s in nusc.sample:
            sd = s["data"].get(LIDAR)
            if sd is not None:
                lidar_ego[s["token"]] = nusc.get("ego_pose", nusc.get("sample_data", sd)["ego_pose_token"])["translation"]
        return cls(
            samples=nusc.sample,
            scene_name={s["token"]: s["name"] for s in nusc.scene},
            anns={s["token"]: [ann_table[t] for t in s["anns"]] for s in nusc.sample},
            ann_table=ann_table,
            attribute_name={a["token"]: a["name"] for a in nusc.attribute},
            lidar_ego=lidar_ego,
        )


def read_eval_tables(folder: Path, scene_names: set[str] | None = None, scan: bool = True, parallel: bool = False) -> EvalTables:
    """Read the :data:`EVAL_TABLES` of a version folder. Broken references raise a one-line
    :class:`DataError` naming the table and token.

    With ``scene_names`` only the annotations of those scenes' samples are read (``anns`` then has
    those samples only and ``ann_table`` their annotations), by the byte scan
    :func:`scan_annotations` unless ``scan`` is False or the scan cannot vouch for its answer, in
    which case the whole table is parsed as without ``scene_names``. ``parallel`` reads the ego
    poses in a forked child meanwhile (only where no threads could be forked mid-lock: the
    ``evaluate`` command, which imports neither torch nor the devkit)."""
    try:
        return _read_eval_tables(folder, scene_names, scan, parallel)
    except KeyError as e:
        raise DataError(f"nuScenes tables in {folder} are inconsistent: a record lacks field {e} or refers to a missing token",
                        fix="re-extract or re-simulate the dataset") from None


def _read_eval_tables(folder: Path, scene_names: set[str] | None = None, scan: bool = True, parallel: bool = False) -> EvalTables:
    samples = read_table(folder, "sample")
    scene_name = {s["token"]: s["name"] for s in read_table(folder, "scene")}
    category = {c["token"]: c["name"] for c in read_table(folder, "category")}
    instance_category = {i["token"]: category[i["category_token"]] for i in read_table(folder, "instance")}
    attribute_name = {a["token"]: a["name"] for a in read_table(folder, "attribute")}
    sensor_channel = {s["token"]: s["channel"] for s in read_table(folder, "sensor")}
    lidar_cs = {c["token"] for c in read_table(folder, "calibrated_sensor") if sensor_channel[c["sensor_token"]] == LIDAR}
    # the ego poses (sample_data + ego_pose, 1.8 GB at trainval size) and the annotations (0.6 GB)
    # are independent reads of about the same cost: with ``parallel`` a forked child does the first
    lidar_ego = _in_background(lidar_ego_translations, folder, lidar_cs, len(samples), scan, enabled=parallel)
    try:
        records = None
        if scene_names is not None:
            wanted = {s["token"] for s in samples if scene_name[s["scene_token"]] in scene_names}
            anns: dict[str, list[dict]] = {t: [] for t in wanted}
            records = scan_annotations(folder / "sample_annotation.json", wanted) if scan else None
        if records is None:
            anns = {s["token"]: [] for s in samples}
            records = read_table(folder, "sample_annotation")
        ann_table: dict[str, dict] = {}
        for a in records:
            a["category_name"] = instance_category[a["instance_token"]]
            ann_table[a["token"]] = a
            anns[a["sample_token"]].append(a)
    except BaseException:
        lidar_ego.cancel()
        raise
    return EvalTables(samples, scene_name, anns, ann_table, attribute_name, lidar_ego.result())


class _Background:
    """``fn(*args)`` computed in a forked child and sent back as JSON (:func:`_in_background`)."""

    def __init__(self, fn: Callable[..., Any], args: tuple, enabled: bool):
        self.fn, self.args, self.pid, self.fd = fn, args, 0, -1
        if enabled and hasattr(os, "fork") and (os.cpu_count() or 1) > 1:
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: compute, send, and leave without running the parent's exit handlers
                status = 1
                try:
                    os.close(read_fd)
                    payload = json.dumps(fn(*args)).encode()
                    with os.fdopen(write_fd, "wb") as out:
                        out.write(payload)
                    status = 0
                except BaseException:  # noqa: BLE001 - the parent recomputes and raises it properly
                    pass
                finally:
                    os._exit(status)
            os.close(write_fd)
            self.pid, self.fd = pid, read_fd

    def result(self) -> Any:
        if self.pid:
            with os.fdopen(self.fd, "rb") as pipe:
                payload = pipe.read()
            _, status = os.waitpid(self.pid, 0)
            self.pid = 0
            if status == 0:
                return parse_json(payload)
        return self.fn(*self.args)  # no child, or it failed: here, so that errors are raised in this process

    def cancel(self) -> None:
        if self.pid:
            os.close(self.fd)
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.pid = 0


def _in_background(fn: Callable[..., Any], *args: Any, enabled: bool) -> _Background:
    """Start ``fn(*args)`` (a JSON-able result) in a forked child when ``enabled``, fork exists and
    there is a second core; ``.result()`` waits for it, and computes it in this process when there
    is no child or the child failed (so the caller sees the same value or the same exception)."""
    return _Background(fn, args, enabled)


def lidar_ego_translations(folder: Path, lidar_cs: set[str], expected: int, scan: bool = True) -> dict[str, list[float]]:
    """Sample token -> ego translation of its (last) LIDAR_TOP keyframe.

    ``sample_data.json`` and ``ego_pose.json`` hold ~2.6M records each at trainval size (1.8 GB of
    JSON) of which evaluation needs one keyframe a sample, so by default they are scanned as bytes
    (:func:`scan_lidar_keyframes`, :func:`scan_records`); whenever a scan cannot vouch for its
    answer it returns None and the tables are parsed whole (``scan=False``, the reference)."""
    pose_of = scan_lidar_keyframes(folder / "sample_data.json", lidar_cs, expected) if scan else None
    if pose_of is None:
        pose_of = {}
        for sd in read_table(folder, "sample_data"):
            if sd["is_key_frame"] and sd["calibrated_sensor_token"] in lidar_cs:
                pose_of[sd["sample_token"]] = sd["ego_pose_token"]
    wanted = list(dict.fromkeys(pose_of.values()))
    found = scan_records(folder / "ego_pose.json", wanted) if scan else None
    if found is None:
        wanted_set = set(wanted)
        found = {p["token"]: p for p in read_table(folder, "ego_pose") if p["token"] in wanted_set}
    return {s: found[p]["translation"] for s, p in pose_of.items()}


_TRUE = re.compile(rb'"is_key_frame"\s*:\s*true')
_FALSE = re.compile(rb'"is_key_frame"\s*:\s*false')
_CALIBRATION = re.compile(rb'"calibrated_sensor_token"\s*:\s*"([^"\\]*)"')
_SPACE = b" \t\r\n"


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None  # the full parse names the problem


def _record_around(data: bytes, at: int) -> tuple[int, int]:
    """Start and end (exclusive) of the flat JSON object holding byte ``at``; (-1, -1) when the bytes
    around it do not look like one element of an array of objects."""
    start = data.rfind(b"{", 0, at)
    end = data.find(b"}", at)
    if start < 0 or end < 0:
        return -1, -1
    before = data[max(0, start - 256):start].rstrip(_SPACE)[-1:]
    after = data[end + 1:end + 257].lstrip(_SPACE)[:1]
    if before not in (b"[", b",") or after not in (b",", b"]"):
        return -1, -1
    return start, end + 1


def scan_lidar_keyframes(path: Path, lidar_cs: set[str], expected: int) -> dict[str, str] | None:
    """Sample token -> ego pose token of its keyframe whose calibrated sensor is in ``lidar_cs``,
    from the bytes of a ``sample_data.json``; None when the scan cannot be sure (the caller parses it).

    Byte searches find the ``"is_key_frame": true`` keys (any whitespace); the record around each
    (from the ``{`` before to the ``}`` after; any key order) gives its ``calibrated_sensor_token``,
    and the LIDAR_TOP ones are parsed and must be flat objects with ``is_key_frame`` true. Sure
    means: every ``is_key_frame`` value is the literal ``true`` or ``false`` (counted), every
    keyframe record has a calibration token, every parsed one checks out, and they are ``expected``
    records (one a sample) of as many distinct samples: a record cut wrong because a brace sits in a
    string, or a sample with two LIDAR_TOP keyframes (the devkit keeps the last), changes the count."""
    data = _read_bytes(path)
    if data is None or not data.lstrip(_SPACE).startswith(b"["):
        return None
    keys = data.count(b'"is_key_frame"')
    true_at: list[int] = []
    if data.count(b'"is_key_frame": true') + data.count(b'"is_key_frame": false') == keys:
        at = data.find(b'"is_key_frame": true')  # the layout json.dump writes: plain searches
        while at >= 0:
            true_at.append(at)
            at = data.find(b'"is_key_frame": true', at + 20)
    else:
        true_at = [m.start() for m in _TRUE.finditer(data)]
        if len(true_at) + len(_FALSE.findall(data)) != keys:
            return None
    lidar = {t.encode() for t in lidar_cs}
    pose_of: dict[str, str] = {}
    records = 0
    for at in true_at:
        start, end = data.rfind(b"{", 0, at), data.find(b"}", at) + 1
        m = _CALIBRATION.search(data, start, end) if start >= 0 and end > 0 else None
        if m is None:
            return None
        if m.group(1) not in lidar:
            continue  # another channel's keyframe
        if _record_around(data, at) != (start, end):
            return None
        try:
            record = parse_json(data[start:end])
        except ValueError:
            return None
        if not isinstance(record, dict) or record.get("is_key_frame") is not True:
            return None
        try:
            if record["calibrated_sensor_token"] not in lidar_cs:
                return None
            pose_of[record["sample_token"]] = record["ego_pose_token"]
        except (KeyError, TypeError):
            return None
        records += 1
    if records != expected or len(pose_of) != expected:
        return None
    return pose_of


_SAMPLE_TOKEN = re.compile(rb'"sample_token"\s*:\s*"([^"\\]*)"')


def scan_annotations(path: Path, sample_tokens: set[str]) -> list[dict] | None:
    """The records of a ``sample_annotation.json`` whose ``sample_token`` is one of
    ``sample_tokens``, in table order, from the file's bytes; None when the scan cannot be sure (the
    caller parses the table).

    A split holds a fraction of the annotations (val: 18% of trainval's 1.17M), so the other
    records are never parsed. One regex pass lists every ``"sample_token"`` key's value (outside a
    string a quote is a delimiter and inside one it is escaped, so it cannot hit string contents);
    the wanted ones are then found in order by searching the bytes for each quoted token from the
    end of the record before, checking that the hit is that key's value. Sure means: every such key
    has a plain token (counted), each wanted record cuts out between the ``{`` before and the ``}``
    after as one element of the array, the cut records hold no other brace and parse together as
    objects, each has the token it was found by and its own distinct ``token``, and every
    ``prev``/``next`` annotation the velocities need is among them (true of nuScenes, whose
    instances never leave their scene)."""
    data = _read_bytes(path)
    if data is None or not data.lstrip(_SPACE).startswith(b"["):
        return None
    every = _SAMPLE_TOKEN.findall(data)
    if len(every) != data.count(b'"sample_token"'):
        return None  # a key with an escaped or non-string value, or the name as a value
    wanted = {t.encode() for t in sample_tokens}
    found = [t for t in every if t in wanted]
    spans: list[tuple[int, int]] = []
    pos = 0
    for token in found:
        quoted = b'"' + token + b'"'
        at = data.find(quoted, pos)
        while at >= 0:
            key = data.rfind(b'"sample_token"', pos, at)
            m = _SAMPLE_TOKEN.match(data, key) if key >= 0 else None
            if m is not None and m.end() == at + len(quoted):
                break
            at = data.find(quoted, at + 1)  # the token as another field's value
        if at < 0:
            return None
        start, end = _record_around(data, at)
        if start < pos:
            return None  # not one array element, or two keys in one record
        spans.append((start, end))
        pos = end
    joined = b"[" + b",".join(data[a:b] for a, b in spans) + b"]"
    if joined.count(b"{") != len(spans) or joined.count(b"}") != len(spans):
        return None
    try:
        records = parse_json(joined)
    except ValueError:
        return None
    if not isinstance(records, list) or len(records) != len(spans) or (records and set(map(type, records)) != {dict}):
        return None
    try:
        if [r["sample_token"] for r in records] != [t.decode() for t in found]:
            return None
        tokens = set(map(itemgetter("token"), records))
        neighbours = set(map(itemgetter("prev"), records)) | set(map(itemgetter("next"), records))
    except (KeyError, TypeError):
        return None  # the full parse names the problem
    if len(tokens) != len(records) or not all(isinstance(t, str) for t in tokens):
        return None
    neighbours.discard("")
    neighbours.discard(None)
    if not neighbours <= tokens:
        return None
    return records


def scan_records(path: Path, tokens: list[str], budget: float = 2.0) -> dict[str, dict] | None:
    """Token -> record for each of ``tokens`` in a table file (a JSON array of flat objects with
    unique ``token``s), by searching the bytes for each quoted token in turn from where the previous
    one was found, so tokens listed in table order cost one pass; None (the caller parses the table)
    when a token is missing, a record does not parse, or the search reads more than ``budget`` times
    the file (tokens far out of table order)."""
    data = _read_bytes(path)
    if data is None:
        return None
    size, pos, read = len(data), 0, 0
    found: dict[str, dict] = {}
    for token in tokens:
        quoted = b'"' + token.encode() + b'"'
        at, wrapped = pos, False
        while True:
            hit = data.find(quoted, at)
            if hit < 0:
                read += size - at
                if wrapped or pos == 0:
                    return None
                at, wrapped = 0, True  # tables out of order: once round from the start
                continue
            read += hit - at
            if read > budget * size or (wrapped and hit >= pos):
                return None
            start, end = _record_around(data, hit)
            if start < 0:
                return None
            try:
                record = parse_json(data[start:end])
            except ValueError:
                return None
            if isinstance(record, dict) and record.get("token") == token:
                break
            at = hit + 1  # the token as another field's value: look further
        found[token] = record
        pos = end
    return found


__all__ = ["EVAL_TABLES", "EvalTables", "check_split", "lidar_ego_translations", "read_eval_tables", "read_table", "scan_annotations", "scan_lidar_keyframes",
           "scan_records", "split_scenes", "table_folder"]
