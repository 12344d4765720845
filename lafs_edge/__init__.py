"""lafs-edge: landmark-based face recognition from GPU training to phones and edge boxes."""
from lafs_edge.models import create_model, list_models, load_model, sample_patches

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "load_model", "sample_patches", "__version__"]
