"""Helpers shared by test files (importable as `testkit`: pyproject's pytest `pythonpath`)."""
from __future__ import annotations

import numpy as np


def unit(seed: int, dim: int = 64) -> np.ndarray:
    """A random L2-normalised float32 vector: an embedding stand-in, the same for a seed."""
    vector = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


def encode_png(rgb: np.ndarray) -> bytes:
    """The PNG bytes of an RGB uint8 image."""
    import cv2

    return cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))[1].tobytes()


def png(seed: int) -> bytes:
    """A real (tiny, 8x8) PNG of random pixels: imports check that crops are PNG images."""
    return encode_png(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8))


def one_error_line(err: str, *fragments: str) -> str:
    """`err` is exactly one `error: ...` line holding every fragment; returns that line."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
