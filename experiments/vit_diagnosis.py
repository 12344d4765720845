"""Why the part fViT student did not learn (issue 13, point 1): short distillation probes on the
cached teacher targets of the unlabelled pool, each measuring what the diagnosis needs.

    python experiments/vit_diagnosis.py [--steps 200 --batch 32] [--cache ...]   # the probes
    python experiments/vit_diagnosis.py --report      # only rewrite the fragment from the JSON

For every variant (same data order, batch, AdamW, lr schedule): the teacher cosine on the
training batches (mean of the last 50 steps) and on 512 held-out faces, how alike the student's
embeddings of *different* held-out faces are (mean off-diagonal cosine: 1.0 = collapsed to one
direction), and for part fViTs where the landmarks go (spread over the face, image-to-image
jitter, nearest-neighbour distance). Writes docs/results/vit_diagnosis.json. The cache is the
one `experiments/edge_students.py` builds (teacher embeddings of each face and its mirror).

The fragment (docs/results/vit_diagnosis.md) adds the same-recipe A/B: the first 300 steps of
the shipped part_fvit_tiny run (landmark read-out) against the same command with the class token
(`AB_COMMAND`) and the MobileFaceNet run, read from their metrics.jsonl.
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
RUN_LOGS = {"part_fvit_tiny, class token": REPO / "runs/experiments/vit_ab_cls/part_fvit_tiny",
            "part_fvit_tiny, landmark read-out": REPO / "runs/experiments/edge_students/part_fvit_tiny",
            "mobilefacenet": REPO / "runs/experiments/edge_students/mobilefacenet"}


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
        cosines.append(float(cosine.detach()))
        if (step + 1) % 50 == 0:
            print(f"  step {step + 1}: train cosine {sum(cosines[-50:]) / 50:.3f}", flush=True)
    return {"arch": arch, "overrides": overrides, "at_init": at_init,
            "after": held_out_figures(model, projection, held_crops, held_targets),
            "train_teacher_cosine_last50": sum(cosines[-50:]) / min(50, len(cosines)),
            "train_curve": [round(sum(cosines[i:i + 25]) / len(cosines[i:i + 25]), 4)
                            for i in range(0, len(cosines), 25)],
            "images_per_s": args.steps * args.batch / (time.perf_counter() - started)}


def ab_rows(steps=(20, 100, 200, 300)) -> list[str]:
    """Teacher cosine on the training batches (mean of the logged steps up to each mark's
    window of 100) for the three runs of the same recipe."""
    lines = ["| run (same command, batch 64, lr 1e-3, bf16) | " + " | ".join(
        f"steps {max(1, s - 99) if s > 20 else 1}-{s}" for s in steps) + " |",
             "|---|" + "---|" * len(steps)]
    for name, run in RUN_LOGS.items():
        path = run / "metrics.jsonl"
        if not path.is_file():
            continue
        logged = [json.loads(line) for line in path.read_text().splitlines()]
        cells = []
        for mark in steps:
            window = [r["teacher_cosine"] for r in logged if mark - 100 < r["step"] <= mark]
            cells.append(f"{sum(window) / len(window):.3f}" if window else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def fragment(results: dict) -> str:
    setup = results["_setup"]
    lines = ["## Why the part fViT student did not learn (issue 13.1)", "",
             f"Probes: `python experiments/vit_diagnosis.py --steps {setup['steps']} --batch "
             f"{setup['batch']}` (cached teacher targets of the 47k-face pool, AdamW lr "
             f"{setup['lr']}, {setup['warmup']} warm-up steps, cosine, flips, "
             f"{'bf16' if setup.get('bf16', True) else 'fp32'}, 1 thread; held out: 512 faces "
             "of the pool never drawn for training).", "",
             "| variant | teacher cosine, training batches (last 50 steps) | held out | "
             "different faces alike, init -> after | landmark spread px | landmark jitter px "
             "(image to image) | nearest landmark px | images/s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        if name.startswith("_"):
            continue
        a, b = r["at_init"], r["after"]
        marks = [f"{a[k]:.1f} -> {b[k]:.1f}" if k in a else "-" for k in
                 ("landmark_spread_px", "landmark_jitter_px", "landmark_nearest_px")]
        lines.append(f"| {name} | {r['train_teacher_cosine_last50']:.3f} | "
                     f"{b['held_out_teacher_cosine']:.3f} | {a['different_faces_alike']:.2f} -> "
                     f"{b['different_faces_alike']:.2f} | " + " | ".join(marks)
                     + f" | {r['images_per_s']:.0f} |")
    lines += ["", "Same recipe, full batch (the shipped run's command; the class-token run is that "
              "command with `model.overrides={\"pool\":\"cls\"} train.stop_after=300` and "
              "`output_dir=runs/experiments/vit_ab_cls/part_fvit_tiny`):", "", *ab_rows(), "",
              *findings(results)]
    return "\n".join(lines) + "\n"


def findings(results: dict) -> list[str]:
    cls = results["part_fvit_tiny, class token (the paper's read-out)"]
    marks = results["part_fvit_tiny, landmark read-out"]
    return [
        "**Diagnosis.**",
        f"- *Landmarks neither collapse nor jitter: they do not move.* From the even grid the "
        f"landmark CNN starts on, the points keep their spread ({cls['at_init']['landmark_spread_px']:.1f} "
        f"-> {cls['after']['landmark_spread_px']:.1f} px) and their spacing (nearest neighbour "
        f"{cls['at_init']['landmark_nearest_px']:.1f} -> {cls['after']['landmark_nearest_px']:.1f} px), "
        f"and differ between images by {cls['after']['landmark_jitter_px']:.4f} px. Dropout 0.5 "
        "acts on the trunk features before a head whose weights start at 1% scale, and min-max "
        "rescaling pins the extent of the layout, so neither changes the tokens: the student is "
        "a ViT over a fixed grid of 8x8 patches, and the landmarks are not what holds it back.",
        f"- *The loss falls, slowly, and it is not over-fitting*: teacher cosine "
        f"{cls['train_teacher_cosine_last50']:.3f} on the training batches and "
        f"{cls['after']['held_out_teacher_cosine']:.3f} on held-out faces after the probe; in the "
        "full-batch A/B the class-token model gains 0.06 in 300 steps where MobileFaceNet gains 0.2.",
        f"- *The read-out is the bottleneck.* Attention starts near uniform, so the class token is "
        f"close to the same vector for every face: embeddings of different faces are "
        f"{cls['at_init']['different_faces_alike']:.2f} alike at initialisation and still "
        f"{cls['after']['different_faces_alike']:.2f} after training, and the loss reaches each "
        "patch only through that average. Reading every landmark token out through its own linear "
        "map (`pool=landmarks`, what MobileFaceNet's global depthwise convolution does for a CNN "
        "on aligned faces) gives every token its own gradient from the first step: "
        f"{marks['at_init']['different_faces_alike']:.2f} -> "
        f"{marks['after']['different_faces_alike']:.2f} alike, and in the same-recipe A/B the "
        "teacher cosine of steps 201-300 rises from the class token's to within reach of "
        "MobileFaceNet's (table above). Learning rate and warm-up were not the cause: 3e-4 and "
        "1e-3 with the class token had both stalled in earlier runs, and 3e-3 collapsed.",
        "- *Data.* Earlier runs on wild5 alone (7.6k blurry 80x80 faces) stayed at 0.10-0.12 for "
        "240 steps at lr 1e-3; here the class token reaches 0.16 by step 300 on the 47k-face pool, "
        "so the larger, sharper pool helps too, though this page has no same-recipe wild5 run.",
        "- Not tried here (a GPU budget would allow them): warm-starting the landmark CNN from "
        "MediaPipe's mesh, dense feature distillation at the landmark positions, a convolutional "
        "stem, consistent teaching with on-line targets on strongly augmented views (the `gpu` "
        "preset of `experiments/edge_students.py` uses on-line targets).",
    ]


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
    parser.add_argument("--report", action="store_true", help="only rewrite the fragment")
    parser.add_argument("--out", type=Path, default=RESULTS / "vit_diagnosis.json")
    args = parser.parse_args()
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if not args.report:
        crops, targets = load_cache(args.cache)
        # A fixed random subset: the pool's list is grouped by source, the probe should see all.
        pick = torch.randperm(len(crops), generator=torch.Generator().manual_seed(1))
        crops, targets = crops[pick], targets[pick]
        for name, (arch, overrides) in VARIANTS.items():
            if args.only and not any(o in name for o in args.only):
                continue
            print(f"{name}:", flush=True)
            results[name] = probe(arch, overrides, crops, targets, args)
            print(json.dumps({k: v for k, v in results[name].items() if k != "train_curve"}),
                  flush=True)
            results["_setup"] = {"steps": args.steps, "batch": args.batch, "lr": args.lr,
                                 "warmup": args.warmup, "bf16": args.bf16,
                                 "cache": str(args.cache)}
            write_json(args.out, results)
    (RESULTS / "vit_diagnosis.md").write_text(fragment(results))
    print(f"wrote {RESULTS / 'vit_diagnosis.md'}")


if __name__ == "__main__":
    main()
