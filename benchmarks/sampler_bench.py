"""Patch sampler speed: batched gather and batched grid_sample vs the reference loop of one
grid_sample call per landmark, forward and forward+backward, plus the memory-bandwidth floor.

Rows: the default method ("gather") as a user calls it (eager: grid_sample, chosen by the call),
its export form (what traced / exported graphs contain), batched grid_sample, the previous gather
form, and the reference loop. (The flat-row eager gather of earlier tables is gone: nothing ran it.)

    python benchmarks/sampler_bench.py [--batch 64 --landmarks 196 --size 8 --repeats 30]
Prints a markdown table and writes JSON next to it (--json).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from lafs_edge.models import sample_patches, sample_patches_reference
from lafs_edge.models.sampler import _sample_gather

sys.path.insert(0, str(Path(__file__).resolve().parent))
from previous_sampler import previous_gather  # noqa: E402


def timed(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def memory_bandwidth_gbs(mbytes: int = 512) -> float:
    """Copy bandwidth of this machine: bytes read + written per second by a large tensor copy."""
    src = torch.empty(mbytes * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = min(_copy_time(src, dst) for _ in range(5))
    return 2 * src.numel() * 4 / best / 1e9


def _copy_time(src: torch.Tensor, dst: torch.Tensor) -> float:
    start = time.perf_counter()
    dst.copy_(src)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--landmarks", type=int, default=196)
    parser.add_argument("--size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b, n, s = args.batch, args.landmarks, args.size
    images = torch.randn(b, 3, 112, 112)
    points = torch.rand(b, n, 2) * 111

    methods = {
        "reference loop (196 grid_sample calls)": lambda im, pt: sample_patches_reference(im, pt, s),
        "batched grid_sample": lambda im, pt: sample_patches(im, pt, s, "grid_sample"),
        "default `gather` (as called)": lambda im, pt: sample_patches(im, pt, s, "gather"),
        "gather, export form (in exported graphs)": lambda im, pt: _sample_gather(im, pt, s),
        "previous gather (matmul blend, before issue 16)": lambda im, pt: previous_gather(im, pt, s),
    }
    reference = methods["reference loop (196 grid_sample calls)"](images, points)
    rows = []
    for name, fn in methods.items():
        with torch.no_grad():
            fwd = timed(lambda: fn(images, points), args.repeats)
        im = images.clone().requires_grad_(True)
        pt = points.clone().requires_grad_(True)

        def fwd_bwd():
            im.grad = pt.grad = None
            fn(im, pt).sum().backward()

        both = timed(fwd_bwd, args.repeats)
        err = (fn(images, points) - reference).abs().max().item()
        rows.append({"method": name, "forward_ms": fwd, "forward_backward_ms": both, "max_abs_diff": err})

    base = rows[0]
    bandwidth = memory_bandwidth_gbs()
    # The least traffic any sampler needs: read every image once, write every patch once.
    floor_bytes = images.numel() * 4 + b * n * 3 * s * s * 4 + points.numel() * 4
    floor_ms = floor_bytes / (bandwidth * 1e9) * 1e3
    print(f"batch {b}, {n} landmarks, {s}x{s} patches, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}")
    print("| method | forward ms | speed-up | fwd+bwd ms | speed-up | max abs diff vs loop |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['forward_ms']:.2f} | {base['forward_ms'] / r['forward_ms']:.1f}x "
              f"| {r['forward_backward_ms']:.2f} | {base['forward_backward_ms'] / r['forward_backward_ms']:.1f}x "
              f"| {r['max_abs_diff']:.1e} |")
    default = rows[2]
    print(f"memory floor: {floor_bytes / 1e6:.1f} MB must move; measured copy bandwidth "
          f"{bandwidth:.1f} GB/s -> {floor_ms:.2f} ms; default forward = "
          f"{default['forward_ms'] / floor_ms:.1f}x the floor, "
          f"{base['forward_ms'] / default['forward_ms']:.1f}x faster than the loop")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "bandwidth_gbs": bandwidth, "floor_ms": floor_ms,
                       "floor_bytes": floor_bytes, "threads": torch.get_num_threads(),
                       "default_vs_loop": base["forward_ms"] / default["forward_ms"],
                       "default_vs_floor": default["forward_ms"] / floor_ms,
                       "machine": _machine()}, f, indent=2)


def _machine() -> str:
    from lafs_edge.convert.bench import machine

    return machine()


if __name__ == "__main__":
    main()
