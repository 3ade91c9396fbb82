"""The BEVSimDet student: a camera-only detector with a simulated-LiDAR BEV branch.

::

    images -> image encoder -+-> LSS (camera)    -------------------------------> camera_bev ----+
                             |                                                                   +-> ConvFuser -> fused_bev
                             +-> [image GCM] -> LSS (sim-LiDAR) -> GCM -> projection -> sim_lidar_bev +
    fused_bev -> BEV decoder -> decoder_bev -> CenterHead -> preds

The two view transforms are separate modules (the released code calls one twice). The
projection maps the sim-LiDAR BEV to the teacher's LiDAR-BEV width, so cross-modal distillation
(CMD) compares like with like, and the fuser sees ``[camera_bev, sim_lidar_bev]`` exactly as the
teacher's fuser sees ``[camera_bev, lidar_bev]``. ``forward`` reads only the images and the
camera geometry of the batch: no LiDAR anywhere, at training or test time, so it exports.

Width adapters (1x1 convs, declared in ``model.student.adapters``) are trained with the student
for distillation pairs whose widths differ; they run in training mode only and their outputs are
returned as ``feats["adapted/<name>"]``. :func:`bevsimdet.models.build.build_student` assembles
one from a ``model:`` config.
"""

from __future__ import annotations

from typing import Mapping

from torch import Tensor, nn

from bevsimdet.data.batch import Batch
from bevsimdet.models.gcm import GCM
from bevsimdet.models.output import DetectorOutput

ADAPTED = "adapted/"


def bev_projection(in_channels: int, out_channels: int) -> nn.Sequential:
    """Conv3x3-BN-ReLU then a linear 1x1 conv (so it can match teacher features of either sign)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 1),
    )


class Student(nn.Module):
    """Camera-only BEVSimDet student.

    Args:
        image_encoder: images B x N x 3 x H x W -> features (B*N) x C_img x h x w.
        camera_vt, sim_lidar_vt: two separate LSS view transforms, ``(img_feats, batch) ->
            (B x C x Ny x Nx, depth (B*N) x D x h x w)``.
        projection: sim-LiDAR BEV -> the teacher's LiDAR-BEV width.
        fuser: ``[camera_bev, sim_lidar_bev] -> fused_bev``.
        decoder: BEV decoder; head: CenterHead returning one prediction dict per task.
        gcm: residual deformable attention on the sim-LiDAR BEV (``None``: w/o GCM ablation).
        image_gcm: optional GCM on the image features entering the sim-LiDAR view transform.
        adapters: feature name -> 1x1 conv, for distillation pairs whose widths differ.
    """

    uses_lidar = False  # camera-only by construction (build_student refuses the oracle-depth diagnostic)

    def __init__(
        self,
        image_encoder: nn.Module,
        camera_vt: nn.Module,
        sim_lidar_vt: nn.Module,
        projection: nn.Module,
        fuser: nn.Module,
        decoder: nn.Module,
        head: nn.Module,
        gcm: GCM | None = None,
        image_gcm: GCM | None = None,
        adapters: Mapping[str, nn.Module] | None = None,
    ):
        super().__init__()
        self.image_encoder = image_encoder
        self.camera_vt = camera_vt
        self.sim_lidar_vt = sim_lidar_vt
        self.image_gcm = image_gcm
        self.gcm = gcm
        self.projection = projection
        self.fuser = fuser
        self.decoder = decoder
        self.head = head
        self.adapters = nn.ModuleDict(dict(adapters or {}))

    def forward(self, batch: Batch) -> DetectorOutput:
        """Images (and camera geometry) only; ``batch.points`` is never read."""
        img = self.image_encoder(batch.images)
        camera_bev, camera_depth = self.camera_vt(img, batch)
        sim_img = self.image_gcm(img) if self.image_gcm is not None else img
        sim_bev, depth = self.sim_lidar_vt(sim_img, batch)
        if self.gcm is not None:
            sim_bev = self.gcm(sim_bev)
        sim_lidar_bev = self.projection(sim_bev)
        fused = self.fuser([camera_bev, sim_lidar_bev])
        decoded = self.decoder(fused)
        feats = {"camera_bev": camera_bev, "sim_lidar_bev": sim_lidar_bev, "fused_bev": fused, "decoder_bev": decoded}
        if self.training:
            for name, adapter in self.adapters.items():
                feats[ADAPTED + name] = adapter(feats[name])
        # both branches' depth distributions: the distillation depth term picks (distill.depth_branch)
        depths = {k: v for k, v in (("camera", camera_depth), ("sim_lidar", depth)) if v is not None}
        return DetectorOutput(preds=self.head(decoded), feats=feats, depth=depth, depths=depths)


__all__ = ["Student", "bev_projection", "ADAPTED"]
