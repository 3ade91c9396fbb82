"""Thin builders: ``model:`` config (:class:`~bevsimdet.models.config.ModelConfig`) -> modules.

Every detector type is assembled from the same per-part builders, which the student reuses.
"""

from __future__ import annotations

from torch import nn

from bevsimdet.data.classes import TASKS
from bevsimdet.errors import ConfigError
from bevsimdet.models.config import HeadConfig, ModelConfig
from bevsimdet.models.view_transform import grid_size

HAS_CAMERA = ("camera", "fusion", "student")
HAS_LIDAR = ("lidar", "fusion")
ORACLE_DIAGNOSTIC = "diagnostic: oracle LiDAR depth (model.camera.oracle_depth), not camera-only"


def reads_lidar(cfg: ModelConfig) -> bool:
    """Whether the detector of ``cfg`` reads LiDAR points at test time (the config-side twin of
    :func:`bevsimdet.models.detectors.uses_lidar`, for checks before any model is built)."""
    return cfg.type in HAS_LIDAR or (cfg.type == "camera" and cfg.camera.oracle_depth)


def diagnostic(cfg: ModelConfig) -> str | None:
    """The label every output of a diagnostic model carries (metrics.json, run log, tables), or
    None for a model whose numbers are a real result: a camera model with oracle LiDAR depth is
    the ceiling of camera geometry, not a camera-only detector."""
    return ORACLE_DIAGNOSTIC if cfg.type in HAS_CAMERA and cfg.camera.oracle_depth else None


def check_student(cfg: ModelConfig) -> None:
    """A student stays camera-only: the oracle-depth diagnostic (LiDAR depth at test time) is refused."""
    if cfg.type == "student" and cfg.camera.oracle_depth:
        raise ConfigError("model.camera.oracle_depth reads LiDAR depth at test time; a student must stay camera-only (it is a diagnostic of the camera baseline)",
                          fix="set model.camera.oracle_depth: false in the student config (configs/ablations/camera_oracle.yaml is the diagnostic)")


def build_image_encoder(cfg: ModelConfig) -> nn.Module:
    from bevsimdet.models.image import ImageEncoder

    ic = cfg.image
    return ImageEncoder(ic.arch, ic.out_channels, image_size=tuple(cfg.camera.image_size), base_width=ic.base_width, pretrained=ic.pretrained, frozen_stages=ic.frozen_stages)


def build_view_transform(cfg: ModelConfig) -> nn.Module:
    from bevsimdet.models.view_transform import LSSTransform

    c = cfg.camera
    return LSSTransform(cfg.image.out_channels, c.out_channels, tuple(c.image_size), c.feature_stride, c.xbound, c.ybound, c.zbound, c.dbound, c.depth_net, c.downsample,
                         camera_aware=c.camera_aware, ground_prior=c.ground_prior, oracle_depth=c.oracle_depth,
                         depth_grad_scale=c.depth_grad_scale)


def build_lidar_encoder(cfg: ModelConfig) -> nn.Module:
    from bevsimdet.models.lidar import PillarLidarEncoder

    lc = cfg.lidar
    if lc.encoder == "sparse":
        # imported here only: the module imports spconv (CUDA only); it uses the package's
        # voxel helpers, so the package itself never imports it (no import circle)
        from bevsimdet.models.lidar.sparse import SparseLidarEncoder

        return SparseLidarEncoder(pc_range=lc.point_cloud_range, voxel_size=lc.voxel_size, in_channels=lc.in_channels, out_channels=lc.out_channels)
    return PillarLidarEncoder(lc.point_cloud_range, lc.voxel_size, lc.in_channels, lc.feat_channels, lc.out_channels, lc.downsample, lc.num_blocks, lc.max_points, lc.hidden_channels, lc.input_norm, lc.time_bins, lc.time_bin_width)


