"""The OpenCV window: the checks before it opens (a GUI build of OpenCV, a reachable X display),
the screen it must fit, and the keys typed into it (`Window`, `typed_key`; on X11 through
apps/x11_keys.py)."""
from __future__ import annotations

import os
import socket
import sys
from collections import deque

import numpy as np

from lafs_edge.errors import UserError

WINDOW = "lafs-edge demo"
GUI_MISSING = ("the camera window needs OpenCV's GUI build, but this OpenCV has none "
               "(opencv-python-headless): run `pip uninstall -y opencv-python-headless && pip "
               "install 'lafs-edge[gui]'` (or `make gui`), or use --headless --out FILE")


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
        self.watched_polls = 0     # polls since the watch attached, counted up to 2 (_poll)

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
        if typed is None:
            if code != -1:
                self.keys.append(typed_key(code))
            return
        # A key typed before the watch attached reaches OpenCV alone, at the latest in the
        # poll after the one that attached it: there, OpenCV's key counts when the watch saw none
        # (a `q` pressed as the window appeared was lost, and the demo waited for ever).
        if self.watched_polls < 2 and not typed and code != -1:
            typed = [typed_key(code)]
        self.watched_polls = min(2, self.watched_polls + 1)
        self.keys.extend(typed)

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
