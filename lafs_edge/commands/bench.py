"""`lafs-edge bench ARTIFACT...`: latency (median, p90), throughput, size and GFLOPs of each
artifact at batch 1 and 8, one thread and all threads, beside PyTorch eager in the same run."""
from __future__ import annotations

import argparse
import json

from lafs_edge.commands.model_option import PYTORCH_HELP
from lafs_edge.commands.gallery_common import number


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artifacts", nargs="+", help="artifact folders")
    parser.add_argument("--runs", type=number(1, 1e7, integer=True), default=100, help="timed runs per setting (>= 100 for reports)")
    parser.add_argument("--warmup", type=number(0, 1e7, integer=True), default=10)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 0], help="0 = all CPUs")
    parser.add_argument("--model", help=f"the PyTorch column's model: {PYTORCH_HELP} (default: "
                        "the manifest's record). Not an artifact folder: those are ARTIFACT")
    parser.add_argument("--out", default="bench", help="writes OUT.md and OUT.json")


def run(args: argparse.Namespace) -> int:
    from lafs_edge.commands.model_option import pytorch_source
    from lafs_edge.convert.bench import bench_artifact, machine, markdown
    from lafs_edge.convert.export import load_recorded_source
    from lafs_edge.errors import UserError
    from lafs_edge.runtime.backends import check_files
    from lafs_edge.runtime.manifest import read_manifest
    from lafs_edge.fileio import write_text_atomic

    if args.runs < 1 or args.warmup < 0 or min(args.batch) < 1 or min(args.threads) < 0:
        raise UserError("--runs and --batch must be positive, --warmup and --threads not negative")
    source = pytorch_source(args.model)
    loaded = []
    for artifact in args.artifacts:  # check every artifact before spending minutes on timing
        manifest, folder = read_manifest(artifact)
        check_files(manifest, folder)
        loaded.append((manifest, folder, load_recorded_source(manifest, source)))
    rows: list[dict] = []
    pytorch_cache: dict = {}
    for manifest, folder, model in loaded:
        rows += bench_artifact(folder, manifest, model, args.batch, args.threads, args.runs,
                               args.warmup, pytorch_cache)
    table = f"Measured on {machine()}, {args.runs} runs after {args.warmup} warm-up.\n\n" + markdown(rows)
    write_text_atomic(f"{args.out}.md", table)
    write_text_atomic(f"{args.out}.json", json.dumps({"machine": machine(), "rows": rows}, indent=2) + "\n")
    print(table, end="")
    print(f"wrote {args.out}.md and {args.out}.json")
    return 0
