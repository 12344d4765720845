"""Typed keys read from the X server, for the demo window on X11.

OpenCV's Qt build (the `opencv-python` wheel) reports a letter in lower case whatever the Shift
state, reports Shift as a key of its own, and keeps only the last key between two `waitKeyEx`
polls: text typed quickly (`xdotool type "Joe Biden Jr"`, a fast typist) loses its Shifts and
so its capitals (measured: `j o e space b i d e n ...`, no Shift code at all). The X server
knows what was typed: `KeyWatch` opens its own connection, asks for the key presses of the
window (several clients may), and turns each into the typed keysym with its modifiers applied
(`XLookupString`: 'J' for Shift+j, Return, Escape, BackSpace as X keysyms), in order, none lost.

Everything here is best effort: without libX11, a display or the window, `KeyWatch.keys()`
returns None and the window falls back to OpenCV's key codes.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

KEY_PRESS, KEY_PRESS_MASK = 2, 1
MODIFIER_KEYSYMS = range(0xFFE1, 0xFFEF)   # Shift, Control, Caps Lock, Meta, Alt, Super, Hyper


class _XKeyEvent(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("serial", ctypes.c_ulong), ("send_event", ctypes.c_int),
                ("display", ctypes.c_void_p), ("window", ctypes.c_ulong),
                ("root", ctypes.c_ulong), ("subwindow", ctypes.c_ulong),
                ("time", ctypes.c_ulong), ("x", ctypes.c_int), ("y", ctypes.c_int),
                ("x_root", ctypes.c_int), ("y_root", ctypes.c_int), ("state", ctypes.c_uint),
                ("keycode", ctypes.c_uint), ("same_screen", ctypes.c_int)]


class _XEvent(ctypes.Union):
    _fields_ = [("type", ctypes.c_int), ("key", _XKeyEvent), ("pad", ctypes.c_long * 24)]


class KeyWatch:
    """The key presses of the top-level X window titled `title`, once it exists."""

    def __init__(self, title: str, display: str | None = None):
        self.title = title.encode()
        self.window: int | None = None
        self.x11, self.display = _open(display or os.environ.get("DISPLAY", ""))

    def keys(self) -> list[int] | None:
        """The keysyms typed since the last call (modifier keys left out: their effect is in
        the keysym); None while the window cannot be watched."""
        if self.display is None or not self._attached():
            return None
        x11, event, typed = self.x11, _XEvent(), []
        while x11.XPending(self.display):
            x11.XNextEvent(self.display, ctypes.byref(event))
            if event.type != KEY_PRESS:
                continue
            keysym, text = ctypes.c_ulong(), ctypes.create_string_buffer(8)
            x11.XLookupString(ctypes.byref(event.key), text, 8, ctypes.byref(keysym), None)
            if keysym.value not in MODIFIER_KEYSYMS:
                typed.append(int(keysym.value))
        return typed

    def close(self) -> None:
        if self.display is not None:
            self.x11.XCloseDisplay(self.display)
            self.display = None

    def _attached(self) -> bool:
        if self.window is None:
            self.window = _find(self.x11, self.display, self.title)
            if self.window is not None:
                self.x11.XSelectInput(self.display, self.window, KEY_PRESS_MASK)
                self.x11.XFlush(self.display)
        return self.window is not None


def _open(name: str):
    """(libX11, Display*) or (None, None)."""
    library = ctypes.util.find_library("X11") if name else None
    if library is None:
        return None, None
    try:
        x11 = ctypes.CDLL(library)
        x11.XOpenDisplay.restype = ctypes.c_void_p
        x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
        x11.XDefaultRootWindow.restype = ctypes.c_ulong
        x11.XQueryTree.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p,
                                   ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        x11.XFetchName.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p]
        x11.XSelectInput.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_long]
        x11.XLookupString.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int,
                                      ctypes.c_void_p, ctypes.c_void_p]
        for name_ in ("XPending", "XFlush", "XCloseDisplay", "XDefaultRootWindow"):
            getattr(x11, name_).argtypes = [ctypes.c_void_p]
        x11.XNextEvent.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        x11.XFree.argtypes = [ctypes.c_void_p]
        display = x11.XOpenDisplay(name.encode())
        return (x11, display) if display else (None, None)
    except (OSError, AttributeError):
        return None, None


def _find(x11, display, title: bytes, window: int | None = None, depth: int = 0) -> int | None:
    """The window named `title` under `window` (the root by default), depth first."""
    window = x11.XDefaultRootWindow(display) if window is None else window
    name = ctypes.c_char_p()
    if x11.XFetchName(display, window, ctypes.byref(name)) and name.value is not None:
        found = name.value == title
        x11.XFree(name)
        if found:
            return window
    if depth > 4:
        return None
    root, parent = ctypes.c_ulong(), ctypes.c_ulong()
    children, count = ctypes.POINTER(ctypes.c_ulong)(), ctypes.c_uint()
    if not x11.XQueryTree(display, window, ctypes.byref(root), ctypes.byref(parent),
                          ctypes.byref(children), ctypes.byref(count)):
        return None
    try:
        for index in range(count.value):
            hit = _find(x11, display, title, children[index], depth + 1)
            if hit is not None:
                return hit
    finally:
        if children:
            x11.XFree(children)
    return None
