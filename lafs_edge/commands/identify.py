"""`lafs-edge identify IMG... [--model MODEL] --gallery FILE`: who is in these photos?
(no --model: the shipped student)

Each photo may hold any number of faces: detect, align, embed (one batch per photo), match.
One line per face: `PHOTO face N x0,y0,x1,y1 NAME score` or `... unknown score (best NAME)`.
Photos are read one at a time and each result is printed as soon as it is known, so memory stays
flat however many photos are given. `--timings` adds the per-stage milliseconds (median over
`--repeat` runs of every photo)."""
from __future__ import annotations

import argparse

from lafs_edge.commands.gallery_common import (add_gallery_argument, add_model_argument,
                                               add_threshold_argument, number)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="photos")
    add_model_argument(parser)
    add_gallery_argument(parser)
    add_threshold_argument(parser)
    parser.add_argument("--no-adapter", action="store_true",
                        help="ignore the gallery's on-device adapter (`lafs-edge adapt`)")
    parser.add_argument("--timings", action="store_true", help="print per-stage milliseconds")
    parser.add_argument("--repeat", type=number(1, 10000, integer=True), default=1,
                        help="with --timings: process every photo this many times (after one "
                             "warm-up) and report the median")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lafs_edge.commands.gallery_common import open_recognizer
    from lafs_edge.errors import UserError
    from lafs_edge.gallery import STAGES, Gallery

    missing = next((path for path in args.images if not Path(path).is_file()), None)
    if missing is not None:   # a typo fails before the models load, not halfway through
        raise UserError(f"image not found: {missing}")
    with Gallery(args.gallery, readonly=True, timeout=args.busy_timeout) as gallery:
        recognizer = open_recognizer(args, gallery, args.threshold)
        recognizer.require_threshold()
        gallery.check_model(recognizer.embedder.fingerprint, recognizer.embedder.label)
        recognizer.use_adapter = not args.no_adapter
        found = 0
        samples: dict[str, list[float]] = {stage: [] for stage in STAGES}
        for path in args.images:
            found += _identify_photo(recognizer, path, args.repeat if args.timings else 0,
                                     samples)
    if args.timings:
        _print_timings(samples)
    return 0 if found else 1


def _identify_photo(recognizer, path, repeat: int, samples: dict) -> int:
    """Read, identify and print one photo; returns its number of faces. The pixels are freed on
    return, so only one photo is ever in memory."""
    from lafs_edge.image import read_image

    image = read_image(path)
    results = recognizer.identify(image)
    print_results(path, results)
    if repeat:
        _time_stages(recognizer, image, repeat, samples)
    return len(results)


def _time_stages(recognizer, image, repeat: int, samples: dict) -> None:
    for _ in range(repeat):
        recognizer.identify(image)
        for stage, value in recognizer.timings.items():
            samples[stage].append(value)


def _print_timings(samples: dict) -> None:
    import numpy as np

    medians = {stage: float(np.median(values)) for stage, values in samples.items()}
    parts = "  ".join(f"{stage} {ms:.1f}" for stage, ms in medians.items())
    print(f"timings (ms, median of {len(samples['detect'])} runs): {parts}  "
          f"total {sum(medians.values()):.1f}")


def print_results(path, results) -> None:
    """One line per face; the file name and the names are escaped (gallery.names.printable),
    so a newline in a file name cannot forge a result line."""
    from lafs_edge.gallery.names import printable

    path = printable(path)
    if not results:
        print(f"{path}: no face found", flush=True)
    for index, result in enumerate(results, 1):
        box = ",".join(str(int(round(v))) for v in result.face.box)
        match = result.match
        who = (f"{printable(match.name)} {match.score:.3f}" if match.known
               else f"unknown {match.score:.3f} (best {printable(match.best)})")
        print(f"{path} face {index} {box} {who}", flush=True)
