"""Detectors composed from the branch modules, one per modality (BEVFusion layout).

::

    camera:  images -> ImageEncoder -> LSSTransform -> camera_bev ------------------+
    lidar:   points -> PillarLidarEncoder -> lidar_bev ------------------------------+
    fusion:  ConvFuser([camera_bev, lidar_bev]) -> fused_bev                          |
             -> BEVDecoder -> decoder_bev -> CenterHead -> preds (one dict per task) <+

:class:`CameraDetector` (the BEVFusion-C baseline) reads only the images and camera matrices of
a batch, never ``batch.points``; :class:`FusionDetector` is the teacher.

Every detector declares ``uses_lidar``: whether its forward reads ``batch.points``. Evaluation,
inference and training hand a model :func:`model_input` of a batch, so a camera-only model
(baseline, student) is given a batch without LiDAR and no path can feed it points; only the
``model.camera.oracle_depth`` diagnostic makes a camera model read LiDAR, and it says so.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

from bevsimdet.data.batch import Batch
from bevsimdet.models.output import DetectorOutput


def _points(batch: Batch, who: str) -> list[Tensor]:
    if batch.points is None:
        raise ValueError(f"the {who} detector needs LiDAR points, but batch.points is None (set data.load_points: true)")
    return batch.points


def uses_lidar(model: nn.Module) -> bool:
    """Whether ``model``'s forward reads ``batch.points`` (its ``uses_lidar``; DDP / DataParallel
    wrappers are looked through). A module that does not declare it is a programming error:
    guessing would either feed a camera model points or starve a LiDAR one."""
    inner = model.module if isinstance(model, (DistributedDataParallel, DataParallel)) else model
    flag = getattr(inner, "uses_lidar", None)
    if flag is None:
        raise TypeError(f"{type(inner).__name__} does not declare uses_lidar (whether its forward reads batch.points)")
    return bool(flag)


def model_input(model: nn.Module, batch: Batch) -> Batch:
    """The batch ``model`` is given: ``batch`` itself for a model that reads LiDAR, else
    ``batch.without_lidar()``. The one place that decides; the caller keeps the full batch for
    what is not the model's input (targets, depth agreement against LiDAR)."""
    return batch if uses_lidar(model) else batch.without_lidar()


class CameraDetector(nn.Module):
    """Camera-only detector: ``feats`` camera_bev, decoder_bev; ``depth`` from the LSS."""

    modality = "camera"

    @property
    def uses_lidar(self) -> bool:
        # only the oracle-depth diagnostic reads LiDAR (one-hot LiDAR depth instead of the learned one)
        return bool(getattr(self.view_transform, "oracle_depth", False))

    def __init__(self, image_encoder: nn.Module, view_transform: nn.Module, decoder: nn.Module, head: nn.Module):
        super().__init__()
        self.image_encoder = image_encoder
        self.view_transform = view_transform
        self.decoder = decoder
        self.head = head

    def forward(self, batch: Batch) -> DetectorOutput:
        camera_bev, depth = self.view_transform(self.image_encoder(batch.images), batch)
        decoded = self.decoder(camera_bev)
        return DetectorOutput(preds=self.head(decoded), feats={"camera_bev": camera_bev, "decoder_bev": decoded}, depth=depth)


class LidarDetector(nn.Module):
    """LiDAR-only detector: ``feats`` lidar_bev, decoder_bev."""

    modality = "lidar"
    uses_lidar = True

    def __init__(self, lidar_encoder: nn.Module, decoder: nn.Module, head: nn.Module):
        super().__init__()
        self.lidar_encoder = lidar_encoder
        self.decoder = decoder
        self.head = head

    def forward(self, batch: Batch) -> DetectorOutput:
        lidar_bev = self.lidar_encoder(_points(batch, "LiDAR"))
        decoded = self.decoder(lidar_bev)
        return DetectorOutput(preds=self.head(decoded), feats={"lidar_bev": lidar_bev, "decoder_bev": decoded})


class FusionDetector(nn.Module):
    """Camera + LiDAR (the BEVFusion-style teacher): ``feats`` camera_bev, lidar_bev, fused_bev,
    decoder_bev; ``depth`` from the LSS."""

    modality = "fusion"
    uses_lidar = True

    def __init__(self, image_encoder: nn.Module, view_transform: nn.Module, lidar_encoder: nn.Module, fuser: nn.Module, decoder: nn.Module, head: nn.Module):
        super().__init__()
        self.image_encoder = image_encoder
        self.view_transform = view_transform
        self.lidar_encoder = lidar_encoder
        self.fuser = fuser
        self.decoder = decoder
        self.head = head

    def forward(self, batch: Batch) -> DetectorOutput:
        camera_bev, depth = self.view_transform(self.image_encoder(batch.images), batch)
        lidar_bev = self.lidar_encoder(_points(batch, "fusion"))
        fused = self.fuser([camera_bev, lidar_bev])
        decoded = self.decoder(fused)
        feats = {"camera_bev": camera_bev, "lidar_bev": lidar_bev, "fused_bev": fused, "decoder_bev": decoded}
        return DetectorOutput(preds=self.head(decoded), feats=feats, depth=depth)


__all__ = ["CameraDetector", "LidarDetector", "FusionDetector", "uses_lidar", "model_input"]
