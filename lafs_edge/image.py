"""Reading images and turning aligned crops into model input: the one preprocessing used by
training, export calibration and every runtime (RGB, pixels scaled to [-1, 1], NCHW)."""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from lafs_edge.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".gif", ".webp", ".tif", ".tiff"}
MEAN = 127.5
STD = 127.5


# Decoded, an image takes width x height x 3 bytes (and as much again while converted): a
# 875 KB PNG of 30000x30000 pixels asked for 5.7 GB. 100 megapixels (300 MB decoded) is more
# than any phone photo; `lafs-edge --max-pixels N COMMAND` raises or lowers it.
MAX_PIXELS = 100_000_000


def read_image(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Any image file (including extension-less GIFs such as Yale's) -> RGB uint8 (H, W, 3).

    The pixel count is read from the header and checked against `max_pixels` (default
    MAX_PIXELS) before anything is decoded; a decoder warning (a corrupt JPEG that still ends
    with its end marker decodes partly, with grey blocks that can hold phantom faces) is an
    error, and no decoder line reaches the terminal."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise UserError(f"image not found: {path}" if not path.exists() else
                        f"not an image file: {path} ({'a folder' if path.is_dir() else 'not a regular file'})")
    # A corrupt file gets our one-line error, not OpenCV's own log line before it.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    data = np.fromfile(path, dtype=np.uint8)
    if _truncated(data):   # libpng/libjpeg would print their own lines and decode a partial image
        raise UserError(f"not a readable image (truncated file): {path}")
    _check_pixels(path, max_pixels or MAX_PIXELS)
    with _decoder_messages() as messages:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if messages:
        raise UserError(f"not a readable image (the decoder reported: {messages[0]}): {path}")
    if image is not None:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    try:  # OpenCV has no GIF decoder for stills; Pillow does
        from PIL import Image, UnidentifiedImageError

        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError):
        raise UserError(f"not a readable image: {path}") from None


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file's header, without decoding; None when Pillow cannot
    tell (OpenCV may still read it)."""
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # Pillow's own decompression-bomb warning
        try:
            with Image.open(path) as im:
                return im.size
        except Image.DecompressionBombError as e:   # over twice Pillow's limit: say how big
            numbers = [int(n) for n in re.findall(r"\d+", str(e))]
            return (numbers[0], 1) if numbers else (2**31, 1)
        except Exception:  # noqa: BLE001 - an unknown or broken header: the decoders decide
            return None


def _check_pixels(path: Path, limit: int) -> None:
    size = image_size(path)
    if size is not None and size[0] * size[1] > limit:
        raise UserError(f"{path}: {size[0] * size[1] / 1e6:.0f} megapixels is over the "
                        f"{limit / 1e6:g}-megapixel limit (it would take "
                        f"{3 * size[0] * size[1] / 2**30:.1f} GiB decoded); shrink the image, or "
                        "raise the limit: lafs-edge --max-pixels N COMMAND ...")


@contextmanager
def _decoder_messages() -> Iterator[list[str]]:
    """Collect what native decoders (libjpeg, libpng) print on stderr while decoding: file
    descriptor 2 goes to a temporary file for the call. The list is filled on exit."""
    import sys
    import tempfile

    messages: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield messages
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
            messages.extend(line.strip() for line in text.splitlines() if line.strip())


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
