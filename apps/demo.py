"""The live demo: faces in a camera, a video or a folder of images, named from a gallery.

Per frame: mesh on the tracked faces' ROIs (BlazeFace detection every `redetect_every` frames or
when nothing is tracked), One Euro smoothing of the landmarks per track, alignment and ONE
embedder batch for every face of the frame, gallery match (through the on-device adapter when
the gallery holds one). Drawn: boxes and names on the frame; below it, in a band of its own, the
frame rate actually achieved, the pipeline's milliseconds per stage and the status line.

    lafs-edge demo --camera 0 --model ARTIFACT --gallery people.db          # window + keys
    lafs-edge demo --source clip.mp4|frames/ --headless --out annotated.mp4 --log events.jsonl

Window keys: e = enroll the largest face under a typed name (Enter saves, Esc cancels; a name
already in the gallery whose faces do not match asks for y first), a = adapt (train the
on-device head), d = delete a person (typed; pre-filled with the face's name), q or Esc = quit;
closing the window quits too. Files play at their frame rate; the last frame stays until a key.
The window needs OpenCV's GUI build (`pip install 'lafs-edge[gui]'`, see docs/demo.md).
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, cast

import numpy as np

from lafs_edge.errors import UserError
from lafs_edge.gallery.pipeline import STAGES
from lafs_edge.landmarks.smoothing import _mesh_box  # the box the tracker matches on

if TYPE_CHECKING:
    import cv2

    from lafs_edge.landmarks import Face

WINDOW = "lafs-edge demo"
GUI_MISSING = ("the camera window needs OpenCV's GUI build, but this OpenCV has none "
               "(opencv-python-headless): run `pip uninstall -y opencv-python-headless && pip "
               "install 'lafs-edge[gui]'` (or `make gui`), or use --headless --out FILE")
KEY_HINT = "keys: e enroll  a adapt  d delete  q quit"
KNOWN, UNKNOWN, TEXT, BAND = (60, 200, 60), (60, 60, 230), (255, 255, 255), (32, 32, 32)  # BGR


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
                           "box": [round(float(v), 1) for v in _mesh_box(f.face)]}
                          for f in self.faces],
                "ms": {k: round(v, 2) for k, v in self.ms.items()}}


# --- frame sources -------------------------------------------------------------------------------

def is_camera(source: str | int) -> bool:
    return isinstance(source, int) or str(source).isdigit()


def check_source(source: str | int) -> None:
    """Fail at once, before models load or files are created, on a source that cannot exist."""
    if is_camera(source):
        return
    path = Path(str(source))
    if not path.exists():
        raise UserError(f"no such video, image or folder: {source}")
    if path.is_dir():
        from lafs_edge.image import list_images

        if not list_images(path):
            raise UserError(f"no images under {path}")


class Source:
    """An opened camera, video file, image folder or single image, yielding (seconds, RGB).

    Opening reads the first frame, so a missing camera or an unreadable video fails here, before
    a model loads or a window opens. `rate`: a file's frames per second (a video's own unless
    `fps` is given; 10 for images), None for a camera (it paces itself)."""
    capture: cv2.VideoCapture | None
    images: list[Path] | None
    first: np.ndarray | None

    def __init__(self, source: str | int, fps: float | None = None):
        check_source(source)
        self.capture, self.images, self.first = None, None, None
        self.camera = is_camera(source)
        if self.camera:
            self._open_capture(int(source), f"camera {source}")
            self.rate = fps
            return
        path = Path(str(source))
        if path.is_dir() or _is_image(path):
            from lafs_edge.image import list_images

            self.images = list_images(path) if path.is_dir() else [path]
            self.rate = fps or 10.0
        else:
            self._open_capture(str(path), f"video {path}")
            self.rate = fps or _video_rate(self.capture)

    @property
    def still(self) -> bool:
        return self.images is not None and len(self.images) == 1

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        from lafs_edge.image import read_image

        rate = cast(float, self.rate)     # None only for a camera, timed by the clock
        if self.images is not None:
            for number, image in enumerate(self.images):
                yield number / rate, read_image(image)
            return
        start, number, rgb = time.monotonic(), 0, self.first
        while rgb is not None:
            yield (time.monotonic() - start if self.camera else number / rate), rgb
            number += 1
            rgb = self._read()

    def close(self) -> None:
        if self.capture is not None:
            self.capture.release()

    def _open_capture(self, target, what: str) -> None:
        import cv2

        with _quiet_opencv():     # a missing camera makes OpenCV print a page of warnings
            self.capture = cv2.VideoCapture(target)
            if not self.capture.isOpened():
                raise UserError(f"cannot open {what}" + (" (is a camera connected, and is this "
                                                         "its index?)" if self.camera else ""))
            self.first = self._read()
        if self.first is None:
            self.close()
            raise UserError(f"no frames could be read from {what}")

    def _read(self) -> np.ndarray | None:
        import cv2

        assert self.capture is not None
        ok, bgr = self.capture.read()
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if ok else None


def _is_image(path: Path) -> bool:
    import cv2

    return cv2.haveImageReader(str(path)) or path.suffix.lower() in (".gif", "")


def _video_rate(capture) -> float:
    import cv2

    rate = capture.get(cv2.CAP_PROP_FPS)
    return rate if 0 < rate < 1000 else 25.0


class _quiet_opencv:
    """OpenCV's own log, and what its video libraries write to the process's stderr (FFmpeg's
    "moov atom not found" for a corrupt file, camera probing), silenced for a block: both bypass
    Python, so the stderr file descriptor itself points at /dev/null meanwhile. Our one error
    line comes after the block."""

    def __enter__(self):
        import cv2

        self.logging = getattr(getattr(cv2, "utils", None), "logging", None)
        if self.logging is not None:
            self.level = self.logging.getLogLevel()
            self.logging.setLogLevel(self.logging.LOG_LEVEL_SILENT)
        sys.stderr.flush()
        self.saved = os.dup(2)
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)

    def __exit__(self, *exc):
        os.dup2(self.saved, 2)
        os.close(self.saved)
        if self.logging is not None:
            self.logging.setLogLevel(self.level)


# --- the per-frame pipeline ----------------------------------------------------------------------

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


# --- drawing -------------------------------------------------------------------------------------

def draw(rgb: np.ndarray, result: FrameResult, status: str = "", rate: str = "",
         status_rows: int = 0) -> np.ndarray:
    """The annotated frame (BGR): boxes and names on the picture, the figures and `status` in a
    band below it, so neither can ever cover the other. `rate`: e.g. "display 24.8 FPS";
    `status_rows`: rows kept for the status even when empty (a window that does not jump)."""
    import cv2

    picture = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    font_scale = _font_scale(picture.shape[1])
    thick = max(1, int(round(2 * font_scale)))
    for face in result.faces:
        colour = KNOWN if face.name else UNKNOWN
        x0, y0, x1, y1 = (int(round(v)) for v in _mesh_box(face.face))
        cv2.rectangle(picture, (x0, y0), (x1, y1), colour, thick)
        for x, y in face.face.points5:
            cv2.circle(picture, (int(round(x)), int(round(y))), thick + 1, colour, -1)
        _face_label(picture, f"{face.name or 'unknown'} {face.score:.2f}", (x0, y0, x1, y1),
                    colour, font_scale)
    return np.vstack([picture, _band(picture.shape[1], _figures(result, rate), status,
                                     status_rows, font_scale)])


def _figures(result: FrameResult, rate: str) -> list[str]:
    ms = result.ms
    head = [rate] if rate else []
    head += [f"pipeline {ms.get('total', 0):.1f} ms", f"{len(result.faces)} face(s)"]
    return ["   ".join(head), "  ".join(f"{stage} {ms.get(stage, 0):.1f}" for stage in STAGES) + " ms"]


def _font_scale(width: int) -> float:
    return max(0.4, 0.5 * width / 640)


def _text_size(text: str, font_scale: float) -> tuple[int, int, int]:
    import cv2

    (width, height), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
    return width, height, base


def _face_label(picture, text: str, box, colour, font_scale: float) -> None:
    """Above the box, or just inside its top when the box touches the picture's top; shifted
    left to stay inside the picture."""
    import cv2

    width, height, base = _text_size(text, font_scale)
    x0, y0, _, y1 = box
    x = min(max(0, x0), max(0, picture.shape[1] - width - 2))
    y = y0 - base - 2 if y0 - base - 2 - height - 3 >= 0 else max(y0, 0) + height + 3
    cv2.rectangle(picture, (x, y - height - 3), (x + width + 2, y + base), colour, -1)
    cv2.putText(picture, text, (x + 1, y - 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, TEXT, 1,
                cv2.LINE_AA)


def _band(width: int, figures: list[str], status: str, status_rows: int,
          font_scale: float) -> np.ndarray:
    """The text rows under the picture; lines wider than the frame wrap at spaces."""
    import cv2

    rows = [row for line in figures for row in wrap(line, width - 8, font_scale)]
    status_lines = wrap(status, width - 8, font_scale) if status else []
    rows += status_lines + [""] * (status_rows - len(status_lines))
    _, height, base = _text_size("Ag", font_scale)
    pitch = height + base + 6
    band = np.empty((pitch * len(rows) + 4, width, 3), np.uint8)
    band[:] = BAND
    for number, row in enumerate(rows):
        cv2.putText(band, row, (4, 2 + number * pitch + height + 3), cv2.FONT_HERSHEY_SIMPLEX,
                    font_scale, TEXT, 1, cv2.LINE_AA)
    return band


def wrap(text: str, width: int, font_scale: float) -> list[str]:
    """Greedy word wrap to `width` pixels; a word wider than a row is cut."""
    rows, row = [], ""
    for word in text.split(" "):
        candidate = f"{row} {word}" if row else word
        if _text_size(candidate, font_scale)[0] <= width:
            row = candidate
            continue
        if row:
            rows.append(row)
        while len(word) > 1 and _text_size(word, font_scale)[0] > width:
            cut = len(word) - 1
            while cut > 1 and _text_size(word[:cut], font_scale)[0] > width:
                cut -= 1
            rows.append(word[:cut])
            word = word[cut:]
        row = word
    if row:
        rows.append(row)
    return rows


# --- the run's record: rate, event log, summary -----------------------------------------------------

class RateMeter:
    """Frames per second actually achieved, over the last `span` seconds of running (a pause,
    e.g. while a name is typed, is left out)."""

    def __init__(self, span: float = 2.0):
        self.span = span
        self.times: deque[float] = deque()
        self.frames, self.seconds = 0, 0.0      # the whole run, pauses left out

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self.times:
            self.frames += 1
            self.seconds += now - self.times[-1]
        self.times.append(now)
        while now - self.times[0] > self.span and len(self.times) > 2:
            self.times.popleft()

    def pause(self) -> None:
        self.times.clear()

    def rate(self) -> float:
        elapsed = self.times[-1] - self.times[0] if len(self.times) > 1 else 0.0
        return (len(self.times) - 1) / elapsed if elapsed > 0 else 0.0

    def text(self, prefix: str = "") -> str:
        rate = self.rate()
        return f"{prefix}{rate:.1f} FPS" if rate else f"{prefix}-- FPS"   # none after 1 frame

    def average(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class Recorder:
    """The event log (one JSON line per frame and per window action, then a summary) and the
    figures of the summary. Lines are flushed as written: the log can be followed live."""

    def __init__(self, log: Path | None):
        self.file = None
        if log is not None:
            Path(log).parent.mkdir(parents=True, exist_ok=True)
            self.file = open(log, "w", encoding="utf-8")
        self.meter = RateMeter()
        self.stats: dict[str, list[float]] = {}
        self.names: dict[str, int] = {}
        self.frames = 0

    def frame(self, result: FrameResult) -> None:
        self.meter.tick()
        self.frames += 1
        for key, value in result.ms.items():
            if key == "detect" and not result.detected:
                continue   # a tracked frame ran no detector: its 0 is not a detection time
            self.stats.setdefault(key, []).append(value)
        for face in result.faces:
            self.names[face.name or "unknown"] = self.names.get(face.name or "unknown", 0) + 1
        self._write({"event": "frame", **result.event(), "fps": round(self.meter.rate(), 2)})

    def action(self, frame: int, message: str) -> None:
        self._write({"event": "action", "frame": frame, "message": message})

    def close(self, complete: bool = True) -> dict:
        """The summary, written as the log's last line; `complete` False marks a log cut short
        (Ctrl-C, an error), so no reader takes it for the whole run."""
        summary = {"complete": complete, **self.summary()}
        self._write({"event": "summary", **summary})
        if self.file:
            self.file.close()
            self.file = None
        return summary

    def summary(self) -> dict:
        medians = {key: round(float(np.median(values)), 2) for key, values in self.stats.items()}
        pipeline = round(1e3 / medians["total"], 1) if medians.get("total") else 0.0
        return {"frames": self.frames, "median_ms": medians,
                "detect_frames": len(self.stats.get("detect", [])),
                "fps": round(self.meter.average(), 1) or pipeline, "pipeline_fps": pipeline,
                "faces_named": self.names}

    def _write(self, event: dict) -> None:
        if self.file:
            self.file.write(json.dumps(event) + "\n")
            self.file.flush()


# --- headless: annotated video + event log ------------------------------------------------------

class VideoOut:
    """Annotated frames to a video file, written under a temporary name and renamed at the end
    (an interrupted run leaves no half-written file)."""
    writer: cv2.VideoWriter | None

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = Path(path), fps
        self.tmp = self.path.with_name(f".{self.path.stem}.tmp{os.getpid()}{self.path.suffix}")
        self.writer = None

    def write(self, bgr: np.ndarray) -> None:
        import cv2

        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fourcc = cv2.VideoWriter.fourcc(*("mp4v" if self.path.suffix.lower() == ".mp4" else "MJPG"))
            self.size = (bgr.shape[1], bgr.shape[0])
            self.writer = cv2.VideoWriter(str(self.tmp), fourcc, self.fps, self.size)
            if not self.writer.isOpened():
                raise UserError(f"cannot write video {self.path} (use .mp4 or .avi)")
        if (bgr.shape[1], bgr.shape[0]) != self.size:   # an image folder of mixed sizes
            bgr = letterbox(bgr, self.size)
        self.writer.write(bgr)

    def close(self, keep: bool) -> None:
        if self.writer is not None:
            self.writer.release()
            if keep:
                os.replace(self.tmp, self.path)
        self.tmp.unlink(missing_ok=True)


def letterbox(bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`bgr` scaled to fit `size` (width, height) whole, keeping its aspect ratio, centred on a
    black canvas: a portrait among landscape photos is shown, not stretched."""
    import cv2

    width, height = size
    scale = min(width / bgr.shape[1], height / bgr.shape[0])
    shown = (max(1, round(bgr.shape[1] * scale)), max(1, round(bgr.shape[0] * scale)))
    canvas = np.zeros((height, width, 3), np.uint8)
    x, y = (width - shown[0]) // 2, (height - shown[1]) // 2
    canvas[y:y + shown[1], x:x + shown[0]] = cv2.resize(bgr, shown, interpolation=cv2.INTER_AREA)
    return canvas


