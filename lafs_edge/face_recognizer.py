"""`lafs_edge.FaceRecognizer`: the device pipeline (detect, align, embed, match) in one object.

    from lafs_edge import FaceRecognizer
    faces = FaceRecognizer()                     # the shipped student, a gallery in memory
    faces.enroll("Ava", ["ava.jpg"])             # paths or RGB arrays, one face each
    print(faces.identify("group.jpg"))           # [Identity(name='Ava', score=0.61, box=...), ...]

Images are paths or numpy RGB arrays (H, W, 3) uint8 (grey (H, W) is accepted too). `model`
takes what the CLI's `--model` takes (an exported artifact folder, a checkpoint, a model name
with shipped weights) and is opened the same way; matching, the same-person rules and the per-frame
naming are `Recognizer`'s, the code `lafs-edge enroll`, `identify` and the demo run.
Bad input raises `lafs_edge.errors.UserError` with a one-line message.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from lafs_edge.errors import UserError

Image = Union[str, os.PathLike, np.ndarray]


@dataclass(frozen=True)
class DetectedFace:
    """One face: `box` x0, y0, x1, y1 and the 5 alignment `points` (left eye, right eye, nose,
    mouth corners) in pixels; `quality` the enrollment gate's measures (eye_distance, sharpness,
    yaw) and `problems` why the gate would refuse it as an enrollment shot (empty: it passes)."""
    box: np.ndarray
    points: np.ndarray
    quality: dict[str, float]
    problems: list[str]
    detection: Any = field(repr=False, compare=False, default=None)   # the landmarks.Face


@dataclass(frozen=True)
class Identity:
    """Who a face is: `name` None when unknown (below the model's threshold); `score` the cosine
    with the best-matching person, `best` that person even when unknown."""
    name: str | None
    score: float
    box: np.ndarray
    best: str | None = None

    @property
    def known(self) -> bool:
        return self.name is not None


@dataclass(frozen=True)
class Comparison:
    """Two faces: their cosine and whether it reaches the model's threshold."""
    cosine: float
    threshold: float
    same: bool


class FaceRecognizer:
    """Face recognition with one of lafs-edge's models.

    `model`: None for the shipped default student (or, with an existing `gallery` file, the model
    it was enrolled with); otherwise any `--model` value. `gallery`: a gallery file (created by
    the first `enroll`; the CLI reads it too), or None for one in memory (a private temporary
    file, deleted by `close()` or when the object goes away). `threshold`: the open-set cosine
    (default: the model's own). Usable as a context manager."""

    def __init__(self, model: str | os.PathLike | None = None,
                 gallery: str | os.PathLike | None = None, *, threshold: float | None = None,
                 threads: int | None = None):
        from lafs_edge.commands.gallery_common import artifact_for, source_for
        from lafs_edge.gallery import Gallery, Recognizer
        from lafs_edge.runtime.embedder import Embedder

        self._temporary: str | None = None
        if gallery is None:
            self._temporary = tempfile.mkdtemp(prefix="lafs-edge-gallery-")
            weakref.finalize(self, shutil.rmtree, self._temporary, True)
            gallery = Path(self._temporary) / "gallery.db"
        self.gallery_path = Path(gallery)
        existing = Gallery(self.gallery_path) if self.gallery_path.exists() else None
        value = None if model is None else str(model)
        embedder = Embedder.from_artifact(artifact_for(value, existing), threads=threads)
        self._recognizer = Recognizer(embedder, gallery=existing, threshold=threshold)
        self._recognizer.model_source = source_for(value, existing)
        if existing is not None:
            existing.check_model(embedder.fingerprint, embedder.label)

    # --- the model -------------------------------------------------------------------------------

    @property
    def threshold(self) -> float:
        """The open-set cosine: at or above it two faces are the same person."""
        return self._recognizer.require_threshold()

    @property
    def model(self) -> str:
        """The model's name and precision, e.g. "mobilefacenet (fp32)"."""
        return self._recognizer.embedder.label

    def detect(self, image: Image) -> list[DetectedFace]:
        """Every face in the image, largest first."""
        from lafs_edge.gallery.quality import assess

        rgb = _rgb(image)
        faces = []
        for face in self._recognizer.faces(rgb):
            problems, quality = assess(rgb, face.points5)
            faces.append(DetectedFace(face.box.copy(), face.points5.copy(), quality, problems,
                                      face))
        return faces

    def embed(self, image: Image, faces: Sequence[DetectedFace] | None = None) -> np.ndarray:
        """(N, D) L2-normalised embeddings of `faces` (default: every face `detect` finds)."""
        rgb = _rgb(image)
        detections = ([face.detection for face in faces] if faces is not None
                      else self._recognizer.faces(rgb))
        return self._recognizer.embed_faces(rgb, detections)

    def compare(self, a: Image, b: Image) -> Comparison:
        """The largest face of `a` against the largest face of `b`."""
        cosine = float(self._largest_embedding(a) @ self._largest_embedding(b))
        return Comparison(cosine, self.threshold, cosine >= self.threshold)

    # --- the gallery ----------------------------------------------------------------------------

    def enroll(self, name: str, images: Sequence[Image] | Image, *,
               allow_mismatch: bool = False, allow_lookalike: bool = False) -> int:
        """Add photos of one person (one face each) under `name`; returns the shots added.
        Photos failing the quality gate or nearly identical to a kept one are skipped. Refused
        (UserError, nothing written) when the photos do not match the shots already under `name`
        (`allow_mismatch` overrides) or match another enrolled person (`allow_lookalike`)."""
        import warnings

        from lafs_edge.gallery.names import check_name

        name = check_name(name)
        self._require_gallery(create=True)
        photos = [images] if isinstance(images, (str, os.PathLike, np.ndarray)) else list(images)
        shots, rejected = self._recognizer.enrollment_shots(
            [Path(photo) if isinstance(photo, (str, os.PathLike)) else _rgb(photo)
             for photo in photos])
        if not shots:
            reasons = "; ".join(f"{source}: {reason}" for source, reason in rejected)
            raise UserError(f"no photo of {name!r} passed the quality gate ({reasons})")
        result, notes = self._recognizer.enroll(name, shots, allow_mismatch, allow_lookalike)
        for note in notes:
            warnings.warn(note, stacklevel=2)
        return len(result.added)

    def identify(self, image: Image) -> list[Identity]:
        """Every face of the image named from the gallery (largest first); each enrolled person
        is given to at most one face, the best-scoring one."""
        self._require_gallery()
        return [Identity(r.match.name, r.match.score, r.face.box.copy(), r.match.best)
                for r in self._recognizer.identify(_rgb(image)) if r.match is not None]

    def people(self) -> list[str]:
        gallery = self._recognizer.gallery
        return [person.name for person in gallery.people()] if gallery is not None else []

    def forget(self, name: str) -> int:
        """Delete a person and every shot of them (erased from the file); returns the shots."""
        return self._require_gallery().delete(name)

    def close(self) -> None:
        if self._recognizer.gallery is not None:
            self._recognizer.gallery.close()
            self._recognizer.gallery = None
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)

    def __enter__(self) -> "FaceRecognizer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- helpers --------------------------------------------------------------------------------

    def _require_gallery(self, create: bool = False):
        """The open gallery; a missing file is created only for `enroll` (`create`)."""
        from lafs_edge.gallery import Gallery

        if self._recognizer.gallery is None:
            if not (create or self._temporary or self.gallery_path.exists()):
                raise UserError(f"no gallery at {self.gallery_path} (enroll someone first)")
            self._recognizer.gallery = Gallery(self.gallery_path)
        return self._recognizer.gallery

    def _largest_embedding(self, image: Image) -> np.ndarray:
        rgb = _rgb(image)
        faces = self._recognizer.faces(rgb)
        if not faces:
            raise UserError(f"no face found in {_describe(image)}")
        return self._recognizer.embed_faces(rgb, faces[:1])[0]


def _rgb(image: Image) -> np.ndarray:
    """A path or an array -> RGB uint8 (H, W, 3)."""
    if isinstance(image, (str, os.PathLike)):
        from lafs_edge.image import read_image

        return read_image(image)
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise UserError(f"images must be uint8 RGB arrays, not {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise UserError(f"images must be (H, W, 3) RGB arrays, not shape {array.shape}")
    return np.ascontiguousarray(array[:, :, :3])


def _describe(image: Image) -> str:
    return str(image) if isinstance(image, (str, os.PathLike)) else "the image"
