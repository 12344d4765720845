"""lafs-edge: landmark-based face recognition from GPU training to phones and edge boxes."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["FaceRecognizer", "create_model", "list_models", "load_model", "sample_patches",
           "__version__"]

if TYPE_CHECKING:   # typed for checkers and editors; imported lazily at run time (__getattr__)
    from lafs_edge.face_recognizer import FaceRecognizer
    from lafs_edge.models import create_model, list_models, load_model, sample_patches

_LAZY = {"FaceRecognizer": "lafs_edge.face_recognizer", "create_model": "lafs_edge.models",
         "list_models": "lafs_edge.models", "load_model": "lafs_edge.models",
         "sample_patches": "lafs_edge.models"}


def __getattr__(name: str) -> Any:
    """Everything loads torch on first use, not on `import lafs_edge`: the command line imports
    the package for every `--help`, which must not wait seconds for torch (PEP 562)."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lafs_edge' has no attribute {name!r}")
