"""The 10 nuScenes detection classes, their head task grouping and evaluation ranges."""

from __future__ import annotations

# Order used for label indices everywhere in bevsimdet (mmdet3d's nuScenes order).
CLASSES: tuple[str, ...] = (
    "car",
    "truck",
    "construction_vehicle",
    "bus",
    "trailer",
    "barrier",
    "motorcycle",
    "bicycle",
    "pedestrian",
    "traffic_cone",
)
CLASS_TO_LABEL = {name: i for i, name in enumerate(CLASSES)}

# CenterPoint's nuScenes task grouping (6 heads).
TASKS: tuple[tuple[str, ...], ...] = (
    ("car",),
    ("truck", "construction_vehicle"),
    ("bus", "trailer"),
    ("barrier",),
    ("motorcycle", "bicycle"),
    ("pedestrian", "traffic_cone"),
)

# Classes whose front and back look alike: nuScenes scores their heading modulo pi, and the head
# regresses twice their yaw (sin 2yaw, cos 2yaw), since a (sin yaw, cos yaw) target that is yaw for
# one box and yaw + pi for a look-alike one (or for the same box after a BEV flip) averages to zero.
HALF_TURN_CLASSES: frozenset[str] = frozenset({"barrier"})


def yaw_multiple(task: tuple[str, ...] | list[str]) -> int:
    """2 for a head task of only :data:`HALF_TURN_CLASSES` (its rot code is ``sin 2yaw, cos 2yaw``), else 1."""
    return 2 if task and all(c in HALF_TURN_CLASSES for c in task) else 1


# detection_cvpr_2019 class ranges (metres, ego xy distance).
CLASS_RANGE = {
    "car": 50.0,
    "truck": 50.0,
    "bus": 50.0,
    "trailer": 50.0,
    "construction_vehicle": 50.0,
    "pedestrian": 40.0,
    "motorcycle": 40.0,
    "bicycle": 40.0,
    "traffic_cone": 30.0,
    "barrier": 30.0,
}

# The nuScenes category each class is written as by the simulator (and read back through the
# devkit's category_to_detection_name).
SIM_CATEGORY = {
    "car": "vehicle.car",
    "truck": "vehicle.truck",
    "construction_vehicle": "vehicle.construction",
    "bus": "vehicle.bus.rigid",
    "trailer": "vehicle.trailer",
    "barrier": "movable_object.barrier",
    "motorcycle": "vehicle.motorcycle",
    "bicycle": "vehicle.bicycle",
    "pedestrian": "human.pedestrian.adult",
    "traffic_cone": "movable_object.trafficcone",
}

# Attribute given to a predicted box of each class (as mmdet3d's nuScenes dataset does):
# (attribute when moving, attribute when still); '' for classes without attributes.
DEFAULT_ATTRIBUTES = {
    "car": ("vehicle.moving", "vehicle.parked"),
    "truck": ("vehicle.moving", "vehicle.parked"),
    "construction_vehicle": ("vehicle.moving", "vehicle.parked"),
    "bus": ("vehicle.moving", "vehicle.stopped"),
    "trailer": ("vehicle.moving", "vehicle.parked"),
    "motorcycle": ("cycle.with_rider", "cycle.without_rider"),
    "bicycle": ("cycle.with_rider", "cycle.without_rider"),
    "pedestrian": ("pedestrian.moving", "pedestrian.standing"),
    "barrier": ("", ""),
    "traffic_cone": ("", ""),
}
MOVING_SPEED = 0.2  # m/s

CAMERAS: tuple[str, ...] = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_FRONT_LEFT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_BACK_RIGHT",
)
LIDAR = "LIDAR_TOP"
