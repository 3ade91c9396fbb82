"""GCM (deformable self-attention via grid_sample): speed vs the loop reference, and forward /
forward+backward time at the demo and nuScenes BEV sizes.

    python benchmarks/bench_gcm.py [--device cpu|cuda] [--skip-nuscenes]
"""

from __future__ import annotations

import argparse
import time

import torch

from bevsimdet.models.gcm import GCM, deform_attn_reference

SIZES = {
    # name: (channels, H, W, heads, points)
    "demo BEV (32 ch, 32x32, 8 heads x 8 pts)": (32, 32, 32, 8, 8),
    "nuScenes BEV (80 ch, 180x180, 8 heads x 20 pts)": (80, 180, 180, 8, 20),
    "nuScenes image view (256 ch, 32x88, 8 heads x 10 pts)": (256, 32, 88, 8, 10),
}


def _time(fn, repeats: int, device: torch.device) -> float:
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def run(quick: bool = False, device: str = "cpu") -> dict:
    """Grid-sample GCM vs the loop reference, then forward / forward+backward per BEV size."""
    dev = torch.device(device)
    torch.manual_seed(0)
    small = GCM(16, 8, 8, num_heads=4, num_points=4)
    x = torch.randn(1, 16, 8, 8)
    fast = _time(lambda: small.attn(x), 20, torch.device("cpu"))
    ref = _time(lambda: deform_attn_reference(small.attn, x), 1, torch.device("cpu"))
    rows = [{"size": "16 ch, 8x8, 4 heads x 4 pts (vs loop reference)", "device": "cpu", "forward ms (B=1)": fast * 1e3,
             "loop reference ms": ref * 1e3, "speed-up": ref / fast}]
    for name, (c, h, w, heads, points) in SIZES.items():
        if quick and name.startswith("nuScenes"):
            continue
        gcm = GCM(c, h, w, num_heads=heads, num_points=points).to(dev)
        x = torch.randn(1, c, h, w, device=dev, requires_grad=True)
        with torch.no_grad():
            fwd = _time(lambda: gcm(x), 3, dev)
        both = _time(lambda: gcm(x).sum().backward(), 3, dev)
        rows.append({"size": name, "device": dev.type, "forward ms (B=1)": fwd * 1e3, "forward+backward ms (B=1)": both * 1e3})
    return {"title": "GCM (deformable attention via grid_sample)", "rows": rows,
            "notes": ["Mean of 3 runs after one warm-up (20 for the small case); the loop reference runs once."]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-nuscenes", action="store_true")
    args = ap.parse_args()
    res = run(quick=args.skip_nuscenes, device=args.device)
    for row in res["rows"]:
        print(row)


if __name__ == "__main__":
    main()
