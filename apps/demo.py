"""The live demo: faces in a camera, a video or a folder of images, named from a gallery.

Per frame: mesh on the tracked faces' ROIs (BlazeFace detection every `redetect_every` frames or
when nothing is tracked), One Euro smoothing of the landmarks per track, alignment and ONE
embedder batch for every face of the frame, gallery match (through the on-device adapter when
the gallery holds one). Drawn: boxes, names, scores, per-stage milliseconds and FPS.

    lafs-edge demo --camera 0 --model ARTIFACT --gallery people.db          # window + keys
    lafs-edge demo --source clip.mp4|frames/ --headless --out annotated.mp4 --log events.jsonl

Window keys: e = enroll the largest face under a typed name (Enter saves, Esc cancels),
a = adapt (train the on-device head), d = delete a person (typed; pre-filled with the face's
name), q or Esc = quit. The window needs OpenCV's GUI build (opencv-python); the default install
has opencv-python-headless, which only runs --headless.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import UserError
from ..landmarks.smoothing import _mesh_box   # the box the tracker matches on

WINDOW = "lafs-edge demo"
GUI_MISSING = ("the camera window needs OpenCV's GUI build, but this OpenCV has none "
               "(opencv-python-headless): run `pip uninstall -y opencv-python-headless && pip "
               "install opencv-python`, or use --headless --out FILE")
STAGES = ("detect", "mesh", "align", "embed", "match")
KNOWN, UNKNOWN, TEXT = (60, 200, 60), (60, 60, 230), (255, 255, 255)   # BGR


@dataclass
class FaceResult:
    track: int
    face: object            # lafs_edge.landmarks.Face (smoothed points)
    name: str | None        # None: unknown
    score: float
    best: str | None


@dataclass
class FrameResult:
    index: int
    time: float
    faces: list[FaceResult]
    ms: dict = field(default_factory=dict)

    def event(self) -> dict:
        return {"frame": self.index, "time": round(self.time, 3),
                "faces": [{"track": f.track, "name": f.name or "unknown", "known": f.name is not None,
                           "score": round(f.score, 4), "best": f.best,
                           "box": [round(float(v), 1) for v in _mesh_box(f.face)]}
                          for f in self.faces],
                "ms": {k: round(v, 2) for k, v in self.ms.items()}}


# --- frame sources -------------------------------------------------------------------------------

def check_source(source: str | int) -> None:
    """Fail at once, before models load or files are created, on a source that cannot exist."""
    if isinstance(source, int) or str(source).isdigit():
        return
    path = Path(source)
    if not path.exists():
        raise UserError(f"no such video, image or folder: {source}")
    if path.is_dir():
        from ..image import list_images

        if not list_images(path):
            raise UserError(f"no images under {path}")


def frames(source: str | int, fps: float = 10.0) -> Iterator[tuple[float, np.ndarray]]:
    """(seconds, RGB frame) from a camera index, a video file, an image folder or one image."""
    import cv2

    from ..image import list_images, read_image

    check_source(source)
    if isinstance(source, int) or str(source).isdigit():
        yield from _capture(int(source), live=True)
        return
    path = Path(source)
    if path.is_dir():
        for number, image in enumerate(sorted(list_images(path))):
            yield number / fps, read_image(image)
    elif cv2.haveImageReader(str(path)) or path.suffix.lower() in (".gif", ""):
        yield 0.0, read_image(path)
    else:
        yield from _capture(str(path), live=False)


def _capture(target, live: bool) -> Iterator[tuple[float, np.ndarray]]:
    import cv2

    capture = cv2.VideoCapture(target)
    if not capture.isOpened():
        raise UserError(f"cannot open {'camera' if live else 'video'} {target}")
    rate = capture.get(cv2.CAP_PROP_FPS) or 25.0
    start, number = time.monotonic(), 0
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                if number == 0:
                    raise UserError(f"no frames could be read from {target}")
                return
            yield (time.monotonic() - start if live else number / rate), \
                cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            number += 1
    finally:
        capture.release()


# --- the per-frame pipeline ----------------------------------------------------------------------

class Demo:
    def __init__(self, recognizer, redetect_every: int = 5):
        from ..landmarks import FaceTracker

        self.recognizer = recognizer
        self.tracker = FaceTracker()
        self.redetect_every = max(1, redetect_every)
        self.count = 0
        self.fps = 0.0
        self.auto_adapt = True

    @property
    def gallery(self):
        return self.recognizer.gallery

    def process(self, rgb: np.ndarray, t: float) -> FrameResult:
        start = time.perf_counter()
        recognizer = self.recognizer
        faces = self._faces(rgb)
        ms = {"detect": recognizer.timings["detect"], "mesh": recognizer.timings["mesh"]}
        tracked = self.tracker.update(faces, t)               # smooths the points in place
        embeddings = recognizer.embed_faces(rgb, [face for _, face in tracked])   # one batch
        ms.update(align=recognizer.timings["align"] if tracked else 0.0,
                  embed=recognizer.timings["embed"])
        match_start = time.perf_counter()
        matches = self._match(embeddings)
        ms["match"] = (time.perf_counter() - match_start) * 1e3
        ms["total"] = (time.perf_counter() - start) * 1e3
        self.fps = 1e3 / ms["total"] if self.fps == 0 else 0.9 * self.fps + 100 / ms["total"]
        ms["fps"] = self.fps
        result = FrameResult(self.count, t, [
            FaceResult(track, face, m[0], m[1], m[2])
            for (track, face), m in zip(tracked, matches)], ms)
        self.count += 1
        return result

    def _faces(self, rgb: np.ndarray):
        recognizer = self.recognizer
        rois = self.tracker.rois()
        if rois and self.count % self.redetect_every:
            faces = recognizer.faces(rgb, rois)
            recognizer.timings["detect"] = 0.0
            if faces:
                return faces
        return recognizer.faces(rgb)

    def _match(self, embeddings: np.ndarray) -> list[tuple[str | None, float, str | None]]:
        gallery, recognizer = self.gallery, self.recognizer
        if len(embeddings) == 0 or gallery is None or not gallery.people():
            return [(None, 0.0, None)] * len(embeddings)
        embedder = recognizer.embedder
        matches = gallery.identify(embeddings, embedder.fingerprint, recognizer.threshold,
                                   embedder.label)
        return [(m.name, m.score, m.best) for m in matches]

    # --- gallery actions (window keys) ---------------------------------------------------------

    def enroll(self, rgb: np.ndarray, result: FrameResult, name: str) -> str:
        if not result.faces:
            return "no face to enroll"
        face = max(result.faces, key=lambda f: f.face.size).face
        shot, reason = self.recognizer.shot(rgb, face, f"camera frame {result.index}")
        if shot is None:
            return f"not enrolled: {reason}"
        embedder = self.recognizer.embedder
        added = self.gallery.enroll(name, [shot], embedder.fingerprint, embedder.label)
        return f"enrolled {added.name}" + self._readapt()

    def adapt(self) -> str:
        from ..gallery.adapt import adapt_gallery

        report = adapt_gallery(self.gallery, self.recognizer.embedder)
        return (f"adapted {report.people} people in "
                f"{report.seconds_views + report.seconds_train:.1f} s")

    def delete(self, name: str) -> str:
        return f"deleted {name} ({self.gallery.delete(name)} shots)" + self._readapt()

    def _readapt(self) -> str:
        """Enrolling or deleting drops the adapter; retrain it (on by default: it helps, see
        docs/demo.md) when there are people to tell apart and their crops are stored."""
        if not self.auto_adapt or len(self.gallery.people()) < 2:
            return ""
        try:
            return "; " + self.adapt()
        except UserError as e:
            return f"; not adapted: {e}"


# --- drawing -------------------------------------------------------------------------------------

def draw(rgb: np.ndarray, result: FrameResult, status: str = "") -> np.ndarray:
    """The annotated frame (BGR, for OpenCV windows and writers)."""
    import cv2

    canvas = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    scale = max(canvas.shape[0], canvas.shape[1]) / 640
    thick = max(1, int(round(2 * scale)))
    for face in result.faces:
        colour = KNOWN if face.name else UNKNOWN
        x0, y0, x1, y1 = (int(round(v)) for v in _mesh_box(face.face))
        cv2.rectangle(canvas, (x0, y0), (x1, y1), colour, thick)
        for x, y in face.face.points5:
            cv2.circle(canvas, (int(round(x)), int(round(y))), thick + 1, colour, -1)
        label = f"{face.name or 'unknown'} {face.score:.2f}"
        _label(canvas, label, (x0, max(0, y0 - 4)), colour, 0.6 * scale)
    ms = result.ms
    lines = [" ".join(f"{stage} {ms.get(stage, 0):.1f}" for stage in STAGES) + " ms",
             f"total {ms.get('total', 0):.1f} ms  {ms.get('fps', 0):.1f} FPS  "
             f"{len(result.faces)} face(s)"]
    if status:
        lines.append(status)
    for number, line in enumerate(lines):
        _label(canvas, line, (4, int((18 + 20 * number) * scale)), (40, 40, 40), 0.5 * scale)
    return canvas


def _label(canvas, text: str, origin: tuple[int, int], background, font_scale: float) -> None:
    import cv2

    font = cv2.FONT_HERSHEY_SIMPLEX
    font_scale = max(font_scale, 0.35)
    (width, height), base = cv2.getTextSize(text, font, font_scale, 1)
    x, y = origin
    y = max(y, height + 2)
    cv2.rectangle(canvas, (x, y - height - 3), (x + width + 2, y + base), background, -1)
    cv2.putText(canvas, text, (x + 1, y - 1), font, font_scale, TEXT, 1, cv2.LINE_AA)


# --- headless: annotated video + event log ------------------------------------------------------

class VideoOut:
    """Annotated frames to a video file, written under a temporary name and renamed at the end
    (an interrupted run leaves no half-written file)."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = Path(path), fps
        self.tmp = self.path.with_name(f".{self.path.stem}.tmp{os.getpid()}{self.path.suffix}")
        self.writer = None

    def write(self, bgr: np.ndarray) -> None:
        import cv2

        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fourcc = cv2.VideoWriter_fourcc(*("mp4v" if self.path.suffix.lower() == ".mp4" else "MJPG"))
            self.size = (bgr.shape[1], bgr.shape[0])
            self.writer = cv2.VideoWriter(str(self.tmp), fourcc, self.fps, self.size)
            if not self.writer.isOpened():
                raise UserError(f"cannot write video {self.path} (use .mp4 or .avi)")
        if (bgr.shape[1], bgr.shape[0]) != self.size:   # an image folder of mixed sizes
            import cv2

            bgr = cv2.resize(bgr, self.size)
        self.writer.write(bgr)

    def close(self, keep: bool) -> None:
        if self.writer is not None:
            self.writer.release()
            if keep:
                os.replace(self.tmp, self.path)
        self.tmp.unlink(missing_ok=True)


