"""Quick students: a few minutes of CPU distillation so that conversion and int8 checks run on
trained weights (random weights say little about int8 behaviour).

Teacher: the external OpenVINO model face-reidentification-retail-0095 (../shared/models; 128x128
BGR 0-255 input, aligned to the 96x112 ArcFace template scaled to 128x128; 256-d output).
Data: ../shared/data/wild5 (7,641 unlabeled faces, 5 points each), aligned once for the teacher
(128x128) and once for the students (112x112 ArcFace template, `lafs_edge.align.align_face`).
Teacher targets are computed once, for every face and its mirror image. Students learn a
linear projection to 256-d (discarded afterwards) under a cosine loss, with horizontal flips.
Every 15th face is held out and the final held-out cosine to the teacher is printed.

This is not `lafs-edge train distill` (issue 4) and reaches a weak student (DESIGN.md: 0.43 cosine
after 24 minutes); what matters here is realistic activation statistics for quantization.

    nice -n 10 python experiments/quick_students.py --minutes 20 --out runs/quick_students
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lafs_edge.align import align_face, template_for
from lafs_edge.image import read_image, to_model_input
from lafs_edge.models import create_model, save_checkpoint
from lafs_edge.train.data.landmarks import read_landmark_list

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TEACHER_XML = "models/face-reidentification-retail-0095/FP16/face-reidentification-retail-0095.xml"
# The teacher's template: ArcFace points for a 96x112 crop (its README), scaled to 128x128.
TEMPLATE_96x112 = np.array([[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366],
                            [33.5493, 92.3655], [62.7299, 92.2041]])
TEACHER_TEMPLATE = template_for(128, 128, TEMPLATE_96x112, (96, 112))


def load_wild5(folder: Path):
    """-> student crops (N,112,112,3) RGB and teacher crops (N,128,128,3) RGB, both uint8."""
    students, teachers = [], []
    for rel, points in read_landmark_list(folder / "landmarks.txt"):
        image = read_image(folder / rel)
        students.append(align_face(image, points, 112))
        teachers.append(align_face(image, points, 128, template=TEACHER_TEMPLATE))
    return np.stack(students), np.stack(teachers)


def teacher_targets(crops: np.ndarray) -> np.ndarray:
    """L2-normalised 256-d teacher embeddings of `crops` (RGB uint8, 128x128)."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(SHARED / TEACHER_XML), "CPU")
    request = compiled.create_infer_request()
    rows = []
    for crop in crops:  # the IR has a fixed batch of 1
        bgr = crop[None, :, :, ::-1].transpose(0, 3, 1, 2).astype(np.float32)
        rows.append(request.infer({0: bgr})[compiled.output(0)].reshape(-1))
    out = np.stack(rows)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def load_or_compute_targets(cache: Path):
    """Aligned student crops and teacher targets; the targets are cached (they cost a minute)."""
    faces, teacher_crops = load_wild5(SHARED / "data" / "wild5")
    if cache.is_file():
        data = np.load(cache)
        if len(data["targets"]) == len(faces):
            return faces, data["targets"], data["flipped"]
    targets = teacher_targets(teacher_crops)
    flipped = teacher_targets(teacher_crops[:, :, ::-1])
    np.savez(cache, targets=targets, flipped=flipped)
    return faces, targets, flipped


def distil(name: str, faces: np.ndarray, targets: np.ndarray, flipped: np.ndarray,
           train_idx: np.ndarray, minutes: float, batch_size: int, lr: float, seed: int):
    torch.manual_seed(seed)
    model = create_model(name)
    project = torch.nn.Linear(model.embedding_dim, targets.shape[1])
    params = list(model.parameters()) + list(project.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    rng = np.random.default_rng(seed)
    deadline, start, step = time.time() + 60 * minutes, time.time(), 0
    model.train()
    while time.time() < deadline:
        batch = rng.choice(train_idx, batch_size, replace=False)
        flip = rng.random(batch_size) < 0.5
        images = faces[batch].copy()
        images[flip] = images[flip, :, ::-1]
        target = np.where(flip[:, None], flipped[batch], targets[batch])
        # cosine learning rate over the time budget (the step count is unknown in advance)
        progress = min(1.0, (time.time() - start) / (60 * minutes))
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * progress))
        out = project(model(to_model_input(images)))
        loss = 1 - F.cosine_similarity(out, torch.from_numpy(target), dim=1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if step % 20 == 0:
            print(f"{name} step {step} loss {loss.item():.4f} ({time.time() - start:.0f}s)", flush=True)
    return model.eval(), project.eval(), step


@torch.no_grad()
def held_out_cosine(model, project, faces, targets, index) -> float:
    out = torch.cat([project(model(to_model_input(faces[index[i:i + 64]])))
                     for i in range(0, len(index), 64)])
    return F.cosine_similarity(out, torch.from_numpy(targets[index]), dim=1).mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["part_fvit_tiny", "mobilefacenet"])
    parser.add_argument("--minutes", type=float, default=5.0, help="training time per model")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "runs" / "quick_students"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    faces, targets, flipped = load_or_compute_targets(out / "teacher_targets.npz")
    print(f"{len(faces)} faces aligned, teacher targets in {time.time() - t0:.0f}s", flush=True)
    held_out = np.arange(0, len(faces), 15)
    train_idx = np.setdiff1d(np.arange(len(faces)), held_out)

    for name in args.models:
        model, project, steps = distil(name, faces, targets, flipped, train_idx, args.minutes,
                                       args.batch_size, args.lr, args.seed)
        cosine = held_out_cosine(model, project, faces, targets, held_out)
        path = out / f"{name}.pt"
        save_checkpoint(model, path, distill={"teacher": "face-reidentification-retail-0095",
                                              "steps": steps, "minutes": args.minutes,
                                              "held_out_cosine": cosine,
                                              "held_out_every": 15})
        print(f"{name}: {steps} steps, held-out cosine to teacher {cosine:.3f} -> {path}", flush=True)


if __name__ == "__main__":
    main()