def fit_to_screen(bgr: np.ndarray, screen: tuple[int, int] | None,
                  share: float = 0.9) -> np.ndarray:
    """The window's image scaled down (never up) to `share` of the screen's width and height,
    so the frame, its band and the window's title bar all fit; None: screen size unknown."""
    import cv2

    if screen is None:
        return bgr
    scale = min(1.0, share * screen[0] / bgr.shape[1], share * screen[1] / bgr.shape[0])
    if scale >= 1.0:
        return bgr
    size = (max(1, int(bgr.shape[1] * scale)), max(1, int(bgr.shape[0] * scale)))
    return cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)


def screen_size(environ=os.environ) -> tuple[int, int] | None:
    """The X display's screen in pixels (width, height), asked through libX11 (present wherever
    OpenCV's Qt or GTK window runs on X11); None elsewhere or when it cannot be asked."""
    import ctypes
    import ctypes.util

    if sys.platform in ("win32", "darwin") or not environ.get("DISPLAY"):
        return None
    library = ctypes.util.find_library("X11")
    if library is None:
        return None
    try:
        x11 = ctypes.CDLL(library)
        x11.XOpenDisplay.restype = ctypes.c_void_p
        x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
        for name in ("XDefaultScreen", "XCloseDisplay"):
            getattr(x11, name).argtypes = [ctypes.c_void_p]
        for name in ("XDisplayWidth", "XDisplayHeight"):
            getattr(x11, name).argtypes = [ctypes.c_void_p, ctypes.c_int]
        display = x11.XOpenDisplay(environ["DISPLAY"].encode())
        if not display:
            return None
        screen = x11.XDefaultScreen(display)
        size = (int(x11.XDisplayWidth(display, screen)), int(x11.XDisplayHeight(display, screen)))
        x11.XCloseDisplay(display)
        return size if min(size) > 0 else None
    except (OSError, AttributeError):
        return None


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


