"""PyTorch "export": the checkpoint itself, for the PyTorch runtime and as the reference."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lafs_edge.convert.export import Converted
from lafs_edge.models import FaceModel, save_checkpoint


def export(model: FaceModel, folder: Path, precision: str, calib: np.ndarray | None,
           float_groups: list[str]) -> Converted:
    save_checkpoint(model, folder / "model.pt")
    size = model.image_size
    return Converted("model.pt", [-1, 3, size, size])
