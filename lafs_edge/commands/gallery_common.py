"""Arguments and helpers shared by enroll, identify and the gallery sub-commands."""
from __future__ import annotations

import argparse


def add_gallery_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gallery", required=True,
                        help="gallery file (SQLite; created 0600 on first enrollment)")


def add_model_argument(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--model", required=required,
                        help="exported artifact folder (or its manifest.json)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the model")


def open_recognizer(args: argparse.Namespace, gallery=None, threshold: float | None = None):
    from ..gallery import Recognizer
    from ..runtime.embedder import Embedder

    return Recognizer(Embedder.from_artifact(args.model, threads=args.threads), gallery=gallery,
                      threshold=threshold)
