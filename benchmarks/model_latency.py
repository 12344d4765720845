"""Forward latency of every registered model in PyTorch eager on CPU, batch 1 and 64.

    python benchmarks/model_latency.py [--batches 1 64 --repeats 10 --threads N]
Prints a markdown table (median and p90 milliseconds, images/s).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from lafs_edge.models import count_flops, create_model, list_models


def latency_ms(model: torch.nn.Module, batch: int, repeats: int) -> list[float]:
    x = torch.rand(batch, 3, 112, 112) * 2 - 1
    samples = []
    with torch.inference_mode():
        for _ in range(2):
            model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            samples.append((time.perf_counter() - start) * 1e3)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--models", nargs="+", default=list_models())
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| model | GFLOPs | batch | median ms | p90 ms | images/s |")
    print("|---|---|---|---|---|---|")
    for name in args.models:
        model = create_model(name).eval()
        gflops = count_flops(model) / 1e9
        for batch in args.batches:
            samples = sorted(latency_ms(model, batch, args.repeats))
            median = statistics.median(samples)
            p90 = samples[min(len(samples) - 1, int(0.9 * len(samples)))]
            print(f"| {name} | {gflops:.2f} | {batch} | {median:.1f} | {p90:.1f} | "
                  f"{batch / median * 1e3:.0f} |", flush=True)


if __name__ == "__main__":
    main()
