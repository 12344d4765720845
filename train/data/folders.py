"""Image folders: labelled (one folder per identity, or flat `IDENTITY.condition` files as in Yale)
and unlabelled (any tree), read from a scan or from a list file so a run can be repeated exactly.

List file format (written by `write_list_file`, read by `read_list_file`): UTF-8 text, `#` lines
are comments (provenance: source, k, seed...), every other line is `relative/path<TAB>identity`
(identity empty for unlabelled lists). Paths are relative to the dataset root, `/`-separated.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from torch.utils.data import Dataset

from lafs_edge.errors import UserError
from lafs_edge.fileio import write_text_atomic
from lafs_edge.image import IMAGE_SUFFIXES, read_image

# First bytes of the formats OpenCV/Pillow read: lets extension-less files (Yale) count as images.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF87a", b"GIF89a", b"BM", b"P5", b"P6", b"P2", b"P3",
          b"II*\x00", b"MM\x00*")
_NOT_IMAGES = {".txt", ".md", ".csv", ".json", ".yaml", ".yml", ".lst", ".py", ".idx", ".rec", ".tar"}

Transform = Callable[[np.ndarray], object]


def is_image_file(path: Path) -> bool:
    """Known image suffix, or (for extension-less names such as `subject01.happy`) image magic bytes."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return True
    if suffix in _NOT_IMAGES or path.name.startswith("."):
        return False
    with open(path, "rb") as f:
        head = f.read(8)
    return head.startswith(_MAGIC)


def scan_images(root: str | os.PathLike) -> list[Path]:
    """Every image file under `root`, recursively, in a stable (sorted) order."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"not a folder: {root}")
    return sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p))


def flat_identity(path: Path) -> str:
    """Identity of a flat-layout file: the name before the first dot (`subject01.happy` -> `subject01`)."""
    return path.name.split(".", 1)[0]


def scan_labelled(root: str | os.PathLike,
                  label_fn: Callable[[Path], str] | None = None) -> list[tuple[Path, str]]:
    """(path, identity) for a labelled tree.

    One sub-folder per identity (any depth below it); if `root` holds images directly and no
    identity folders (Yale), identities come from `label_fn`, by default `flat_identity`.
    """
    root = Path(root)
    images = scan_images(root)
    if not images:
        raise UserError(f"no images under {root}")
    if label_fn is not None:
        return [(p, label_fn(p)) for p in images]
    nested = [p for p in images if p.parent != root]
    if nested and len(nested) != len(images):
        loose = next(p for p in images if p.parent == root)
        raise UserError(f"{root}: mixes identity folders with loose images (e.g. {loose.name}); "
                        "use one layout")
    if nested:
        return [(p, p.relative_to(root).parts[0]) for p in images]
    return [(p, flat_identity(p)) for p in images]


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


def to_112(image: np.ndarray, size: int = 112) -> np.ndarray:
    """Letterbox a landmark-less face crop (ORL 92x112, Yale 320x243) into `size` x `size`.

    The whole image is scaled by one factor so its longer side is `size` (area interpolation
    when shrinking, bilinear when enlarging), centred, and the rest filled with black, the same
    border value `align_face` uses. No pixel is cropped and the aspect ratio is kept, so the
    result is deterministic for a given input; it is NOT an ArcFace-template alignment (these
    sets have no landmarks), so faces sit larger or smaller than in aligned training crops.
    """
    import cv2

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise UserError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    if (new_w, new_h) != (width, height):
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = image
    return canvas
