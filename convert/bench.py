"""Latency of artifacts in their runtimes next to PyTorch eager, measured in the same run.

For every artifact, batch size and thread count: `warmup` untimed calls, then `runs` timed calls
of `Runtime.run` on a fixed normalised batch; median and p90 in milliseconds, throughput in faces
per second (batch / median), and the PyTorch eager median of the source model under the same
batch and threads (`speedup` = PyTorch median / artifact median). Plus the model file size, the
source model's GFLOPs per face, and the precision the runtime actually executes in (read from
the loaded runtime, not the file name: OpenVINO's CPU plugin picks bf16 for "fp32" models on
CPUs with AVX512-BF16/AMX unless told otherwise, and int8 models keep some layers in float).
"""
from __future__ import annotations

import os
import platform
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from lafs_edge.runtime.backends import open_runtime
from lafs_edge.runtime.manifest import Manifest

if TYPE_CHECKING:
    from lafs_edge.models import FaceModel


def timings(call: Callable[[], object], runs: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": float(np.median(samples)), "p90_ms": float(np.percentile(samples, 90)),
            "runs": runs}


def file_size(folder: Path, manifest: Manifest) -> int:
    paths = [folder / manifest.model_file] + ([folder / manifest.weights_file] if manifest.weights_file else [])
    total = 0
    for path in paths:
        total += path.stat().st_size if path.is_file() else sum(
            p.stat().st_size for p in path.rglob("*") if p.is_file())
    return total


def torch_median(model: FaceModel, batch: int, threads: int, runs: int, warmup: int) -> dict:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    x = torch.zeros(batch, 3, model.image_size, model.image_size).uniform_(-1, 1)
    try:
        with torch.inference_mode():
            return timings(lambda: model(x), runs, warmup)
    finally:
        torch.set_num_threads(previous)


def bench_artifact(folder: Path, manifest: Manifest, model: FaceModel, batches=(1, 8),
                   threads=(1, 0), runs: int = 100, warmup: int = 10,
                   pytorch_cache: dict | None = None) -> list[dict[str, Any]]:
    """Rows for one artifact. `pytorch_cache` shares the PyTorch timings between artifacts of
    the same source model within one run (keyed by the source checkpoint's hash or record)."""
    from lafs_edge.models import count_flops

    all_threads = os.cpu_count() or 1
    base = {"artifact": folder.name, "target": manifest.target, "precision": manifest.precision,
            "size_mb": file_size(folder, manifest) / 1e6,
            "gflops": count_flops(model, model.image_size) / 1e9}
    rows = []
    for count in threads:
        count = count or all_threads
        runtime = None
        if manifest.target != "coreml" or platform.system() == "Darwin":
            runtime = open_runtime(folder, threads=count)
        for batch in batches:
            row = {**base, "threads": count, "batch": batch}
            key = (_source_key(manifest), batch, count)
            cache = pytorch_cache if pytorch_cache is not None else {}
            if key not in cache:
                cache[key] = torch_median(model, batch, count, runs, warmup)
            reference = cache[key]
            row["pytorch_median_ms"] = reference["median_ms"]
            if runtime is None:
                row["note"] = "Core ML runs on macOS/iOS only"
                row["executes_in"] = "-"
            else:
                row["executes_in"] = execution_precision(runtime)
                x = _input(manifest, batch)
                row.update(timings(partial(runtime.run, x), runs, warmup))
                row["faces_per_s"] = batch / (row["median_ms"] / 1e3)
                row["speedup_vs_pytorch"] = reference["median_ms"] / row["median_ms"]
            rows.append(row)
    return rows


COMPUTE_OPS = {
    # OpenVINO runtime layer types and LiteRT builtin ops that carry the arithmetic
    "Convolution", "GroupConvolution", "FullyConnected", "MatMul", "Deconvolution",
    "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV",
}
PRECISION_NAMES = {"u8": "int8", "i8": "int8", "uint8": "int8", "int8": "int8", "f32": "f32",
                   "float32": "f32", "bf16": "bf16", "f16": "f16", "float16": "f16", "int16": "int16"}


def execution_precision(runtime) -> str:
    """What the loaded runtime computes in, e.g. "bf16", "int8 48/50 + f32 2/50" (compute layers
    by the precision they run in), read from the runtime itself."""
    target = runtime.manifest.target
    if target in ("onnx", "pytorch"):
        return "f32"
    found = _closure_object(runtime._infer, "get_compiled_model" if target == "openvino"
                            else "_get_ops_details")
    if found is None:
        return "unknown"
    counts = (_openvino_precisions(found.get_compiled_model()) if target == "openvino"
              else _litert_precisions(found))
    return summarize_precisions(counts)


def summarize_precisions(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    if not total:
        return "unknown"
    if len(counts) == 1:
        return next(iter(counts))
    ordered = sorted(counts.items(), key=lambda kv: -kv[1])
    return " + ".join(f"{name} {n}/{total}" for name, n in ordered)


def _closure_object(fn, attribute: str):
    for cell in getattr(fn, "__closure__", None) or ():
        value = cell.cell_contents
        if hasattr(value, attribute):
            return value
    return None


def _openvino_precisions(compiled) -> dict[str, int]:
    counts: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) not in COMPUTE_OPS:
            continue
        name = info["runtimePrecision"].astype(str)
        name = PRECISION_NAMES.get(name, name)
        counts[name] = counts.get(name, 0) + 1
    return counts


def _litert_precisions(interpreter) -> dict[str, int]:
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    counts: dict[str, int] = {}
    for op in interpreter._get_ops_details():
        if op["op_name"] not in COMPUTE_OPS or not len(op["inputs"]):
            continue
        dtype = str(np.dtype(tensors[op["inputs"][0]]["dtype"]))
        name = PRECISION_NAMES.get(dtype, dtype)
        counts[name] = counts.get(name, 0) + 1
    return counts


def _source_key(manifest: Manifest) -> str:
    import json

    return manifest.source_checkpoint_sha256 or json.dumps(manifest.parity.get("source"), sort_keys=True)


def _input(manifest: Manifest, batch: int) -> np.ndarray:
    shape = [batch, *manifest.input.shape[1:]]
    return np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| artifact | executes in | threads | batch | median ms | p90 ms | faces/s | PyTorch ms "
             "| speedup | size MB | GFLOPs/face |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "median_ms" in r:
            timing = (f"{r['median_ms']:.2f} | {r['p90_ms']:.2f} | {r['faces_per_s']:.0f} | "
                      f"{r['pytorch_median_ms']:.2f} | {r['speedup_vs_pytorch']:.2f}x")
        else:
            timing = f"- | - | - | {r['pytorch_median_ms']:.2f} | {r.get('note', '-')}"
        lines.append(f"| {r['artifact']} | {r.get('executes_in', '-')} | {r['threads']} | {r['batch']} | {timing} | "
                     f"{r['size_mb']:.2f} | {r['gflops']:.3f} |")
    return "\n".join(lines) + "\n"


def machine() -> str:
    """CPU model name and core count, for the record."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} logical CPUs"
