"""PyTorch backend: the artifact's model file is a lafs-edge checkpoint, run in eager mode."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lafs_edge.runtime.manifest import Manifest


def load(model_path: Path, manifest: Manifest, threads: int | None):
    import torch

    from lafs_edge.models import load_model

    if threads:
        torch.set_num_threads(int(threads))
    model = load_model(model_path)

    def infer(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(batch)).numpy()

    return infer
