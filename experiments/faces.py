"""What every study shares: the labelled evaluation faces aligned the way the device aligns them,
and one evaluation protocol (k-shot identification + verification) for any embedding function.

ORL and Yale go through the device pipeline (MediaPipe detection and face mesh -> 5 points ->
`lafs_edge.align.align_face`, the 112x112 ArcFace crop the students were trained on). Aligned
crops are cached in runs/experiments/aligned_<set>.npz (research images: never committed).

    k-shot identification: enroll k images per person (one template = mean of the k), identify
        the other images (rank-1), mean and std over seeds (`lafs_edge.train.evaluate.kshot`);
    verification: all genuine pairs and as many impostor pairs among the evaluated images,
        TAR at FAR 1e-2 and 10-fold accuracy (`lafs_edge.verification`).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
RUNS = REPO / "runs" / "experiments"
RESULTS = REPO / "docs" / "results"


def aligned_faces(name: str, data: Path = SHARED_DATA) -> tuple[np.ndarray, np.ndarray]:
    """(crops uint8 (N, 112, 112, 3) RGB, labels (N,) int) of ../shared/data/<name>; images in
    which MediaPipe finds no face are left out (and counted in the cache's `missed`)."""
    cache = RUNS / f"aligned_{name}.npz"
    if cache.is_file():
        saved = np.load(cache)
        return saved["crops"], saved["labels"]
    from lafs_edge.align import align_face
    from lafs_edge.fileio import atomic_write
    from lafs_edge.image import read_image
    from lafs_edge.landmarks import FaceAnalyzer
    from lafs_edge.train.data import LabelledFolder

    folder, analyzer = LabelledFolder(data / name), FaceAnalyzer()
    crops, labels, points, paths, missed = [], [], [], [], 0
    for path, label in folder.samples:
        image = read_image(path)
        faces = analyzer.analyze(image)
        if not faces:
            missed += 1
            continue
        crops.append(align_face(image, faces[0].points5))
        labels.append(label)
        points.append(faces[0].points5)
        paths.append(str(Path(path).relative_to(data)))
    crops, labels = np.stack(crops), np.array(labels)
    with atomic_write(cache) as f:
        np.savez(f, crops=crops, labels=labels, points=np.stack(points), paths=np.array(paths),
                 missed=missed)
    print(f"{name}: {len(crops)} faces aligned, {missed} without a detected face", flush=True)
    return crops, labels


def celeba_eval_faces(data: Path = SHARED_DATA) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """(image paths, 5 points (N, 5, 2), labels (N,)) of the CelebA *evaluation* identities
    (celeba/splits/eval_ids.txt: never in the training pool), with the 5 points the dataset
    ships (the same SCRFD points the training pool was aligned with)."""
    from lafs_edge.landmark_lists import LandmarkFaces

    root = data / "celeba"
    eval_ids = sorted((root / "splits" / "eval_ids.txt").read_text().split())
    faces = LandmarkFaces(root / "landmarks.txt", root=root)
    rows = [(path, pts) for path, pts in faces.entries if path.parent.name in eval_ids]
    labels = np.array([eval_ids.index(path.parent.name) for path, _ in rows])
    return [path for path, _ in rows], np.stack([pts for _, pts in rows]), labels


@functools.cache
def celeba_eval_crops(data: Path = SHARED_DATA) -> tuple[np.ndarray, np.ndarray]:
    """(112x112 ArcFace crops uint8 (N, 112, 112, 3) RGB, labels) of `celeba_eval_faces`, read
    once per process (the accuracy table and each shipped student's threshold use them)."""
    from lafs_edge.align import align_face
    from lafs_edge.image import read_image

    paths, points, labels = celeba_eval_faces(data)
    return np.stack([align_face(read_image(p), pts) for p, pts in zip(paths, points)]), labels


def face_points(name: str, data: Path = SHARED_DATA) -> tuple[list[Path], np.ndarray]:
    """(image paths, MediaPipe 5 points (N, 5, 2)) of the rows of `aligned_faces(name)`: for
    models with another alignment template (the external teacher)."""
    aligned_faces(name, data)
    saved = np.load(RUNS / f"aligned_{name}.npz")
    return [data / p for p in saved["paths"]], saved["points"]


def evaluate(embeddings: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 3),
             seeds: Sequence[int] = (0, 1, 2, 3, 4), roc: bool = False) -> dict:
    """k-shot rank-1 (mean, std over seeds) and verification figures of L2-normalised rows."""
    from lafs_edge.train.evaluate.kshot import identification_report, kshot_split

    out: dict = {}
    for k in ks:
        rank1 = [identification_report(embeddings, labels, kshot_split(labels, k, 0.0, s))["rank1"]
                 for s in seeds]
        out[f"rank1_k{k}"] = float(np.mean(rank1))
        out[f"rank1_k{k}_std"] = float(np.std(rank1))
    return {**out, **verification(embeddings, labels, roc_points=400 if roc else 0)}


