"""Image folders: labelled (one folder per identity, or flat `IDENTITY.condition` files as in Yale)
and unlabelled (any tree), read from a scan or from a list file so a run can be repeated exactly.

List file format (written by `write_list_file`, read by `read_list_file`): UTF-8 text, `#` lines
are comments (provenance: source, k, seed...), every other line is `relative/path<TAB>identity`
(identity empty for unlabelled lists). Paths are relative to the dataset root, `/`-separated.
Which files are images and a tree's identities come from the core `lafs_edge.image_folders`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from torch.utils.data import Dataset

from lafs_edge.errors import UserError
from lafs_edge.fileio import write_text_atomic
from lafs_edge.image import read_image
from lafs_edge.image_folders import scan_images, scan_labelled

Transform = Callable[[np.ndarray], object]


def write_list_file(path: str | os.PathLike, entries: Iterable[tuple[Path, str | None]],
                    root: str | os.PathLike, comments: Sequence[str] = ()) -> Path:
    """Atomically write `relative/path<TAB>identity` lines (paths relative to `root`)."""
    path, root = Path(path), Path(root).resolve()
    lines = [f"# {c}" for c in comments]
    for image, identity in entries:
        rel = Path(image).resolve().relative_to(root).as_posix()
        if "\t" in rel or "\n" in rel or (identity and ("\t" in identity or "\n" in identity)):
            raise UserError(f"tab or newline in a name cannot go into a list file: {rel!r}")
        lines.append(f"{rel}\t{identity or ''}")
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def read_list_file(path: str | os.PathLike, root: str | os.PathLike) -> list[tuple[Path, str]]:
    """(absolute path, identity) from a list file; identity is '' for unlabelled entries."""
    path, root = Path(path), Path(root)
    if not path.is_file():
        raise UserError(f"list file not found: {path}")
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        rel, sep, identity = line.partition("\t")
        if not sep:
            raise UserError(f"{path}:{number}: expected 'relative/path<TAB>identity'")
        entries.append((root / rel, identity))
    if not entries:
        raise UserError(f"{path}: no entries")
    return entries


def read_list_comments(path: str | os.PathLike) -> list[str]:
    """The `#` provenance lines of a list file, without the leading '# '."""
    return [line[1:].strip() for line in Path(path).read_text(encoding="utf-8").splitlines()
            if line.startswith("#")]


class LabelledFolder(Dataset):
    """(image, label) pairs: image RGB uint8 (H, W, 3) or `transform(image)`; label an int.

    Labels index `classes`, the sorted identity names, so they are contiguous from 0 and the
    same on every machine. `list_file` (e.g. a k-shot list) replaces the scan.
    """

    def __init__(self, root: str | os.PathLike, transform: Transform | None = None,
                 list_file: str | os.PathLike | None = None,
                 label_fn: Callable[[Path], str] | None = None):
        self.root = Path(root)
        self.transform = transform
        if list_file is not None:
            named = read_list_file(list_file, self.root)
            if any(not identity for _, identity in named):
                raise UserError(f"{list_file}: has entries without an identity (unlabelled list)")
        else:
            named = scan_labelled(self.root, label_fn)
        self.classes = sorted({identity for _, identity in named})
        index = {name: i for i, name in enumerate(self.classes)}
        self.samples = [(p, index[identity]) for p, identity in named]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        image = read_image(path)
        return (self.transform(image) if self.transform else image), label


class UnlabelledFolder(Dataset):
    """Images of any tree (or of a list file), RGB uint8 (H, W, 3) or `transform(image)`."""

    def __init__(self, root: str | os.PathLike, transform: Transform | None = None,
                 list_file: str | os.PathLike | None = None):
        self.root = Path(root)
        self.transform = transform
        if list_file is not None:
            self.paths = [p for p, _ in read_list_file(list_file, self.root)]
        else:
            self.paths = scan_images(self.root)
            if not self.paths:
                raise UserError(f"no images under {self.root}")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        image = read_image(self.paths[i])
        return self.transform(image) if self.transform else image
