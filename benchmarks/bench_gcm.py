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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-nuscenes", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    small = GCM(16, 8, 8, num_heads=4, num_points=4)
    x = torch.randn(1, 16, 8, 8)
    fast = _time(lambda: small.attn(x), 20, torch.device("cpu"))
    ref = _time(lambda: deform_attn_reference(small.attn, x), 1, torch.device("cpu"))
    print(f"16 ch 8x8, 4 heads x 4 pts, CPU: grid_sample {fast * 1e3:.2f} ms, loop reference {ref * 1e3:.0f} ms ({ref / fast:.0f}x)")

    print(f"| size | device | forward ms (B=1) | forward+backward ms (B=1) |\n| --- | --- | --- | --- |")
    for name, (c, h, w, heads, points) in SIZES.items():
        if args.skip_nuscenes and name.startswith("nuScenes"):
            continue
        gcm = GCM(c, h, w, num_heads=heads, num_points=points).to(device)
        x = torch.randn(1, c, h, w, device=device, requires_grad=True)
        with torch.no_grad():
            fwd = _time(lambda: gcm(x), 3, device)
        both = _time(lambda: gcm(x).sum().backward(), 3, device)
        print(f"| {name} | {device.type} | {fwd * 1e3:.1f} | {both * 1e3:.1f} |")


if __name__ == "__main__":
    main()
