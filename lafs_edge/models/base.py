"""What every registered model has: the attributes the training stages, the exporters and the
manifest read, declared for type checkers (nn.Module's __getattr__ types them Tensor | Module)."""
from __future__ import annotations

from typing import Any

from torch import nn


class FaceModel(nn.Module):
    """A face embedder: aligned images (B, 3, image_size, image_size) in [-1, 1] -> embeddings
    (B, embedding_dim), not L2-normalised."""
    image_size: int
    embedding_dim: int
    arch: str                      # the registry name, set by create_model
    arch_config: dict[str, Any]    # the overrides it was built with, set by create_model
