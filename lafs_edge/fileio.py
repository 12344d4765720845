"""Atomic file writes: write under a temporary name beside the target, fsync, then rename.

A crash or a full disk mid-write leaves the previous file (or none), never a truncated one.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", private: bool = False) -> Iterator[IO]:
    """Open a temporary file for writing; on clean exit it replaces `path` in one rename.

    `private` creates it with mode 0600 (biometric data: galleries, embeddings)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600 if private else 0o666)
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, private: bool = False) -> None:
    with atomic_write(path, "wb", private=private) as f:
        f.write(data)
