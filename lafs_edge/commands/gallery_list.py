"""`lafs-edge gallery list --gallery FILE`: the enrolled people and their number of shots."""
from __future__ import annotations

import argparse

from lafs_edge.commands.gallery_common import add_gallery_argument


def configure(parser: argparse.ArgumentParser) -> None:
    add_gallery_argument(parser)


def run(args: argparse.Namespace) -> int:
    import time

    from lafs_edge.gallery import Gallery
    from lafs_edge.gallery.names import printable

    with Gallery(args.gallery, readonly=True, timeout=args.busy_timeout) as gallery:
        people = gallery.people()
        fingerprint = gallery.fingerprint
        source = f" (--model {gallery.model_source})" if gallery.model_source else ""
        print(f"{args.gallery}: {len(people)} people, model {gallery.model_name or '-'} "
              f"{(fingerprint or '-')[:12]}{source}")
        for person in people:
            created = time.strftime("%Y-%m-%d %H:%M", time.localtime(person.created))
            print(f"{printable(person.name)}\t{person.shots} shot(s)\tenrolled {created}")
    return 0
