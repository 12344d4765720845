"""`lafs-edge enroll NAME IMG... [--model MODEL] --gallery FILE`: add a person from 1-k photos
(no --model: the shipped student).

Every photo must show exactly one face. Photos failing the quality gate (face too small, blurry,
turned away) or nearly identical to a kept one are skipped with the reason; an unreadable photo,
a photo with no face or several faces stops the command before anything is written. Photos added
under a name already enrolled must match that person's shots at the model's threshold (a
different face under a taken name would otherwise merge silently); `--allow-mismatch` overrides."""
from __future__ import annotations

import argparse

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
    parser.add_argument("--min-eye-distance", type=number(1, 10000), default=20.0,
                        help="pixels (1-10000)")
    parser.add_argument("--min-sharpness", type=number(0, 1e6), default=40.0,
                        help="variance of the Laplacian of the 112x112 crop (0-1e6)")
    parser.add_argument("--max-yaw", type=number(0, 2, low_open=True), default=0.8,
                        help="nose offset from the eye midpoint over half the eye distance "
                             "(0-2; ~1 is a three-quarter profile)")


def run(args: argparse.Namespace) -> int:
    import sys

    from lafs_edge.gallery import Gallery, QualityGate
    from lafs_edge.gallery.store import check_name

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
        # the same-person check runs inside the store's write transaction (a concurrent
        # enrollment under the same name is seen); the name is the one first enrolled
        result = gallery.enroll(name, shots, embedder.fingerprint, embedder.label,
                                threshold=recognizer.threshold, allow_mismatch=args.allow_mismatch)
        name = result.name
        total = next(p.shots for p in gallery.people() if p.name == name)
    if result.mismatch is not None:
        print(f"warning: {name!r} is already enrolled and these photos do not match their shots "
              f"(best cosine {result.mismatch:.3f}, threshold {recognizer.threshold:.3f}): a "
              "different person? Added them anyway (--allow-mismatch)", file=sys.stderr)
    for source, reason in result.skipped:
        print(f"skipped {source}: {reason}")
    print(f"enrolled {name}: {len(result.added)} shot(s) added, {total} in total "
          f"({args.gallery}, model {embedder.label} {embedder.fingerprint[:12]})")
    return 0


def open_recognizer_checked(args: argparse.Namespace):
    """The recognizer, after making sure an existing gallery belongs to this model (so a wrong
    --model fails before the photos are processed)."""
    from pathlib import Path

    from lafs_edge.gallery import Gallery

    recognizer = open_recognizer(args)
    if Path(args.gallery).exists():
        with Gallery(args.gallery, readonly=True, timeout=args.busy_timeout) as gallery:
            gallery.check_model(recognizer.embedder.fingerprint, recognizer.embedder.label)
    return recognizer
