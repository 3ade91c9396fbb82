"""Malformed input to every reader of user files gives a one-line UserError: never another
exception, a hang, or a silently wrong result.

Readers: info files (``load_infos``), results files (``load_results``), calibration files
(``load_calib``) and configs (``load_config``). Each is fed seeded byte-level and structural
mutants of a valid file (see ``tests/fuzzing.py``), plus targeted corruptions that must be
rejected because accepting them would give wrong numbers later.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import numpy as np
import pytest
from fuzzing import byte_mutants, check_reader, encode, structural_mutants

from bevsimdet.data.classes import CAMERAS
from bevsimdet.errors import UserError

SEED = 1234
N_BYTES = 60  # random byte-level mutants per reader
N_STRUCT = 150  # random structural mutants per reader
CONFIGS = Path(__file__).resolve().parents[1] / "configs"

pytestmark = pytest.mark.timeout(120)  # a reader that hangs fails instead of stalling the suite


def rejects(read, path: Path, doc_or_bytes, match: str | None = None) -> str:
    """``read`` must refuse this content with a one-line UserError; returns the message."""
    path.write_bytes(doc_or_bytes if isinstance(doc_or_bytes, bytes) else json.dumps(doc_or_bytes).encode())
    with pytest.raises(UserError) as e:
        read(path)
    msg = str(e.value)
    assert "\n" not in msg
    if match is not None:
        assert match in msg, msg
    return msg


# --------------------------------------------------------------------------------------------
# calibration


@pytest.fixture(scope="module")
def calib_doc() -> dict:
    return json.loads((CONFIGS / "calib_template.json").read_text())


def test_calib_template_is_valid_and_matches_the_simulated_rig(calib_doc):
    from bevsimdet.data.custom import load_calib
    from bevsimdet.data.sim.rig import camera_spec

    calib = load_calib(CONFIGS / "calib_template.json")
    assert calib.cameras == CAMERAS and calib.ego_poses == {}
    for n, cam in enumerate(CAMERAS):
        spec = camera_spec(cam, 1.0)
        np.testing.assert_allclose(calib.intrinsics[n], spec.intrinsics)
        np.testing.assert_allclose(calib.cam2ego[n], spec.cam2ego, atol=1e-6)
        assert calib.image_sizes[n] == (spec.height, spec.width)


def test_calib_fuzz(tmp_path, calib_doc):
    from bevsimdet.data.custom import load_calib

    rng = random.Random(SEED)
    data = json.dumps(calib_doc).encode()
    counts = check_reader(load_calib, tmp_path / "calib.json", byte_mutants(data, rng, N_BYTES))
    counts2 = check_reader(load_calib, tmp_path / "calib.json", encode(structural_mutants(calib_doc, rng, N_STRUCT)))
    # only comment edits may pass; every mutant of a number, matrix or key is refused
    assert counts["rejected"] >= N_BYTES and counts2["rejected"] > 0.9 * N_STRUCT


def _calib_case(doc: dict, edit) -> dict:
    out = copy.deepcopy(doc)
    edit(out)
    return out


CALIB_BAD = {
    "lacks CAM_BACK": lambda d: d["cameras"].pop("CAM_BACK"),
    "unknown key(s) CAM_EXTRA": lambda d: d["cameras"].update(CAM_EXTRA=d["cameras"]["CAM_FRONT"]),
    "must be 'bevsimdet-calib/v1'": lambda d: d.update(format="v0"),
    "intrinsics must be a 3x3 matrix": lambda d: d["cameras"]["CAM_FRONT"].update(intrinsics=[[1, 0], [0, 1]]),
    "focal lengths": lambda d: d["cameras"]["CAM_FRONT"]["intrinsics"][0].__setitem__(0, -5.0),
    "unit quaternion": lambda d: d["cameras"]["CAM_FRONT"]["sensor2ego"].update(rotation=[1.0, 0.2, 0.0, 0.0]),
    "rotation (quaternion w, x, y, z) must be a list of 4": lambda d: d["cameras"]["CAM_FRONT"]["sensor2ego"].update(rotation=[0.0, 0.0, 1.57]),
    "optical axis points +90 deg": lambda d: d["cameras"]["CAM_FRONT"]["sensor2ego"].update(rotation=[1.0, 0.0, 0.0, 0.0]),
    "exactly one of": lambda d: d["cameras"]["CAM_FRONT"].update(cam2ego=np.eye(4).tolist()),
    "principal point": lambda d: d["cameras"]["CAM_FRONT"].update(image_size=[90, 160]),
    "translation must be a list of 3": lambda d: d["cameras"]["CAM_BACK"]["sensor2ego"].update(translation=[1.0, True, 2.0]),
    "non-finite": lambda d: d["cameras"]["CAM_BACK"]["sensor2ego"].update(translation=[1.0, float("nan"), 2.0]),
}


@pytest.mark.parametrize("problem", CALIB_BAD)
def test_calib_targeted_errors(tmp_path, calib_doc, problem):
    from bevsimdet.data.custom import load_calib

    msg = rejects(load_calib, tmp_path / "calib.json", _calib_case(calib_doc, CALIB_BAD[problem]), problem)
    assert str(tmp_path / "calib.json") in msg and "calib_template.json" in msg


def test_calib_cam2ego_matrix_equals_sensor2ego(tmp_path, calib_doc):
    from bevsimdet.data.custom import load_calib, parse_calib

    ref = parse_calib(calib_doc)
    doc = copy.deepcopy(calib_doc)
    cam = doc["cameras"]["CAM_BACK_LEFT"]
    del cam["sensor2ego"]
    cam["cam2ego"] = ref.cam2ego[CAMERAS.index("CAM_BACK_LEFT")].tolist()
    np.testing.assert_allclose(parse_calib(doc).cam2ego, ref.cam2ego, atol=1e-9)
    cam["cam2ego"][0][0] *= 2.0  # a scaled "rotation"
    rejects(load_calib, tmp_path / "c.json", doc, "must be a rotation")
    with pytest.raises(UserError, match="does not exist"):
        load_calib(tmp_path / "missing.json")


# --------------------------------------------------------------------------------------------
# info files


@pytest.fixture(scope="module")
def info_doc(tmp_path_factory) -> dict:
    """A small valid info file (2 samples, 2 sweeps, 2 boxes) written by the data layer's writer."""
    from bevsimdet.data.infos import Annotations, CameraInfo, InfoFile, SampleInfo, SweepInfo, save_infos

    rng = np.random.default_rng(0)
    eye = np.eye(4)
    samples = []
    for i in range(2):
        cams = {c: CameraInfo(f"samples/{c}/{i}.jpg", i, np.array([[100.0, 0, 50], [0, 100, 40], [0, 0, 1]]), eye, eye, eye) for c in CAMERAS}
        sweeps = [SweepInfo(f"sweeps/LIDAR_TOP/{i}_{k}.bin", i - k, 0.05 * (k + 1), eye) for k in range(2)]
        gt = Annotations(
            boxes=rng.normal(size=(2, 9)), names=["car", "pedestrian"], categories=["vehicle.car", "human.pedestrian.adult"],
            attributes=["vehicle.parked", ""], num_lidar_pts=np.array([3, 0]), num_radar_pts=np.array([0, 0]),
            visibility=np.array([4, 1]), instance_tokens=["a", "b"], tokens=["t1", "t2"],
        )
        samples.append(SampleInfo(f"tok{i}", "scene", "scene-0061", i, f"samples/LIDAR_TOP/{i}.bin", i, eye, eye, cams, sweeps, gt))
    path = tmp_path_factory.mktemp("infos") / "infos_mini_val.json"
    save_infos(InfoFile(1, "", "v1.0-mini", "mini_val", 2, samples), path)
    return json.loads(path.read_text())


