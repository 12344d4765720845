"""Arguments and helpers shared by enroll, identify and the gallery sub-commands."""
from __future__ import annotations

import argparse
import math

from lafs_edge.commands.model_option import HELP, resolve_model

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
                             "(default: the shipped student)")
    parser.add_argument("--threads", type=number(1, MAX_THREADS, integer=True), default=None,
                        help="CPU threads for the model")


def model_artifact(args: argparse.Namespace):
    """The artifact folder of --model, or of the shipped student when none is given."""
    if args.model:
        return resolve_model(args.model).artifact()
    from lafs_edge.commands.artifacts import default_artifact

    return default_artifact()


def add_threshold_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threshold", type=number(-1, 1), default=None,
                        help="open-set cosine threshold in [-1, 1] (default: the model "
                             "manifest's)")


def open_recognizer(args: argparse.Namespace, gallery=None, threshold: float | None = None):
    from lafs_edge.gallery import Recognizer
    from lafs_edge.runtime.embedder import Embedder

    return Recognizer(Embedder.from_artifact(model_artifact(args), threads=args.threads), gallery=gallery,
                      threshold=threshold)