def verification(embeddings: np.ndarray, labels: np.ndarray, roc_points: int = 0) -> dict:
    """Accuracy (10-fold) and TAR at FAR 1e-2 over all genuine pairs of these rows and as many
    impostor pairs; with `roc_points`, the ROC thinned to about that many points."""
    from lafs_edge.verification import make_pairs, pair_scores, roc_curve, verification_report

    first, second, issame = make_pairs(labels, seed=0)
    scores = pair_scores(embeddings, first, second)
    report = verification_report(scores, issame)
    out = {"verification_accuracy": float(report["accuracy"]),
           "tar_at_far_1e-2": float(report["tar_at_far"]["0.01"]["tar"]),
           "tar_at_far_1e-3": float(report["tar_at_far"]["0.001"]["tar"]),
           "pairs": int(len(issame))}
    if roc_points:
        fpr, tpr, _ = roc_curve(scores, issame)
        keep = np.unique(np.linspace(0, len(fpr) - 1, roc_points).astype(int))
        out["roc"] = {"fpr": fpr[keep].round(5).tolist(), "tpr": tpr[keep].round(5).tolist()}
    return out


def torch_embedder(forward: Callable) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 aligned crops (B, 112, 112, 3) -> (B, D): `forward` (a model, or any function of a
    normalised (B, 3, 112, 112) tensor) under no_grad, with the project's normalisation."""
    import torch

    from lafs_edge.image import MEAN, STD

    def embed(batch: np.ndarray) -> np.ndarray:
        x = (torch.from_numpy(batch).permute(0, 3, 1, 2).float() - MEAN) / STD
        with torch.no_grad():
            return forward(x).numpy()

    return embed


def normalised(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, np.float64)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)


def embed_with(embed: Callable[[np.ndarray], np.ndarray], crops: np.ndarray,
               batch: int = 64) -> np.ndarray:
    """Run `embed` (uint8 (B, 112, 112, 3) -> (B, D)) over all crops in batches."""
    return normalised(np.concatenate([embed(crops[i:i + batch])
                                      for i in range(0, len(crops), batch)]))


def write_json(path: Path, payload: dict) -> None:
    from lafs_edge.fileio import write_text_atomic

    write_text_atomic(path, json.dumps(payload, indent=1) + "\n")


def aligned_folder(name: str, data: Path = SHARED_DATA) -> Path:
    """The aligned crops written as an identity folder tree (runs/experiments/aligned/<name>/
    <label>/<row>.png), so `lafs-edge train finetune data.format=folder` reads exactly the
    crops `evaluate` sees; file stem = row index in `aligned_faces(name)`."""
    import cv2

    root = RUNS / "aligned" / name
    crops, labels = aligned_faces(name, data)
    done = root / ".complete"
    if done.is_file():
        return root
    for row, (crop, label) in enumerate(zip(crops, labels)):
        path = root / f"{label:03d}" / f"{row:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), crop[:, :, ::-1])
    done.write_text(f"{len(crops)}\n")
    return root
