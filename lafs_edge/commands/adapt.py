"""`lafs-edge adapt --gallery FILE [--model MODEL]`: train the on-device head (a linear adapter
plus one prototype per person, CosFace margin) on augmented views of the enrolled people's stored
crops; stored in the gallery with the model fingerprint and used by `identify` and the demo.
`--remove` deletes it. See lafs_edge/gallery/adapt.py."""
from __future__ import annotations

import argparse

from lafs_edge.commands.gallery_common import (add_gallery_argument, add_model_argument, number,
                                               model_artifact)


def configure(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    add_gallery_argument(parser)
    parser.add_argument("--views", type=number(0, 1000, integer=True), default=8, help="augmented views per stored crop")
    parser.add_argument("--steps", type=number(1, 1e6, integer=True), default=200, help="training steps (full batch)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--remove", action="store_true",
                        help="delete the stored adapter instead (identify falls back to the model)")


def run(args: argparse.Namespace) -> int:
    from lafs_edge.errors import UserError
    from lafs_edge.gallery import Gallery
    from lafs_edge.gallery.adapt import AdaptConfig, adapt_gallery, drop_adapters

    with Gallery(args.gallery, create=False, timeout=args.busy_timeout) as gallery:
        if args.remove:
            with gallery.transaction() as db:
                drop_adapters(db)
            gallery.compact()
            print(f"removed the adapter from {args.gallery}")
            return 0
        if args.views < 0 or args.steps < 1:
            raise UserError("--views must be >= 0 and --steps >= 1")
        from lafs_edge.runtime.embedder import Embedder

        embedder = Embedder.from_artifact(model_artifact(args, gallery), threads=args.threads)
        config = AdaptConfig(views=args.views, steps=args.steps, seed=args.seed)
        report = adapt_gallery(gallery, embedder, config, progress=True)
    print(f"adapted {report.people} people from {report.crops} crops ({report.views} views): "
          f"embedding {report.seconds_views:.1f} s, training {report.seconds_train:.1f} s; "
          f"view accuracy {report.train_accuracy_before:.3f} -> {report.train_accuracy_after:.3f} "
          f"(stored in {args.gallery}, model {embedder.fingerprint[:12]})")
    return 0
