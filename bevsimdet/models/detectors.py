"""Detectors composed from the branch modules, one per modality (BEVFusion layout).

::

    camera:  images -> ImageEncoder -> LSSTransform -> camera_bev ------------------+
    lidar:   points -> PillarLidarEncoder -> lidar_bev ------------------------------+
    fusion:  ConvFuser([camera_bev, lidar_bev]) -> fused_bev                          |
             -> BEVDecoder -> decoder_bev -> CenterHead -> preds (one dict per task) <+

:class:`CameraDetector` (the BEVFusion-C baseline) reads only the images and camera matrices of
a batch, never ``batch.points``; :class:`FusionDetector` is the teacher.
"""

from __future__ import annotations

from torch import Tensor, nn

from bevsimdet.data.batch import Batch
from bevsimdet.models.output import DetectorOutput


def _points(batch: Batch, who: str) -> list[Tensor]:
    if batch.points is None:
        raise ValueError(f"the {who} detector needs LiDAR points, but batch.points is None (set data.load_points: true)")
    return batch.points


class CameraDetector(nn.Module):
    """Camera-only detector: ``feats`` camera_bev, decoder_bev; ``depth`` from the LSS."""

    modality = "camera"

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


__all__ = ["CameraDetector", "LidarDetector", "FusionDetector"]
