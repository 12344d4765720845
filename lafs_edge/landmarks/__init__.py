"""Face detection and landmarks on the device: MediaPipe BlazeFace + face mesh run with LiteRT,
with the anchor decoding, NMS, ROI logic and 5-point extraction written here."""
from .fetch import ModelsUnavailable, cache_dir, fetch_models, missing_models, model_path
from .mesh import alignment_points, roi_from_mesh
from .pipeline import Face, FaceAnalyzer
from .smoothing import FaceTracker, OneEuroFilter

__all__ = ["Face", "FaceAnalyzer", "FaceTracker", "ModelsUnavailable", "OneEuroFilter",
           "alignment_points", "cache_dir", "fetch_models", "missing_models", "model_path",
           "roi_from_mesh"]
