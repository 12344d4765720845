"""What every `lafs-edge train` sub-command shares: its arguments (`--config`, `key=value`
overrides, `--print-config`) and `run_stage`, which resolves the stage's config, trains (or
resumes) and prints one summary line on rank 0. Each `train_<stage>.py` is these two calls with
its stage's name."""
from __future__ import annotations

import argparse
import importlib


def configure(parser: argparse.ArgumentParser, stage: str) -> None:
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="YAML config merged over the packaged defaults (repeatable; a bare "
                             f"name such as {stage}_smoke picks a packaged config)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides parsed as YAML, e.g. optim.lr=5e-4 "
                             "data.root=/data/faces")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config and exit without training")


def run_stage(args: argparse.Namespace, stage: str, module: str) -> int:
    """Resolve the stage's config, train (or resume), print one summary line on rank 0."""
    import os
    import sys

    import yaml

    from lafs_edge.train.config import load_config
    from lafs_edge.train.engine import TrainingDiverged

    cfg = load_config(stage, args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(cfg, sort_keys=False), end="")
        return 0
    train = importlib.import_module(f"lafs_edge.train.{module}").train
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
    planned = min(int(cfg["train"]["stop_after"]) or result.total_steps, result.total_steps)
    if result.final_step < planned:
        # Stopped by Ctrl-C or SIGTERM (after a checkpoint): not a finished run, so not exit 0
        # (a script chaining `train && export` must not export a half-trained model).
        if rank == 0:
            print(f"interrupted at step {result.final_step}; the same command resumes from the "
                  "checkpoint", file=sys.stderr)
        return 130
    return 0
