"""OpenVINO backend, on CPU with INFERENCE_PRECISION_HINT f32 for every artifact: on CPUs with
AVX512-BF16 or AMX OpenVINO otherwise computes in bf16 by default, which costs 1e-3 to 3e-3 of
cosine. An fp16 IR then means fp16 weights (half the file) computed in f32; int8 artifacts run
their quantized layers in int8 and the layers kept float in f32."""
from __future__ import annotations

import functools
from pathlib import Path

from lafs_edge.runtime.backends import require
from lafs_edge.runtime.manifest import Manifest


@functools.cache
def shared_core():
    """One Core per process. The CPU plugin (2026.4) points the thread's alternate signal stack at
    a buffer of each Core that compiles a model and frees it with the Core: Cores freed in the
    order they were made leave the stack dangling, and the next Python-handled signal (Ctrl-C,
    SIGTERM, torch DataLoader's SIGCHLD) then kills the process with SIGSEGV."""
    return require("openvino", "openvino").Core()


def load(model_path: Path, manifest: Manifest, threads: int | None):
    core = shared_core()
    config: dict[str, str | int] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    model = core.read_model(str(model_path))
    wanted = manifest.input.shape[0]
    if isinstance(wanted, int) and wanted <= 0 and model.inputs[0].partial_shape[0].is_static:
        # an IR saved with batch 1 (Open Model Zoo) run on whole batches: one call per batch
        shape = model.inputs[0].partial_shape
        shape[0] = -1
        model.reshape({0: shape})
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    output = compiled.output(0)

    def infer(batch):
        return request.infer({0: batch})[output].copy()

    return infer
