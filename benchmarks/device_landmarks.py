"""The 5-point error of the device landmarks on wild5 (docs/device.md).

    python benchmarks/device_landmarks.py [--data ../shared/data] [--every 1]

Error per face: the mean distance of the 5 points to the hand labels over the labelled
inter-ocular distance (eye centre to eye centre). Each image is analysed as it is (80x80 crops,
no padding); when a crop holds a second, partial face the one nearest the labels is scored.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main() -> None:
    from lafs_edge.image import read_image
    from lafs_edge.landmarks import FaceAnalyzer
    from lafs_edge.landmark_lists import canonical_order, read_landmark_list

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument("--every", type=int, default=1, help="use every n-th face")
    args = parser.parse_args()
    root = Path(args.data) / "wild5"
    analyzer = FaceAnalyzer()
    errors: dict[str, list[np.ndarray]] = {}
    missed: dict[str, int] = {}
    start = time.perf_counter()
    entries = read_landmark_list(root / "landmarks.txt")[::args.every]
    for relative, points in entries:
        subset = relative.split("/")[0]
        truth = canonical_order(points)[0]
        faces = analyzer.analyze(read_image(root / relative))
        if not faces:
            missed[subset] = missed.get(subset, 0) + 1
            continue
        found = min(faces, key=lambda f: np.linalg.norm(f.points5.mean(0) - truth.mean(0))).points5
        errors.setdefault(subset, []).append(
            np.linalg.norm(found - truth, axis=1) / np.linalg.norm(truth[1] - truth[0]))
    seconds = time.perf_counter() - start
    print(f"{len(entries)} faces in {seconds:.0f} s")
    print("| subset | faces | missed | mean NME | median | >0.10 | right eye | left eye | nose "
          "| right mouth | left mouth |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = {**errors, "all": [e for subset in errors.values() for e in subset]}
    for subset, values in rows.items():
        per_face = np.array(values)
        mean = per_face.mean(1)
        lost = sum(missed.values()) if subset == "all" else missed.get(subset, 0)
        points = " | ".join(f"{v:.4f}" for v in per_face.mean(0))
        print(f"| {subset} | {len(values) + lost} | {lost} | {mean.mean():.4f} | "
              f"{np.median(mean):.4f} | {(mean > 0.1).mean():.3f} | {points} |")


if __name__ == "__main__":
    main()
