"""`lafs-edge enroll NAME IMG... [--model MODEL] --gallery FILE`: add a person from 1-k photos
(no --model: the shipped student).

Every photo must show exactly one face. Photos failing the quality gate (face too small, blurry,
turned away) or nearly identical to a kept one are skipped with the reason; an unreadable photo,
a photo with no face or several faces stops the command before anything is written. Photos added
under a name already enrolled must match that person's shots at the model's threshold (a
different face under a taken name would otherwise merge silently; `--allow-mismatch` overrides), and must not
match another enrolled person (the same face under a second name; `--allow-lookalike`
overrides). Both rules are `Recognizer.check_enrollment`, shared with the demo window and the
Python API."""
from __future__ import annotations

import argparse
import sys

from lafs_edge.commands.gallery_common import (add_gallery_argument, add_model_argument, number,
                                               open_recognizer)
from lafs_edge.errors import UserError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the person's name")
    parser.add_argument("images", nargs="+", help="photos of that person, one face each")
    add_model_argument(parser)
    add_gallery_argument(parser)
    parser.add_argument("--no-crops", action="store_true",
                        help="do not keep the aligned face crops (on-device adaptation needs them)")
    parser.add_argument("--allow-mismatch", action="store_true",
                        help="add the photos to an enrolled person even when they do not match "
                             "that person's shots")
    parser.add_argument("--allow-lookalike", action="store_true",
                        help="enroll the photos even when they match another enrolled person "
                             "(twins, or a deliberate second name)")
    parser.add_argument("--min-eye-distance", type=number(1, 10000), default=20.0,
                        help="pixels (1-10000)")
    parser.add_argument("--min-sharpness", type=number(0, 1e6), default=40.0,
                        help="variance of the Laplacian of the 112x112 crop (0-1e6)")
    parser.add_argument("--max-yaw", type=number(0, 2, low_open=True), default=0.8,
                        help="nose offset from the eye midpoint over half the eye distance "
                             "(0-2; ~1 is a three-quarter profile)")


def run(args: argparse.Namespace) -> int:
    from lafs_edge.gallery import Gallery, QualityGate
    from lafs_edge.gallery.names import check_name

    name = check_name(args.name)
    recognizer = open_recognizer_checked(args)
    gate = QualityGate(args.min_eye_distance, args.min_sharpness, args.max_yaw)
    shots, rejected = recognizer.enrollment_shots(args.images, gate, keep_crops=not args.no_crops)
    for source, reason in rejected:
        print(f"skipped {source}: {reason}")
    if not shots:
        raise UserError(f"no photo of {name!r} passed the quality gate; nothing enrolled")
    embedder = recognizer.embedder
    with Gallery(args.gallery, timeout=args.busy_timeout) as gallery:
        recognizer.gallery = gallery
        result, warnings = recognizer.enroll(name, shots, args.allow_mismatch,
                                             args.allow_lookalike)
        name = result.name   # the spelling the person was first enrolled by
        total = next(p.shots for p in gallery.people() if p.name == name)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for source, reason in result.skipped:
        print(f"skipped {source}: {reason}")
    print(f"enrolled {name}: {len(result.added)} shot(s) added, {total} in total "
          f"({args.gallery}, model {embedder.label} {embedder.fingerprint[:12]})")
    return 0


def open_recognizer_checked(args: argparse.Namespace):
    """The recognizer (of --model, else of an existing gallery's own model), after making sure
    an existing gallery belongs to it (so a wrong --model fails before the photos are
    processed)."""
    from pathlib import Path

    from lafs_edge.gallery import Gallery

    if not Path(args.gallery).exists():
        return open_recognizer(args)
    with Gallery(args.gallery, readonly=True, timeout=args.busy_timeout) as gallery:
        recognizer = open_recognizer(args, gallery)
        gallery.check_model(recognizer.embedder.fingerprint, recognizer.embedder.label)
    recognizer.gallery = None   # that read-only handle is closed; run() opens it for writing
    return recognizer
