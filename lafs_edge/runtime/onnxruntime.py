"""ONNX Runtime backend (CPU execution provider)."""
from __future__ import annotations

from pathlib import Path

from lafs_edge.runtime.backends import require
from lafs_edge.runtime.manifest import Manifest


def load(model_path: Path, manifest: Manifest, threads: int | None):
    ort = require("onnxruntime", "onnx")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {input_name: batch})[0]
