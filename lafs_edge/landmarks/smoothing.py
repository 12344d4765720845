"""Temporal smoothing of landmarks in video: the One Euro filter and a small face tracker.

One Euro filter (Casiez, Roussel, Vogel, CHI 2012): a low-pass filter whose cut-off rises with
the signal's speed, so a still face stops jittering while a moving one is followed without lag.
Speeds are measured in face sizes per second (`scale`: the mesh box's mean side), so the same
settings suit near and far faces. The defaults are MediaPipe's face-mesh smoothing
(face_landmarks_smoothing: min_cutoff 0.05, beta 80, derivative cut-off 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from lafs_edge.landmarks.blazeface import iou

if TYPE_CHECKING:
    from lafs_edge.landmarks.pipeline import Face


def _alpha(cutoff: float, dt: float) -> float:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Filter arrays of any shape over time: `smoothed = f(values, t_seconds, scale)`."""

    def __init__(self, min_cutoff: float = 0.05, beta: float = 80.0, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self._value: np.ndarray | None = None
        self._speed: np.ndarray | None = None
        self._time: float | None = None

    def reset(self) -> None:
        self._value = self._speed = self._time = None

    def __call__(self, value: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        value = np.asarray(value, np.float64)
        if self._value is None or self._speed is None or self._time is None or t <= self._time:
            self._value, self._speed, self._time = value.copy(), np.zeros_like(value), t
            return value.copy()
        dt = t - self._time
        speed = (value - self._value) / dt / max(scale, 1e-9)
        a_d = _alpha(self.d_cutoff, dt)
        self._speed = a_d * speed + (1 - a_d) * self._speed
        cutoff = self.min_cutoff + self.beta * np.abs(self._speed)
        tau = 1.0 / (2 * np.pi * cutoff)
        a = 1.0 / (1.0 + tau / dt)
        self._value = a * value + (1 - a) * self._value
        self._time = t
        return self._value.copy()


@dataclass
class Track:
    id: int
    face: Face                        # the latest lafs_edge.landmarks.Face (smoothed)
    filter: OneEuroFilter = field(default_factory=OneEuroFilter)
    missed: int = 0


class FaceTracker:
    """Keeps face identities across frames and smooths their mesh and 5 points.

    `update(faces, t)` matches the new faces to the tracks by box overlap, smooths each matched
    face's points in place and returns [(track_id, face)]. `rois()` gives the next frame's mesh
    ROIs (MediaPipe's tracking: no detection while the faces are held)."""

    def __init__(self, min_iou: float = 0.3, max_missed: int = 5, **filter_args):
        self.min_iou, self.max_missed, self.filter_args = min_iou, max_missed, filter_args
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(self, faces: list[Face], t: float) -> list[tuple[int, Face]]:
        unmatched = list(self.tracks)
        out = []
        for face in faces:
            track = self._best_track(face, unmatched)
            if track is None:
                track = Track(self._next_id, face, OneEuroFilter(**self.filter_args))
                self._next_id += 1
                self.tracks.append(track)
            else:
                unmatched.remove(track)
            self._smooth(track, face, t)
            out.append((track.id, face))
        for track in unmatched:
            track.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        return out

    def rois(self) -> list:
        from lafs_edge.landmarks.mesh import roi_from_mesh

        return [roi_from_mesh(track.face.mesh) for track in self.tracks if track.missed == 0]

    def _best_track(self, face, candidates: list[Track]) -> Track | None:
        if not candidates:
            return None
        overlaps = iou(mesh_box(face), np.array([mesh_box(t.face) for t in candidates]))
        best = int(overlaps.argmax())
        return candidates[best] if overlaps[best] >= self.min_iou else None

    @staticmethod
    def _smooth(track: Track, face, t: float) -> None:
        from lafs_edge.landmarks.mesh import alignment_points

        box = mesh_box(face)
        scale = float((box[2] - box[0] + box[3] - box[1]) / 2)
        smoothed = track.filter(face.mesh, t, scale=max(scale, 1.0))
        face.mesh = smoothed
        face.points5 = alignment_points(smoothed)
        track.face, track.missed = face, 0


def mesh_box(face) -> np.ndarray:
    """The box (x0, y0, x1, y1) around a face's mesh: what tracks are matched on, and the box
    the demo draws and logs."""
    points = np.asarray(face.mesh)[:, :2]
    return np.concatenate([points.min(0), points.max(0)])
