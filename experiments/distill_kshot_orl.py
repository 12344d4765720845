"""k-shot identification on ORL for a distilled student and its teacher, on the same images with
the same protocol (`lafs_edge.train.evaluate.kshot`): enroll k images per person, identify
the rest (rank-1/5), repeated over seeds.

ORL (40 people x 10 grey 92x112 crops) has no landmarks: each image is letterboxed to 112x112
(`to_112`, what `lafs-edge eval` does) for the student; the teacher gets that same crop moved
into its own alignment (`template_change` without points: the ArcFace-112 -> teacher template
similarity, one more bilinear resampling), the same rule `train distill` uses for aligned crops.

    python experiments/distill_kshot_orl.py --student runs/distill/model.pt \
        --teacher train/configs/teachers/retail_0095.yaml --k 1 3 5 --seeds 0 1 2 3 4
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from lafs_edge.models import load_model
from lafs_edge.train.data.folders import LabelledFolder, to_112
from lafs_edge.train.evaluate.embedding import embed_images
from lafs_edge.train.evaluate.kshot import identification_report, kshot_split
from lafs_edge.train.sources import chw_uint8, normalise, template_change, warp
from lafs_edge.train.teachers import load_teacher

REPO = Path(__file__).resolve().parents[1]


def teacher_embeddings(teacher, crops: list[np.ndarray]) -> np.ndarray:
    width, height = teacher.geometry.crop_size
    change = template_change(None, teacher.geometry.template)
    views = torch.stack([chw_uint8(warp(c, change, width, height)) for c in crops])
    out, _ = teacher(normalise(views))
    return torch.nn.functional.normalize(out, dim=1).numpy()


def kshot_table(embeddings: np.ndarray, labels: np.ndarray, ks, seeds) -> dict:
    table = {}
    for k in ks:
        reports = [identification_report(embeddings, labels, kshot_split(labels, k, 0.0, s))
                   for s in seeds]
        table[f"k{k}"] = {"rank1": float(np.mean([r["rank1"] for r in reports])),
                          "rank1_std": float(np.std([r["rank1"] for r in reports])),
                          "rank5": float(np.mean([r["rank5"] for r in reports])),
                          "probes": reports[0]["probes"]}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", nargs="+", required=True, help="checkpoints or model names")
    parser.add_argument("--teacher", default=str(REPO / "train/configs/teachers/retail_0095.yaml"))
    parser.add_argument("--data", default=str(REPO.parent / "shared/data/orl"))
    parser.add_argument("--k", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", help="write the table as JSON here")
    args = parser.parse_args()
    folder = LabelledFolder(args.data)
    crops, labels = [], []
    for i in range(len(folder)):
        image, label = folder[i]
        crops.append(to_112(image))
        labels.append(label)
    labels = np.array(labels)
    rows = {"teacher": kshot_table(teacher_embeddings(load_teacher(args.teacher, torch.device("cpu")), crops),
                                   labels, args.k, args.seeds)}
    for student in args.student:
        torch.manual_seed(0)
        model = load_model(student)
        rows[str(student)] = kshot_table(embed_images(model, crops), labels, args.k, args.seeds)
    print(json.dumps({"data": args.data, "images": len(crops), "seeds": args.seeds, **rows}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
