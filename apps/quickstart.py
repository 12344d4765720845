"""`make quickstart`: the main job, end to end, on a fresh machine without ../shared.

Steps (each prints what it produced; a summary table closes the run):
  1. the model registry (`lafs-edge models`);
  2. sample faces: the astronaut photo that scikit-image ships (or every image under --data),
     MediaPipe face detection + mesh on the CPU, 5-point alignment to the 112x112 ArcFace crop;
  3. embeddings of the aligned faces with every registered model (random weights: this shows the
     plumbing; trained weights come from `lafs-edge train ...`), written as .npy files.

    python -m lafs_edge.apps.quickstart [--data DIR] [--out runs/quickstart]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import UserError


def sample_photos(data: Path | None) -> list[Path]:
    if data is not None:
        from ..image import list_images

        photos = list_images(data)
        if not photos:
            raise UserError(f"no images under {data}")
        return photos
    import skimage

    return [Path(skimage.__file__).parent / "data" / "astronaut.png"]


def align_photos(photos: list[Path], out: Path) -> list[Path]:
    from ..align import align_face
    from ..image import read_image, write_image
    from ..landmarks import FaceAnalyzer

    analyzer = FaceAnalyzer()
    crops = []
    for photo in photos:
        image = read_image(photo)
        faces = analyzer.analyze(image)
        print(f"  {photo.name}: {len(faces)} face(s), detect {analyzer.timings.detect:.1f} ms, "
              f"mesh {analyzer.timings.mesh:.1f} ms")
        for k, face in enumerate(faces):
            crop_path = out / "aligned" / f"{photo.stem}_{k}.png"
            crop_path.parent.mkdir(parents=True, exist_ok=True)
            write_image(crop_path, align_face(image, face.points5))
            crops.append(crop_path)
    if not crops:
        raise UserError("no face found in the sample photos")
    return crops


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="folder of photos (default: "
                        "scikit-image's astronaut)")
    parser.add_argument("--out", type=Path, default=Path("runs/quickstart"))
    args = parser.parse_args(argv)
    from ..cli import main as cli

    produced: list[tuple[str, str, str]] = []
    start = time.perf_counter()
    try:
        print("[1/3] model registry")
        cli(["models"])
        print("[2/3] detect and align sample faces")
        crops = align_photos(sample_photos(args.data), args.out)
        produced.append(("aligned faces", str(crops[0].parent), f"{len(crops)} crops, 112x112"))
        print("[3/3] embed with every registered model")
        from ..models import list_models

        for name in list_models():
            target = args.out / "embeddings" / f"{name}.npy"
            if cli(["embed", *map(str, crops), "--model", name, "--out", str(target)]) != 0:
                return 1
            produced.append((f"{name} embeddings", str(target), str(np.load(target).shape)))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"\nquickstart finished in {time.perf_counter() - start:.0f} s\n")
    print(f"| {'what':<28} | {'where':<48} | details |")
    print(f"|{'-' * 30}|{'-' * 50}|---------|")
    for what, where, details in produced:
        print(f"| {what:<28} | {where:<48} | {details} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
