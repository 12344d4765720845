"""Arguments and helpers shared by enroll, identify and the gallery sub-commands."""
from __future__ import annotations

import argparse
import math

from lafs_edge.commands.model_option import HELP, resolve_model
from lafs_edge.errors import UserError

MAX_THREADS = 256


def number(low: float, high: float, integer: bool = False, low_open: bool = False):
    """An argparse type: a finite number in [low, high] (or (low, high] with `low_open`).
    NaN and infinities are refused: either would silently switch a check off."""
    kind = "an integer" if integer else "a number"
    bounds = f"{'(' if low_open else '['}{low:g}, {high:g}]"

    def parse(text: str):
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind} in {bounds}, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        if not math.isfinite(value) or too_low or value > high:
            raise argparse.ArgumentTypeError(f"must be {kind} in {bounds}, got {text}")
        return value

    parse.__name__ = "integer" if integer else "number"   # argparse names the type in errors
    return parse


def add_gallery_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gallery", required=True,
                        help="gallery file (SQLite; created 0600 on first enrollment)")
    parser.add_argument("--busy-timeout", type=number(0, 3600), default=30.0,
                        help="seconds to wait for another process using the gallery "
                             "(default 30)")


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help=f"{HELP}; a checkpoint or a name is exported once into the cache "
                             "(default: the model the gallery was enrolled with, else the "
                             "shipped student)")
    parser.add_argument("--threads", type=number(1, MAX_THREADS, integer=True), default=None,
                        help="CPU threads for the model")


def model_artifact(args: argparse.Namespace, gallery=None):
    """The artifact folder of --model; without one, of the model `gallery` records (the one it
    was enrolled with), else of the shipped student."""
    return artifact_for(args.model, gallery)


def artifact_for(model: str | None, gallery=None):
    """`model_artifact` for a --model value (None: the gallery's recorded model, else the
    shipped student); shared with the Python API (lafs_edge.FaceRecognizer)."""
    if model:
        return resolve_model(model).artifact()
    recorded = gallery.model_source if gallery is not None else None
    if recorded:
        try:
            return resolve_model(recorded).artifact()
        except UserError as e:
            raise UserError(f"{gallery.path} was enrolled with --model {recorded}, which cannot "
                            f"be opened now ({e}); pass --model") from None
    from lafs_edge.commands.artifacts import default_artifact

    return default_artifact()


def source_for(model: str | None, gallery=None) -> str:
    """What a gallery records as its model: the --model value that opens it again from any
    folder (a shipped name as it is, a path made absolute), or the shipped student's name."""
    from pathlib import Path

    from lafs_edge.models.pretrained import shipped
    from lafs_edge.runtime.shipped import default_student

    value = model or (gallery.model_source if gallery is not None else None)
    if not value:
        return default_student()
    return value if value in shipped() else str(Path(value).resolve())


def add_threshold_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threshold", type=number(-1, 1), default=None,
                        help="open-set cosine threshold in [-1, 1] (default: the model "
                             "manifest's)")


def open_recognizer(args: argparse.Namespace, gallery=None, threshold: float | None = None,
                    analyzer=None):
    """The Recognizer of --model (or of the gallery's recorded model, or the shipped student)."""
    from lafs_edge.gallery import Recognizer
    from lafs_edge.runtime.embedder import Embedder

    embedder = Embedder.from_artifact(model_artifact(args, gallery), threads=args.threads)
    recognizer = Recognizer(embedder, analyzer, gallery=gallery, threshold=threshold)
    recognizer.model_source = source_for(args.model, gallery)
    return recognizer
