"""`lafs-edge manifest-external MODEL.xml --out DIR`: an artifact folder for the external OpenVINO
face-reidentification-retail-0095 model (its .xml/.bin copied in, and a manifest.json), so the
Embedder (enroll, identify, the demo) can use it."""
from __future__ import annotations

import argparse
from pathlib import Path

from lafs_edge.commands.gallery_common import number


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_xml", help="face-reidentification-retail-0095.xml (FP16 or FP16-INT8)")
    parser.add_argument("--out", required=True, help="folder to write manifest.json into")
    parser.add_argument("--threshold", type=number(-1, 1), default=None,
                        help="open-set cosine threshold to record, in [-1, 1] (default: the "
                             "measured one)")


def run(args: argparse.Namespace) -> int:
    from lafs_edge.runtime.embedder import RETAIL_0095_THRESHOLD, external_manifest
    from lafs_edge.runtime.manifest import write_manifest

    threshold = RETAIL_0095_THRESHOLD if args.threshold is None else args.threshold
    manifest = external_manifest(args.model_xml, threshold=threshold)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = write_manifest(manifest, out)
    print(f"wrote {path} ({manifest.name}, {manifest.precision}, threshold {threshold})")
    return 0
