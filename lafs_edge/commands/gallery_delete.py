"""`lafs-edge gallery delete NAME --gallery FILE`: remove a person; the rows are deleted (and
overwritten), the file vacuumed and its write-ahead log truncated."""
from __future__ import annotations

import argparse

from .gallery_common import add_gallery_argument


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the person to remove")
    add_gallery_argument(parser)


def run(args: argparse.Namespace) -> int:
    from ..gallery import Gallery

    with Gallery(args.gallery, create=False) as gallery:
        count = gallery.delete(args.name)
    print(f"deleted {args.name} ({count} shot(s)) from {args.gallery}")
    return 0
