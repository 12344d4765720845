"""`lafs-edge train supervised --config FILE.yaml key=value ...`: stage 1, supervised part fViT.

Runs the same on a CPU, one GPU, or many GPUs and nodes: launch it with
`torchrun --nproc_per_node N -m lafs_edge.cli train supervised ...` for DDP (docs/training.md).
"""
from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="YAML config merged over the packaged defaults (repeatable; a bare "
                             "name such as supervised_smoke picks a packaged config)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides parsed as YAML, e.g. optim.lr=5e-4 "
                             "model.arch=part_fvit_small data.root=/data/faces")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config and exit without training")


def run(args: argparse.Namespace) -> int:
    import os

    import yaml

    from ..train.config import load_config
    from ..train.loop import TrainingDiverged

    cfg = load_config("supervised", args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(cfg, sort_keys=False), end="")
        return 0
    from ..train.supervised import train

    rank = int(os.environ.get("RANK", "0"))
    try:
        result = train(cfg)
    except TrainingDiverged:
        if rank != 0:  # rank 0 prints the one message for all ranks
            return 2
        raise
    if rank == 0:
        first, last = result.losses[:1], result.losses[-1:]
        loss = f"loss {first[0]:.4f} -> {last[0]:.4f}, " if result.losses else ""
        print(f"trained steps {result.start_step} -> {result.final_step} of {result.total_steps}: "
              f"{loss}{result.images_per_s:.1f} images/s; model: {result.output_dir / 'model.pt'}")
    return 0
