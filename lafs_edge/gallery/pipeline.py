"""The device pipeline: detect -> mesh -> align -> embed (one batch per frame) -> match.

    recognizer = Recognizer(Embedder.from_artifact(artifact), gallery=Gallery(path))
    for result in recognizer.identify(image_rgb):
        print(result.match.name or "unknown", result.match.score)
    recognizer.timings   # milliseconds of the last frame: detect, mesh, align, embed, match

Used by `lafs-edge enroll`, `lafs-edge identify` and the demo app.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lafs_edge.errors import UserError
from lafs_edge.gallery.quality import QualityGate, assess
from lafs_edge.gallery.store import Gallery, Match, Shot
from lafs_edge.image import read_image

if TYPE_CHECKING:
    from lafs_edge.landmarks import Face

STAGES = ("detect", "mesh", "align", "embed", "match")


@dataclass
class Recognized:
    face: Face
    embedding: np.ndarray
    match: Match | None


class Recognizer:
    def __init__(self, embedder, analyzer=None, gallery: Gallery | None = None,
                 threshold: float | None = None):
        if analyzer is None:
            from lafs_edge.landmarks import FaceAnalyzer

            analyzer = FaceAnalyzer()
        self.embedder, self.analyzer, self.gallery = embedder, analyzer, gallery
        self.threshold = threshold if threshold is not None else embedder.threshold
        self.timings = dict.fromkeys(STAGES, 0.0)
        self.use_adapter = True   # the gallery's on-device adapter, when it holds one

    def embed_faces(self, image: np.ndarray, faces) -> np.ndarray:
        embeddings = self.embedder.embed(image, [face.points5 for face in faces])
        self.timings["align"] = self.embedder.timings["align"]
        self.timings["embed"] = self.embedder.timings["embed"] if faces else 0.0
        return embeddings

    def faces(self, image: np.ndarray, rois=None):
        faces = self.analyzer.analyze(image, rois)
        self.timings.update(detect=self.analyzer.timings.detect, mesh=self.analyzer.timings.mesh)
        return faces

    def identify(self, image: np.ndarray, rois=None) -> list[Recognized]:
        """Every face of one frame, matched against the gallery (largest face first)."""
        if self.gallery is None:
            raise ValueError("Recognizer.identify needs a gallery")
        if self.threshold is None:
            raise UserError("the model's manifest has no threshold; pass --threshold")
        faces = self.faces(image, rois)
        embeddings = self.embed_faces(image, faces)
        start = time.perf_counter()
        matches = (self.gallery.identify(embeddings, self.embedder.fingerprint, self.threshold,
                                         self.embedder.label, self.use_adapter) if faces else [])
        self.timings["match"] = (time.perf_counter() - start) * 1e3
        return [Recognized(f, e, m) for f, e, m in zip(faces, embeddings, matches)]

    def enrollment_shots(self, images: list[str | Path], gate: QualityGate = QualityGate(),
                         keep_crops: bool = True) -> tuple[list[Shot], list[tuple[str, str]]]:
        """One shot per photo of a single person. Unreadable photos, photos without a face or
        with several faces raise UserError (before anything is written); faces failing the
        quality gate come back as (source, reason) rejections."""
        shots, rejected = [], []
        for path in images:
            source = str(path)
            image = read_image(path)
            faces = self.faces(image)
            if not faces:
                raise UserError(f"{source}: no face found")
            if len(faces) > 1:
                raise UserError(f"{source}: {len(faces)} faces found; enrollment needs photos of "
                                "one person (crop the photo to that face)")
            shot, reason = self.shot(image, faces[0], source, gate, keep_crops)
            if shot is None:
                rejected.append((source, reason))
                continue
            shots.append(shot)
        return shots, rejected

    def shot(self, image: np.ndarray, face, source: str, gate: QualityGate = QualityGate(),
             keep_crops: bool = True) -> tuple[Shot | None, str]:
        """One face of a photo or video frame as an enrollment shot, or (None, why not)."""
        reasons, metrics = assess(image, face.points5, gate)
        if reasons:
            return None, "; ".join(reasons)
        crop = self.embedder.align(image, [face.points5])[0]
        embedding = self.embedder.embed_crops([crop])[0]
        return Shot(embedding, source, _png(crop) if keep_crops else None, metrics), ""


def _png(rgb: np.ndarray) -> bytes:
    import cv2

    ok, buffer = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise UserError("could not encode an enrollment crop as PNG")
    return buffer.tobytes()
