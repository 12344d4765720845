"""k-shot subsets: k images per identity from a fraction of the identities, chosen with a fixed
seed and written to a list file (see folders.py) that `LabelledFolder(root, list_file=...)` reads
back, so a run repeats exactly even if the folder later gains files."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lafs_edge.errors import UserError
from lafs_edge.image_folders import scan_labelled
from lafs_edge.train.data.folders import read_list_comments, write_list_file


def select_kshot(entries: list[tuple[Path, str]], k: int, fraction: float = 1.0,
                 seed: int = 0) -> list[tuple[Path, str]]:
    """k entries per identity from round(fraction * identities) identities (those with >= k images).

    Deterministic for given inputs: identities and images are sorted before a seeded permutation.
    """
    if k < 1:
        raise UserError(f"k must be at least 1, got {k}")
    if not 0 < fraction <= 1:
        raise UserError(f"fraction must be in (0, 1], got {fraction}")
    by_identity: dict[str, list[Path]] = {}
    for path, identity in entries:
        by_identity.setdefault(identity, []).append(Path(path))
    eligible = sorted(name for name, paths in by_identity.items() if len(paths) >= k)
    if not eligible:
        raise UserError(f"no identity has {k} or more images")
    rng = np.random.default_rng(seed)
    count = max(1, round(fraction * len(eligible)))
    chosen = sorted(eligible[i] for i in rng.permutation(len(eligible))[:count])
    selected = []
    for name in chosen:
        paths = sorted(by_identity[name])
        picks = sorted(rng.permutation(len(paths))[:k])
        selected += [(paths[i], name) for i in picks]
    return selected


def write_kshot_list(root: str | os.PathLike, out: str | os.PathLike, k: int,
                     fraction: float = 1.0, seed: int = 0) -> list[tuple[Path, str]]:
    """Scan the labelled folder `root`, select a k-shot subset and write it to `out`."""
    entries = scan_labelled(root)
    selected = select_kshot(entries, k, fraction, seed)
    identities = len({name for _, name in selected})
    write_list_file(out, selected, root, comments=[
        "lafs-edge k-shot list", f"source: {Path(root).resolve()}",
        f"k: {k}", f"fraction: {fraction}", f"seed: {seed}",
        f"identities: {identities}", f"images: {len(selected)}"])
    return selected


def kshot_parameters(list_file: str | os.PathLike) -> dict[str, str]:
    """The `key: value` provenance comments of a k-shot list file."""
    params = {}
    for comment in read_list_comments(list_file):
        key, sep, value = comment.partition(": ")
        if sep:
            params[key] = value
    return params
