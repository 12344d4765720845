"""Frames in and out: the camera, a video file, an image folder or one image as (seconds, RGB)
frames (`Source`), and annotated frames written to a video (`VideoOut`, letterboxing frames of
another size)."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, cast

import numpy as np

from lafs_edge.errors import UserError

if TYPE_CHECKING:
    import cv2


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
