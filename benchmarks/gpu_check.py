"""One prepared GPU check: train part fViT on synthetic faces and print images/s, MFU and peak
memory as JSON (record the numbers and the card in docs/benchmarks.md).

    python benchmarks/gpu_check.py                          # part_fvit_base, bf16, 300 steps
    python benchmarks/gpu_check.py --device cpu --steps 2 --batch-size 2   # exercise it anywhere

Two measurements of the same supervised step (part fViT + CosFace, AdamW):
- `model_only`: one batch kept on the device, so the number is the model's compute ceiling;
- `engine`: `lafs-edge train supervised`'s real loop (DataLoader workers decoding synthetic
  images, augmentation, checks, checkpoint on exit); below `model_only` means the input
  pipeline is the bottleneck (raise --workers).
MFU = 3 x forward FLOPs (`count_flops`: forward + backward ~ 3x forward) x images/s / the card's
dense bf16 peak from PEAK_BF16_TFLOPS (null for a card not in the table or on a CPU).
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' datasheets, in TFLOPS, matched
# against torch.cuda.get_device_name() in order (first match wins).
PEAK_BF16_TFLOPS = [
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4), ("GH200", 989.4),
    ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10G", 70.0),
    ("A10", 125.0),
]


def peak_tflops(device_name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS:
        if key in device_name:
            return value
    return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB, process RSS


def reset_peak(device: torch.device) -> None:
    import gc

    gc.collect()  # the previous section's model and optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def build_config(args: argparse.Namespace, out: Path) -> dict:
    from lafs_edge.train.config import load_config

    overrides = [f"model.arch={args.model}", f"output_dir={out}", "data.format=synthetic",
                 f"data.synthetic_size={args.batch_size * (args.steps + 1)}",
                 f"data.synthetic_classes={args.classes}", f"data.num_workers={args.workers}",
                 f"optim.batch_size={args.batch_size}", f"optim.max_steps={args.steps}",
                 "optim.warmup_epochs=0.1", f"train.device={args.device}",
                 f"train.precision={args.precision}", f"train.checkpoint_every={args.steps + 1}",
                 "train.log_every=1", "train.progress=false"]
    return load_config("supervised", [], overrides + args.overrides)


def model_only(cfg: dict, device: torch.device, steps: int) -> dict:
    """The supervised step on one device-resident batch: no input pipeline in the timing."""
    from lafs_edge.train.engine import DistInfo, autocast_dtype, split_decay
    from lafs_edge.train.supervised import SupervisedTask, build_dataset

    _, classes = build_dataset(cfg["data"], 0)
    task = SupervisedTask(cfg, classes)
    task.setup(DistInfo(0, 1, 0, device))
    optimizer = torch.optim.AdamW(split_decay([task.backbone, task.margin_loss]), lr=1e-4,
                                  fused=device.type == "cuda" or None)
    dtype = autocast_dtype(cfg["train"]["precision"], device)
    b = cfg["optim"]["batch_size"]
    images = torch.rand(b, 3, 112, 112, device=device) * 2 - 1
    labels = torch.randint(0, classes, (b,), device=device)
    warmup = min(10, max(1, steps // 10))
    reset_peak(device)
    seconds = 0.0
    for i in range(warmup + steps):
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss, _ = task.loss((images, labels), i, 0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            seconds += time.perf_counter() - start
    final = float(loss.detach())
    if not math.isfinite(final):
        raise SystemExit(f"model_only: the loss became {final}")
    return {"images_per_s": b * steps / seconds, "step_ms": 1000 * seconds / steps,
            "peak_memory_gib": peak_memory_gib(device), "final_loss": final}


def engine(cfg: dict, device: torch.device) -> dict:
    """The real training loop; images/s over the steps after the first 10%."""
    from lafs_edge.train.supervised import train

    reset_peak(device)
    result = train(cfg)
    rows = [json.loads(line) for line in
            (Path(cfg["output_dir"]) / "metrics.jsonl").read_text().splitlines()]
    rows = rows[len(rows) // 10:] or rows
    global_batch = cfg["optim"]["batch_size"] * cfg["optim"]["accumulate"]
    seconds = sum(global_batch / r["images_per_s"] for r in rows)
    return {"images_per_s": global_batch * len(rows) / seconds,
            "peak_memory_gib": peak_memory_gib(device),
            "loss_first_last": [result.losses[0], result.losses[-1]]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="part_fvit_base")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--classes", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader workers for the engine run (default 12 on GPU, 0 on CPU)")
    parser.add_argument("--skip-engine", action="store_true", help="model_only measurement only")
    parser.add_argument("--json", help="also write the result to this file")
    parser.add_argument("overrides", nargs="*", help="extra config overrides (key=value)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU visible; run with --device cpu --steps 2 --batch-size 2")
    device = torch.device(args.device)
    if args.workers is None:
        args.workers = 12 if device.type == "cuda" else 0
    if device.type == "cpu" and args.precision == "fp16":
        raise SystemExit("fp16 needs a GPU")
    from lafs_edge.models import count_flops, count_parameters, create_model

    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        cfg = build_config(args, Path(tmp) / "run")
        probe = create_model(cfg["model"]["arch"], **cfg["model"]["overrides"])
        flops = count_flops(probe)
        report = {"device": device_name(device), "torch": torch.__version__,
                  "model": args.model, "parameters": count_parameters(probe),
                  "gflops_forward_per_image": flops / 1e9, "batch_size": args.batch_size,
                  "precision": args.precision, "steps": args.steps}
        del probe
        peak = peak_tflops(report["device"]) if device.type == "cuda" else None
        report["peak_bf16_tflops"] = peak
        sections = {"model_only": lambda: model_only(cfg, device, args.steps)}
        if not args.skip_engine:
            sections["engine"] = lambda: engine(cfg, device)
        for name, measure in sections.items():
            numbers = measure()
            achieved = 3 * flops * numbers["images_per_s"]
            numbers["achieved_tflops"] = achieved / 1e12
            numbers["mfu"] = achieved / (peak * 1e12) if peak else None
            report[name] = numbers
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return report


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
