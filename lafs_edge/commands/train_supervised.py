"""`lafs-edge train supervised --config FILE.yaml key=value ...`: stage 1, supervised part fViT.

Runs the same on a CPU, one GPU, or many GPUs and nodes: launch it with
`torchrun --nproc_per_node N -m lafs_edge.cli train supervised ...` for DDP (docs/training.md).
"""
from __future__ import annotations

import argparse

from lafs_edge.commands.train_common import configure as _configure
from lafs_edge.commands.train_common import run_stage


def configure(parser: argparse.ArgumentParser) -> None:
    _configure(parser, "supervised")


def run(args: argparse.Namespace) -> int:
    return run_stage(args, "supervised", "supervised")
