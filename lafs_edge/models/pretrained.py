"""Shipped weights: trained students inside the package, as face_recognition ships
`face_recognition_models` and InsightFace its model zoo.

    lafs_edge/weights/index.json   {name: {"file", "sha256", "card", "celeba_tar", "latency_ratio"}}
                                   (the figures pick the default student: runtime/shipped.py)
    lafs_edge/weights/<name>.pt    a lafs-edge checkpoint (fp16 tensors, loaded as fp32) with the
                                   open-set threshold measured for it (`checkpoint_threshold`)
    lafs_edge/weights/<name>.md    its model card: command, data, steps, accuracy, terms

The sha256 pinned in the index is checked on every load, so a truncated file (or a Git LFS
pointer in its place) fails with one clear line instead of loading garbage.
`ship_student` (lafs_edge/models/shipping.py) writes all three from a finished run;
`experiments/edge_students.py --ship` calls it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
INDEX = WEIGHTS / "index.json"


def shipped(folder: Path | None = None) -> dict[str, dict[str, Any]]:
    """{registry name: its index entry} for every model with shipped weights (in `folder`'s
    index.json; default the package's)."""
    index = INDEX if folder is None else Path(folder) / "index.json"
    if not index.is_file():
        return {}
    return json.loads(index.read_text(encoding="utf-8"))


def has_weights(name: str) -> bool:
    return name in shipped()


def weights_file(name: str) -> Path:
    """The checked path of `name`'s shipped weights."""
    entry = shipped().get(name)
    if entry is None:
        have = ", ".join(sorted(shipped())) or "none"
        raise ValueError(f"no shipped weights for {name!r} (models with weights: {have})")
    path = WEIGHTS / entry["file"]
    if not path.is_file():
        raise ValueError(f"shipped weights for {name} are missing: {path} (reinstall lafs-edge)")
    from lafs_edge.hashing import sha256_file

    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise ValueError(f"shipped weights {path} fail their sha256 check (expected "
                         f"{entry['sha256'][:12]}..., got {actual[:12]}...): reinstall lafs-edge "
                         "(a Git LFS pointer or a truncated download looks like this)")
    return path

