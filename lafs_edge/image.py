"""Reading images and turning aligned crops into model input: the one preprocessing used by
training, export calibration and every runtime (RGB, pixels scaled to [-1, 1], NCHW)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from lafs_edge.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".gif", ".webp", ".tif", ".tiff"}
MEAN = 127.5
STD = 127.5


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Any image file (including extension-less GIFs such as Yale's) -> RGB uint8 (H, W, 3)."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise UserError(f"image not found: {path}")
    # A corrupt file gets our one-line error, not OpenCV's own log line before it.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    data = np.fromfile(path, dtype=np.uint8)
    if _truncated(data):   # libpng/libjpeg would print their own lines and decode a partial image
        raise UserError(f"not a readable image (truncated file): {path}")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is not None:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    try:  # OpenCV has no GIF decoder for stills; Pillow does
        from PIL import Image, UnidentifiedImageError

        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError):
        raise UserError(f"not a readable image: {path}") from None


PNG_SIGNATURE, PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"
JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"


def _truncated(data: np.ndarray) -> bool:
    """A PNG without its IEND chunk or a JPEG without its end-of-image marker (trailing bytes
    after the marker, which some cameras write, are allowed)."""
    head = data[:8].tobytes()
    if head == PNG_SIGNATURE:
        return PNG_END not in data[-64:].tobytes()
    if head.startswith(JPEG_START):
        return JPEG_END not in data[-4096:].tobytes()
    return False


def write_image(path: str | os.PathLike, rgb: np.ndarray) -> None:
    import cv2

    ok, buf = cv2.imencode(Path(path).suffix or ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise UserError(f"cannot encode image as {Path(path).suffix}: {path}")
    buf.tofile(str(path))


def to_model_input(images: np.ndarray | list[np.ndarray]) -> torch.Tensor:
    """RGB uint8 (H, W, 3) or (B, H, W, 3) -> float32 (B, 3, H, W) in [-1, 1]."""
    batch = np.stack(images) if isinstance(images, list) else np.asarray(images)
    if batch.ndim == 3:
        batch = batch[None]
    tensor = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float()
    return (tensor - MEAN) / STD


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under `folder`, recursively, in a stable order."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
