"""Aligned 112x112 faces for calibration, parity checks and verification pairs, read through the
core readers training uses too (`lafs_edge.image_folders`, `lafs_edge.landmark_lists`), so export
sees exactly what training saw.

- a folder with `landmarks.txt` (wild5 layout): each face aligned with its 5 points by
  `lafs_edge.align.align_face` (`LandmarkFaces`); no identity labels.
- any other image folder (ORL `sN/M.pgm`, Yale `subjectNN.condition`, aligned crops): images
  that are not 112x112 are letterboxed by `to_112` (no landmarks to align with). Labels come
  from identity folders or the name before the first dot; a folder where every image has its
  own identity counts as unlabelled.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lafs_edge.errors import UserError

SIZE = 112


@dataclass
class FaceSet:
    images: np.ndarray  # (N, 112, 112, 3) RGB uint8
    labels: np.ndarray | None  # (N,) int identity, or None when unlabelled
    paths: list[str]

    def __len__(self) -> int:
        return len(self.images)

    def model_input(self) -> np.ndarray:
        """float32 NCHW in [-1, 1]: the PyTorch models' input."""
        from lafs_edge.image import to_model_input

        return to_model_input(self.images).numpy()


def load_faces(folder: str | os.PathLike, limit: int | None = None, seed: int = 0) -> FaceSet:
    """Aligned faces from `folder`; `limit` picks that many at random (fixed `seed`), in file order."""
    from lafs_edge.image import read_image
    from lafs_edge.image_folders import scan_labelled, to_112
    from lafs_edge.landmark_lists import LandmarkFaces

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"face folder not found: {folder}")
    if (folder / "landmarks.txt").is_file():
        faces = LandmarkFaces(folder / "landmarks.txt", folder, size=SIZE)
        chosen = _pick(len(faces), limit, seed)
        images = [faces[i] for i in chosen]
        return FaceSet(_stack(images, folder), None, [str(faces.entries[i][0]) for i in chosen])
    try:
        named = scan_labelled(folder)
    except UserError:
        raise UserError(f"no faces found in {folder} (want images, or landmarks.txt + images)") from None
    chosen = _pick(len(named), limit, seed)
    images = []
    for i in chosen:
        image = read_image(named[i][0])
        images.append(image if image.shape[:2] == (SIZE, SIZE) else to_112(image, SIZE))
    identities = [named[i][1] for i in chosen]
    unique = sorted(set(identities))
    labels = None
    if len(unique) < len(identities):
        index = {name: k for k, name in enumerate(unique)}
        labels = np.array([index[n] for n in identities], dtype=np.int64)
    return FaceSet(_stack(images, folder), labels, [str(named[i][0]) for i in chosen])


def _pick(count: int, limit: int | None, seed: int) -> list[int]:
    if limit is None or limit >= count:
        return list(range(count))
    return sorted(np.random.default_rng(seed).choice(count, limit, replace=False).tolist())


def _stack(images: list[np.ndarray], folder: Path) -> np.ndarray:
    if not images:
        raise UserError(f"no faces found in {folder}")
    return np.stack(images)
