"""Faces in a photo: BlazeFace boxes -> 468-point mesh -> the 5 alignment points.

`FaceAnalyzer.analyze(image_rgb)` returns one `Face` per person, largest first. Detection runs
the short-range model (faces filling a good part of the frame: selfies, webcams) and the
full-range model (group photos, faces a few metres away) and keeps the best-scoring box where
the two overlap; `detectors=("short",)` saves the second model's time on a webcam.
Tight face crops need no padding: every face of a 153-image wild5 sample (80x80) is found as it
is, and so is every one of them after alignment to a 112x112 ArcFace crop; padding by 25% or 50%
changed neither the detections nor the 5-point error (0.0515 vs 0.0512), so images go in as they
are (the mesh ROI may extend past the border; its pixels are edge-replicated, as in MediaPipe).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from lafs_edge.landmarks.blazeface import FULL_RANGE, SHORT_RANGE, BlazeFace, Detection, iou
from lafs_edge.landmarks.mesh import FaceMesh, Roi, alignment_points, roi_from_detection

DETECTORS = {"short": SHORT_RANGE, "full": FULL_RANGE}
MERGE_IOU = 0.3        # boxes from the two detectors overlapping more than this are one face
MIN_PRESENCE = 0.5     # MediaPipe's face-presence threshold for the mesh


@dataclass
class Face:
    box: np.ndarray        # (4,) x0, y0, x1, y1 pixels (the detector's box)
    score: float           # detector score
    keypoints: np.ndarray  # (6, 2) BlazeFace keypoints
    mesh: np.ndarray       # (468, 3) pixels (z in pixel units, relative)
    presence: float        # mesh face-presence probability
    points5: np.ndarray    # (5, 2) alignment points, template order

    @property
    def size(self) -> float:
        """Inter-ocular distance in pixels (the face's scale for quality checks)."""
        return float(np.linalg.norm(self.points5[1] - self.points5[0]))


@dataclass
class Timings:
    """Milliseconds of the last call, per stage."""
    detect: float = 0.0
    mesh: float = 0.0


class FaceAnalyzer:
    def __init__(self, model_folder=None, num_threads: int = 2,
                 detectors: tuple[str, ...] = ("short", "full"), min_score: float | None = None):
        unknown = set(detectors) - set(DETECTORS)
        if unknown or not detectors:
            raise ValueError(f"detectors must be a non-empty subset of {sorted(DETECTORS)}")
        self.detectors = [BlazeFace(DETECTORS[name], model_folder, num_threads)
                          for name in detectors]
        self.min_score = min_score
        self.mesh = FaceMesh(model_folder, num_threads)
        self.timings = Timings()

    def detect(self, image: np.ndarray) -> list[Detection]:
        """BlazeFace detections in image pixels, merged across the detectors."""
        image = _as_rgb(image)
        found = [d for detector in self.detectors for d in detector.detect(image, self.min_score)]
        found.sort(key=lambda d: -d.score)
        detections: list[Detection] = []
        for d in found:
            if not detections or iou(d.box, np.array([k.box for k in detections])).max() <= MERGE_IOU:
                detections.append(d)
        return detections

    def analyze(self, image: np.ndarray, rois: list[Roi] | None = None) -> list[Face]:
        """Every face in `image` (RGB uint8), largest first. `rois` (e.g. from the previous video
        frame, via `roi_from_mesh`) skip detection; faces whose mesh presence falls below
        MIN_PRESENCE are dropped."""
        image = _as_rgb(image)
        start = time.perf_counter()
        detections: list[Detection] | list[None]
        if rois is None:
            detections = self.detect(image)
            rois = [roi_from_detection(d.box, d.keypoints) for d in detections]
        else:
            detections = [None] * len(rois)
        middle = time.perf_counter()
        faces = []
        for detection, roi in zip(detections, rois):
            points, presence = self.mesh(image, roi)
            if presence < MIN_PRESENCE:
                continue
            box = detection.box if detection else _box_of(points)
            faces.append(Face(box=box, score=detection.score if detection else presence,
                              keypoints=detection.keypoints if detection else np.zeros((6, 2)),
                              mesh=points, presence=presence, points5=alignment_points(points)))
        end = time.perf_counter()
        self.timings = Timings(detect=(middle - start) * 1e3, mesh=(end - middle) * 1e3)
        faces.sort(key=lambda f: -f.size)
        return _drop_duplicates(faces)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    return np.ascontiguousarray(image)


def _box_of(points: np.ndarray) -> np.ndarray:
    low, high = points[:, :2].min(0), points[:, :2].max(0)
    return np.concatenate([low, high])


def _drop_duplicates(faces: list[Face], threshold: float = 0.5) -> list[Face]:
    """Two ROIs can converge on one face (short and full range, or tracking): keep the larger."""
    kept: list[Face] = []
    for face in faces:
        boxes = np.array([_box_of(k.mesh) for k in kept]).reshape(-1, 4)
        if not kept or iou(_box_of(face.mesh), boxes).max() <= threshold:
            kept.append(face)
    return kept
