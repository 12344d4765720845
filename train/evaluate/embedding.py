"""Embedding images through a PyTorch model with the project's one preprocessing."""
from __future__ import annotations

from typing import Iterable

import numpy as np


def embed_images(model, images: Iterable[np.ndarray], batch_size: int = 64, flip: bool = False,
                 normalize: bool = True) -> np.ndarray:
    """RGB uint8 crops of the model's input size -> (N, D) float32 embeddings.

    `flip` adds the embedding of the mirrored crop (InsightFace's flip test) before any
    normalisation; `normalize` L2-normalises each row.
    """
    import torch
    import torch.nn.functional as F

    from lafs_edge.image import to_model_input

    device = next(model.parameters()).device
    rows: list[np.ndarray] = []
    batch: list[np.ndarray] = []

    def flush():
        with torch.inference_mode():
            tensor = to_model_input(batch).to(device)
            features = model(tensor)
            if flip:
                features = features + model(torch.flip(tensor, dims=[3]))
            if normalize:
                features = F.normalize(features, dim=1)
        rows.append(features.float().cpu().numpy())
        batch.clear()

    for image in images:
        batch.append(image)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if not rows:
        return np.zeros((0, getattr(model, "embedding_dim", 0)), dtype=np.float32)
    return np.concatenate(rows).astype(np.float32)
