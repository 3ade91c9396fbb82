"""Geometry in the one bevsimdet convention (:mod:`bevsimdet.data.batch`): transforms, boxes, cameras."""

from bevsimdet.geometry.boxes import (
    box_corners,
    box_to_ego,
    ego_to_boxes,
    global_to_ego,
    points_in_boxes,
    transform_boxes,
)
from bevsimdet.geometry.camera import in_image, project_points
from bevsimdet.geometry.transforms import (
    apply_transform,
    from_homogeneous,
    invert,
    make_transform,
    pose_matrix,
    quaternion_to_matrix,
    rotation_z,
    to_homogeneous,
    wrap_angle,
)

__all__ = [
    "apply_transform",
    "box_corners",
    "box_to_ego",
    "ego_to_boxes",
    "from_homogeneous",
    "global_to_ego",
    "in_image",
    "invert",
    "make_transform",
    "points_in_boxes",
    "pose_matrix",
    "project_points",
    "quaternion_to_matrix",
    "rotation_z",
    "to_homogeneous",
    "transform_boxes",
    "wrap_angle",
]
