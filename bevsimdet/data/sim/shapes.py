"""Object shapes as a few boxes ("parts") inside the tight annotation cuboid.

A part is ``(x0, x1, y0, y1, z0, z1, slot)`` in fractions of the object's (length, width, height):
x along the heading in [-0.5, 0.5], y to the left in [-0.5, 0.5], z up from the bottom in [0, 1].
The parts of every shape together touch all six faces of the cuboid, so the annotation box stays
tight. ``slot`` picks the part's material among the instance's :data:`SLOTS`.

Front and back differ in every vehicle shape, by more than a LiDAR pillar (0.8 m in the demo
models) where the class allows it, so that a detector can read the heading from the shape and not
only from the motion: cars have a hood of 1.0-1.7 m and a short boot or none (sedan, hatchback /
SUV, van); trucks a low cab before a tall cargo box; buses a low front windscreen, a windowless
rear engine bay and a roof-top unit over the rear half; trailers a refrigeration unit and landing
legs at the front and the axles at the back.
"""

from __future__ import annotations

import numpy as np

# Material slots of an instance: its own paint, glass, rubber/metal, skin, a second colour, white.
SLOTS = ("paint", "glass", "rubber", "skin", "second", "white")
PAINT, GLASS, RUBBER, SKIN, SECOND, WHITE = range(len(SLOTS))

Part = tuple[float, float, float, float, float, float, int]


def _wheels(x_front: float, x_rear: float, radius: float, half_len: float = 0.09) -> list[Part]:
    out: list[Part] = []
    for x in (x_front, x_rear):
        for y0, y1 in ((-0.5, -0.36), (0.36, 0.5)):
            out.append((x - half_len, x + half_len, y0, y1, 0.0, radius, RUBBER))
    return out