# --- the camera window: checks before it opens ---------------------------------------------------

def require_gui() -> None:
    """Stop with one line saying which OpenCV to install, without opening a window."""
    import cv2

    if _gui_backend(cv2.getBuildInformation()) == "NONE":
        raise UserError(GUI_MISSING)


def _gui_backend(build_information: str) -> str:
    for line in build_information.splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def check_display(environ=os.environ) -> None:
    """Qt aborts the whole process (exit 134) when it cannot reach an X display; find out first.
    Only X11 is checked: Windows, macOS and a Qt platform chosen by the user are left alone."""
    if sys.platform in ("win32", "darwin") or environ.get("QT_QPA_PLATFORM", "xcb") != "xcb":
        return
    display = environ.get("DISPLAY", "")
    advice = "; run it in a desktop session (or under xvfb-run), or use --headless --out FILE"
    if not display:
        raise UserError("no display for the window: DISPLAY is not set" + advice)
    if _display_refused(display):
        raise UserError(f"cannot connect to the display DISPLAY={display}" + advice)


def _display_refused(display: str) -> bool:
    """True when nothing listens where `display` points (":1", "unix:1.0", "host:10.0");
    False when it answers or the name is not understood (then the window library decides)."""
    host, _, rest = display.rpartition(":")
    number = rest.split(".")[0]
    if not number.isdigit() or "/" in host:
        return False
    if host in ("", "unix"):
        path = f"/tmp/.X11-unix/X{number}"
        addresses: list[tuple[socket.AddressFamily, str | tuple[str, int]]] = [(socket.AF_UNIX, path), (socket.AF_UNIX, "\0" + path)]  # file, abstract
    else:
        addresses = [(socket.AF_INET, (host, 6000 + int(number)))]
    for family, address in addresses:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.settimeout(3)
                probe.connect(address)
                return False
        except OSError:
            continue
    return True


