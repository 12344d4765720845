"""lafs-edge: landmark-based face recognition from GPU training to phones and edge boxes."""
from typing import TYPE_CHECKING

from lafs_edge.models import create_model, list_models, load_model, sample_patches

if TYPE_CHECKING:   # typed for checkers and editors; imported lazily at run time (__getattr__)
    from lafs_edge.face_recognizer import FaceRecognizer

__version__ = "0.1.0"
__all__ = ["FaceRecognizer", "create_model", "list_models", "load_model", "sample_patches",
           "__version__"]


def __getattr__(name: str):
    """`lafs_edge.FaceRecognizer` is imported on first use: `import lafs_edge` stays light."""
    if name == "FaceRecognizer":
        from lafs_edge.face_recognizer import FaceRecognizer

        return FaceRecognizer
    raise AttributeError(f"module 'lafs_edge' has no attribute {name!r}")
