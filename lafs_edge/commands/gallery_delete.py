"""`lafs-edge gallery delete NAME --gallery FILE`: remove a person; the rows are deleted (and
overwritten), the file vacuumed and its write-ahead log checkpointed and truncated. When another
process's open read keeps the old pages in the file, the command says so and exits 1: running
it again once that process has closed finishes the erasure."""
from __future__ import annotations

import argparse

from lafs_edge.commands.gallery_common import add_gallery_argument


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the person to remove")
    add_gallery_argument(parser)


def run(args: argparse.Namespace) -> int:
    import sys

    from lafs_edge.gallery import ErasureIncomplete, Gallery

    with Gallery(args.gallery, create=False, timeout=args.busy_timeout) as gallery:
        try:
            count = gallery.delete(args.name)
        except ErasureIncomplete as e:
            print(f"error: {args.name}: {e}", file=sys.stderr)
            return 1
    if count:
        print(f"deleted {args.name} ({count} shot(s)) from {args.gallery}; erased from the disk")
    else:
        print(f"{args.name} was already removed from {args.gallery}; finished erasing the "
              "deleted data from the disk")
    return 0
