"""The device pipeline: detect -> mesh -> align -> embed (one batch per frame) -> match.

    recognizer = Recognizer(Embedder.from_artifact(artifact), gallery=Gallery(path))
    for result in recognizer.identify(image_rgb):
        print(result.match.name or "unknown", result.match.score)
    recognizer.timings   # milliseconds of the last frame: detect, mesh, align, embed, match

The one match path: `Recognizer.match` (threshold, adapter, one face per person in a frame) and
`Recognizer.check_enrollment` (the same-person rules) are what `lafs-edge enroll`/`identify`, the
demo app and the Python API (`lafs_edge.FaceRecognizer`) all call.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lafs_edge.errors import UserError
from lafs_edge.gallery.quality import QualityGate, assess
from lafs_edge.gallery.names import name_key
from lafs_edge.gallery.matching import Match, person_match
from lafs_edge.gallery.store import EnrollResult, Gallery, Shot
from lafs_edge.image import read_image

if TYPE_CHECKING:
    from lafs_edge.landmarks import Face

STAGES = ("detect", "mesh", "align", "embed", "match")


@dataclass
class Recognized:
    face: Face
    embedding: np.ndarray
    match: Match | None


@dataclass
class EnrollmentCheck:
    """What the gallery already says about new shots of `name`, at the model's threshold."""
    name: str
    threshold: float | None                     # None: the model has none, nothing checked
    mismatch: float | None = None               # cosine to name's own shots, when below
    lookalike: tuple[str, float] | None = None  # another person they match, and the cosine

    def mismatch_text(self) -> str:
        return (f"{self.name!r} is already enrolled and these photos do not match their shots "
                f"(best cosine {self.mismatch or 0:.3f}, threshold {self.threshold or 0:.3f}): a "
                "different person?")

    def lookalike_text(self) -> str:
        other, score = self.lookalike or ("?", 0.0)
        return (f"these photos match {other!r}, already enrolled (cosine {score:.3f}, threshold "
                f"{self.threshold or 0:.3f}): the same person under another name?")


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
        self.model_source: str | None = None   # the --model value enrollments record

    def embed_faces(self, image: np.ndarray, faces) -> np.ndarray:
        embeddings = self.embedder.embed(image, [face.points5 for face in faces])
        self.timings["align"] = self.embedder.timings["align"]
        self.timings["embed"] = self.embedder.timings["embed"] if faces else 0.0
        return embeddings

    def faces(self, image: np.ndarray, rois=None):
        faces = self.analyzer.analyze(image, rois)
        self.timings.update(detect=self.analyzer.timings.detect, mesh=self.analyzer.timings.mesh)
        return faces

    def require_threshold(self) -> float:
        if self.threshold is None:
            raise UserError("the model's manifest has no threshold; pass --threshold")
        return self.threshold

    def identify(self, image: np.ndarray, rois=None) -> list[Recognized]:
        """Every face of one frame, matched against the gallery (largest face first)."""
        if self.gallery is None:
            raise ValueError("Recognizer.identify needs a gallery")
        self.require_threshold()
        faces = self.faces(image, rois)
        embeddings = self.embed_faces(image, faces)
        matches = self.match(embeddings)
        return [Recognized(f, e, m) for f, e, m in zip(faces, embeddings, matches)]

    def match(self, embeddings: np.ndarray, allow_empty: bool = False) -> list[Match]:
        """The names of one frame's faces (rows of `embeddings`): the gallery's best person per
        face at the threshold (through its adapter unless `use_adapter` is off), then each
        person given to at most one face, the best-scoring one. `allow_empty`: a gallery with
        no one enrolled calls every face unknown instead of refusing (the demo starts so)."""
        start = time.perf_counter()
        threshold = self.require_threshold()
        if len(embeddings) == 0:
            matches: list[Match] = []
        elif allow_empty and (self.gallery is None or not self.gallery.people()):
            matches = [Match(None, 0.0, None) for _ in range(len(embeddings))]
        else:
            if self.gallery is None:
                raise ValueError("Recognizer.match needs a gallery")
            matches = one_face_per_person(self.gallery.identify(
                embeddings, self.embedder.fingerprint, threshold, self.embedder.label,
                self.use_adapter))
        self.timings["match"] = (time.perf_counter() - start) * 1e3
        return matches

    def check_enrollment(self, name: str, embeddings: np.ndarray) -> EnrollmentCheck:
        """The same-person rules for adding shots under `name`: they should match that
        person's stored shots (else `mismatch`: a different face under a taken name would merge
        silently), and should not match someone else (else `lookalike`: the same face under a
        second name would make the two people indistinguishable)."""
        if self.gallery is None:
            raise ValueError("Recognizer.check_enrollment needs a gallery")
        check = EnrollmentCheck(name, self.threshold)
        if check.threshold is None:
            return check   # no threshold to judge by (identify and the demo refuse such a model)
        embeddings = np.atleast_2d(np.asarray(embeddings, np.float32))
        score = person_match(self.gallery, name, embeddings)
        if score is not None and score < check.threshold:
            check.mismatch = score
        other = closest_other_person(self.gallery, name, embeddings)
        if other is not None and other[1] >= check.threshold:
            check.lookalike = other
        return check

    def enroll(self, name: str, shots: list[Shot], allow_mismatch: bool = False,
               allow_lookalike: bool = False) -> tuple[EnrollResult, list[str]]:
        """Add `shots` under `name` after `check_enrollment`: a failed rule raises UserError
        unless allowed, when it comes back as a warning. Returns (result, warnings)."""
        if self.gallery is None:
            raise ValueError("Recognizer.enroll needs a gallery")
        self.gallery.check_model(self.embedder.fingerprint, self.embedder.label)
        check = self.check_enrollment(name, np.stack([shot.embedding for shot in shots]))
        warnings = []
        for failed, allowed, text, flag in (
                (check.mismatch is not None, allow_mismatch, check.mismatch_text, "mismatch"),
                (check.lookalike is not None, allow_lookalike, check.lookalike_text, "lookalike")):
            if failed and not allowed:
                raise EnrollmentRefused(f"{text()} Use another name, or allow_{flag} "
                                        f"(--allow-{flag}) to enroll them anyway", flag)
            if failed:
                warnings.append(f"{text()} Enrolled anyway (allow_{flag})")
        # the mismatch rule again inside the store's write transaction: a concurrent enrollment
        # under the same name lands between this check and the write
        result = self.gallery.enroll(name, shots, self.embedder.fingerprint, self.embedder.label,
                                     threshold=check.threshold, allow_mismatch=allow_mismatch)
        if self.model_source:
            self.gallery.remember_model_source(self.model_source)
        return result, warnings

    def enrollment_shots(self, images: list[str | Path | np.ndarray],
                         gate: QualityGate = QualityGate(), keep_crops: bool = True
                         ) -> tuple[list[Shot], list[tuple[str, str]]]:
        """One shot per photo of a single person (a path, or an RGB array). Unreadable photos,
        photos without a face or with several faces raise UserError (before anything is
        written); faces failing the quality gate come back as (source, reason) rejections."""
        shots, rejected = [], []
        for number, photo in enumerate(images, 1):
            source = f"image {number}" if isinstance(photo, np.ndarray) else str(photo)
            image = photo if isinstance(photo, np.ndarray) else read_image(photo)
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


