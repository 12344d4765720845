"""Artifacts the device commands make for themselves. `enroll`, `identify`, `adapt`, `demo` and
`gallery import` run an exported artifact; given a checkpoint or a model name with shipped
weights instead (or no `--model`: the shipped student), they export it once into the cache as an
artifact like any other, so the device path is the same whatever `--model` names.

OpenVINO fp32 when OpenVINO is installed (the `export` extra; fp32 needs no calibration faces),
else the PyTorch runtime. The folder name carries the checkpoint's sha256, so new weights get a
new artifact; the export writes a temporary folder and renames it, so an interrupted first run
leaves nothing half-made.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_STUDENT = "mobilefacenet"


def cache_root() -> Path:
    from lafs_edge.landmarks.fetch import cache_home

    return cache_home() / "artifacts"


def default_artifact(student: str = DEFAULT_STUDENT) -> Path:
    """The artifact folder of the shipped `student`, exported on first use."""
    from lafs_edge.errors import UserError
    from lafs_edge.models.pretrained import shipped, weights_file

    if student not in shipped():
        raise UserError(f"no --model given and no shipped weights for {student}: pass --model "
                        "(an exported artifact folder, a checkpoint or a model name)")
    return checkpoint_artifact(weights_file(student))


def checkpoint_artifact(checkpoint: str | os.PathLike) -> Path:
    """The artifact folder of a lafs-edge checkpoint, exported into the cache on first use."""
    from lafs_edge.convert.pipeline import export_models
    from lafs_edge.runtime.manifest import sha256_file

    checkpoint = Path(checkpoint)
    digest = sha256_file(checkpoint)[:12]
    target = "openvino" if importlib.util.find_spec("openvino") else "pytorch"
    suffix = f"-{digest}-{target}-fp32"
    # The sha256 alone identifies the weights: look the folder up by it, so a cache hit never
    # has to open the checkpoint for its architecture name.
    cached = sorted(cache_root().glob(f"*{suffix}/manifest.json"))
    if cached:
        return cached[0].parent
    name = f"{_architecture(checkpoint)}-{digest}"
    folder = cache_root() / f"{name}-{target}-fp32"
    # A warning, not info: seconds of unrequested work that a program using the library should
    # see even when it configured no logging.
    logger.warning("exporting %s to %s once, into %s", checkpoint, target, folder)
    export_models(str(checkpoint), [target], "fp32", cache_root(), name=name)
    return folder


def _architecture(checkpoint: Path) -> str:
    from lafs_edge.models import read_checkpoint

    return str(read_checkpoint(checkpoint)["arch"])
