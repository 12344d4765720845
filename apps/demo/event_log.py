"""The run's record: the frame rate actually achieved (`RateMeter`), and the event log (one JSON
line per frame and per window action) ending with the run's summary (`Recorder`)."""
from __future__ import annotations

import json
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from lafs_edge.apps.demo.loop import FrameResult


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
