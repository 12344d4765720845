"""Where the device commands keep the artifacts they make for themselves. `enroll`, `identify`,
`adapt`, `demo` and `gallery import` run an exported artifact; given a checkpoint or a model name
with shipped weights instead (or no `--model`: the shipped student), the command layer
(`lafs_edge/commands/artifacts.py`) exports it once into this cache as an artifact like any
other, so the device path is the same whatever `--model` names. This module only finds and names
those folders: the runtime never imports the converters (the layer contract in pyproject.toml).

OpenVINO fp32 when OpenVINO is installed (the `export` extra; fp32 needs no calibration faces),
else the PyTorch runtime. The folder name carries the checkpoint's sha256, so new weights get a
new artifact.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from lafs_edge.cache import cache_home
from lafs_edge.hashing import sha256_file

# The edge latency budget: a student's OpenVINO int8 latency over the latency reference's
# (../shared/models/latency-reference, timed in the same run by benchmarks/edge_latency.py).
LATENCY_TARGET = 1.5


def default_student() -> str:
    """The shipped student that `enroll`, `identify`, `demo` and the quickstart use without
    --model: the best CelebA TAR@FAR1e-3 among those within LATENCY_TARGET, as their index
    entries record it (`celeba_tar`, `latency_ratio`, written when a student ships). With no
    student within the target, the fastest one; a student without figures counts as neither."""
    from lafs_edge.errors import UserError
    from lafs_edge.models.pretrained import shipped

    index = shipped()
    if not index:
        raise UserError("no shipped student in this install: pass --model (an exported artifact "
                        "folder, a checkpoint or a model name)")
    within = [name for name, entry in index.items()
              if entry.get("latency_ratio", float("inf")) <= LATENCY_TARGET]
    if within:
        return max(sorted(within), key=lambda name: index[name].get("celeba_tar", -1.0))
    return min(sorted(index), key=lambda name: index[name].get("latency_ratio", float("inf")))


def cache_root() -> Path:
    return cache_home() / "artifacts"


def export_target() -> str:
    """The runtime a cached artifact is made for."""
    return "openvino" if importlib.util.find_spec("openvino") else "pytorch"


def default_checkpoint(student: str | None = None) -> Path:
    """The checked weights file of the shipped `student` (default `default_student()`; a
    UserError when none is shipped)."""
    from lafs_edge.errors import UserError
    from lafs_edge.models.pretrained import shipped, weights_file

    student = student or default_student()
    if student not in shipped():
        raise UserError(f"no --model given and no shipped weights for {student}: pass --model "
                        "(an exported artifact folder, a checkpoint or a model name)")
    return weights_file(student)


def cached_artifact(checkpoint: str | os.PathLike) -> Path | None:
    """The cached artifact folder of `checkpoint`'s weights, None before its first export.
    The sha256 alone identifies the weights: a cache hit never opens the checkpoint."""
    cached = sorted(cache_root().glob(f"*{_suffix(Path(checkpoint))}/manifest.json"))
    return cached[0].parent if cached else None


def artifact_name(checkpoint: str | os.PathLike) -> str:
    """`<architecture>-<sha256[:12]>`: the export's name; its folder adds `-<target>-fp32`."""
    from lafs_edge.models import read_checkpoint

    return f"{read_checkpoint(checkpoint)['arch']}-{sha256_file(checkpoint)[:12]}"


def artifact_folder(checkpoint: str | os.PathLike) -> Path:
    """Where the export of `checkpoint` lands (the folder `cached_artifact` then finds)."""
    return cache_root() / f"{artifact_name(checkpoint)}-{export_target()}-fp32"


def _suffix(checkpoint: Path) -> str:
    return f"-{sha256_file(checkpoint)[:12]}-{export_target()}-fp32"
