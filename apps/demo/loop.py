"""The demo loop: per frame, the faces (detected, or tracked between detections), their smoothed
points, one embedder batch and the gallery match (`Demo.process`); the gallery actions the
window's keys run (`Demo.enroll`, `adapt`, `delete`); and the headless run over a whole source
(`run_headless`: annotated video, event log, best snapshot)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lafs_edge.apps.demo.capture import Source, VideoOut
from lafs_edge.apps.demo.drawing import draw
from lafs_edge.apps.demo.event_log import Recorder
from lafs_edge.errors import UserError
from lafs_edge.landmarks.smoothing import mesh_box   # the box the tracker matches on

if TYPE_CHECKING:
    from lafs_edge.landmarks import Face


@dataclass
class FaceResult:
    track: int
    face: Face              # smoothed points
    name: str | None        # None: unknown
    score: float
    best: str | None


@dataclass
class FrameResult:
    index: int
    time: float
    faces: list[FaceResult]
    ms: dict = field(default_factory=dict)
    embeddings: np.ndarray | None = None   # one row per face: re-matched after a gallery change
    detected: bool = True   # the detector ran on this frame (else the faces were tracked)

    def event(self) -> dict:
        return {"frame": self.index, "time": round(self.time, 3),
                "faces": [{"track": f.track, "name": f.name or "unknown", "known": f.name is not None,
                           "score": round(f.score, 4), "best": f.best,
                           "box": [round(float(v), 1) for v in mesh_box(f.face)]}
                          for f in self.faces],
                "ms": {k: round(v, 2) for k, v in self.ms.items()}}



class Demo:
    def __init__(self, recognizer, redetect_every: int = 5):
        from lafs_edge.landmarks import FaceTracker

        self.recognizer = recognizer
        self.tracker = FaceTracker()
        self.redetect_every = max(1, redetect_every)
        self.count = 0
        # Retrain the on-device head after each enrollment/deletion: off by default, since
        # it lowered rank-1 for both shipped students (docs/demo.md); `demo --adapt` turns it on.
        self.auto_adapt = False

    @property
    def gallery(self):
        return self.recognizer.gallery

    def process(self, rgb: np.ndarray, t: float) -> FrameResult:
        start = time.perf_counter()
        recognizer = self.recognizer
        faces, detected = self._faces(rgb)
        ms = {"detect": recognizer.timings["detect"], "mesh": recognizer.timings["mesh"]}
        tracked = self.tracker.update(faces, t)               # smooths the points in place
        embeddings = recognizer.embed_faces(rgb, [face for _, face in tracked])   # one batch
        ms.update(align=recognizer.timings["align"] if tracked else 0.0,
                  embed=recognizer.timings["embed"])
        match_start = time.perf_counter()
        matches = self._match(embeddings)
        ms["match"] = (time.perf_counter() - match_start) * 1e3
        ms["total"] = (time.perf_counter() - start) * 1e3
        result = FrameResult(self.count, t, [
            FaceResult(track, face, m[0], m[1], m[2])
            for (track, face), m in zip(tracked, matches)], ms, embeddings, detected)
        self.count += 1
        return result

    def rematch(self, result: FrameResult) -> FrameResult:
        """The same frame's faces matched again (after the gallery changed): the window shows
        what the gallery now says without waiting for the next frame."""
        if result.embeddings is None:
            return result
        faces = [replace(face, name=m[0], score=m[1], best=m[2])
                 for face, m in zip(result.faces, self._match(result.embeddings))]
        return replace(result, faces=faces)

    def _faces(self, rgb: np.ndarray) -> tuple[list, bool]:
        """(faces, whether the detector ran): the tracked ROIs between detections."""
        recognizer = self.recognizer
        rois = self.tracker.rois()
        if rois and self.count % self.redetect_every:
            faces = recognizer.faces(rgb, rois)
            recognizer.timings["detect"] = 0.0
            if faces:
                return faces, False
        return recognizer.faces(rgb), True

    def _match(self, embeddings: np.ndarray) -> list[tuple[str | None, float, str | None]]:
        matches = self.recognizer.match(embeddings, allow_empty=True)   # the one match path
        return [(m.name, m.score, m.best) for m in matches]

    # --- gallery actions (window keys) ---------------------------------------------------------

    def resolve(self, typed: str) -> str:
        """The gallery's spelling of a typed name: an exact match, else the one person whose
        name differs only in case (some OpenCV windows cannot deliver capitals reliably)."""
        from lafs_edge.gallery.names import check_name

        name = check_name(typed)
        names = [p.name for p in self.gallery.people()]
        if name in names:
            return name
        folded = [n for n in names if n.casefold() == name.casefold()]
        return folded[0] if len(folded) == 1 else name

    def face_shot(self, rgb: np.ndarray, result: FrameResult):
        """The largest face in view as an enrollment shot (quality gate applied)."""
        if not result.faces:
            raise UserError("no face to enroll")
        face = max(result.faces, key=lambda f: f.face.size).face
        shot, reason = self.recognizer.shot(rgb, face, f"camera frame {result.index}")
        if shot is None:
            raise UserError(f"not enrolled: {reason}")
        return shot

    def check(self, name: str, shot):
        """The same-person rules of `lafs-edge enroll` for `shot` under `name`
        (`Recognizer.check_enrollment`: a mismatch with name's faces, a lookalike of another)."""
        return self.recognizer.check_enrollment(name, shot.embedding)

    def enroll(self, name: str, shot) -> str:
        """Enroll after the window asked about any failed same-person rule."""
        result, _ = self.recognizer.enroll(name, [shot], allow_mismatch=True,
                                           allow_lookalike=True)
        return f"enrolled {result.name}" + self._readapt()

    def adapt(self) -> str:
        from lafs_edge.gallery.adapt import adapt_gallery

        report = adapt_gallery(self.gallery, self.recognizer.embedder)
        return (f"adapted {report.people} people in "
                f"{report.seconds_views + report.seconds_train:.1f} s")

    def delete(self, name: str) -> str:
        return f"deleted {name} ({self.gallery.delete(name)} shots)" + self._readapt()

    def _readapt(self) -> str:
        """Enrolling or deleting drops the adapter; with `auto_adapt` (`demo --adapt`) retrain
        it when there are people to tell apart and their crops are stored."""
        if not self.auto_adapt or len(self.gallery.people()) < 2:
            return ""
        try:
            return "; " + self.adapt()
        except UserError as e:
            return f"; not adapted: {e}"



def run_headless(demo: Demo, source: Source, out: Path | None, log: Path | None,
                 max_frames: int | None = None, snapshot: Path | None = None,
                 progress: bool = False) -> dict:
    """Process every frame as fast as it goes; returns the summary (frames, median ms, FPS)."""
    from tqdm import tqdm

    video = VideoOut(out, source.rate or 15.0) if out else None
    recorder = Recorder(log)
    best_snapshot: tuple[int, np.ndarray | None] = (-1, None)
    ok = False
    try:
        for number, (t, rgb) in enumerate(tqdm(source, desc="frames", unit="frame",
                                                disable=not progress)):
            if max_frames is not None and number >= max_frames:
                break
            result = demo.process(rgb, t)
            recorder.frame(result)
            if video or snapshot:
                annotated = draw(rgb, result, rate=recorder.meter.text())
                if video:
                    video.write(annotated)
                known = sum(f.name is not None for f in result.faces)
                if snapshot and known > best_snapshot[0]:   # the frame naming the most people
                    best_snapshot = (known, annotated)
        ok = True
    finally:
        if video:
            video.close(keep=ok)
        summary = recorder.close(complete=ok)
    if snapshot and best_snapshot[1] is not None:
        import cv2

        from lafs_edge.image import write_image

        write_image(snapshot, cv2.cvtColor(best_snapshot[1], cv2.COLOR_BGR2RGB))
    return summary
