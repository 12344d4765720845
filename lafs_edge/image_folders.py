"""Faces in image folders, read the same way by training, export and the device tools: which files
are images, a labelled tree's identities (one folder per identity, or flat `IDENTITY.condition`
files as in Yale), and the letterbox that brings a landmark-less crop to 112x112. A core module:
`lafs_edge.convert` reads calibration and parity faces with it without importing training code.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from lafs_edge.errors import UserError
from lafs_edge.image import IMAGE_SUFFIXES

# First bytes of the formats OpenCV/Pillow read: lets extension-less files (Yale) count as images.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF87a", b"GIF89a", b"BM", b"P5", b"P6", b"P2", b"P3",
          b"II*\x00", b"MM\x00*")
_NOT_IMAGES = {".txt", ".md", ".csv", ".json", ".yaml", ".yml", ".lst", ".py", ".idx", ".rec", ".tar"}


def is_image_file(path: Path) -> bool:
    """Known image suffix, or (for extension-less names such as `subject01.happy`) image magic bytes."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return True
    if suffix in _NOT_IMAGES or path.name.startswith("."):
        return False
    with open(path, "rb") as f:
        head = f.read(8)
    return head.startswith(_MAGIC)


def scan_images(root: str | os.PathLike) -> list[Path]:
    """Every image file under `root`, recursively, in a stable (sorted) order."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"not a folder: {root}")
    return sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p))


def flat_identity(path: Path) -> str:
    """Identity of a flat-layout file: the name before the first dot (`subject01.happy` -> `subject01`)."""
    return path.name.split(".", 1)[0]


def scan_labelled(root: str | os.PathLike,
                  label_fn: Callable[[Path], str] | None = None) -> list[tuple[Path, str]]:
    """(path, identity) for a labelled tree.

    One sub-folder per identity (any depth below it); if `root` holds images directly and no
    identity folders (Yale), identities come from `label_fn`, by default `flat_identity`.
    """
    root = Path(root)
    images = scan_images(root)
    if not images:
        raise UserError(f"no images under {root}")
    if label_fn is not None:
        return [(p, label_fn(p)) for p in images]
    nested = [p for p in images if p.parent != root]
    if nested and len(nested) != len(images):
        loose = next(p for p in images if p.parent == root)
        raise UserError(f"{root}: mixes identity folders with loose images (e.g. {loose.name}); "
                        "use one layout")
    if nested:
        return [(p, p.relative_to(root).parts[0]) for p in images]
    return [(p, flat_identity(p)) for p in images]


def to_112(image: np.ndarray, size: int = 112) -> np.ndarray:
    """Letterbox a landmark-less face crop (ORL 92x112, Yale 320x243) into `size` x `size`.

    The whole image is scaled by one factor so its longer side is `size` (area interpolation
    when shrinking, bilinear when enlarging), centred, and the rest filled with black, the same
    border value `align_face` uses. No pixel is cropped and the aspect ratio is kept, so the
    result is deterministic for a given input; it is NOT an ArcFace-template alignment (these
    sets have no landmarks), so faces sit larger or smaller than in aligned training crops.
    """
    import cv2

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise UserError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    if (new_w, new_h) != (width, height):
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = image
    return canvas
