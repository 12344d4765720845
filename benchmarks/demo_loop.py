"""The demo loop at 640x480: per-stage milliseconds and frames per second, one face and three.

    python benchmarks/demo_loop.py --artifact runs/edge_latency/mobilefacenet-openvino-int8
        [--frames 150 --threads 2 --redetect-every 5 --out benchmarks/results/demo_loop]

Runs `lafs_edge.apps.demo.Demo.process` (what `lafs-edge demo` runs per frame: BlazeFace on
detection frames, face mesh on the tracked ROIs, One Euro smoothing, alignment, one embedder batch,
gallery match) on 640x480 frames cut from real photos in ../shared/data/photos: `astronaut.png`
(one face) and `sample1.jpg` (a group photo, three faces). The crop window moves a few pixels
every frame, so the tracker and the mesh follow a moving face as they would on a camera. Every
face of the scene is enrolled in a temporary gallery first, so the match stage does real work.

Reported per scene: median ms of every stage on tracked frames and on detection frames, the
number of frames on which the detector ran (it must run only on every `--redetect-every`-th frame
or when tracking is lost), and frames per second = frames / wall time of the loop (end to end:
cropping the frame, the whole pipeline and the match).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "photos"
# scene -> (photo, scale, expected faces); scale brings the photo a little above 640x480, so the
# 640x480 window can move over it.
SCENES = {"one face": ("astronaut.png", 1.3, 1), "three faces": ("sample1.jpg", 0.39, 3)}
SIZE = (640, 480)
STAGES = ("detect", "mesh", "align", "embed", "match", "total")


def scene_frames(photo: Path, scale: float, count: int) -> list[np.ndarray]:
    import cv2

    from lafs_edge.image import read_image

    image = read_image(photo)
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    room_x, room_y = image.shape[1] - SIZE[0], image.shape[0] - SIZE[1]
    if room_x < 0 or room_y < 0:
        raise SystemExit(f"{photo.name} at scale {scale} is smaller than {SIZE}")
    frames = []
    sway_x, sway_y = min(room_x / 2, 16), min(room_y / 2, 12)
    for i in range(count):  # a slow sway around the middle: +-16 x +-12 pixels over 60 frames
        dx = int(round(room_x / 2 + sway_x * np.sin(2 * np.pi * i / 60)))
        dy = int(round(room_y / 2 + sway_y * np.cos(2 * np.pi * i / 60)))
        frames.append(np.ascontiguousarray(image[dy:dy + SIZE[1], dx:dx + SIZE[0]]))
    return frames


def run_scene(recognizer, frames: list[np.ndarray], redetect_every: int, warmup: int) -> dict:
    from lafs_edge.apps.demo import Demo

    demo = Demo(recognizer, redetect_every)
    for i in range(warmup):
        demo.process(frames[i % len(frames)], i / 30)
    demo = Demo(recognizer, redetect_every)  # fresh tracker: the timed loop starts by detecting
    demo.auto_adapt = False
    results = []
    start = time.perf_counter()
    for i, frame in enumerate(frames):
        results.append(demo.process(frame, i / 30))
    wall = time.perf_counter() - start
    detected = [r for r in results if r.ms["detect"] > 0]
    tracked = [r for r in results if r.ms["detect"] == 0]

    def medians(rows):
        return {s: statistics.median(r.ms[s] for r in rows) for s in STAGES} if rows else {}

    faces = [len(r.faces) for r in results]
    return {"frames": len(results), "wall_s": wall, "fps": len(results) / wall,
            "detection_frames": [r.index for r in detected],
            "tracked_ms": medians(tracked), "detection_ms": medians(detected),
            "all_ms": medians(results), "mean_total_ms": statistics.fmean(r.ms["total"] for r in results),
            "faces_median": statistics.median(faces), "faces_min": min(faces), "faces_max": max(faces)}


def enroll_scene(recognizer, gallery, frame: np.ndarray, tag: str) -> None:
    from lafs_edge.gallery.store import Shot

    faces = recognizer.faces(frame)
    embeddings = recognizer.embed_faces(frame, faces)
    for k, embedding in enumerate(embeddings):
        gallery.enroll(f"{tag}{k}", [Shot(embedding, "benchmark")], recognizer.embedder.fingerprint,
                       recognizer.embedder.label)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", required=True, help="embedder artifact folder")
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="detector, mesh and embedder threads")
    parser.add_argument("--redetect-every", type=int, default=5)
    parser.add_argument("--detectors", default="short,full")
    parser.add_argument("--out", default=None, help="write OUT.md and OUT.json")
    args = parser.parse_args()

    from lafs_edge.convert.bench import machine
    from lafs_edge.gallery import Gallery, Recognizer
    from lafs_edge.landmarks import FaceAnalyzer
    from lafs_edge.runtime.embedder import Embedder

    embedder = Embedder.from_artifact(args.artifact, threads=args.threads)
    detectors = tuple(d.strip() for d in args.detectors.split(",") if d.strip())
    analyzer = FaceAnalyzer(num_threads=args.threads, detectors=detectors)
    scenes = {}
    with tempfile.TemporaryDirectory() as tmp, Gallery(Path(tmp) / "bench.db") as gallery:
        recognizer = Recognizer(embedder, analyzer, gallery, threshold=0.5)
        for scene, (photo, scale, expected) in SCENES.items():
            frames = scene_frames(PHOTOS / photo, scale, args.frames)
            enroll_scene(recognizer, gallery, frames[0], scene.split()[0])
            result = run_scene(recognizer, frames, args.redetect_every, args.warmup)
            result.update(photo=photo, expected_faces=expected)
            scenes[scene] = result
    report = {"machine": machine(), "artifact": str(args.artifact), "threads": args.threads,
              "redetect_every": args.redetect_every, "detectors": list(detectors),
              "frame_size": list(SIZE), "scenes": scenes}
    text = markdown(report)
    print(text, end="")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(f"{args.out}.md").write_text(text)
        Path(f"{args.out}.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


def markdown(report: dict) -> str:
    lines = [f"{report['machine']}; embedder `{Path(report['artifact']).name}`, "
             f"{report['threads']} threads per model, detectors {'+'.join(report['detectors'])}, "
             f"detection every {report['redetect_every']} frames; 640x480 frames.", "",
             "| scene | frames | faces | frames detected on | FPS (end to end) | frame kind | "
             + " | ".join(f"{s} ms" for s in STAGES) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(STAGES)]
    for scene, r in report["scenes"].items():
        for kind, key in (("tracked", "tracked_ms"), ("detection", "detection_ms")):
            ms = r[key]
            if not ms:
                continue
            lines.append(f"| {scene} | {r['frames']} | {r['faces_min']}-{r['faces_max']} | "
                         f"{len(r['detection_frames'])} | {r['fps']:.1f} | {kind} | "
                         + " | ".join(f"{ms[s]:.2f}" for s in STAGES) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
