"""Picture of one sample: the 6 camera views with projected boxes and a BEV panel with LiDAR
points and boxes (matplotlib, Agg backend; no display needed).

Boxes are given in the batch's augmented ego frame; they are mapped back through ``bev_aug`` and
projected with the camera's intrinsics, ``cam2ego`` and ``img_aug``, so the picture also checks
that the geometry of a batch is consistent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bevsimdet.data.classes import CAMERAS, CLASSES
from bevsimdet.geometry.boxes import box_corners, transform_boxes
from bevsimdet.geometry.camera import project_points
from bevsimdet.geometry.transforms import invert

# the 12 edges of a box, as pairs of indices into ``box_corners`` (devkit order)
EDGES = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7))
# grid layout as the devkit draws the rig: front row FL, F, FR; back row BL, B, BR
GRID = ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT")


def class_colour(label: int) -> tuple[float, float, float]:
    import matplotlib

    return tuple(matplotlib.colormaps["tab10"](int(label) % 10)[:3])


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().double().numpy() if hasattr(x, "detach") else np.asarray(x, dtype=np.float64)


def render_sample(
    batch: Any,
    index: int,
    out: str | Path,
    *,
    detections: Any | None = None,
    score_threshold: float = 0.3,
    bev_range: float = 54.0,
    max_points: int = 60_000,
    title: str | None = None,
    cameras: Sequence[str] = CAMERAS,
) -> Path:
    """Render sample ``index`` of a :class:`~bevsimdet.data.batch.Batch` to a PNG at ``out``.

    GT boxes are drawn solid in class colours; ``detections`` (a
    :class:`~bevsimdet.models.output.Detections` of that sample, optional) dashed, those above
    ``score_threshold`` only.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bevsimdet.data.transforms import denormalize_image
    from bevsimdet.io import atomic_path

    images = _np(batch.images[index])
    bev_aug = _np(batch.bev_aug[index])
    to_ego = invert(bev_aug)
    sets = [(_np(batch.gt_boxes[index]).reshape(-1, 9), _np(batch.gt_labels[index]).astype(int), "-")]
    if detections is not None:
        keep = _np(detections.scores) >= score_threshold
        sets.append((_np(detections.boxes).reshape(-1, 9)[keep], _np(detections.labels).astype(int)[keep], "--"))

    fig = plt.figure(figsize=(18, 6.5), dpi=100)
    grid = fig.add_gridspec(2, 4, width_ratios=[1, 1, 1, 1.15])
    for slot, cam in enumerate(GRID):
        if cam not in cameras:
            continue
        n = list(cameras).index(cam)
        ax = fig.add_subplot(grid[slot // 3, slot % 3])
        img = denormalize_image(images[n])
        h, w = img.shape[:2]
        ax.imshow(img)
        for boxes, labels, style in sets:
            if not len(boxes):
                continue
            corners = box_corners(transform_boxes(boxes, to_ego)).reshape(-1, 3)
            uv, depth = project_points(corners, _np(batch.intrinsics[index, n]), _np(batch.cam2ego[index, n]), _np(batch.img_aug[index, n]))
            uv, depth = uv.reshape(-1, 8, 2), depth.reshape(-1, 8)
            for b in range(len(boxes)):
                if (depth[b] <= 0.1).any():
                    continue  # a box crossing the image plane would draw garbage
                if uv[b, :, 0].max() < 0 or uv[b, :, 0].min() > w or uv[b, :, 1].max() < 0 or uv[b, :, 1].min() > h:
                    continue
                for i, j in EDGES:
                    ax.plot(uv[b, [i, j], 0], uv[b, [i, j], 1], style, color=class_colour(labels[b]), lw=1.0)
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_title(cam, fontsize=9)
        ax.axis("off")

    ax = fig.add_subplot(grid[:, 3])
    if batch.points is not None:
        pts = _np(batch.points[index])
        if len(pts) > max_points:
            pts = pts[np.random.default_rng(0).choice(len(pts), max_points, replace=False)]
        ax.scatter(pts[:, 0], pts[:, 1], s=0.2, c=pts[:, 2], cmap="viridis", vmin=-2, vmax=4, linewidths=0)
    for boxes, labels, style in sets:
        for b, corners in enumerate(box_corners(boxes)):
            ring = corners[[0, 1, 5, 4, 0], :2]  # the bottom-face outline seen from above; 0-1 is the front
            ax.plot(ring[:, 0], ring[:, 1], style, color=class_colour(labels[b]), lw=1.0)
            front = corners[[0, 1], :2].mean(0)
            ax.plot([boxes[b, 0], front[0]], [boxes[b, 1], front[1]], style, color=class_colour(labels[b]), lw=0.8)
    ax.plot([0], [0], marker=(3, 0, -90), color="red", ms=8)  # ego position, pointing +x
    ax.set_xlim(-bev_range, bev_range)
    ax.set_ylim(-bev_range, bev_range)
    ax.set_aspect("equal")
    ax.set_title("BEV (x forward, y left)", fontsize=9)
    handles = [plt.Line2D([], [], color=class_colour(k), label=name) for k, name in enumerate(CLASSES)]
    ax.legend(handles=handles, fontsize=7, loc="upper right", ncol=2)
    meta = batch.meta[index] if batch.meta else None
    fig.suptitle(title or (f"sample {meta.sample_token}" if meta else ""), fontsize=10)
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out