def _camera_grid(cfg: ModelConfig) -> tuple[tuple[int, int], tuple[float, float, float, float]]:
    c = cfg.camera
    ds = c.downsample
    return (grid_size(c.ybound) // ds, grid_size(c.xbound) // ds), (c.xbound[0], c.ybound[0], c.xbound[1], c.ybound[1])


def _lidar_grid(cfg: ModelConfig) -> tuple[tuple[int, int], tuple[float, float, float, float]]:
    lc = cfg.lidar
    r, v = lc.point_cloud_range, lc.voxel_size
    stride = lc.downsample if lc.encoder == "pillar" else 8  # the sparse encoder's fixed x8
    ny, nx = int(round((r[4] - r[1]) / v[1])), int(round((r[3] - r[0]) / v[0]))
    return (ny // stride, nx // stride), (r[0], r[1], r[3], r[4])


def bev_grid(cfg: ModelConfig) -> tuple[tuple[int, int], tuple[float, float, float, float]]:
    """((Ny, Nx), (xmin, ymin, xmax, ymax)) of the detector's BEV maps (= the head's grid)."""
    if cfg.type == "lidar":
        return _lidar_grid(cfg)
    cam = _camera_grid(cfg)
    if cfg.type == "fusion":
        lid = _lidar_grid(cfg)
        if (lid[0], tuple(round(v, 6) for v in lid[1])) != (cam[0], tuple(round(v, 6) for v in cam[1])):
            raise ConfigError(
                f"camera BEV {cam[0]} over {cam[1]} and LiDAR BEV {lid[0]} over {lid[1]} differ",
                fix="make model.lidar.point_cloud_range / voxel_size / downsample give the camera's BEV grid",
            )
    return cam


def bev_range(cfg: ModelConfig) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) in metres of the detector's BEV feature maps."""
    return bev_grid(cfg)[1]


def depth_bound(cfg: ModelConfig) -> tuple[float, float, float]:
    """(dmin, dmax, step) of the LSS depth bins."""
    return tuple(float(v) for v in cfg.camera.dbound)


def fused_channels(cfg: ModelConfig) -> int:
    return cfg.fuser_channels


def decoder_in_channels(cfg: ModelConfig) -> int:
    return {"camera": cfg.camera.out_channels, "lidar": cfg.lidar.out_channels}.get(cfg.type, cfg.fuser_channels)


def build_decoder(cfg: ModelConfig) -> nn.Module:
    from bevsimdet.models.decoder import generalized_resnet_decoder, second_decoder

    d = cfg.decoder
    cin = decoder_in_channels(cfg)
    if d.type == "second":
        return second_decoder(cin, d.channels, d.layer_nums, d.strides, d.upsample_channels)
    return generalized_resnet_decoder(cin, d.blocks, d.out_channels)


def build_head(cfg: ModelConfig) -> nn.Module:
    from bevsimdet.models.heads import CenterHead

    h = cfg.head
    cin = sum(cfg.decoder.upsample_channels) if cfg.decoder.type == "second" else cfg.decoder.out_channels
    return CenterHead(cin, TASKS, h.share_channels, h.head_channels, h.num_head_convs, h.init_bias, h.velocity_scale)


def build_detector(cfg: ModelConfig) -> nn.Module:
    """The detector of ``cfg.type``: camera, lidar, fusion (teacher) or student."""
    from bevsimdet.models.detectors import CameraDetector, FusionDetector, LidarDetector
    from bevsimdet.models.fuser import ConvFuser

    bev_grid(cfg)  # fail early on inconsistent grids
    if cfg.type == "student":
        return build_student(cfg)
    if cfg.type == "camera":
        return CameraDetector(build_image_encoder(cfg), build_view_transform(cfg), build_decoder(cfg), build_head(cfg))
    if cfg.type == "lidar":
        return LidarDetector(build_lidar_encoder(cfg), build_decoder(cfg), build_head(cfg))
    if cfg.type == "fusion":
        fuser = ConvFuser([cfg.camera.out_channels, cfg.lidar.out_channels], cfg.fuser_channels)
        return FusionDetector(build_image_encoder(cfg), build_view_transform(cfg), build_lidar_encoder(cfg), fuser, build_decoder(cfg), build_head(cfg))
    raise ConfigError(f"unknown model.type '{cfg.type}'", fix="use camera, lidar, fusion or student")


# The student is the camera baseline's encoder, view transform, decoder and head (the same
# builders), plus a second view transform, the GCM blocks, the projection and the fuser.


def build_student(cfg: ModelConfig) -> nn.Module:
    """The student of a ``model:`` config with ``type: student`` (settings in ``model.student``)."""
    from bevsimdet.models.fuser import ConvFuser
    from bevsimdet.models.gcm import GCM
    from bevsimdet.models.student import Student, bev_projection

    check_student(cfg)
    sc = cfg.student
    # built in this order so a seeded initialisation gives the same weights as before
    camera_vt = build_view_transform(cfg)
    image_encoder = build_image_encoder(cfg)
    sim_lidar_vt = build_view_transform(cfg)
    decoder = build_decoder(cfg)
    head = build_head(cfg)
    c, (ny, nx) = camera_vt.out_channels, tuple(camera_vt.bev_shape)
    gcm = GCM(c, ny, nx, sc.gcm_heads, sc.gcm_points) if sc.gcm else None
    image_gcm = GCM(camera_vt.in_channels, *tuple(camera_vt.feature_shape), sc.image_gcm_heads, sc.image_gcm_points) if sc.image_gcm else None
    fused = fused_channels(cfg)
    widths = {"camera_bev": c, "sim_lidar_bev": sc.sim_lidar_channels, "fused_bev": fused}
    unknown = set(sc.adapters) - set(widths)
    if unknown:
        raise ConfigError(f"model.student.adapters: unknown feature(s) {sorted(unknown)}", fix=f"adapt one of {sorted(widths)}")
    adapters = {name: nn.Conv2d(widths[name], width, 1) for name, width in sc.adapters.items()}
    return Student(
        image_encoder=image_encoder,
        camera_vt=camera_vt,
        sim_lidar_vt=sim_lidar_vt,
        projection=bev_projection(c, sc.sim_lidar_channels),
        fuser=ConvFuser([c, sc.sim_lidar_channels], fused),
        decoder=decoder,
        head=head,
        gcm=gcm,
        image_gcm=image_gcm,
        adapters=adapters,
    )


def build_criterion(cfg: ModelConfig) -> nn.Module:
    """CenterPoint criterion on the detector's head grid (+ ``det_depth`` with ``depth_supervision``)."""
    from bevsimdet.models.heads import CenterPointCriterion, CenterPointTargetAssigner

    shape, rng = bev_grid(cfg)
    h = cfg.head
    assigner = CenterPointTargetAssigner(TASKS, rng, shape, gaussian_overlap=h.gaussian_overlap, min_radius=h.min_radius, max_objs=h.max_objs,
                                         yaw_multiples=yaw_multiples(h))
    dbound = depth_bound(cfg) if (cfg.depth_supervision and cfg.type in HAS_CAMERA) else None
    return CenterPointCriterion(assigner, h.code_weights, dbound, h.velocity_beta)


def build_postprocess(cfg: ModelConfig) -> nn.Module:
    from bevsimdet.models.heads import CenterPointPostProcess

    h = cfg.head
    return CenterPointPostProcess(
        TASKS, bev_range(cfg), score_threshold=h.score_threshold, pre_max_size=h.pre_max_size, post_max_size=h.post_max_size,
        nms_type=h.nms_type, min_radius=h.min_radius_nms, nms_thr=h.nms_thr, nms_scale=h.nms_scale, post_center_range=h.post_center_range,
        yaw_multiples=yaw_multiples(h),
    )


def yaw_multiples(h: HeadConfig) -> list[int] | None:
    """The head's per-task yaw multiples: from the classes (None), or all 1 without ``half_turn_yaw``."""
    return None if h.half_turn_yaw else [1] * len(TASKS)


__all__ = [
    "build_detector", "build_student", "build_criterion", "build_postprocess", "build_image_encoder", "build_view_transform",
    "build_lidar_encoder", "build_decoder", "build_head", "bev_grid", "bev_range", "depth_bound", "fused_channels",
    "reads_lidar", "diagnostic", "check_student", "ORACLE_DIAGNOSTIC",
]