SHAPES: dict[str, list[Part]] = {
    "car": [  # sedan: hood 0.36 of the length, boot 0.16
        (-0.5, 0.5, -0.5, 0.5, 0.2, 0.55, PAINT),
        (-0.34, 0.14, -0.44, 0.44, 0.55, 1.0, GLASS),
        (-0.28, 0.06, -0.46, 0.46, 0.58, 0.95, PAINT),
        *_wheels(0.31, -0.31, 0.36),
    ],
    "car_hatchback": [  # hatchback / SUV: hood 0.38, the cabin runs to the rear
        (-0.5, 0.5, -0.5, 0.5, 0.2, 0.55, PAINT),
        (-0.47, 0.12, -0.44, 0.44, 0.55, 1.0, GLASS),
        (-0.5, 0.04, -0.46, 0.46, 0.58, 0.96, PAINT),
        *_wheels(0.31, -0.31, 0.36),
    ],
    "car_van": [  # van / MPV: short hood (0.22), tall cabin to the rear
        (-0.5, 0.5, -0.5, 0.5, 0.2, 0.5, PAINT),
        (-0.46, 0.28, -0.44, 0.44, 0.5, 1.0, GLASS),
        (-0.5, 0.2, -0.46, 0.46, 0.54, 0.97, PAINT),
        *_wheels(0.33, -0.31, 0.3),
    ],
    "truck": [
        (0.26, 0.5, -0.5, 0.5, 0.12, 0.78, PAINT),
        (0.42, 0.5, -0.44, 0.44, 0.5, 0.74, GLASS),
        (-0.5, 0.24, -0.5, 0.5, 0.16, 1.0, SECOND),
        (-0.5, 0.5, -0.38, 0.38, 0.08, 0.16, RUBBER),
        *_wheels(0.36, -0.34, 0.17, 0.06),
    ],
    "bus": [
        (-0.5, 0.47, -0.5, 0.5, 0.1, 0.56, PAINT),
        (0.47, 0.5, -0.5, 0.5, 0.1, 0.22, PAINT),  # front bumper below the windscreen
        (0.47, 0.5, -0.47, 0.47, 0.22, 0.84, GLASS),  # low windscreen
        (-0.36, 0.47, -0.49, 0.49, 0.56, 0.84, GLASS),  # side windows
        (-0.5, -0.36, -0.5, 0.5, 0.56, 0.84, PAINT),  # windowless rear engine bay
        (-0.5, 0.5, -0.5, 0.5, 0.84, 0.88, PAINT),  # roof
        (-0.44, -0.04, -0.4, 0.4, 0.88, 1.0, SECOND),  # roof-top unit over the rear half
        *_wheels(0.33, -0.25, 0.14, 0.05),
    ],
    "trailer": [
        (-0.5, 0.40, -0.5, 0.5, 0.3, 1.0, PAINT),
        (0.40, 0.5, -0.08, 0.08, 0.24, 0.34, RUBBER),  # kingpin / drawbar
        (0.40, 0.5, -0.36, 0.36, 0.5, 0.9, SECOND),  # refrigeration unit on the front wall
        (0.2, 0.25, -0.42, -0.3, 0.0, 0.3, RUBBER),  # landing legs
        (0.2, 0.25, 0.3, 0.42, 0.0, 0.3, RUBBER),
        (-0.46, -0.22, -0.5, 0.5, 0.0, 0.3, RUBBER),  # rear axles
    ],
    "construction_vehicle": [
        (-0.5, 0.12, -0.5, 0.5, 0.16, 0.55, PAINT),
        (-0.36, 0.04, -0.42, 0.42, 0.55, 1.0, GLASS),
        (-0.33, 0.01, -0.44, 0.44, 0.93, 1.0, PAINT),
        (0.12, 0.5, -0.14, 0.14, 0.3, 0.78, PAINT),
        (0.36, 0.5, -0.42, 0.42, 0.04, 0.32, RUBBER),
        (-0.5, 0.16, -0.5, 0.5, 0.0, 0.2, RUBBER),
    ],
    "pedestrian": [
        (-0.18, 0.18, -0.28, 0.28, 0.0, 0.5, SECOND),
        (-0.26, 0.26, -0.5, 0.5, 0.5, 0.83, PAINT),
        (-0.15, 0.15, -0.16, 0.16, 0.86, 1.0, SKIN),
        (-0.5, 0.5, -0.12, 0.12, 0.02, 0.12, RUBBER),
    ],
    "motorcycle": [
        (0.3, 0.5, -0.1, 0.1, 0.0, 0.42, RUBBER),
        (-0.5, -0.3, -0.1, 0.1, 0.0, 0.42, RUBBER),
        (-0.36, 0.34, -0.3, 0.3, 0.2, 0.55, PAINT),
        (-0.3, 0.06, -0.5, 0.5, 0.55, 0.87, SECOND),
        (-0.22, 0.0, -0.15, 0.15, 0.87, 1.0, PAINT),
    ],
    "motorcycle_parked": [
        (0.3, 0.5, -0.12, 0.12, 0.0, 0.58, RUBBER),
        (-0.5, -0.3, -0.12, 0.12, 0.0, 0.58, RUBBER),
        (-0.36, 0.34, -0.32, 0.32, 0.28, 0.78, PAINT),
        (0.22, 0.34, -0.5, 0.5, 0.85, 1.0, RUBBER),
        (0.26, 0.32, -0.05, 0.05, 0.7, 0.85, RUBBER),
    ],
    "bicycle": [
        (0.2, 0.5, -0.05, 0.05, 0.0, 0.55, RUBBER),
        (-0.5, -0.2, -0.05, 0.05, 0.0, 0.55, RUBBER),
        (-0.3, 0.3, -0.06, 0.06, 0.3, 0.55, PAINT),
        (-0.16, 0.04, -0.3, 0.3, 0.35, 0.62, SECOND),
        (-0.26, 0.08, -0.5, 0.5, 0.62, 0.88, SECOND),
        (-0.18, 0.02, -0.2, 0.2, 0.88, 1.0, SKIN),
    ],
    "bicycle_parked": [
        (0.2, 0.5, -0.1, 0.1, 0.0, 0.75, RUBBER),
        (-0.5, -0.2, -0.1, 0.1, 0.0, 0.75, RUBBER),
        (-0.3, 0.3, -0.12, 0.12, 0.4, 0.78, PAINT),
        (0.24, 0.32, -0.5, 0.5, 0.88, 1.0, RUBBER),
        (0.26, 0.3, -0.06, 0.06, 0.75, 0.88, PAINT),
    ],
    "traffic_cone": [
        (-0.5, 0.5, -0.5, 0.5, 0.0, 0.06, PAINT),
        (-0.3, 0.3, -0.3, 0.3, 0.06, 0.5, PAINT),
        (-0.23, 0.23, -0.23, 0.23, 0.5, 0.68, WHITE),
        (-0.15, 0.15, -0.15, 0.15, 0.68, 1.0, PAINT),
    ],
    "barrier": [
        (-0.5, 0.5, -0.5, 0.5, 0.0, 0.35, PAINT),
        (-0.25, 0.25, -0.5, 0.5, 0.35, 1.0, PAINT),
    ],
    "barrier_fence": [
        (-0.5, 0.5, -0.5, -0.38, 0.0, 0.12, RUBBER),
        (-0.5, 0.5, 0.38, 0.5, 0.0, 0.12, RUBBER),
        (-0.1, 0.1, -0.5, 0.5, 0.12, 0.55, PAINT),
        (-0.1, 0.1, -0.5, 0.5, 0.55, 0.75, WHITE),
        (-0.1, 0.1, -0.5, 0.5, 0.75, 1.0, PAINT),
    ],
}


# Car body styles and how often each is drawn (per instance, from its own random stream).
CAR_SHAPES = {"car": 0.45, "car_hatchback": 0.35, "car_van": 0.2}


def parts_array(shape: str) -> np.ndarray:
    """K x 7 float array of a shape's parts (fractions + slot)."""
    return np.asarray(SHAPES[shape], dtype=np.float64)


def check_tight(shape: str) -> bool:
    """The parts reach all six faces of the unit cuboid (the annotation box is tight)."""
    p = parts_array(shape)
    return bool(
        np.isclose(p[:, 0].min(), -0.5) and np.isclose(p[:, 1].max(), 0.5) and np.isclose(p[:, 2].min(), -0.5)
        and np.isclose(p[:, 3].max(), 0.5) and np.isclose(p[:, 4].min(), 0.0) and np.isclose(p[:, 5].max(), 1.0)
    )
