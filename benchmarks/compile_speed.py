"""What `train.compile=true` (torch.compile of the trained modules) does to the CPU distillation
step of each student: images/s eager and compiled, the minutes of compiling a run pays at its
start, and the loss of every step beside the eager run's (same weights, same batches).

    python benchmarks/compile_speed.py [--threads 2 --batch 64 --steps 12 --rounds 2
                                        --json benchmarks/results/compile_speed.json]

Every run is the engine itself, as benchmarks/train_speed.py runs it (its stand-in teacher and
config: cached targets, bf16 autocast, channels-last convolutions; the faces drawn from the
campaign's cached pool targets, the students in the campaign's shapes): `Trainer(cfg,
DistillTask(cfg), dataset).fit()`. The rate is the trainer's own (`TrainResult.images_per_s`, the
first 2 steps left out; compiling happens in the first), and a run's start is its wall time
beyond its counted steps. Eager and compiled runs alternate, so a neighbour's load hits both
alike; the median round is kept. The compile cache starts cold: the first compiled run pays the
whole compile (a campaign's first chunk), later ones read inductor's cache (its later chunks).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import STUDENTS, engine_config, face_pool, stand_in_teacher  # noqa: E402

from lafs_edge.convert.bench import machine  # noqa: E402
from lafs_edge.train.distill import DistillTask  # noqa: E402
from lafs_edge.train.distill_views import MirrorTarget  # noqa: E402
from lafs_edge.train.engine import SeededDataset, Trainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
POOL_CACHE = ROOT / "runs" / "teacher_targets_pool_retail0095_int8.pt"   # the campaign's targets
# The campaign's shapes (experiments/campaign.py): the landmark student with 64 landmarks, depth 5.
SHAPES = {"part_fvit_tiny": {"pool": "landmarks", "num_landmarks": 64, "depth": 5},
          "mobilefacenet": {}}


def run(name: str, compiled: bool, pool, batch: int, steps: int, teacher: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="compile_speed_") as out:
        cfg = engine_config(name, "bf16", batch, steps, teacher, Path(out))
        cfg["train"]["compile"] = compiled
        cfg["model"]["overrides"] = SHAPES[name]
        dataset = SeededDataset(pool, MirrorTarget(cfg["augment"]["flip"]), int(cfg["seed"]))
        started = time.perf_counter()
        result = Trainer(cfg, DistillTask(cfg), dataset).fit()
        wall = time.perf_counter() - started
    steady = (steps - 2) * batch / result.images_per_s   # the steps the rate counts
    return {"images_per_s": result.images_per_s, "start_s": wall - steady,
            "losses": result.losses}


def measure_student(name: str, pool, args, teacher: Path) -> dict:
    runs: dict[str, list[dict]] = {"eager": [], "compiled": []}
    for _ in range(args.rounds):
        for setting in runs:
            runs[setting].append(run(name, setting == "compiled", pool, args.batch, args.steps,
                                     teacher))
            print(f"{name}, {setting}: {runs[setting][-1]['images_per_s']:.1f} images/s, "
                  f"{runs[setting][-1]['start_s']:.0f} s to the first counted step", flush=True)
    median = {s: sorted(r, key=lambda x: x["images_per_s"])[(len(r) - 1) // 2]
              for s, r in runs.items()}
    gaps = [abs(a - b) for a, b in zip(median["eager"]["losses"], median["compiled"]["losses"])]
    return {**{s: {"images_per_s": m["images_per_s"],
                   "rounds_images_per_s": [r["images_per_s"] for r in runs[s]],
                   "rounds_start_s": [r["start_s"] for r in runs[s]]}
               for s, m in median.items()},
            "speedup": median["compiled"]["images_per_s"] / median["eager"]["images_per_s"],
            "loss_gap_max": max(gaps), "loss_eager_mean": statistics.fmean(
                median["eager"]["losses"])}


def markdown(result: dict) -> str:
    lines = [f"{result['machine']}, torch {result['torch']}, {result['threads']} threads, batch "
             f"{result['batch']}, bf16 autocast, channels-last, {result['steps']} steps a run "
             f"(the first 2 not counted), median of {result['rounds']} alternating rounds; "
             f"faces: {result['data']}", "",
             "| student | eager images/s | compiled images/s | speed-up | compiled run's start, "
             "first / later rounds (s) | eager run's start (s) | largest loss gap, same steps |",
             "|---|---|---|---|---|---|---|"]
    for name, s in result["students"].items():
        lines.append(f"| {name} | {s['eager']['images_per_s']:.1f} | "
                     f"{s['compiled']['images_per_s']:.1f} | {s['speedup']:.2f}x | "
                     f"{s['compiled']['rounds_start_s'][0]:.0f} / "
                     f"{max(s['compiled']['rounds_start_s'][1:], default=0):.0f} | "
                     f"{max(s['eager']['rounds_start_s']):.0f} | "
                     f"{s['loss_gap_max']:.4f} (mean loss {s['loss_eager_mean']:.4f}) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=12, help="steps per run (2 not counted)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--faces", type=int, default=1024)
    parser.add_argument("--targets", default=str(POOL_CACHE))
    parser.add_argument("--students", nargs="+", choices=list(STUDENTS), default=list(STUDENTS))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # a cold compile cache of its own: the first compiled run pays what a campaign's first chunk
    # pays, later rounds what its later chunks pay (inductor's cache on disk)
    cache = tempfile.TemporaryDirectory(prefix="compile_speed_inductor_")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache.name
    pool, data = face_pool(args.faces, None if args.targets == "random" else Path(args.targets))
    result = {"machine": machine(), "torch": torch.__version__, "threads": args.threads,
              "batch": args.batch, "steps": args.steps, "rounds": args.rounds, "data": data,
              "students": {}}
    with tempfile.TemporaryDirectory(prefix="compile_speed_teacher_") as folder:
        teacher = stand_in_teacher(Path(folder), int(pool.targets.shape[-1]))
        for name in args.students:
            result["students"][name] = measure_student(name, pool, args, teacher)
    print("\n" + markdown(result), end="", flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        args.json.with_suffix(".md").write_text(markdown(result))


if __name__ == "__main__":
    main()
