"""Image encoder: ResNet-style backbone + GeneralizedLSSFPN-style neck -> one stride-8 map.

Backbone parameter names follow torchvision's ResNets (``conv1``, ``bn1``, ``layer1..4``,
``downsample.0/1``), so torchvision ImageNet weights saved to a local file load as they are
(``pretrained=``). The ``tiny`` layout (one BasicBlock per stage, widths 16/32/64/128) keeps demo
training on a CPU in minutes. Swin-T is available only when ``timm`` happens to be installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bevsimdet.errors import ConfigError
from bevsimdet.models.image.efficientnet import VARIANTS, EfficientNetLite, load_efficientnet_weights, resolve_pretrained

# arch -> (block type, blocks per stage, stem width)
LAYOUTS: dict[str, tuple[str, tuple[int, ...], int]] = {
    "tiny": ("basic", (1, 1, 1, 1), 16),
    "resnet18": ("basic", (2, 2, 2, 2), 64),
    "resnet34": ("basic", (3, 4, 6, 3), 64),
    "resnet50": ("bottleneck", (3, 4, 6, 3), 64),
}


def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, cout, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)  # stride on the 3x3 (ResNet v1.5)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, cout, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class ResNet(nn.Module):
    """Images (B*N) x 3 x H x W -> stage outputs at strides 8, 16, 32 (``out_channels`` widths)."""

    def __init__(self, block: str, layers: Sequence[int], stem_width: int = 64, frozen_stages: int = -1):
        super().__init__()
        cls = BasicBlock if block == "basic" else Bottleneck
        self.conv1 = nn.Conv2d(3, stem_width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = stem_width
        widths = [stem_width * 2**i for i in range(4)]
        for i, (n, w) in enumerate(zip(layers, widths)):
            blocks = []
            for j in range(n):
                blocks.append(cls(cin, w, 2 if (j == 0 and i > 0) else 1))
                cin = w * cls.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.out_channels = [w * cls.expansion for w in widths[1:]]
        self.frozen_stages = frozen_stages
        self._freeze()

    def _freeze(self) -> None:
        if self.frozen_stages < 0:
            return
        frozen = [self.conv1, self.bn1] + [getattr(self, f"layer{i}") for i in range(1, self.frozen_stages + 1)]
        for m in frozen:
            m.requires_grad_(False)

    def train(self, mode: bool = True) -> "ResNet":
        super().train(mode)
        if self.frozen_stages >= 0:  # frozen stages keep their BatchNorm statistics too
            self.bn1.eval()
            for i in range(1, self.frozen_stages + 1):
                getattr(self, f"layer{i}").eval()
        return self

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        c3 = self.layer2(x)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c3, c4, c5]


class SwinBackbone(nn.Module):
    """timm's Swin-T (stages 2-4, strides 8/16/32); only when timm is installed."""

    def __init__(self, image_size: tuple[int, int]):
        super().__init__()
        try:
            import timm
        except ImportError:
            raise ConfigError("model.image.arch 'swin_t' needs the optional package timm", fix="install timm or use arch: resnet50") from None
        self.body = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, features_only=True, out_indices=(1, 2, 3), img_size=tuple(image_size))
        self.out_channels = list(self.body.feature_info.channels())

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = self.body(x)
        # timm returns NHWC for Swin; the rest of the model is NCHW
        return [f.permute(0, 3, 1, 2).contiguous() if f.shape[1] != c else f for f, c in zip(feats, self.out_channels)]


