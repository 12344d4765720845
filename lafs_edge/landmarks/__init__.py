"""Face detection and landmarks on the device: MediaPipe BlazeFace + face mesh run with LiteRT,
with the anchor decoding, NMS, ROI logic and 5-point extraction written here."""
from lafs_edge.landmarks.fetch import (ModelsUnavailable, cache_dir, fetch_models, missing_models,
                                       model_path)
from lafs_edge.landmarks.mesh import alignment_points, roi_from_mesh
from lafs_edge.landmarks.pipeline import Face, FaceAnalyzer
from lafs_edge.landmarks.smoothing import FaceTracker, OneEuroFilter

__all__ = ["Face", "FaceAnalyzer", "FaceTracker", "ModelsUnavailable", "OneEuroFilter",
           "alignment_points", "cache_dir", "fetch_models", "missing_models", "model_path",
           "roi_from_mesh"]
