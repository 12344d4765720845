"""The InsightFace `.bin` pair sets (LFW, CFP-FP, AgeDB-30): read safely, and written for tests.
The metrics over their pairs are the core `lafs_edge.verification`."""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np

from lafs_edge.errors import UserError
from lafs_edge.fileio import atomic_write

# --- InsightFace .bin pair sets (LFW, CFP-FP, AgeDB-30) ----------------------------------------

# Python 3's pickle protocol 2 stores bytes as _codecs.encode(text, "latin1"); numpy bool arrays
# need their reconstructor. Nothing else may be looked up, so a file cannot run code.
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}")
        return super().find_class(module, name)


def load_bin(path: str | os.PathLike) -> tuple[list[bytes], np.ndarray]:
    """(encoded images, issame) of an InsightFace `.bin`: images 2i and 2i+1 form pair i."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f".bin file not found: {path}")
    try:
        payload = _RestrictedUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise UserError(f"{path}: not a valid InsightFace .bin ({e})") from None
    if not (isinstance(payload, (tuple, list)) and len(payload) == 2):
        raise UserError(f"{path}: expected a (images, issame) pair")
    bins, issame = payload
    images = [_as_bytes(item, path) for item in bins]
    issame = _as_bool_array(issame, path)
    if len(images) != 2 * issame.size:
        raise UserError(f"{path}: {len(images)} images for {issame.size} pairs (need 2 per pair)")
    return images, issame


def _as_bytes(item, path: Path) -> bytes:
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 1:
        return item.tobytes()
    raise UserError(f"{path}: image entries must be encoded bytes, found {type(item).__name__}")


def _as_bool_array(issame, path: Path) -> np.ndarray:
    if isinstance(issame, np.ndarray) and issame.dtype == bool:
        return issame.ravel()
    if isinstance(issame, (list, tuple)) and all(isinstance(v, (bool, np.bool_)) for v in issame):
        return np.array(issame, dtype=bool)
    raise UserError(f"{path}: issame must be a list of booleans or a boolean array")


def write_bin(path: str | os.PathLike, images: list[bytes], issame) -> None:
    """Write a `.bin` in InsightFace's layout (for tests and small custom pair sets)."""
    with atomic_write(path) as f:
        pickle.dump((list(images), [bool(v) for v in issame]), f, protocol=2)
