"""`lafs-edge train finetune --config FILE.yaml key=value ...`: stage 3, fine-tuning a pretrained
part fViT with CosFace/ArcFace on a (k-shot) labelled set, with landmark perturbation and
optional layer-wise lr decay. DDP with torchrun as every stage (docs/pretraining.md)."""
from __future__ import annotations

import argparse

from lafs_edge.commands.train_common import configure as _configure
from lafs_edge.commands.train_common import run_stage


def configure(parser: argparse.ArgumentParser) -> None:
    _configure(parser, "finetune")


def run(args: argparse.Namespace) -> int:
    return run_stage(args, "finetune", "finetune")
