"""What consistent teaching costs: the campaign's training step with the teacher on every degraded
view (`distill.targets=loader`) against the same step on precomputed clean targets
(`distill.targets=cached`), through the real command (`lafs-edge train distill`).

    python benchmarks/teaching_cost.py [--student mobilefacenet --faces 2048 --steps 40
                                        --rounds 2 --threads 2 --workers 1]

Both settings train the same student (the shipped weights) on the same faces (a seeded draw from
the pool, experiments/edge_students.py's list), at batch 64, bf16, the campaign's thread and worker
counts. `cached` first embeds each face and its mirror once (not timed; the file is reused);
`loader` warps, degrades (augment.hard) and embeds every view in the data loader's worker with the
FP16-INT8 IR. Images/s are taken from the run's metrics between its 10th step and its last (setup,
the teacher's compilation and the first batches left out); the settings run interleaved,
`--rounds` times, and the median round is kept. The issue-21 goal: `loader` at >= 0.95x `cached`.
Writes benchmarks/results/teaching_cost.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
from edge_students import DATA_ARG, pool_list  # noqa: E402

from lafs_edge.models.pretrained import weights_file  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TEACHER = "train/configs/teachers/retail_0095_int8.yaml"
SKIP_STEPS = 10


def face_list(faces: int, folder: Path) -> Path:
    """A seeded draw of `faces` lines of the pool's 5-point list."""
    import numpy as np

    lines = pool_list().read_text().splitlines()
    picks = np.random.default_rng(0).choice(len(lines), faces, replace=False)
    path = folder / f"pool_{faces}.txt"
    path.write_text("\n".join(lines[i] for i in sorted(picks)) + "\n")
    return path


def distill_argv(student: str, targets: str, faces: Path, steps: int, workers: int,
                 out: Path, cache: Path) -> list[str]:
    return ["lafs-edge", "train", "distill", "--config", "distill", f"model.arch={student}",
            f"model.init={weights_file(student)}", f"distill.teacher={TEACHER}",
            f"distill.targets={targets}", f"distill.target_cache={cache}",
            "data.format=landmarks", f"data.root={DATA_ARG}", f"data.list_file={faces}",
            f"data.num_workers={workers if targets == 'loader' else 0}",
            "optim.batch_size=64", f"optim.max_steps={steps}", "optim.lr=3e-4",
            "optim.warmup_epochs=0", "train.precision=bf16", "train.checkpoint_every=1000000",
            "train.log_every=1", "train.progress=false", f"output_dir={out}"]


def images_per_second(metrics: Path, batch: int = 64) -> float:
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    first = next(r for r in rows if r["step"] >= SKIP_STEPS)
    last = rows[-1]
    return (last["step"] - first["step"]) * batch / (last["time"] - first["time"])


def run(argv: list[str], threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"failed: {' '.join(argv)}\n{done.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default="mobilefacenet")
    parser.add_argument("--faces", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if args.steps <= SKIP_STEPS + 5:
        raise SystemExit(f"--steps must be above {SKIP_STEPS + 5} (the first {SKIP_STEPS} are "
                         "left out)")
    work = ROOT / "runs" / "teaching_cost"
    work.mkdir(parents=True, exist_ok=True)
    faces = face_list(args.faces, work)
    cache = work / f"targets_{args.faces}.pt"
    rates: dict[str, list[float]] = {"cached": [], "loader": []}
    for _ in range(args.rounds):
        for targets in rates:
            with tempfile.TemporaryDirectory(prefix="teaching_cost_") as out:
                if targets == "cached" and not cache.is_file():   # the one-off embedding
                    run(distill_argv(args.student, targets, faces, 1, 0, Path(out) / "warm",
                                     cache), args.threads)
                run(distill_argv(args.student, targets, faces, args.steps, args.workers,
                                 Path(out), cache), args.threads)
                rates[targets].append(images_per_second(Path(out) / "metrics.jsonl"))
                print(f"{targets}: {rates[targets][-1]:.1f} images/s", flush=True)
    from lafs_edge.convert.bench import machine

    median = {k: statistics.median(v) for k, v in rates.items()}
    result = {"machine": machine(), "student": args.student, "faces": args.faces,
              "steps": args.steps, "rounds": rates, "threads": args.threads,
              "workers": args.workers, "median": median,
              "ratio": median["loader"] / median["cached"]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "teaching_cost.json").write_text(json.dumps(result, indent=1) + "\n")
    table = ["| targets | images/s (median) | rounds | vs cached |", "|---|---|---|---|"]
    for k, v in rates.items():
        table.append(f"| {k} | {median[k]:.1f} | {', '.join(f'{r:.1f}' for r in v)} | "
                     f"{median[k] / median['cached']:.2f}x |")
    (RESULTS / "teaching_cost.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
