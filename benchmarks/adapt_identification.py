"""On-device adaptation figures for docs/demo.md: ORL, Yale and the CelebA eval identities (in the
wild), k = 1 and 3 enrolled photos per person, a third of the people never enrolled, with and
without `lafs-edge adapt`'s head.

Each photo goes through the device pipeline once (MediaPipe detection + mesh -> 5 points); per
model the points are aligned with the model's template, the crops embedded and kept as the
gallery's enrollment crops (what `adapt` trains on). Both runs of a seed use the same split.

    python benchmarks/adapt_identification.py --model mobilefacenet --model part_fvit_tiny \
        --model TEACHER_ARTIFACT [--seeds 3] [--threshold manifest|other] [--sets orl,yale,celeba]

`--model` takes what the CLI's `--model` takes (a shipped name, a checkpoint, an artifact).

`--threshold other`: the cosine at a false-accept rate of 1e-3 per pair over the impostor pairs
of the *other* set (ORL's threshold from Yale and the reverse), for models without a calibrated
manifest threshold.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def labelled_photos(data: Path, name: str) -> list[tuple[Path, str]]:
    """(photo, identity) of one set; CelebA: its eval identities only (the students' distillation
    pool holds the train identities)."""
    from lafs_edge.train.data import LabelledFolder

    dataset = LabelledFolder(data / name)
    samples = [(Path(path), dataset.classes[label]) for path, label in dataset.samples]
    if name == "celeba":
        keep = set((data / "celeba" / "splits" / "eval_ids.txt").read_text().split())
        samples = [(path, identity) for path, identity in samples if identity in keep]
    return samples


def detect_points(samples: list[tuple[Path, str]], cache: Path | None):
    """(images, 5 points, identity) of every photo with a face; cached as .npz."""
    from lafs_edge.image import read_image
    from lafs_edge.landmarks import FaceAnalyzer

    if cache and cache.exists():
        stored = np.load(cache, allow_pickle=False)
        paths, points, labels = list(stored["paths"]), stored["points"], stored["labels"]
    else:
        analyzer, paths, points, labels = FaceAnalyzer(), [], [], []
        for path, identity in samples:
            faces = analyzer.analyze(read_image(path))
            if faces:
                paths.append(str(path))
                points.append(faces[0].points5)
                labels.append(identity)
        points, labels = np.stack(points), np.array(labels)
        if cache:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, paths=np.array(paths), points=points, labels=labels)
    return [read_image(p) for p in paths], points, labels


def embed_set(embedder, images, points):
    from lafs_edge.gallery.pipeline import _png

    crops = [embedder.align(image, [p])[0] for image, p in zip(images, points)]
    vectors = np.concatenate([embedder.embed_crops(crops[i:i + 64])
                              for i in range(0, len(crops), 64)])
    return vectors, [_png(c) for c in crops]


def far_threshold(vectors: np.ndarray, labels: np.ndarray, far: float = 1e-3) -> float:
    scores = vectors @ vectors.T
    upper = np.triu_indices(len(labels), 1)
    impostor = scores[upper][labels[upper[0]] != labels[upper[1]]]
    return float(np.quantile(impostor, 1 - far))


def main() -> None:
    from lafs_edge.errors import UserError
    from lafs_edge.gallery.adapt import AdaptConfig, adapt_gallery
    from lafs_edge.gallery.evaluate import few_shot_identification
    from lafs_edge.commands.model_option import resolve_model
    from lafs_edge.runtime.embedder import Embedder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threshold", default="manifest", choices=("manifest", "other"))
    parser.add_argument("--sets", default="orl,yale,celeba")
    parser.add_argument("--cache", type=Path, default=Path("runs/adapt_points"))
    parser.add_argument("--views", type=int, default=AdaptConfig.views)
    parser.add_argument("--steps", type=int, default=AdaptConfig.steps)
    args = parser.parse_args()
    sets = {name: detect_points(labelled_photos(Path(args.data), name), args.cache / f"{name}.npz")
            for name in args.sets.split(",")}
    config = AdaptConfig(views=args.views, steps=args.steps)
    print("| model | set | k | threshold | enrolled | queries | strangers' photos | rank-1 base "
          "| rank-1 adapted | open-set acc. base | adapted | false accept base | adapted "
          "| adapt s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for model in args.model:
        embedder = Embedder.from_artifact(resolve_model(model).artifact())
        embedded = {name: embed_set(embedder, images, points)
                    for name, (images, points, _) in sets.items()}
        for name, (_, _, labels) in sets.items():
            vectors, crops = embedded[name]
            other = "yale" if name != "yale" else "orl"
            threshold = (embedder.threshold if args.threshold == "manifest"
                         else far_threshold(embedded[other][0], sets[other][2]))
            for k in (1, 3):
                rows = {"base": [], "adapted": []}
                seconds, refused = [], set()
                for seed in range(args.seeds):
                    common = dict(threshold=threshold, fingerprint=embedder.fingerprint,
                                  stranger_fraction=1 / 3, seed=seed, crops=crops)
                    rows["base"].append(few_shot_identification(vectors, labels, k, **common))

                    def adapt(gallery):
                        try:
                            report = adapt_gallery(gallery, embedder, config)
                        except UserError as e:   # refused: identification runs without it
                            refused.add(str(e).split(";")[0])
                            return
                        seconds.append(report.seconds_views + report.seconds_train)

                    rows["adapted"].append(few_shot_identification(vectors, labels, k,
                                                                   adapt=adapt, **common))
                mean = lambda kind, field: float(np.mean([getattr(r, field) for r in rows[kind]]))
                first = rows["base"][0]
                print(f"| {embedder.name} | {name} | {k} | {threshold:.3f} "
                      f"| {first.enrolled_people} | {first.queries} | {first.stranger_queries} "
                      f"| {mean('base', 'rank1'):.4f} | {mean('adapted', 'rank1'):.4f} "
                      f"| {mean('base', 'open_set_accuracy'):.4f} "
                      f"| {mean('adapted', 'open_set_accuracy'):.4f} "
                      f"| {mean('base', 'false_accept'):.4f} | {mean('adapted', 'false_accept'):.4f} "
                      f"| {np.mean(seconds) if seconds else 0:.1f} |", flush=True)
                for reason in refused:
                    print(f"  ({reason})")


if __name__ == "__main__":
    main()
