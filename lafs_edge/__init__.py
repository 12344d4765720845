"""lafs-edge: landmark-based face recognition from GPU training to phones and edge boxes."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "load_model", "sample_patches", "__version__"]

if TYPE_CHECKING:
    from lafs_edge.models import create_model, list_models, load_model, sample_patches


def __getattr__(name: str) -> Any:
    """The model functions load torch on first use, not on `import lafs_edge`: the command line
    imports the package for every `--help`, which must not wait seconds for torch (PEP 562)."""
    if name in ("create_model", "list_models", "load_model", "sample_patches"):
        return getattr(importlib.import_module("lafs_edge.models"), name)
    raise AttributeError(f"module 'lafs_edge' has no attribute {name!r}")