# --- the camera window ---------------------------------------------------------------------------

SHIFT = (0xFFE1, 0xFFE2)              # X keysyms; Qt and GTK builds report Shift as a key
MODIFIERS = range(0xFFE1, 0xFFEF)     # Shift, Control, Caps Lock, Meta, Alt, Super, Hyper
ENTER, ESCAPE, BACKSPACE = (10, 13, 0xFF0D, 0xFF8D), (27, 0xFF1B), (8, 127, 0xFF08, 0xFFFF)


def typed_key(code: int) -> int:
    """A `waitKeyEx` code -> the key as typed. GTK builds return the keysym with the modifier
    state in bits 16 and up (Shift = 1, Caps Lock = 2): the letter comes with its own Shift, so
    a capital needs no Shift event tracked from before (lost when keys come faster than the
    window is polled). Qt builds return the bare lower-case letter and Shift as a key of its own:
    `Prompt` still pairs those."""
    keysym, state = code & 0xFFFF, code >> 16
    if 0x61 <= keysym <= 0x7A and bool(state & 1) != bool(state & 2):
        return keysym - 0x20
    return keysym


class Window:
    """The OpenCV window: a plain one (no toolbar, no status bar), keys as full codes, and
    whether the user closed it (Qt would otherwise recreate it on the next frame)."""

    def __init__(self) -> None:
        import cv2

        self.cv2 = cv2
        cv2.namedWindow(WINDOW, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
        self.keys: deque[int] = deque()
        self.screen = screen_size()
        # On X11 the typed keys come from the X server (capitals included, none lost); OpenCV's
        # codes are the fallback (apps/x11_keys.py says why).
        from lafs_edge.apps.x11_keys import KeyWatch

        self.watch = KeyWatch(WINDOW) if sys.platform.startswith("linux") else None

    def show(self, bgr: np.ndarray) -> None:
        self.cv2.imshow(WINDOW, fit_to_screen(bgr, self.screen))

    def key(self, wait_ms: int) -> int | None:
        """The next key pressed within `wait_ms`, or None."""
        if self.keys:
            return self.keys.popleft()
        self._poll(max(1, int(wait_ms)))
        return self.keys.popleft() if self.keys else None

    def paint(self) -> None:
        """Let the window draw now (before a long action), keeping any key pressed meanwhile."""
        self._poll(1)

    def _poll(self, wait_ms: int) -> None:
        """Let OpenCV run its window for up to `wait_ms`, then queue what was typed."""
        code = self.cv2.waitKeyEx(wait_ms)
        typed = self.watch.keys() if self.watch is not None else None
        if typed is not None:
            self.keys.extend(typed)
        elif code != -1:
            self.keys.append(typed_key(code))

    def closed(self) -> bool:
        try:
            return self.cv2.getWindowProperty(WINDOW, self.cv2.WND_PROP_VISIBLE) < 1
        except self.cv2.error:      # Qt drops its window state once the last window is closed
            return True

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()
        try:
            self.cv2.destroyAllWindows()
            self.cv2.waitKey(1)
        except self.cv2.error:
            pass


@dataclass
class Prompt:
    """A name typed into the window. Some OpenCV builds (Qt) deliver Shift as a key of its own
    and the letter after it in lower case: Shift then makes the next letter a capital."""
    action: str                 # "enroll" or "delete"
    text: str = ""
    shift: bool = False

    def feed(self, key: int) -> str | None:
        """'enter', 'cancel' or None (still typing)."""
        if key in SHIFT:
            self.shift = True
            return None
        if key in MODIFIERS:
            return None
        if key in ESCAPE:
            return "cancel"
        if key in ENTER:
            return "enter"
        if key in BACKSPACE:
            self.text = self.text[:-1]
        elif 32 <= key < 127:
            self.text += chr(key).upper() if self.shift else chr(key)
        self.shift = False
        return None

    def line(self) -> str:
        return f"{self.action} name: {self.text}_  (Enter: ok, Esc: cancel)"


class WindowSession:
    """The window's keys and what they do to the gallery. Frames stop while a name is typed or
    a confirmation is asked (the face that was in view is the one enrolled)."""

    def __init__(self, demo: Demo, window, recorder: Recorder, video: VideoOut | None = None):
        self.demo, self.window, self.recorder, self.video = demo, window, recorder, video
        self.status, self.status_until = KEY_HINT, time.monotonic() + 10
        self.hint = KEY_HINT        # shown when no status is fresh: the keys stay findable
        self.rgb: np.ndarray | None = None
        self.result: FrameResult | None = None
        self.quitting = False
        self.paused = 0.0           # seconds spent in prompts: the playback clock skips them

    def show_frame(self, rgb: np.ndarray, result: FrameResult) -> None:
        self.rgb, self.result = rgb, result
        self.recorder.frame(result)
        annotated = self.redraw()
        if self.video:
            self.video.write(annotated)

    def redraw(self, line: str | None = None) -> np.ndarray:
        if line is None:
            line = self.status if time.monotonic() < self.status_until else self.hint
        assert self.rgb is not None and self.result is not None   # frames come before keys
        annotated = draw(self.rgb, self.result, line, self.recorder.meter.text("display "),
                         status_rows=2)
        if not self.quitting:       # showing a closed window would open it again (Qt)
            self.window.show(annotated)
        return annotated

    def wait_until(self, due: float, end: bool = False) -> bool:
        """Handle keys until the monotonic time `due` (forever when `end`: the last frame stays
        until a key that is not a command); False once the user quits. A held key (repeating)
        does not stop the playback."""
        while not self.quitting:
            left = max(0.0, due - time.monotonic()) * 1e3
            key = self.window.key(50 if end else min(left, 50))
            if self.window.closed():
                self.quitting = True
            elif key is not None:
                self.on_key(key, end)
            if not end and not self.quitting and time.monotonic() >= due:
                return True
            if end and 0 < self.status_until < time.monotonic():
                self.status_until = 0
                self.redraw()     # once: the stale status gives way to the hint
        return False

    def on_key(self, key: int, end: bool = False) -> None:
        char = chr(key).lower() if 32 <= key < 127 else ""
        if key in ESCAPE or char == "q":
            self.quitting = True
        elif char == "e":
            self._modal(self._enroll)
        elif char == "d":
            assert self.result is not None
            named = [f.name for f in self.result.faces if f.name]
            self._modal(self._delete, named[0] if named else "")
        elif char == "a":
            self._act("adapting...", self.demo.adapt)
        elif end and key not in MODIFIERS:
            self.quitting = True

    def _modal(self, action, text: str = "") -> None:
        started = time.monotonic()
        self.recorder.meter.pause()
        action(text)
        self.paused += time.monotonic() - started

    def _enroll(self, text: str) -> None:
        name = self._ask_name("enroll", text)
        if name is None:
            return
        assert self.rgb is not None and self.result is not None
        try:
            shot = self.demo.face_shot(self.rgb, self.result)
        except UserError as e:
            return self._say(f"error: {e}")
        check = self.demo.check(name, shot)
        if check.mismatch is not None and not self._confirm(
                f"this face does not match {name} (cosine {check.mismatch:.2f} < "
                f"{check.threshold:.2f}): y adds it to {name}, any other key cancels"):
            return self._say("enroll cancelled")
        if check.lookalike is not None and not self._confirm(
                f"this face matches {check.lookalike[0]} (cosine {check.lookalike[1]:.2f} >= "
                f"{check.threshold:.2f}): y enrolls it as {name} too, any other key cancels"):
            return self._say("enroll cancelled")
        self._act(f"enrolling {name}...", self.demo.enroll, name, shot)

    def _delete(self, text: str) -> None:
        name = self._ask_name("delete", text)
        if name is not None:
            self._act(f"deleting {name}...", self.demo.delete, name)

    def _ask_name(self, action: str, text: str) -> str | None:
        """The name typed, in the gallery's spelling; None, said on screen, when cancelled or
        not a valid name."""
        typed = self._ask(Prompt(action, text))
        if typed is None:
            self._say(f"{action} cancelled")
            return None
        try:
            return self.demo.resolve(typed)
        except UserError as e:
            self._say(f"error: {e}")
            return None

    def _ask(self, prompt: Prompt) -> str | None:
        """The typed text, or None when cancelled (Esc, or the window closed)."""
        while True:
            key = self._next_key(prompt.line())
            outcome = "cancel" if key is None else prompt.feed(key)
            if outcome == "enter":
                return prompt.text
            if outcome == "cancel":
                return None

    def _confirm(self, question: str) -> bool:
        key = self._next_key(question)
        while key in MODIFIERS:
            key = self._next_key(question)
        return key in (ord("y"), ord("Y"))

    def _next_key(self, line: str) -> int | None:
        """Show `line` and wait for a key; None once the window is closed (the run ends)."""
        self.redraw(line)
        while True:
            key = self.window.key(50)
            if self.window.closed():
                self.quitting = True
                return None
            if key is not None:
                return key

    def _act(self, busy: str, action, *args) -> None:
        """Run a gallery action with a message on screen first (it can take a second or two),
        then show the outcome and the frame re-matched against the changed gallery."""
        self.redraw(busy)
        self.window.paint()
        try:
            message = action(*args)
        except UserError as e:
            message = f"error: {e}"
        assert self.result is not None
        self.result = self.demo.rematch(self.result)
        self._say(message)

    def _say(self, message: str) -> None:
        self.status, self.status_until = message, time.monotonic() + 4
        assert self.result is not None
        self.recorder.action(self.result.index, message)
        self.redraw()


def run_window(demo: Demo, source: Source, out: Path | None = None, log: Path | None = None,
               window=None) -> dict:
    """Show the source with names until q/Esc or the window is closed; returns the summary.
    Files play at `source.rate`; after the last frame the window waits for a key."""
    window = window or Window()
    recorder = Recorder(log)
    video = VideoOut(out, source.rate or 15.0) if out else None
    session = WindowSession(demo, window, recorder, video)
    start = None        # when frame time 0 was (or would have been) shown
    finished = False    # the user quit or the source ended (not Ctrl-C, not an error)
    try:
        for t, rgb in source:
            result = demo.process(rgb, t)
            start = time.monotonic() - t if start is None else start
            due = start + session.paused + (t if source.rate else 0.0)
            # the frame on screen stays (its keys handled) until this one is due
            if session.result is not None and not session.wait_until(due):
                break
            session.show_frame(rgb, result)
        else:
            session.hint = "last frame held: e enroll  a adapt  d delete, any other key quits"
            session.status_until = 0
            session.redraw()
            session.wait_until(0.0, end=True)
        finished = True
    finally:
        if video:
            video.close(keep=True)
        window.close()
        summary = recorder.close(complete=finished)   # also after Ctrl+C: the log ends with it
    return summary
