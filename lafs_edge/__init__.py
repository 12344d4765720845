"""lafs-edge: landmark-based face recognition from GPU training to phones and edge boxes."""
__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "load_model", "sample_patches", "__version__"]


def __getattr__(name: str) -> object:
    """The model functions, imported on first use: importing the package (as the `lafs-edge`
    command does before anything else) must not take the second torch needs, during which
    Ctrl-C could only print a traceback; this file imports nothing for the same reason."""
    if name in __all__:
        import lafs_edge.models as models

        return getattr(models, name)
    raise AttributeError(f"module 'lafs_edge' has no attribute {name!r}")