def run_headless(demo: Demo, source, out: Path | None, log: Path | None, fps: float = 10.0,
                 max_frames: int | None = None, snapshot: Path | None = None,
                 progress: bool = False) -> dict:
    """Process every frame; returns a summary (frames, faces, names seen, median ms, FPS)."""
    from tqdm import tqdm

    video = VideoOut(out, fps) if out else None
    log_file = _open_log(log)
    stats: dict[str, list[float]] = {}
    names: dict[str, int] = {}
    best_snapshot = (-1, None)
    ok = False
    try:
        for number, (t, rgb) in enumerate(tqdm(frames(source, fps), desc="frames", unit="frame",
                                                disable=not progress)):
            if max_frames is not None and number >= max_frames:
                break
            result = demo.process(rgb, t)
            for key, value in result.ms.items():
                stats.setdefault(key, []).append(value)
            for face in result.faces:
                names[face.name or "unknown"] = names.get(face.name or "unknown", 0) + 1
            if log_file:
                log_file.write(json.dumps({"event": "frame", **result.event()}) + "\n")
                log_file.flush()
            if video or snapshot:
                annotated = draw(rgb, result)
                if video:
                    video.write(annotated)
                known = sum(f.name is not None for f in result.faces)
                if snapshot and known > best_snapshot[0]:   # the frame naming the most people
                    best_snapshot = (known, annotated)
        ok = True
    finally:
        if video:
            video.close(keep=ok)
        summary = _summary(demo.count, stats, names)
        if log_file:
            log_file.write(json.dumps({"event": "summary", **summary}) + "\n")
            log_file.close()
    if snapshot and best_snapshot[1] is not None:
        import cv2

        from ..image import write_image

        write_image(snapshot, cv2.cvtColor(best_snapshot[1], cv2.COLOR_BGR2RGB))
    return summary


