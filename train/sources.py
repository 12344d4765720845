"""Face sources for the unlabelled stages (pretrain, distill): every item is the original image,
its 5 points when known, and a label when known, so a stage can warp any view of the face for
any alignment template straight from the original pixels (one resampling, not two).

    data.format = landmarks   a 5-point list (wild5's landmarks.txt): aligned to the template
                  folder      a folder (or list file) of already aligned / tight face crops;
                              crops that are not 112x112 are letterboxed (`to_112`)
                  recordio    InsightFace RecordIO of aligned 112x112 crops (data.bgr: MS1MV3)
                  webdataset  tar shards of crops (`lafs-edge data pack --format webdataset`),
                              streamed by the Trainer; crops that are not 112x112 are letterboxed
                  synthetic   SyntheticFaces (engine tests and benchmarks only)
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lafs_edge.align import ARCFACE_TEMPLATE_112, CROP_SIZE, similarity_transform
from lafs_edge.errors import UserError
from lafs_edge.image import MEAN, STD, read_image

if TYPE_CHECKING:
    from lafs_edge.train.engine.batching import SizedDataset

NO_LABEL = -1


class FaceSource(Dataset):
    """Items (image RGB uint8 (H, W, 3), points (5, 2) float64 or None, label int or -1)."""

    def __init__(self, entries: list[tuple[Path, np.ndarray | None, int]], num_classes: int = 0,
                 reader=read_image):
        self.entries, self.num_classes, self.reader = entries, num_classes, reader

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int):
        path, points, label = self.entries[i]
        image = self.reader(path)
        return (image if points is not None else _letterboxed(image)), points, label


def _letterboxed(image: np.ndarray) -> np.ndarray:
    """A crop without points, letterboxed to 112x112 unless it has that size already."""
    if image.shape[:2] != (CROP_SIZE, CROP_SIZE):
        from lafs_edge.image_folders import to_112

        image = to_112(image, CROP_SIZE)
    return image


def _shard_item(image: np.ndarray, label: int):
    """A shard sample as a source item."""
    return _letterboxed(image), None, label


class _PairSource(Dataset):
    """(image, label) items of an aligned-crop dataset (synthetic, RecordIO) as source items."""

    def __init__(self, faces: SizedDataset, num_classes: int):
        self.faces, self.num_classes = faces, num_classes

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, i: int):
        image, label = self.faces[i]
        return image, None, label


def build_source(data_cfg: dict[str, Any], seed: int, labelled: bool = False) -> SizedDataset:
    """The configured face source; `labelled` requires identities (folder layout or list)."""
    kind = data_cfg["format"]
    if kind == "synthetic":
        from lafs_edge.train.supervised import SyntheticFaces

        classes = data_cfg["synthetic_classes"]
        return _PairSource(SyntheticFaces(data_cfg["synthetic_size"], classes, seed), classes)
    if kind == "recordio":
        from lafs_edge.train.data.recordio import RecordIODataset

        if not data_cfg["root"]:
            raise UserError("data.root is required for format=recordio (train.rec + train.idx)")
        records = RecordIODataset(data_cfg["root"], bgr=bool(data_cfg["bgr"]))
        return _PairSource(records, records.num_classes if labelled else 0)
    if kind == "landmarks":
        from lafs_edge.landmark_lists import LandmarkFaces

        if labelled:
            raise UserError("data.format=landmarks has no identities; labels need format=folder")
        if not data_cfg["list_file"]:
            raise UserError("data.list_file is required for format=landmarks (a 5-point list "
                            "such as wild5/landmarks.txt)")
        faces = LandmarkFaces(data_cfg["list_file"], root=data_cfg["root"])
        return FaceSource([(p, pts, NO_LABEL) for p, pts in faces.entries])
    if kind == "folder":
        from lafs_edge.train.data.folders import LabelledFolder, UnlabelledFolder

        if not data_cfg["root"]:
            raise UserError("data.root is required for format=folder")
        if labelled:
            folder = LabelledFolder(data_cfg["root"], list_file=data_cfg["list_file"])
            return FaceSource([(p, None, y) for p, y in folder.samples], folder.num_classes)
        unlabelled = UnlabelledFolder(data_cfg["root"], list_file=data_cfg["list_file"])
        return FaceSource([(p, None, NO_LABEL) for p in unlabelled.paths])
    if kind == "webdataset":
        from lafs_edge.train.data.webdataset import ShardSource

        return ShardSource(data_cfg["root"], bgr=bool(data_cfg["bgr"]), labelled=labelled,
                           item=_shard_item)
    raise UserError("data.format must be landmarks, folder, recordio, webdataset or synthetic, "
                    f"got {kind!r}")


def student_matrix(points: np.ndarray | None) -> np.ndarray:
    """3x3 matrix from the source image to the 112x112 ArcFace crop (identity for crops that
    are already aligned or letterboxed)."""
    if points is None:
        return np.eye(3)
    return _to3x3(similarity_transform(points, ARCFACE_TEMPLATE_112))


def template_change(points: np.ndarray | None, template: np.ndarray) -> np.ndarray:
    """3x3 matrix from 112x112 ArcFace crop coordinates to the crop a model with `template`
    expects: M_t o M_s^-1 from the face's own points (exact), or the template-to-template
    similarity when the source has no points (exact when the face sits on the template)."""
    if points is None:
        return _to3x3(similarity_transform(ARCFACE_TEMPLATE_112, template))
    m_t = _to3x3(similarity_transform(points, template))
    return m_t @ np.linalg.inv(student_matrix(points))


def _to3x3(matrix: np.ndarray) -> np.ndarray:
    return np.vstack([matrix, [0.0, 0.0, 1.0]])


def warp(image: np.ndarray, matrix: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear warp with the black border `align_face` uses."""
    import cv2

    return cv2.warpAffine(image, matrix[:2], (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def chw_uint8(crop: np.ndarray) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> uint8 (3, H, W): workers ship bytes, the device normalises."""
    return torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))


def normalise(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 in [-1, 1], the project's one normalisation."""
    return (batch.float() - MEAN) / STD


class AlignedCrop:
    """(image, points, label), rng -> (clean aligned 112x112 uint8 (3, H, W), label): the
    pretraining input (its views are made on the device)."""

    def __call__(self, item, rng: np.random.Generator):
        image, points, label = item
        return chw_uint8(warp(image, student_matrix(points), CROP_SIZE, CROP_SIZE)), label
