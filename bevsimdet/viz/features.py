"""Teacher vs student BEV feature maps, side by side, as channel-norm heatmaps.

Each BEV map ``C x Ny x Nx`` is shown as its per-cell L2 norm over channels, scaled to [0, 1] by
its own 99th percentile (teacher and student features live on different scales until they are
distilled). Rows pair the features the distillation terms pair: camera BEV (IMD), LiDAR vs
simulated-LiDAR BEV (CMD), fused BEV (MMD-F), and the decoder output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

# (teacher feature, student feature, row title)
FEATURE_PAIRS: tuple[tuple[str, str, str], ...] = (
    ("camera_bev", "camera_bev", "camera BEV (IMD)"),
    ("lidar_bev", "sim_lidar_bev", "LiDAR / simulated-LiDAR BEV (CMD)"),
    ("fused_bev", "fused_bev", "fused BEV (MMD-F)"),
    ("decoder_bev", "decoder_bev", "decoder BEV"),
)


def channel_norm(feat: Any, percentile: float = 99.0) -> np.ndarray:
    """``C x Ny x Nx`` features -> ``Ny x Nx`` channel L2 norm scaled to [0, 1] by its percentile."""
    arr = feat.detach().float().cpu().numpy() if hasattr(feat, "detach") else np.asarray(feat, dtype=np.float32)
    if arr.ndim != 3:
        raise ValueError(f"expected C x Ny x Nx features, got shape {arr.shape}")
    norm = np.sqrt((arr.astype(np.float64) ** 2).sum(0))
    top = np.percentile(norm, percentile)
    return np.clip(norm / top, 0.0, 1.0) if top > 0 else np.zeros_like(norm)


def available_pairs(teacher: Mapping[str, Any], student: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    return [p for p in FEATURE_PAIRS if p[0] in teacher and p[1] in student]


def render_feature_comparison(
    teacher: Mapping[str, Any],
    student: Mapping[str, Any],
    out: str | Path,
    *,
    index: int = 0,
    bev_range: Sequence[float] | None = None,
    title: str = "",
) -> Path:
    """PNG at ``out``: one row per paired feature (``B x C x Ny x Nx`` maps, sample ``index``),
    teacher left, student right. ``bev_range`` (xmin, ymin, xmax, ymax) labels the axes in metres."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bevsimdet.io import atomic_path

    pairs = available_pairs(teacher, student)
    if not pairs:
        raise ValueError(f"no paired BEV features: teacher has {sorted(teacher)}, student has {sorted(student)}")
    fig, axes = plt.subplots(len(pairs), 2, figsize=(8, 3.8 * len(pairs)), dpi=100, squeeze=False)
    extent = None if bev_range is None else (bev_range[0], bev_range[2], bev_range[1], bev_range[3])
    for row, (t_name, s_name, label) in enumerate(pairs):
        for col, (feats, name, who) in enumerate(((teacher, t_name, "teacher"), (student, s_name, "student"))):
            ax = axes[row, col]
            fmap = feats[name][index]
            # row iy is +y: origin "lower" puts +y up and +x right (the BEV convention of batch.py)
            ax.imshow(channel_norm(fmap), origin="lower", cmap="magma", vmin=0, vmax=1, extent=extent, interpolation="nearest")
            ax.set_title(f"{who}: {name} ({fmap.shape[0]} ch)\n{label}", fontsize=8)
            ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98 if title else 1))  # keep the suptitle clear of the panels
    out = Path(out)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out
