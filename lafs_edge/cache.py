"""lafs-edge's cache folder: MediaPipe models, the artifacts the device commands export for
themselves, the demo photos (a core module: the landmarks, the runtime and the apps share it)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_home() -> Path:
    """$LAFS_EDGE_CACHE, else $XDG_CACHE_HOME (or ~/.cache)/lafs-edge."""
    root: str | Path | None = os.environ.get("LAFS_EDGE_CACHE")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lafs-edge"
    return Path(root)
