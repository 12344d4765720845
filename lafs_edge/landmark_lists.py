"""5-point landmark lists (the format of ../shared/data/wild5/landmarks.txt), aligned on the fly.
A core module: training, export (calibration faces) and the benchmarks read lists with it.

One line per face: `relative/path x1 x2 x3 x4 x5 y1 y2 y3 y4 y5` in pixels of the original image,
points = left eye, right eye, nose tip, left mouth corner, right mouth corner, where "left" means
image-left (the ArcFace template's order). Checked on wild5 (7,641 lines): x1 < x2 and x4 < x5 on
every line, eyes above the nose and the nose above the mouth on >99.7%, so the documented order
holds. A list labelled the other way (subject-left first) would have the pairs mirrored; with
`fix_order=True` (default) each line's eye pair and mouth-corner pair are put image-left first,
and `swapped` counts the lines that needed it.

Crops come from `lafs_edge.align.align_face`, the same function the device pipeline calls.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lafs_edge.align import CROP_SIZE, align_face
from lafs_edge.errors import UserError
from lafs_edge.image import read_image


def read_landmark_list(path: str | os.PathLike,
                       layout: str = "xxyy") -> list[tuple[str, np.ndarray]]:
    """(relative path, points (5, 2) float64) per line. `layout` "xxyy" (wild5) or "xyxy" (interleaved)."""
    if layout not in ("xxyy", "xyxy"):
        raise UserError(f"layout must be 'xxyy' or 'xyxy', got {layout!r}")
    path = Path(path)
    if not path.is_file():
        raise UserError(f"landmark list not found: {path}")
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        # The path may contain spaces: the last 10 fields are the numbers.
        fields = line.rsplit(maxsplit=10)
        try:
            values = np.array([float(v) for v in fields[1:]], dtype=np.float64)
        except ValueError:
            values = np.array([])
        if len(fields) != 11 or values.size != 10 or not np.all(np.isfinite(values)):
            raise UserError(f"{path}:{number}: expected 'relative/path' and 10 finite numbers")
        points = values.reshape(2, 5).T if layout == "xxyy" else values.reshape(5, 2)
        entries.append((fields[0], points))
    if not entries:
        raise UserError(f"{path}: no landmark lines")
    return entries


def canonical_order(points: np.ndarray) -> tuple[np.ndarray, bool]:
    """Eyes and mouth corners image-left first (the template's order); True if anything moved."""
    points = np.array(points, dtype=np.float64)
    swapped = False
    for a, b in ((0, 1), (3, 4)):
        if points[a, 0] > points[b, 0]:
            points[[a, b]] = points[[b, a]]
            swapped = True
    return points, swapped


class LandmarkFaces:
    """Faces of a 5-point list, aligned to the ArcFace template: `size` x `size` RGB uint8 crops
    (or `transform(crop)`). Paths in the list are relative to `root` (default: the list's folder).
    With `return_points`, items are (crop, points in the original image) for checks. A plain
    sequence (len and indexing), which is all torch's DataLoader needs: core imports no torch."""

    def __init__(self, list_file: str | os.PathLike, root: str | os.PathLike | None = None,
                 size: int = CROP_SIZE, transform=None, layout: str = "xxyy",
                 fix_order: bool = True, return_points: bool = False):
        self.root = Path(root) if root is not None else Path(list_file).parent
        self.size = size
        self.transform = transform
        self.return_points = return_points
        self.entries = []
        self.swapped = 0
        for rel, points in read_landmark_list(list_file, layout):
            if fix_order:
                points, moved = canonical_order(points)
                self.swapped += moved
            self.entries.append((self.root / rel, points))

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int):
        path, points = self.entries[i]
        crop = align_face(read_image(path), points, size=self.size)
        out = self.transform(crop) if self.transform else crop
        return (out, points) if self.return_points else out
