"""The model `enroll`, `identify`, `adapt` and `demo` use when no `--model` is given: the shipped
student (weights inside the package), exported once into the cache as an artifact like any
other, so the device path is the same with or without `--model`.

OpenVINO fp32 when OpenVINO is installed (the `export` extra; fp32 needs no calibration faces),
else the PyTorch runtime. The folder name carries the weights' sha256, so new weights get a new
artifact; the export writes a temporary folder and renames it, so an interrupted first run
leaves nothing half-made.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

DEFAULT_STUDENT = "mobilefacenet"


def cache_root() -> Path:
    from ..landmarks.fetch import cache_home

    return cache_home() / "artifacts"


def default_artifact(student: str = DEFAULT_STUDENT) -> Path:
    """The artifact folder of the shipped `student`, exported on first use."""
    from ..convert.pipeline import export_models
    from ..errors import UserError
    from ..models.pretrained import shipped, weights_file

    entry = shipped().get(student)
    if entry is None:
        raise UserError(f"no --model given and no shipped weights for {student}: pass --model "
                        "(an exported artifact folder)")
    target = "openvino" if importlib.util.find_spec("openvino") else "pytorch"
    name = f"{student}-{entry['sha256'][:12]}"
    folder = cache_root() / f"{name}-{target}-fp32"
    if (folder / "manifest.json").is_file():
        return folder
    print(f"lafs-edge: exporting the shipped {student} to {target} once, into {folder}",
          file=sys.stderr)
    export_models(str(weights_file(student)), [target], "fp32", cache_root(), name=name)
    return folder