class LSSFPNNeck(nn.Module):
    """Top-down FPN (GeneralizedLSSFPN): upsample, concat with the finer level, 1x1 then 3x3
    ConvBNReLU. Levels at strides 8/16/32 -> one stride-8 map (B*N) x C x H/8 x W/8."""

    def __init__(self, in_channels: Sequence[int], out_channels: int):
        super().__init__()
        self.lateral = nn.ModuleList()
        self.fuse = nn.ModuleList()
        above = in_channels[-1]
        for cin in reversed(in_channels[:-1]):
            self.lateral.append(conv_bn_relu(cin + above, out_channels, 1))
            self.fuse.append(conv_bn_relu(out_channels, out_channels, 3))
            above = out_channels

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        x = feats[-1]
        for lateral, fuse, finer in zip(self.lateral, self.fuse, reversed(feats[:-1])):
            x = F.interpolate(x, size=finer.shape[-2:], mode="bilinear", align_corners=False)
            x = fuse(lateral(torch.cat([finer, x], 1)))
        return x


class ImageEncoder(nn.Module):
    """Images B x N x 3 x H x W -> features (B*N) x C x H/8 x W/8.

    Args:
        arch: ``tiny``, ``resnet18``, ``resnet34``, ``resnet50`` or ``swin_t`` (needs timm).
        out_channels: neck width C.
        image_size: (H, W), needed by Swin only.
        base_width: stem width of the ``tiny`` layout.
        pretrained: optional local weight file for the backbone (torchvision key names).
        frozen_stages: freeze the stem and the first k stages (-1: none).
    """

    stride = 8

    def __init__(
        self,
        arch: str = "tiny",
        out_channels: int = 64,
        *,
        image_size: tuple[int, int] = (128, 352),
        base_width: int = 16,
        pretrained: str | None = None,
        frozen_stages: int = -1,
    ):
        super().__init__()
        if arch == "swin_t":
            self.backbone: nn.Module = SwinBackbone(image_size)
        elif arch in VARIANTS:
            self.backbone = EfficientNetLite(arch, frozen_stages)
        elif arch in LAYOUTS:
            block, layers, stem = LAYOUTS[arch]
            self.backbone = ResNet(block, layers, base_width if arch == "tiny" else stem, frozen_stages)
        else:
            raise ConfigError(f"unknown image backbone '{arch}'", fix=f"use one of {[*LAYOUTS, *VARIANTS, 'swin_t']}")
        self.neck = LSSFPNNeck(self.backbone.out_channels, out_channels)
        self.out_channels = out_channels
        if pretrained and isinstance(self.backbone, EfficientNetLite):
            path = resolve_pretrained(pretrained)
            load_efficientnet_weights(self.backbone, read_weight_tensors(path), path)
        elif pretrained:
            load_backbone_weights(self.backbone, pretrained)

    def forward(self, images: Tensor) -> Tensor:
        return self.neck(self.backbone(images.flatten(0, 1)))


def read_weight_tensors(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a weight file (safetensors, or a tensor dict via torch.load weights_only)."""
    from bevsimdet.weights import read_checkpoint

    tensors = read_checkpoint(Path(path))[0]
    # a bevsimdet checkpoint or a plain file (read_checkpoint files its tensors under model/)
    return {k.removeprefix("model/"): v for k, v in tensors.items() if not k.startswith(("optim/", "ema/"))}


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load a local backbone weight file (safetensors, or a tensor dict via torch.load
    weights_only); keys may carry a ``backbone.`` prefix; classifier keys are ignored."""
    from bevsimdet.weights import read_checkpoint

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pretrained backbone weights not found: {path}", fix="set model.image.pretrained to an existing file or null")
    tensors, _ = read_checkpoint(path)
    state = {k.removeprefix("model/").removeprefix("backbone."): v for k, v in tensors.items()}
    own = backbone.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ConfigError(f"{path} holds no weights for this backbone", fix="check model.image.arch matches the file (torchvision key names)")
    missing = sorted(set(own) - set(usable))
    if any(not k.endswith("num_batches_tracked") for k in missing):
        raise ConfigError(f"{path} lacks {len(missing)} backbone weights (e.g. {missing[0]})", fix="use a weight file of the same arch")
    backbone.load_state_dict(usable, strict=False)


__all__ = ["ImageEncoder", "EfficientNetLite", "ResNet", "LSSFPNNeck", "BasicBlock", "Bottleneck", "load_backbone_weights", "conv_bn_relu"]
