"""Few-shot identification figures for docs/device.md: ORL and Yale through the device pipeline
(MediaPipe detection + mesh, alignment, an Embedder artifact, the SQLite gallery).

    python benchmarks/device_identification.py --model ARTIFACT [--data ../shared/data] [--seeds 5]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def embed_folder(recognizer, root: Path):
    from lafs_edge.image import read_image
    from lafs_edge.train.data import LabelledFolder

    dataset = LabelledFolder(root)
    vectors, labels, missed = [], [], 0
    for path, label in dataset.samples:
        image = read_image(path)
        faces = recognizer.faces(image)
        if not faces:
            missed += 1
            continue
        vectors.append(recognizer.embed_faces(image, faces[:1])[0])
        labels.append(dataset.classes[label])
    return np.stack(vectors), np.array(labels), missed


def main() -> None:
    from lafs_edge.gallery import Recognizer
    from lafs_edge.gallery.evaluate import few_shot_identification
    from lafs_edge.runtime.embedder import Embedder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=None)
    args = parser.parse_args()
    recognizer = Recognizer(Embedder.from_artifact(args.model))
    threshold = args.threshold if args.threshold is not None else recognizer.threshold
    print(f"model {recognizer.embedder.name} ({recognizer.embedder.manifest.precision}), "
          f"threshold {threshold}, mean over {args.seeds} seeds")
    print("| set | k | enrolled people | queries | rank-1 | open-set acc. | false reject "
          "| strangers (1/3 of people) | false accept |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in ("orl", "yale"):
        embeddings, labels, missed = embed_folder(recognizer, Path(args.data) / name)
        if missed:
            print(f"({name}: {missed} photos without a detected face left out)")
        for k in (1, 3):
            closed = [few_shot_identification(embeddings, labels, k, threshold, seed=s)
                      for s in range(args.seeds)]
            opened = [few_shot_identification(embeddings, labels, k, threshold, seed=s,
                                              stranger_fraction=1 / 3) for s in range(args.seeds)]
            mean = lambda rows, field: float(np.mean([getattr(r, field) for r in rows]))
            print(f"| {name} | {k} | {closed[0].enrolled_people} | {closed[0].queries} "
                  f"| {mean(closed, 'rank1'):.4f} | {mean(closed, 'open_set_accuracy'):.4f} "
                  f"| {mean(closed, 'false_reject'):.4f} | {opened[0].stranger_queries} "
                  f"| {mean(opened, 'false_accept'):.4f} |")


if __name__ == "__main__":
    main()
