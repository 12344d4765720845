"""`lafs-edge demo`: live recognition with the gallery.

    lafs-edge demo --camera 0 [--model MODEL] --gallery people.db   (default: the shipped student)
    lafs-edge demo --source VIDEO|IMAGE_DIR --headless --out annotated.mp4 --log events.jsonl

The window (keys e enroll, a adapt, d delete, q quit) needs OpenCV's GUI build
(`pip install 'lafs-edge[gui]'`) and a display; --headless works with either build.
See lafs_edge/apps/demo/."""
from __future__ import annotations

import argparse
from pathlib import Path

from lafs_edge.commands.gallery_common import (add_gallery_argument, add_model_argument, number,
                                               open_recognizer)
from lafs_edge.errors import UserError


KEYS = ("window keys: e enroll the largest face (type a name, Enter), a adapt, d delete a "
        "person, q or Esc quit")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = KEYS
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--camera", type=int, help="camera index (OpenCV), e.g. 0")
    source.add_argument("--source", help="a video file, a folder of images, or one image")
    add_model_argument(parser)
    add_gallery_argument(parser)
    parser.add_argument("--create-gallery", action="store_true",
                        help="start an empty gallery when --gallery does not exist (to enroll "
                             "from the window); without it a missing gallery is an error")
    parser.add_argument("--headless", action="store_true",
                        help="no window: write --out and/or --log (works with opencv-python-headless)")
    parser.add_argument("--out", type=Path, help="annotated video (.mp4 or .avi)")
    parser.add_argument("--log", type=Path, help="events, one JSON object per frame (JSON Lines)")
    parser.add_argument("--snapshot", type=Path,
                        help="headless: also save the annotated frame naming the most people (PNG)")
    parser.add_argument("--threshold", type=number(-1, 1), default=None,
                        help="open-set cosine threshold (default: the model manifest's)")
    parser.add_argument("--fps", type=number(0, 1000, low_open=True), default=None,
                        help="playback frame rate: a video's own by default, 10 for images "
                             "(the window plays at it; --headless runs as fast as it can)")
    parser.add_argument("--adapt", action="store_true",
                        help="window: retrain the gallery's on-device head after each "
                             "enrollment or deletion (off by default: it lowered rank-1 for the "
                             "shipped students, docs/demo.md)")
    parser.add_argument("--max-frames", type=number(1, 1e12, integer=True), default=None,
                        help="stop after this many frames")
    parser.add_argument("--redetect-every", type=number(1, 10000, integer=True), default=5,
                        help="run the face detector every N frames (tracked ROIs in between)")
    parser.add_argument("--detectors", default="short,full",
                        help="BlazeFace models: short (webcam distance), full (far faces) or both")


def run(args: argparse.Namespace) -> int:
    import sys

    from lafs_edge.apps.demo import Source, check_display, check_source, require_gui

    if args.headless and not (args.out or args.log or args.snapshot):
        raise UserError("--headless needs somewhere to write: --out, --log or --snapshot")
    source = args.camera if args.camera is not None else args.source
    check_source(source)
    if not args.headless:   # before the camera and the models: each is a one-line error at once
        require_gui()
        check_display()
    opened = Source(source, args.fps)   # before the models: a missing camera fails in a moment
    try:
        if not args.create_gallery and not Path(args.gallery).exists():
            raise UserError(f"no gallery at {args.gallery}: enroll someone first (`lafs-edge "
                            "enroll`), or pass --create-gallery to start an empty one")
        summary = _run_opened(args, opened)
    except KeyboardInterrupt:
        if args.log:   # the log is kept, and says it is partial: so does the command
            print(f"{args.log}: partial, the events up to the interruption (its summary line "
                  "says \"complete\": false)", file=sys.stderr)
        raise
    finally:
        opened.close()
    _print_summary(summary, args)
    return 0


def _run_opened(args: argparse.Namespace, source) -> dict:
    from lafs_edge.apps.demo import Demo, run_headless, run_window
    from lafs_edge.gallery import Gallery
    from lafs_edge.landmarks import FaceAnalyzer

    detectors = tuple(d.strip() for d in args.detectors.split(",") if d.strip())
    with Gallery(args.gallery, create=args.create_gallery, timeout=args.busy_timeout) as gallery:
        recognizer = open_recognizer(args, gallery, args.threshold,
                                     FaceAnalyzer(detectors=detectors))
        gallery.check_model(recognizer.embedder.fingerprint, recognizer.embedder.label)
        recognizer.require_threshold()
        demo = Demo(recognizer, args.redetect_every)
        demo.auto_adapt = args.adapt
        if not args.headless:
            return run_window(demo, source, args.out, args.log)
        return run_headless(demo, source, args.out, args.log, args.max_frames, args.snapshot,
                            progress=True)


def _print_summary(summary: dict, args: argparse.Namespace) -> None:
    from lafs_edge.gallery.pipeline import STAGES

    ms = summary["median_ms"]
    stages = ", ".join(f"{stage} {ms.get(stage, 0):.1f}" for stage in STAGES)
    detected = summary.get("detect_frames", summary["frames"])
    if detected < summary["frames"]:   # tracked frames skip the detector: say what the median is of
        stages = stages.replace(f"detect {ms.get('detect', 0):.1f}",
                                f"detect {ms.get('detect', 0):.1f} (on the {detected} frames "
                                "that ran it)")
    print(f"{summary['frames']} frames, {summary['fps']} FPS achieved; pipeline median "
          f"{ms.get('total', 0):.1f} ms ({summary['pipeline_fps']} FPS): {stages}")
    print("faces named: " + (", ".join(f"{name} x{count}" for name, count in
                                       sorted(summary["faces_named"].items())) or "none"))
    for label, path in (("video", args.out), ("events", args.log), ("snapshot", args.snapshot)):
        if path:
            print(f"{label}: {path}")
