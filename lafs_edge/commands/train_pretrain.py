"""`lafs-edge train pretrain --config FILE.yaml key=value ...`: stage 2, LAFS self-supervised
pretraining (DINO on landmark patches; `views.kind=random_crops` for the plain-DINO baseline).

Runs the same on a CPU, one GPU, or many GPUs and nodes: launch it with
`torchrun --nproc_per_node N -m lafs_edge.cli train pretrain ...` for DDP (docs/pretraining.md).
"""
from __future__ import annotations

import argparse

from lafs_edge.commands.train_common import configure as _configure
from lafs_edge.commands.train_common import run_stage


def configure(parser: argparse.ArgumentParser) -> None:
    _configure(parser, "pretrain")


def run(args: argparse.Namespace) -> int:
    return run_stage(args, "pretrain", "lafs")
