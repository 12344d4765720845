"""`lafs-edge gallery import FILE.json --gallery FILE [--model MODEL]`: merge an export into a
gallery (created if absent), under enrolment's rules.

The whole file is checked first (names, one record per person, vector sizes, finite unit
vectors, PNG crops) and refused, naming the first bad record, before the gallery is created or
changed. Its model must be the gallery's; into a new gallery, --model's (no --model: the shipped
student, as for `enroll`), whose embedding size the vectors must have whatever fingerprint they
carry. Shots under an enrolled name must each match that person at the model's threshold (a
renamed export of someone else is refused, as `enroll` refuses their photos)."""
from __future__ import annotations

import argparse
from pathlib import Path

from lafs_edge.commands.gallery_common import add_gallery_argument, model_artifact
from lafs_edge.commands.model_option import HELP
from lafs_edge.errors import UserError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a file written by `lafs-edge gallery export`")
    add_gallery_argument(parser)
    parser.add_argument("--model", help=f"also require the export to come from this model: {HELP} "
                                        "(into a new gallery, default: the shipped student)")


def run(args: argparse.Namespace) -> int:
    from lafs_edge.gallery import Gallery
    from lafs_edge.gallery.rules import check_dimension
    from lafs_edge.gallery.transfer import read_export

    embedder = _model(args) if args.model else None   # a bad --model: said before the file
    bound = _gallery_binding(Path(args.gallery), args.busy_timeout)
    export = read_export(args.file, bound[1] if bound else None)   # before anything is touched
    fingerprint, threshold = None, None
    if embedder is None and bound is None:
        embedder = _model(args)   # the shipped student, as enroll uses
    if embedder is not None:
        if export.fingerprint != embedder.fingerprint:
            raise UserError(f"{args.file} was exported from model {export.model or '?'} "
                            f"(fingerprint {export.fingerprint[:12]}), not {embedder.label} "
                            f"(fingerprint {embedder.fingerprint[:12]}){_which(args)}")
        check_dimension(embedder.embedding_dim, export.dim, str(args.file),
                        f"the model {embedder.label} computes")
        fingerprint, threshold = embedder.fingerprint, embedder.threshold
    with Gallery(args.gallery, timeout=args.busy_timeout) as gallery:
        count = gallery.merge(export, fingerprint, args.file, threshold)
        people = len(gallery.people())
    print(f"imported {count} shot(s) from {args.file}; {args.gallery} holds {people} people")
    return 0


def _model(args: argparse.Namespace):
    from lafs_edge.runtime.embedder import Embedder

    return Embedder.from_artifact(model_artifact(args))


def _which(args: argparse.Namespace) -> str:
    if args.model:
        return ""
    return ("; a new gallery is bound to the shipped student unless --model names the export's "
            "model")


def _gallery_binding(path: Path, timeout: float) -> tuple[str, int | None] | None:
    """(fingerprint, vector size) the gallery is bound to; None for a new or empty one."""
    from lafs_edge.gallery import Gallery

    if not path.exists():
        return None
    with Gallery(path, readonly=True, timeout=timeout) as gallery:
        fingerprint = gallery.fingerprint
        return (fingerprint, gallery.embedding_dim()) if fingerprint else None