def test_info_fuzz(tmp_path, info_doc):
    from bevsimdet.data.infos import load_infos

    rng = random.Random(SEED)
    check_reader(load_infos, tmp_path / "infos.json", byte_mutants(json.dumps(info_doc).encode(), rng, N_BYTES))
    check_reader(load_infos, tmp_path / "infos.json", encode(structural_mutants(info_doc, rng, N_STRUCT)))


INFO_BAD = {
    "intrinsics 2x2": lambda d: d["samples"][0]["cams"]["CAM_FRONT"].update(intrinsics=[[1.0, 0.0], [0.0, 1.0]]),
    "cam2ego 3x3": lambda d: d["samples"][0]["cams"]["CAM_BACK"].update(cam2ego=np.eye(3).tolist()),
    "boxes 7 wide": lambda d: d["samples"][1]["gt"].update(boxes=[[0.0] * 7, [0.0] * 7]),
    "NaN in ego2global": lambda d: d["samples"][0]["lidar"]["ego2global"][0].__setitem__(3, float("nan")),
    "names shorter than boxes": lambda d: d["samples"][0]["gt"].update(names=["car"]),
    "missing version": lambda d: d.pop("version"),
    "max_sweeps not a number": lambda d: d.update(max_sweeps="nine"),
    "samples not a list": lambda d: d.update(samples=7),
}


