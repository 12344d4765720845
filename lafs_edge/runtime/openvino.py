"""OpenVINO backend, on CPU with INFERENCE_PRECISION_HINT f32 for every artifact: on CPUs with
AVX512-BF16 or AMX OpenVINO otherwise computes in bf16 by default, which costs 1e-3 to 3e-3 of
cosine. An fp16 IR then means fp16 weights (half the file) computed in f32; int8 artifacts run
their quantized layers in int8 and the layers kept float in f32."""
from __future__ import annotations

from pathlib import Path

from .backends import require
from .manifest import Manifest


def load(model_path: Path, manifest: Manifest, threads: int | None):
    ov = require("openvino", "openvino")
    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    compiled = core.compile_model(core.read_model(str(model_path)), "CPU", config)
    request = compiled.create_infer_request()
    output = compiled.output(0)

    def infer(batch):
        return request.infer({0: batch})[output].copy()

    return infer
