"""`lafs-edge train distill --config FILE.yaml key=value ...`: a teacher (a project checkpoint,
or an external ONNX/OpenVINO model described by a small YAML) into an edge student on
unlabelled faces, with teacher targets computed on every augmented view (docs/pretraining.md)."""
from __future__ import annotations

import argparse

from lafs_edge.commands.train_common import configure as _configure
from lafs_edge.commands.train_common import run_stage


def configure(parser: argparse.ArgumentParser) -> None:
    _configure(parser, "distill")


def run(args: argparse.Namespace) -> int:
    return run_stage(args, "distill", "distill")
