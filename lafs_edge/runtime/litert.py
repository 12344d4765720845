"""LiteRT (TFLite) backend through ai-edge-litert's Interpreter, the API Android apps use too.
Fully integer models (int8 input/output tensors) are fed and read through the tensors' own
quantization parameters, as an app would."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lafs_edge.runtime.backends import require
from lafs_edge.runtime.manifest import Manifest


def load(model_path: Path, manifest: Manifest, threads: int | None):
    interpreter_module = require("ai_edge_litert.interpreter", "tflite")
    interpreter = interpreter_module.Interpreter(model_path=str(model_path), num_threads=threads or None)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]

    def infer(batch: np.ndarray) -> np.ndarray:
        if list(inp["shape"]) != list(batch.shape):
            interpreter.resize_tensor_input(inp["index"], list(batch.shape))
            interpreter.allocate_tensors()
            inp.update(interpreter.get_input_details()[0])
        interpreter.set_tensor(inp["index"], quantize(batch, inp))
        interpreter.invoke()
        return dequantize(interpreter.get_tensor(out["index"]), out)

    return infer


def quantize(values: np.ndarray, detail: dict) -> np.ndarray:
    dtype = detail["dtype"]
    if not np.issubdtype(dtype, np.integer):
        return values.astype(dtype, copy=False)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(values / scale) + zero, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    if not np.issubdtype(values.dtype, np.integer):
        return values.copy()
    scale, zero = detail["quantization"]
    return (values.astype(np.float32) - zero) * scale
