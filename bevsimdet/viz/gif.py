"""Animated GIF from a sequence of PNG frames (PIL only, no ffmpeg needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def write_gif(frames: Sequence[str | Path], out: str | Path, *, duration_ms: int = 500, max_width: int = 1000) -> Path:
    """Write the images ``frames`` (in order) as a looping GIF at ``out``, each shown
    ``duration_ms``; frames wider than ``max_width`` are scaled down (GIFs of full-size figures
    get large quickly)."""
    from PIL import Image

    from bevsimdet.io import atomic_path

    if not frames:
        raise ValueError("no frames for the GIF")
    images = []
    for path in frames:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.width > max_width:
                im = im.resize((max_width, round(im.height * max_width / im.width)), Image.LANCZOS)
            images.append(im.quantize(colors=256, method=Image.Quantize.MEDIANCUT))
    out = Path(out)
    with atomic_path(out, suffix=".gif") as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    return out
