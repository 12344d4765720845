"""What the window's keys do: e enrolls the largest face under a typed name (`Prompt`; a name
whose faces do not match, or a face that matches someone else, asks for y first), d deletes a
person, a adapts, q or Esc quits; and `run_window`, the loop that shows each frame when it is
due and handles the keys meanwhile."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lafs_edge.apps.demo.capture import Source, VideoOut
from lafs_edge.apps.demo.drawing import KEY_HINT, draw
from lafs_edge.apps.demo.event_log import Recorder
from lafs_edge.apps.demo.loop import Demo, FrameResult
from lafs_edge.apps.demo.window import BACKSPACE, ENTER, ESCAPE, MODIFIERS, SHIFT, Window
from lafs_edge.errors import UserError


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