def _open_log(log: Path | None):
    if log is None:
        return None
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    return open(log, "w", encoding="utf-8")


def _summary(frames_done: int, stats: dict[str, list[float]], names: dict[str, int]) -> dict:
    medians = {key: round(float(np.median(values)), 2) for key, values in stats.items()
               if key != "fps"}
    fps = round(1e3 / medians["total"], 1) if medians.get("total") else 0.0
    return {"frames": frames_done, "median_ms": medians, "fps": fps, "faces_named": names}


# --- the camera window ---------------------------------------------------------------------------

def require_gui() -> None:
    """Open the window, or stop with one line saying which OpenCV to install."""
    import cv2

    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_AUTOSIZE)
    except cv2.error:
        raise UserError(GUI_MISSING) from None


def run_window(demo: Demo, source, out: Path | None = None, log: Path | None = None) -> None:
    import cv2

    require_gui()
    typing: tuple[str, str] | None = None     # (action, text so far) while a name is typed
    status, status_until = "keys: e enroll  a adapt  d delete  q quit", time.monotonic() + 10
    log_file = _open_log(log)
    video = VideoOut(out, 15.0) if out else None
    try:
        for t, rgb in frames(source):
            result = demo.process(rgb, t)
            if log_file:
                log_file.write(json.dumps({"event": "frame", **result.event()}) + "\n")
            shown = status if time.monotonic() < status_until else ""
            if typing:
                shown = f"{typing[0]} name: {typing[1]}_  (Enter / Esc)"
            annotated = draw(rgb, result, shown)
            if video:
                video.write(annotated)
            cv2.imshow(WINDOW, annotated)
            key = cv2.waitKey(1) & 0xFF
            if key == 255:
                continue
            if typing:
                typing, message = _type(typing, key, demo, rgb, result)
            elif key in (ord("q"), 27):
                break
            else:
                typing, message = _command(key, demo, result)
            if message:
                status, status_until = message, time.monotonic() + 4
                if log_file:
                    log_file.write(json.dumps({"event": "action", "frame": result.index,
                                               "message": message}) + "\n")
    finally:
        if video:
            video.close(keep=True)
        if log_file:
            log_file.close()
        cv2.destroyAllWindows()


def _command(key: int, demo: Demo, result: FrameResult):
    if key == ord("e"):
        return ("enroll", ""), ""
    if key == ord("d"):
        named = [f.name for f in result.faces if f.name]
        return ("delete", named[0] if named else ""), ""
    if key == ord("a"):
        return None, _safely(demo.adapt)
    return None, ""


def _type(typing: tuple[str, str], key: int, demo: Demo, rgb, result: FrameResult):
    action, text = typing
    if key == 27:
        return None, f"{action} cancelled"
    if key in (8, 127):
        return (action, text[:-1]), ""
    if key in (10, 13):
        if action == "enroll":
            return None, _safely(demo.enroll, rgb, result, text)
        return None, _safely(demo.delete, text)
    if 32 <= key < 127:
        return (action, text + chr(key)), ""
    return typing, ""


def _safely(action, *args) -> str:
    """Window actions report a user error on screen instead of ending the session."""
    try:
        return action(*args)
    except UserError as e:
        return f"error: {e}"
