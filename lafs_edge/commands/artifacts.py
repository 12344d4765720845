"""The device commands' first-use export: a checkpoint or the shipped student becomes an artifact
in the cache (`lafs_edge.runtime.shipped` finds and names the folders), once. It lives in the
command layer because it runs the converters (`lafs_edge.convert`), which the runtime may not
import (the layer contract in pyproject.toml).

The export writes a temporary folder and renames it, so an interrupted first run leaves nothing
half-made.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from lafs_edge.runtime.shipped import (artifact_folder, artifact_name, cache_root,
                                       cached_artifact, default_checkpoint, export_target)

logger = logging.getLogger(__name__)


def default_artifact(student: str | None = None) -> Path:
    """The artifact folder of the shipped `student` (default: `default_student()`), exported on
    first use."""
    return checkpoint_artifact(default_checkpoint(student))


def checkpoint_artifact(checkpoint: str | os.PathLike) -> Path:
    """The artifact folder of a lafs-edge checkpoint, exported into the cache on first use."""
    from lafs_edge.convert.pipeline import export_models

    cached = cached_artifact(checkpoint)
    if cached is not None:
        return cached
    folder, target = artifact_folder(checkpoint), export_target()
    # A warning, not info: seconds of unrequested work that a program using the library should
    # see even when it configured no logging.
    logger.warning("exporting %s to %s once, into %s", checkpoint, target, folder)
    export_models(str(checkpoint), [target], "fp32", cache_root(), name=artifact_name(checkpoint))
    return folder
