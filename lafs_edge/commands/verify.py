"""`lafs-edge verify ARTIFACT --data DIR`: the artifact in its runtime vs the source model in
PyTorch on the same real aligned faces; non-zero exit when parity is below the thresholds."""
from __future__ import annotations

import argparse
import json

from lafs_edge.commands.model_option import PYTORCH_HELP
from lafs_edge.commands.gallery_common import number


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artifact", help="artifact folder (with manifest.json)")
    parser.add_argument("--data", required=True, help="aligned faces: a landmarks.txt folder, or "
                        "labelled images (identity folders / NAME.condition) for accuracy too")
    parser.add_argument("--model", help=f"the PyTorch source: {PYTORCH_HELP} (default: the "
                        "manifest's record; a checkpoint must match its sha256). Not an artifact "
                        "folder: verify measures an artifact against PyTorch")
    parser.add_argument("--limit", type=number(1, 1e9, integer=True), help="use at most this many faces (fixed seed)")
    parser.add_argument("--json", help="also write the report to this file")
    parser.add_argument("--no-update", action="store_true",
                        help="do not store the figures in the manifest's parity")


def run(args: argparse.Namespace) -> int:
    from lafs_edge.commands.model_option import pytorch_source
    from lafs_edge.convert.data import load_faces
    from lafs_edge.convert.export import load_recorded_source
    from lafs_edge.convert.verify import verify_artifact
    from lafs_edge.runtime.backends import check_files
    from lafs_edge.runtime.manifest import read_manifest, write_manifest

    source = pytorch_source(args.model)
    manifest, folder = read_manifest(args.artifact)
    check_files(manifest, folder)
    model = load_recorded_source(manifest, source)
    faces = load_faces(args.data, limit=args.limit)
    report, _ = verify_artifact(folder, manifest, model, faces)
    report["data"] = args.data
    _print(manifest, report)
    if args.json:
        _write_json(args.json, report)
    if not args.no_update:
        manifest.parity.update(report)
        write_manifest(manifest, folder)
    if report["failures"]:
        for problem in report["failures"]:
            print(f"FAIL: {problem}")
        return 1
    print("PASS")
    return 0


def _print(manifest, report: dict) -> None:
    print(f"{manifest.name} {manifest.target} {manifest.precision}")
    if "program" in report:
        program = report["program"]
        print(f"  {report['numeric']}")
        print(f"  program: inputs {program['inputs']} outputs {program['outputs']}, "
              f"{sum(program['ops'].values())} ops of {len(program['ops'])} kinds, "
              f"{program['quantized_weight_ops']} quantized-weight ops")
        return
    print(f"  {report['faces']} faces: cosine mean {report['mean_cosine']:.6f} min "
          f"{report['min_cosine']:.6f}, max abs error {report['max_abs_error']:.2e}")
    print(f"  centred cosine mean {report['centred_mean_cosine']:.6f} (faces differ by "
          f"{1 - report['mean_pairwise_cosine']:.2e} in cosine on average)")
    if "accuracy" in report:
        print(f"  verification accuracy {100 * report['accuracy']:.2f}% "
              f"(PyTorch {100 * report['accuracy_pytorch']:.2f}%)")


def _write_json(path: str, report: dict) -> None:
    from lafs_edge.fileio import write_text_atomic

    write_text_atomic(path, json.dumps(report, indent=2) + "\n")