class EnrollmentRefused(UserError):
    """A same-person rule failed; `rule` is "mismatch" or "lookalike"."""

    def __init__(self, message: str, rule: str):
        super().__init__(message)
        self.rule = rule


def one_face_per_person(matches: list[Match]) -> list[Match]:
    """One frame holds each person at most once: a name given to several faces stays with the
    best-scoring one; the others become unknown (their score and best candidate kept)."""
    winner: dict[str, int] = {}
    for row, match in enumerate(matches):
        if match.name is not None and (match.name not in winner
                                       or match.score > matches[winner[match.name]].score):
            winner[match.name] = row
    return [match if match.name is None or winner[match.name] == row
            else Match(None, match.score, match.best) for row, match in enumerate(matches)]


def closest_other_person(gallery: Gallery, name: str,
                         embeddings: np.ndarray) -> tuple[str, float] | None:
    """The enrolled person other than `name` whose shots best match `embeddings` (max cosine
    over both), or None when no one else is enrolled."""
    stored, owners = gallery.embeddings()
    key = name_key(name)
    others = [row for row, owner in enumerate(owners) if name_key(owner) != key]
    if not others:
        return None
    scores = (embeddings @ stored[others].T).max(0)
    best = int(scores.argmax())
    return owners[others[best]], float(scores[best])


def _png(rgb: np.ndarray) -> bytes:
    import cv2

    ok, buffer = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise UserError("could not encode an enrollment crop as PNG")
    return buffer.tobytes()
