"""`lafs-edge gallery import FILE.json --gallery FILE [--model ARTIFACT]`: merge an export into a
gallery (created if absent). Refused when the export comes from another model than the gallery's
(or than --model's)."""
from __future__ import annotations

import argparse

from .gallery_common import add_gallery_argument


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a file written by `lafs-edge gallery export`")
    add_gallery_argument(parser)
    parser.add_argument("--model", help="also require the export to match this artifact's model")


def run(args: argparse.Namespace) -> int:
    from ..gallery import Gallery

    fingerprint = None
    if args.model:
        from ..runtime.embedder import Embedder

        fingerprint = Embedder.from_artifact(args.model).fingerprint
    with Gallery(args.gallery) as gallery:
        count = gallery.import_(args.file, fingerprint)
        people = len(gallery.people())
    print(f"imported {count} shot(s) from {args.file}; {args.gallery} holds {people} people")
    return 0
