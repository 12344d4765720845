"""IJB-B / IJB-C 1:1 template verification from the official meta layout, as InsightFace's
`eval_ijbc.py` runs it.

Layout under ROOT (NAME = ijbb or ijbc):
  meta/NAME_face_tid_mid.txt          `image_name template_id media_id` per face
  meta/NAME_template_pair_label.txt   `template1 template2 label` per pair (1 = same person)
  meta/NAME_name_5pts_score.txt       `image_name x1 y1 ... x5 y5 detector_score` per face
  loose_crop/image_name               the loose face crops the points refer to

Faces are aligned with `lafs_edge.align.align_face` (the one alignment path) to 112x112. Image
features: embedding (+ embedding of the mirror, `flip`), then L2-normalised unless `norm_score`
keeps the norm, times the detector score if `detector_score` (InsightFace's F1/N1/D1 modes).
A template's feature is the sum over its media of the mean feature of that media's faces
(frames of one video count once), L2-normalised; a pair's score is the cosine of its templates.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lafs_edge.errors import UserError

IJB_FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


@dataclass
class IJBMeta:
    names: list[str]          # image file names, in meta order
    templates: np.ndarray     # template id per image
    medias: np.ndarray        # media id per image
    landmarks: np.ndarray     # (N, 5, 2) in loose-crop pixels
    detector_scores: np.ndarray
    pairs: np.ndarray         # (P, 2) template ids
    labels: np.ndarray        # (P,) bool


def find_prefix(root: Path) -> str:
    found = sorted(p.name[:-len("_face_tid_mid.txt")] for p in (root / "meta").glob("*_face_tid_mid.txt"))
    if len(found) != 1:
        raise UserError(f"{root}/meta: expected one *_face_tid_mid.txt (ijbb or ijbc), found {found}")
    return found[0]


def _read_table(path: Path, columns: int) -> list[list[str]]:
    if not path.is_file():
        raise UserError(f"IJB meta file not found: {path}")
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    bad = next((n for n, row in enumerate(rows, 1) if len(row) != columns), None)
    if bad is not None:
        raise UserError(f"{path}:{bad}: expected {columns} fields")
    return rows


def read_meta(root: str | os.PathLike, prefix: str | None = None) -> IJBMeta:
    root = Path(root)
    prefix = prefix or find_prefix(root)
    faces = _read_table(root / "meta" / f"{prefix}_face_tid_mid.txt", 3)
    points = _read_table(root / "meta" / f"{prefix}_name_5pts_score.txt", 12)
    pairs = _read_table(root / "meta" / f"{prefix}_template_pair_label.txt", 3)
    if [r[0] for r in faces] != [r[0] for r in points]:
        raise UserError(f"{prefix}: face list and 5-point list name different images (or order)")
    try:
        values = np.array([[float(v) for v in r[1:]] for r in points], dtype=np.float64)
        return IJBMeta(
            names=[r[0] for r in faces],
            templates=np.array([int(r[1]) for r in faces]),
            medias=np.array([int(r[2]) for r in faces]),
            landmarks=values[:, :10].reshape(-1, 5, 2), detector_scores=values[:, 10],
            pairs=np.array([[int(r[0]), int(r[1])] for r in pairs]),
            labels=np.array([int(r[2]) for r in pairs]) == 1)
    except ValueError as e:
        raise UserError(f"{root}/meta: non-numeric field ({e})") from None


def aligned_faces(root: str | os.PathLike, meta: IJBMeta, size: int = 112):
    """Yields each face of `meta`, aligned to the ArcFace template."""
    from lafs_edge.align import align_face
    from lafs_edge.image import read_image

    crops = Path(root) / "loose_crop"
    for name, points in zip(meta.names, meta.landmarks):
        yield align_face(read_image(crops / name), points, size=size)


def image_features(raw: np.ndarray, detector_scores: np.ndarray, norm_score: bool = True,
                   detector_score: bool = True) -> np.ndarray:
    """InsightFace's per-image feature: raw (flip-summed) embeddings, normalised unless
    `norm_score`, weighted by the detector score if `detector_score`."""
    features = np.asarray(raw, dtype=np.float64)
    if not norm_score:
        features = features / np.linalg.norm(features, axis=1, keepdims=True)
    if detector_score:
        features = features * np.asarray(detector_scores, dtype=np.float64)[:, None]
    return features


def template_features(features: np.ndarray, templates: np.ndarray,
                      medias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(L2-normalised template features, sorted unique template ids): per template, the sum over
    its media of the mean feature of that media's images."""
    unique_templates = np.unique(templates)
    out = np.zeros((unique_templates.size, features.shape[1]))
    for row, template in enumerate(unique_templates):
        members = np.nonzero(templates == template)[0]
        for media in np.unique(medias[members]):
            out[row] += features[members[medias[members] == media]].mean(axis=0)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12), unique_templates


def template_pair_scores(template_feats: np.ndarray, unique_templates: np.ndarray,
                         pairs: np.ndarray) -> np.ndarray:
    index = np.searchsorted(unique_templates, pairs)
    index = np.clip(index, 0, unique_templates.size - 1)
    if not np.array_equal(unique_templates[index], pairs):
        missing = pairs[unique_templates[index] != pairs][0]
        raise UserError(f"pair list names template {missing}, which has no faces")
    return np.einsum("ij,ij->i", template_feats[index[:, 0]], template_feats[index[:, 1]])


def evaluate_ijb(raw_embeddings: np.ndarray, meta: IJBMeta, norm_score: bool = True,
                 detector_score: bool = True, fars=IJB_FARS) -> dict:
    """TAR at each FAR (and AUC) over the template pairs, from per-face raw embeddings."""
    from sklearn.metrics import auc

    from lafs_edge.verification import roc_curve, tar_at_far

    features = image_features(raw_embeddings, meta.detector_scores, norm_score, detector_score)
    template_feats, unique = template_features(features, meta.templates, meta.medias)
    scores = template_pair_scores(template_feats, unique, meta.pairs)
    fpr, tpr, _ = roc_curve(scores, meta.labels)
    negatives = int((~meta.labels).sum())
    return {"faces": len(meta.names), "templates": int(unique.size), "pairs": int(scores.size),
            "genuine": int(meta.labels.sum()), "impostor": negatives,
            "auc": float(auc(fpr, tpr)),
            "tar_at_far": {f"{far:g}": {"tar": tar_at_far(fpr, tpr, far),
                                        "resolvable": bool(negatives * far >= 1)} for far in fars}}