@pytest.mark.parametrize("problem", INFO_BAD)
def test_info_targeted_errors(tmp_path, info_doc, problem):
    from bevsimdet.data.infos import load_infos

    doc = copy.deepcopy(info_doc)
    INFO_BAD[problem](doc)
    rejects(load_infos, tmp_path / "infos.json", doc)


# --------------------------------------------------------------------------------------------
# results files


@pytest.fixture(scope="module")
def results_doc() -> dict:
    import torch

    from bevsimdet.data.batch import SampleMeta
    from bevsimdet.eval.results import DEFAULT_META, detections_to_results
    from bevsimdet.models.output import Detections

    g = torch.Generator().manual_seed(0)
    dets = [
        Detections(boxes=torch.cat([torch.randn(n, 3, generator=g) * 10, torch.rand(n, 3, generator=g) + 0.5, torch.randn(n, 3, generator=g)], 1),
                   scores=torch.rand(n, generator=g), labels=torch.randint(0, 10, (n,), generator=g))
        for n in (3, 0, 2)
    ]
    metas = [SampleMeta(f"s{i}") for i in range(3)]
    return {"meta": dict(DEFAULT_META), "results": detections_to_results(dets, metas)}


def test_results_fuzz(tmp_path, results_doc):
    from bevsimdet.eval.results import load_results

    rng = random.Random(SEED)
    check_reader(load_results, tmp_path / "res.json", byte_mutants(json.dumps(results_doc).encode(), rng, N_BYTES))
    counts = check_reader(load_results, tmp_path / "res.json", encode(structural_mutants(results_doc, rng, N_STRUCT)))
    assert counts["rejected"] > N_STRUCT // 2


# --------------------------------------------------------------------------------------------
# configs


BASE_YAML = "name: base\nseed: 3\ndata:\n  image_size: [128, 352]\n  sweeps: 2\ntrain:\n  lr: 0.001\n"
LEAF_YAML = "_base_: base.yaml\nname: leaf\ndata:\n  sweeps: 1\ntrain:\n  batch_size: 2\n"


def test_config_fuzz(tmp_path):
    from bevsimdet.config import load_config

    (tmp_path / "base.yaml").write_text(BASE_YAML)
    leaf = tmp_path / "leaf.yaml"
    leaf.write_text(LEAF_YAML)
    assert load_config(leaf).data.sweeps == 1  # the unmutated pair is valid
    rng = random.Random(SEED)
    cases = list(byte_mutants(LEAF_YAML.encode(), rng, N_BYTES))
    cases += [
        ("billion laughs", b"a: &a [1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
                           b"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"),
        ("python tag", b"!!python/object/apply:os.system ['echo pwned']\n"),
        ("tab indent", b"model:\n\ttype: student\n"),
        ("base is a number", b"_base_: 5\n"),
        ("base is a folder", b"_base_: .\n"),
        ("base is itself", b"_base_: leaf.yaml\n"),
        ("override wrong type", b"_base_: base.yaml\ntrain: {lr: [1, 2]}\n"),
        ("section is a list", b"_base_: base.yaml\nmodel: [1]\n"),
    ]
    counts = check_reader(load_config, leaf, iter(cases))
    assert counts["rejected"] >= len(cases) - N_BYTES
