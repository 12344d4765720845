"""OpenVINO backend. fp32 artifacts run with INFERENCE_PRECISION_HINT f32: on CPUs with AVX512-BF16
or AMX OpenVINO otherwise computes in bf16 by default, which costs about 1e-3 of cosine."""
from __future__ import annotations

from pathlib import Path

from .backends import require
from .manifest import Manifest


def load(model_path: Path, manifest: Manifest, threads: int | None):
    ov = require("openvino", "openvino")
    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY"}
    # fp32 and int8 (whose float parts were calibrated in f32) keep f32; fp16 artifacts may use
    # the CPU's native low precision.
    if manifest.precision in ("fp32", "int8"):
        config["INFERENCE_PRECISION_HINT"] = "f32"
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    compiled = core.compile_model(core.read_model(str(model_path)), "CPU", config)
    request = compiled.create_infer_request()
    output = compiled.output(0)

    def infer(batch):
        return request.infer({0: batch})[output].copy()

    return infer
