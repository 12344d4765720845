"""`lafs-edge gallery export OUT.json --gallery FILE`: people, vectors, crops and the model
fingerprint in one portable JSON file (written 0600 and atomically: it holds biometric data).
The gallery is only read; an output that is the gallery itself (or one of its SQLite files), a
folder or any SQLite database is refused, and any other existing file unless --force."""
from __future__ import annotations

import argparse

from lafs_edge.commands.gallery_common import add_gallery_argument


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="export file to write")
    add_gallery_argument(parser)
    parser.add_argument("--force", action="store_true",
                        help="replace an existing export file (never a database)")


def run(args: argparse.Namespace) -> int:
    from lafs_edge.gallery import Gallery

    with Gallery(args.gallery, readonly=True, timeout=args.busy_timeout) as gallery:
        count = gallery.export(args.out, force=args.force)
        people = len(gallery.people())
    print(f"exported {people} people ({count} shots) to {args.out}")
    return 0
