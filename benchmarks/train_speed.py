"""CPU training speed of the students' distillation step, and what bf16 does to the loss curve.

    python benchmarks/train_speed.py [--threads 2 --batch 64 --steps 8 --curve-steps 60]

Speed: images/s of one distillation step (forward, cosine loss to a 256-d target through a
projection, backward, AdamW) for each student in three settings, measured in one run:
  - `fp32, NCHW`: how the engine trained before (the baseline of issue 16);
  - `fp32, channels-last`: convolution weights in channels-last (the engine now does this);
  - `bf16, channels-last`: plus `train.precision=bf16` autocast.
Loss curves: the same seeded steps on random targets in fp32 and bf16 (both channels-last);
the table gives the largest and the mean gap between the two curves, and both final losses.
"""
from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F

from lafs_edge.models import create_model
from lafs_edge.train.loop import use_channels_last

STUDENTS = {"part_fvit_tiny": {"pool": "landmarks"}, "mobilefacenet": {}}
SETTINGS = (("fp32, NCHW", False, False), ("fp32, channels-last", True, False),
            ("bf16, channels-last", True, True))


def build(name: str, channels_last: bool, seed: int = 0):
    torch.manual_seed(seed)
    model = create_model(name, **STUDENTS[name]).train()
    if channels_last:
        use_channels_last(model)
    projection = torch.nn.Linear(model.embedding_dim, 256)
    params = list(model.parameters()) + list(projection.parameters())
    return model, projection, torch.optim.AdamW(params, lr=1e-3)


def step(model, projection, optimizer, images, targets, bf16: bool) -> float:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        predicted = projection(model(images)).float()
    loss = (1 - F.cosine_similarity(predicted, targets)).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def data(batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, 112, 112, generator=g) * 2 - 1, torch.randn(batch, 256, generator=g)


def images_per_s(name: str, channels_last: bool, bf16: bool, batch: int, steps: int) -> float:
    model, projection, optimizer = build(name, channels_last)
    images, targets = data(batch, 0)
    step(model, projection, optimizer, images, targets, bf16)   # warm-up
    started = time.perf_counter()
    for _ in range(steps):
        step(model, projection, optimizer, images, targets, bf16)
    return steps * batch / (time.perf_counter() - started)


def curve(name: str, bf16: bool, batch: int, steps: int) -> list[float]:
    model, projection, optimizer = build(name, True)
    images, targets = data(batch * 4, 1)   # four fixed batches: a curve that can fall
    return [step(model, projection, optimizer, images[i % 4 * batch:][:batch],
                 targets[i % 4 * batch:][:batch], bf16) for i in range(steps)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--curve-steps", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} threads, batch {args.batch}")
    print("\n| student | setting | images/s | vs fp32 NCHW |\n|---|---|---|---|")
    for name in STUDENTS:
        base = None
        for label, channels_last, bf16 in SETTINGS:
            rate = images_per_s(name, channels_last, bf16, args.batch, args.steps)
            base = base or rate
            print(f"| {name} | {label} | {rate:.1f} | {rate / base:.2f}x |", flush=True)
    print(f"\n| student | loss-curve gap bf16 vs fp32, max / mean ({args.curve_steps} steps, "
          "batch 32) | final loss fp32 | final loss bf16 |\n|---|---|---|---|")
    for name in STUDENTS:
        fp32, bf16 = curve(name, False, 32, args.curve_steps), curve(name, True, 32, args.curve_steps)
        gaps = [abs(a - b) for a, b in zip(fp32, bf16)]
        print(f"| {name} | {max(gaps):.4f} / {sum(gaps) / len(gaps):.4f} | {fp32[-1]:.4f} "
              f"| {bf16[-1]:.4f} |", flush=True)


if __name__ == "__main__":
    main()
