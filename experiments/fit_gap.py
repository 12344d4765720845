"""Where a campaign line's student stands against its teacher (issue 21: what limits it): the mean
cosine between the student's projected embedding and the teacher's on clean faces it trained on
(pool faces, the teacher's cached clean targets) and on faces it never saw (the CelebA eval
identities, the teacher's own crop of each). A student that matches the teacher on the pool but
not on unseen faces is limited by the data (more faces); one that matches neither, by capacity
or training time.

    python experiments/fit_gap.py --line mobilefacenet-lr3e-4 part_fvit_tiny-scratch-64-lm-d5

Reads each line's committed `experiments/campaign/<line>/checkpoint.pt` (student and projection,
BatchNorm statistics as trained) and the cache `runs/teacher_targets_pool_retail0095_int8.pt`
(built by the campaign's first stint). Writes docs/results/fit_gap.{json,md} (a section of
docs/results.md).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from campaign import STATE, TEACHER  # noqa: E402
from faces import REPO, celeba_eval_crops, embed_with, torch_embedder, write_json  # noqa: E402

import wild_eval  # noqa: E402
from report import main as rebuild_results_page  # noqa: E402

TARGETS = REPO / "runs" / "teacher_targets_pool_retail0095_int8.pt"
OUT = REPO / "docs" / "results" / "fit_gap.json"


def student_of(line: str):
    """(the line's student with its projection appended, in eval mode; the state's step and
    images seen) from the committed checkpoint."""
    import torch

    from lafs_edge.models import create_model

    state = json.loads((STATE / line / "state.json").read_text())
    saved = torch.load(STATE / line / "checkpoint.pt", map_location="cpu", weights_only=False)
    weights = {k: v.float() for k, v in saved["modules"]["student"].items()}
    model = create_model(state["student"], **state["recipe"].get("overrides", {}))
    model.load_state_dict({k[len("model."):]: v for k, v in weights.items()
                           if k.startswith("model.")})
    projection = torch.nn.Linear(model.embedding_dim, weights["projection.weight"].shape[0])
    projection.load_state_dict({"weight": weights["projection.weight"],
                                "bias": weights["projection.bias"]})
    return torch.nn.Sequential(model, projection).eval(), state["step"], state["images_seen"]


def projected(student, crops_nchw) -> np.ndarray:
    """Unit rows of the student's projected embedding of uint8 NCHW crops."""
    return embed_with(torch_embedder(student), crops_nchw.permute(0, 2, 3, 1).numpy())


def teacher_on_eval() -> np.ndarray:
    import torch

    from lafs_edge.train.sources import normalise
    from lafs_edge.train.teachers import load_teacher

    teacher = load_teacher(REPO / TEACHER, torch.device("cpu"))
    crops, _ = celeba_eval_crops()
    views = wild_eval.teacher_views(crops, teacher.geometry.template, teacher.geometry.crop_size)
    rows = [teacher(normalise(torch.from_numpy(views[i:i + 64]).permute(0, 3, 1, 2)))[0].numpy()
            for i in range(0, len(views), 64)]
    out = np.concatenate(rows)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--line", nargs="+", required=True, help="campaign line names")
    parser.add_argument("--faces", type=int, default=2048, help="pool faces drawn (seed 0)")
    args = parser.parse_args()
    if not TARGETS.is_file():
        raise SystemExit(f"{TARGETS}: missing (the campaign's first stint builds it)")
    cache = torch.load(TARGETS, map_location="cpu", weights_only=False)
    picks = torch.from_numpy(np.random.default_rng(0).choice(len(cache["crops"]), args.faces,
                                                             replace=False))
    pool_targets = cache["targets"][picks, 0].numpy()
    pool_targets /= np.linalg.norm(pool_targets, axis=1, keepdims=True)
    eval_crops = torch.from_numpy(celeba_eval_crops()[0]).permute(0, 3, 1, 2)
    eval_targets = teacher_on_eval()
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}
    for line in args.line:
        student, step, images = student_of(line)
        pool = np.einsum("ij,ij->i", projected(student, cache["crops"][picks]), pool_targets)
        unseen = np.einsum("ij,ij->i", projected(student, eval_crops), eval_targets)
        results[line] = {"step": step, "images_seen": images, "pool_faces": args.faces,
                         "pool_cosine": round(float(pool.mean()), 4),
                         "eval_cosine": round(float(unseen.mean()), 4),
                         "eval_faces": len(unseen)}
        print(f"{line} at {images:,} images: cosine to the teacher {pool.mean():.3f} on "
              f"{args.faces} pool faces, {unseen.mean():.3f} on the {len(unseen)} CelebA eval "
              "faces", flush=True)
        write_json(OUT, results)
    OUT.with_suffix(".md").write_text(fragment(results))
    rebuild_results_page()


def fragment(results: dict) -> str:
    lines = ["## How close the students are to their teacher (issue 21)", "",
             "Mean cosine between each campaign line's student (its projection to the teacher's "
             "256-d included, BatchNorm as trained, from the committed checkpoint) and the "
             "teacher's FP16-INT8 IR, on clean faces of the pool it trains on and on the CelebA "
             "eval identities it never saw:", "", "```bash",
             "python experiments/fit_gap.py --line " + " ".join(results), "```", "",
             "| line | images seen | pool faces | cosine, pool | cosine, CelebA eval |",
             "|---|---|---|---|---|"]
    lines += [f"| {line} | {r['images_seen']:,} | {r['pool_faces']:,} | {r['pool_cosine']:.3f} "
              f"| {r['eval_cosine']:.3f} |" for line, r in results.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
