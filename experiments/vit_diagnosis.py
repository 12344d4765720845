"""Why the part fViT student did not learn (issue 13, point 1): short distillation probes on the
cached teacher targets of the unlabelled pool, each measuring what the diagnosis needs.

    python experiments/vit_diagnosis.py [--steps 200] [--cache runs/teacher_targets_pool_retail0095.pt]

For every variant (same data order, batch, AdamW, lr schedule): the teacher cosine on the
training batches (mean of the last 50 steps) and on 512 held-out faces, how alike the student's
embeddings of *different* held-out faces are (mean off-diagonal cosine: 1.0 = collapsed to one
direction), and for part fViTs where the landmarks go (spread over the face, image-to-image
jitter, nearest-neighbour distance). Writes docs/results/vit_diagnosis.json. The cache is the
one `experiments/edge_students.py` builds (teacher embeddings of each face and its mirror).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faces import REPO, RESULTS, write_json  # noqa: E402

from lafs_edge.models import PartViT, create_model  # noqa: E402

VARIANTS = {
    "part_fvit_tiny, class token (the paper's read-out)": ("part_fvit_tiny", {}),
    "part_fvit_tiny, landmark read-out": ("part_fvit_tiny", {"pool": "landmarks"}),
    "mobilefacenet": ("mobilefacenet", {}),
}
HELD_OUT = 512


def load_cache(path: Path):
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state["crops"], state["targets"]


def normalise(crops: torch.Tensor) -> torch.Tensor:
    return crops.float() / 127.5 - 1.0


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return 1e-6 + (lr - 1e-6) * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))


@torch.no_grad()
def held_out_figures(model, projection, crops, targets) -> dict:
    model.eval()
    images = normalise(crops)
    emb = torch.cat([model(images[i:i + 128]) for i in range(0, len(images), 128)])
    student = F.normalize(emb, dim=1)
    alike = student @ student.t()
    off_diagonal = (alike.sum() - alike.diagonal().sum()) / (len(alike) ** 2 - len(alike))
    figures = {"held_out_teacher_cosine": float(F.cosine_similarity(projection(emb), targets[:, 0]).mean()),
               "different_faces_alike": float(off_diagonal)}
    if isinstance(model, PartViT):
        points = torch.cat([model.landmarks(images[i:i + 128]) for i in range(0, len(images), 128)])
        spread = points.std(1).mean()                      # over the face (pixels)
        jitter = points.std(0).mean()                      # image to image, per landmark
        nearest = torch.cdist(points, points) + 1e9 * torch.eye(points.shape[1])
        figures.update({"landmark_spread_px": float(spread), "landmark_jitter_px": float(jitter),
                        "landmark_nearest_px": float(nearest.amin(-1).mean())})
    model.train()
    return figures


def probe(arch: str, overrides: dict, crops, targets, args) -> dict:
    torch.manual_seed(0)
    model = create_model(arch, **overrides).train()
    projection = torch.nn.Linear(model.embedding_dim, targets.shape[-1])
    params = list(model.parameters()) + list(projection.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05)
    held_crops, held_targets = crops[:HELD_OUT], targets[:HELD_OUT]
    at_init = held_out_figures(model, projection, held_crops, held_targets)
    order = torch.randperm(len(crops) - HELD_OUT, generator=torch.Generator().manual_seed(0)) + HELD_OUT
    cosines, started = [], time.perf_counter()
    for step in range(args.steps):
        index = order[(step * args.batch) % len(order):][:args.batch]
        flip = torch.rand(len(index)) < 0.5
        images = normalise(crops[index])
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        target = targets[index, flip.long()]
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            predicted = projection(model(images)).float()
        cosine = F.cosine_similarity(predicted, target).mean()
        optimizer.zero_grad(set_to_none=True)
        (1 - cosine).backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()
        cosines.append(float(cosine))
        if (step + 1) % 50 == 0:
            print(f"  step {step + 1}: train cosine {sum(cosines[-50:]) / 50:.3f}", flush=True)
    return {"arch": arch, "overrides": overrides, "at_init": at_init,
            "after": held_out_figures(model, projection, held_crops, held_targets),
            "train_teacher_cosine_last50": sum(cosines[-50:]) / min(50, len(cosines)),
            "train_curve": [round(sum(cosines[i:i + 25]) / len(cosines[i:i + 25]), 4)
                            for i in range(0, len(cosines), 25)],
            "images_per_s": args.steps * args.batch / (time.perf_counter() - started)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=REPO / "runs/teacher_targets_pool_retail0095.pt")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--fp32", dest="bf16", action="store_false",
                        help="no bf16 autocast (the training runs use it)")
    parser.add_argument("--only", nargs="*", help="variant names (substring match)")
    parser.add_argument("--out", type=Path, default=RESULTS / "vit_diagnosis.json")
    args = parser.parse_args()
    crops, targets = load_cache(args.cache)
    # A fixed random subset: the pool's list is grouped by source, the probe should see all.
    pick = torch.randperm(len(crops), generator=torch.Generator().manual_seed(1))
    crops, targets = crops[pick], targets[pick]
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for name, (arch, overrides) in VARIANTS.items():
        if args.only and not any(o in name for o in args.only):
            continue
        print(f"{name}:", flush=True)
        results[name] = probe(arch, overrides, crops, targets, args)
        print(json.dumps({k: v for k, v in results[name].items() if k != "train_curve"}), flush=True)
        write_json(args.out, {**results, "_setup": {"steps": args.steps, "batch": args.batch,
                                                    "lr": args.lr, "warmup": args.warmup,
                                                    "bf16": args.bf16,
                                                    "cache": str(args.cache)}})


if __name__ == "__main__":
    main()
