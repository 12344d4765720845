"""Core ML backend: prediction needs the Core ML framework, i.e. macOS (or iOS through the app)."""
from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from lafs_edge.errors import UserError
from lafs_edge.runtime.backends import require
from lafs_edge.runtime.manifest import Manifest


def load(model_path: Path, manifest: Manifest, threads: int | None):
    if platform.system() != "Darwin":
        raise UserError(f"Core ML prediction needs macOS (this is {platform.system()}); on Linux "
                        "`lafs-edge verify` inspects the program instead, or use another target")
    ct = require("coremltools", "coreml")
    model = ct.models.MLModel(str(model_path), compute_units=ct.ComputeUnit.CPU_ONLY)
    input_name, output_name = manifest.input.name, manifest.output["name"]

    def infer(batch: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict({input_name: batch})[output_name])

    return infer
