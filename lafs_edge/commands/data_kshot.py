"""`lafs-edge data kshot ROOT --k K --out FILE`: k images per identity from a fraction of the
identities, chosen with a fixed seed, written as a list file that training and eval read back."""
from __future__ import annotations

import argparse
from lafs_edge.commands.gallery_common import number


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="labelled folder")
    parser.add_argument("--k", type=number(1, 1e6, integer=True), required=True, help="images per identity")
    parser.add_argument("--fraction", type=float, default=1.0, help="fraction of identities (0, 1]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="list file to write")


def run(args: argparse.Namespace) -> int:
    from lafs_edge.train.data.kshot import write_kshot_list

    selected = write_kshot_list(args.root, args.out, args.k, args.fraction, args.seed)
    identities = len({name for _, name in selected})
    print(f"wrote {len(selected)} images of {identities} identities (k={args.k}, "
          f"fraction={args.fraction}, seed={args.seed}) to {args.out}")
    return 0
