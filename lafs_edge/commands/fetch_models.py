"""`lafs-edge fetch-models`: put MediaPipe's face detection and mesh models in the cache, from
the mediapipe==0.10.21 wheel on PyPI (sha256-checked). Other commands do this on first use."""
from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wheel", help="use this local copy of the mediapipe 0.10.21 wheel "
                                        "instead of downloading it (offline machines)")
    parser.add_argument("--cache", help="model folder (default: $LAFS_EDGE_CACHE/mediapipe or "
                                        "~/.cache/lafs-edge/mediapipe)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lafs_edge.landmarks.fetch import MODELS, fetch_models

    folder = fetch_models(Path(args.cache) if args.cache else None, wheel=args.wheel)
    for name in MODELS:
        print(f"{folder / name}")
    return 0
