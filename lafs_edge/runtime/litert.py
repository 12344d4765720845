"""LiteRT (TFLite) backend through ai-edge-litert's Interpreter, the API Android apps use too."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .backends import require
from .manifest import Manifest


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
        interpreter.set_tensor(inp["index"], batch)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"]).copy()

    return infer
