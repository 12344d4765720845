"""PyTorch "export": the checkpoint itself, for the PyTorch runtime and as the reference."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..models import save_checkpoint
from .export import Converted


def export(model: torch.nn.Module, folder: Path, precision: str, calib: np.ndarray | None,
           float_groups: list[str]) -> Converted:
    save_checkpoint(model, folder / "model.pt")
    size = model.image_size
    return Converted("model.pt", [-1, 3, size, size])
