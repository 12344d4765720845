"""`lafs-edge identify IMG... --model ARTIFACT --gallery FILE`: who is in these photos?

Each photo may hold any number of faces: detect, align, embed (one batch per photo), match.
One line per face: `PHOTO face N x0,y0,x1,y1 NAME score` or `... unknown score (best NAME)`.
`--timings` adds the per-stage milliseconds (median over `--repeat` runs of every photo)."""
from __future__ import annotations

import argparse

from .gallery_common import add_gallery_argument, add_model_argument


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="photos")
    add_model_argument(parser)
    add_gallery_argument(parser)
    parser.add_argument("--threshold", type=float, default=None,
                        help="open-set cosine threshold (default: the model manifest's)")
    parser.add_argument("--no-adapter", action="store_true",
                        help="ignore the gallery's on-device adapter (`lafs-edge adapt`)")
    parser.add_argument("--timings", action="store_true", help="print per-stage milliseconds")
    parser.add_argument("--repeat", type=int, default=1,
                        help="with --timings: process every photo this many times (after one "
                             "warm-up) and report the median")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..errors import UserError
    from ..gallery import STAGES, Gallery
    from ..image import read_image
    from .gallery_common import open_recognizer

    images = [(path, read_image(path)) for path in args.images]  # all readable before any output
    with Gallery(args.gallery, create=False) as gallery:
        recognizer = open_recognizer(args, gallery, args.threshold)
        if recognizer.threshold is None:
            raise UserError("the model's manifest has no threshold; pass --threshold")
        gallery.check_model(recognizer.embedder.fingerprint, recognizer.embedder.label)
        recognizer.use_adapter = not args.no_adapter
        found, samples = 0, {stage: [] for stage in STAGES}
        for path, image in images:
            results = recognizer.identify(image)
            _print_results(path, results)
            found += len(results)
            if args.timings:
                for _ in range(max(args.repeat, 1)):
                    recognizer.identify(image)
                    for stage in STAGES:
                        samples[stage].append(recognizer.timings[stage])
    if args.timings:
        medians = {stage: float(np.median(values)) for stage, values in samples.items()}
        parts = "  ".join(f"{stage} {ms:.1f}" for stage, ms in medians.items())
        print(f"timings (ms, median of {len(samples['detect'])} runs): {parts}  "
              f"total {sum(medians.values()):.1f}")
    return 0 if found else 1


def _print_results(path, results) -> None:
    if not results:
        print(f"{path}: no face found")
    for number, result in enumerate(results, 1):
        box = ",".join(str(int(round(v))) for v in result.face.box)
        match = result.match
        who = (f"{match.name} {match.score:.3f}" if match.known
               else f"unknown {match.score:.3f} (best {match.best})")
        print(f"{path} face {number} {box} {who}")
