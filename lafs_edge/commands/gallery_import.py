"""`lafs-edge gallery import FILE.json --gallery FILE [--model MODEL]`: merge an export into a
gallery (created if absent). The whole file is checked first (names, vector sizes, finite unit
vectors, PNG crops, the model fingerprint) and refused, naming the first bad record, before the
gallery is created or changed. Refused when the export comes from another model than the
gallery's (or than --model's)."""
from __future__ import annotations

import argparse
from pathlib import Path

from lafs_edge.commands.gallery_common import add_gallery_argument, model_artifact
from lafs_edge.commands.model_option import HELP


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a file written by `lafs-edge gallery export`")
    add_gallery_argument(parser)
    parser.add_argument("--model", help=f"also require the export to come from this model: {HELP}")


def run(args: argparse.Namespace) -> int:
    from lafs_edge.gallery import Gallery
    from lafs_edge.gallery.transfer import read_export

    fingerprint, dim = None, None
    if args.model:
        from lafs_edge.runtime.embedder import Embedder

        embedder = Embedder.from_artifact(model_artifact(args))
        fingerprint, dim = embedder.fingerprint, embedder.embedding_dim
    dim = dim or _gallery_dim(Path(args.gallery), args.busy_timeout)
    export = read_export(args.file, dim)   # everything checked before the gallery is touched
    with Gallery(args.gallery, timeout=args.busy_timeout) as gallery:
        count = gallery.merge(export, fingerprint, args.file)
        people = len(gallery.people())
    print(f"imported {count} shot(s) from {args.file}; {args.gallery} holds {people} people")
    return 0


def _gallery_dim(path: Path, timeout: float) -> int | None:
    from lafs_edge.gallery import Gallery

    if not path.exists():
        return None
    with Gallery(path, readonly=True, timeout=timeout) as gallery:
        return gallery.embedding_dim()
