"""The annotated frame: boxes, points and name labels on the picture; the figures (frame rate,
milliseconds per stage) and the status or key line in a band of their own below it."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lafs_edge.gallery.pipeline import STAGES
from lafs_edge.landmarks.smoothing import mesh_box   # the box the tracker matches on

if TYPE_CHECKING:
    from lafs_edge.apps.demo.loop import FrameResult

KEY_HINT = "keys: e enroll  a adapt  d delete  q quit"
KNOWN, UNKNOWN, TEXT, BAND = (60, 200, 60), (60, 60, 230), (255, 255, 255), (32, 32, 32)  # BGR


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
        x0, y0, x1, y1 = (int(round(v)) for v in mesh_box(face.face))
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
