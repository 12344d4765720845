"""`lafs-edge embed IMAGE... --model MODEL --out FILE.npy`: aligned faces of the model's crop size
(112x112 for the project's models) -> one L2-normalised row each. MODEL: an artifact folder (its
runtime and preprocessing), a checkpoint or a model name with shipped weights (PyTorch)."""
from __future__ import annotations

import argparse
import os

import numpy as np

from lafs_edge.commands.gallery_common import number
from lafs_edge.commands.model_option import HELP
from lafs_edge.errors import UserError
from lafs_edge.fileio import atomic_write


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="aligned face crops of the model's input size")
    parser.add_argument("--model", required=True, help=HELP)
    parser.add_argument("--out", required=True, help="output .npy, one row per image")
    parser.add_argument("--batch-size", type=number(1, 65536, integer=True), default=32,
                        help="faces per forward pass (1-65536)")


def run(args: argparse.Namespace) -> int:
    from lafs_edge.commands.model_option import resolve_model
    from lafs_edge.image import read_image
    from lafs_edge.runtime.embedder import Embedder, check_finite_embeddings

    model = resolve_model(args.model).load()
    embed = model.embed_crops if isinstance(model, Embedder) else _pytorch_embedder(model)
    width, height = model.crop_size if isinstance(model, Embedder) else (model.image_size,) * 2
    faces = []
    for path in args.images:
        image = read_image(path)
        if image.shape[:2] != (height, width):
            raise UserError(f"{path}: expected an aligned {width}x{height} face, got "
                            f"{image.shape[1]}x{image.shape[0]} (align it first)")
        faces.append(image)
    rows = [embed(np.stack(faces[start:start + args.batch_size]))
            for start in range(0, len(faces), args.batch_size)]
    embeddings = check_finite_embeddings(np.concatenate(rows).astype(np.float32), args.model)
    save_npy_atomic(args.out, embeddings)
    print(f"wrote {embeddings.shape[0]} x {embeddings.shape[1]} embeddings to {args.out}")
    return 0


def _pytorch_embedder(model):
    """Aligned RGB crops (B, H, W, 3) -> L2-normalised rows, in PyTorch."""
    import torch
    import torch.nn.functional as F

    from lafs_edge.image import to_model_input

    def embed(crops: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return F.normalize(model(to_model_input(crops)), dim=1).numpy()

    return embed


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_write(path) as f:
        np.save(f, array)
