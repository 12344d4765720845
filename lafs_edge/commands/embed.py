"""`lafs-edge embed IMAGE... --model NAME|CHECKPOINT --out FILE.npy`."""
from __future__ import annotations

import argparse
import os

import numpy as np

from ..errors import UserError
from ..fileio import atomic_write
from .gallery_common import number


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="aligned 112x112 face crops")
    parser.add_argument("--model", required=True,
                        help="registry name (random weights) or a lafs-edge checkpoint")
    parser.add_argument("--out", required=True, help="output .npy, one row per image")
    parser.add_argument("--batch-size", type=number(1, 65536, integer=True), default=32,
                        help="faces per forward pass (1-65536)")


def run(args: argparse.Namespace) -> int:
    import torch
    import torch.nn.functional as F

    from ..image import read_image, to_model_input
    from ..models import load_model

    model = load_model(args.model)
    size = model.image_size
    faces = []
    for path in args.images:
        image = read_image(path)
        if image.shape[:2] != (size, size):
            raise UserError(f"{path}: expected an aligned {size}x{size} face, got "
                            f"{image.shape[1]}x{image.shape[0]} (align it first)")
        faces.append(image)
    rows = []
    with torch.inference_mode():
        for start in range(0, len(faces), args.batch_size):
            batch = to_model_input(faces[start:start + args.batch_size])
            rows.append(F.normalize(model(batch), dim=1).numpy())
    embeddings = np.concatenate(rows).astype(np.float32)
    save_npy_atomic(args.out, embeddings)
    print(f"wrote {embeddings.shape[0]} x {embeddings.shape[1]} embeddings to {args.out}")
    return 0


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_write(path) as f:
        np.save(f, array)
