"""sha256 of files and bytes: the one hashing helper for model files, shipped weights, MediaPipe
models, gallery fingerprints and downloaded photos (a core module, so every layer may use it)."""
from __future__ import annotations

import hashlib
import os

# (realpath, device, inode, size, mtime) -> hex digest
_HASHED: dict[tuple, str] = {}


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, remembered for this process while the file is unchanged
    (same inode, size and modification time): the load-time check and the fingerprint both
    need it, and a model file can be hundreds of megabytes."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _HASHED:
        with open(path, "rb") as f:
            _HASHED[key] = hashlib.file_digest(f, "sha256").hexdigest()
    return _HASHED[key]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
