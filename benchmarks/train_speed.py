"""CPU training speed of the students' distillation step, and what bf16 does to the loss curve.

    python benchmarks/train_speed.py [--threads 2 --batch 64 --steps 8 --rounds 3
                                      --curve-steps 60 --json benchmarks/results/train_speed.json]

Every figure is the engine itself: `Trainer(cfg, DistillTask(cfg), dataset).fit()` on cached
teacher targets (`distill.targets=cached`, `data.num_workers=0`, as the CPU preset of
experiments/edge_students.py trains the shipped students). So one step is the engine's whole
step: a batch from the DataLoader (mirror draw, collate), `normalise`, the student and its
projection to the teacher's width, the cosine loss and the teacher-cosine metric (a `float()`),
backward, the global gradient-norm clip, the NaN/inf check, AdamW under the cosine lr schedule,
and the loop's bookkeeping (metrics log, lr). Faces: a seeded draw from the pool's cached targets
(runs/teacher_targets_pool_retail0095.pt: real crops, the teacher's real embeddings) when that
file is there, else random crops and targets. Cached targets never run the teacher; a stand-in
checkpoint of the targets' width gives the engine its name and width.

Speed, in one run: images/s of that step per student in three settings,
  - `fp32, NCHW`: how the engine trained before issue 16 (the baseline; every ratio is to it);
  - `fp32, channels-last`: convolution weights channels-last (the engine does this now);
  - `bf16, channels-last`: plus `train.precision=bf16` autocast;
each run `--rounds` times, the settings interleaved (a neighbour's load on a shared machine then
hits every setting alike), the median round kept; each with a profile of the step: timers at
the boundaries of the engine's phases (hooks on the student and the optimizer, the task's loss
and step callbacks, the trainer's clip), so the share of the step outside forward, backward and
the optimizer step is measured, not guessed.

Loss curves: fp32 and bf16 (channels-last) from the same initial weights over the same batches,
and the noise floor: fp32 again with the pool in another order (same weights and faces, other
batches and mirror draws). Curves are compared as means over windows of steps (one step's loss
depends on its batch); bf16 is "unchanged within noise" when its largest window gap to fp32 is
no larger than the reordered run's.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from lafs_edge.convert.bench import machine
from lafs_edge.models import create_model, save_checkpoint
from lafs_edge.train.config import load_config
from lafs_edge.train.distill import DistillTask
from lafs_edge.train.distill_views import MirrorTarget
from lafs_edge.train.teacher_targets import TeacherTargets
from lafs_edge.train.engine import SeededDataset, Trainer, use_channels_last

ROOT = Path(__file__).resolve().parents[1]
POOL_CACHE = ROOT / "runs" / "teacher_targets_pool_retail0095.pt"
# Overrides and peak lr of the CPU preset (experiments/edge_students.py) that trains them.
STUDENTS = {"part_fvit_tiny": {"overrides": {"pool": "landmarks"}, "lr": 1e-3},
            "mobilefacenet": {"overrides": {}, "lr": 2e-3}}
SETTINGS = (("fp32, NCHW", False, "fp32"), ("fp32, channels-last", True, "fp32"),
            ("bf16, channels-last", True, "bf16"))
BASELINE = SETTINGS[0][0]
WARMUP_STEPS = 2  # first steps left out of the rates: allocation, oneDNN primitive creation
# The engine's phases in step order; a timer mark starts each one.
PHASES = ("data", "normalise", "forward", "loss and metrics", "backward", "gradient clip",
          "finite check", "optimizer", "zero_grad", "loop bookkeeping")
COMPUTE = ("forward", "backward", "optimizer")


class PhaseClock:
    """`mark(phase)`: `phase` starts now. A step runs from one "data" mark to the next."""

    def __init__(self):
        self.marks: list[tuple[str, float]] = []

    def mark(self, phase: str) -> None:
        self.marks.append((phase, time.perf_counter()))

    def steps(self) -> list[dict[str, float]]:
        """Seconds per phase of every complete step (the last one has no closing mark)."""
        steps: list[dict[str, float]] = []
        for (phase, start), (_, end) in zip(self.marks, self.marks[1:]):
            if phase == "data":
                steps.append({})
            if steps:
                steps[-1][phase] = steps[-1].get(phase, 0.0) + end - start
        return steps[:-1]


class TimedDistillTask(DistillTask):
    """The engine's DistillTask with the convolution layout set explicitly, and phase marks."""

    def __init__(self, cfg: dict, channels_last: bool, clock: PhaseClock):
        super().__init__(cfg)
        self.channels_last, self.clock, self.hooked = channels_last, clock, False

    def setup(self, info) -> None:
        super().setup(info)
        if self.channels_last:
            use_channels_last(self.student)
        else:  # undo what the engine does now: the baseline is the engine before issue 16
            for m in self.student.modules():
                if isinstance(m, nn.Conv2d):
                    m.to(memory_format=torch.contiguous_format)
        self.student.register_forward_pre_hook(lambda *_: self.clock.mark("forward"))
        self.student.register_forward_hook(lambda *_: self.clock.mark("loss and metrics"))

    def before_step(self, step: int, total_steps: int, optimizer) -> None:
        super().before_step(step, total_steps, optimizer)
        if not self.hooked:  # the optimizer exists from the first step on
            optimizer.register_step_pre_hook(lambda *_: self.clock.mark("optimizer"))
            optimizer.register_step_post_hook(lambda *_: self.clock.mark("zero_grad"))
            self.hooked = True
        self.clock.mark("data")

    def loss(self, batch, step: int, micro: int):
        self.clock.mark("normalise")
        result = super().loss(batch, step, micro)
        self.clock.mark("backward")
        return result

    def after_step(self, step: int, total_steps: int) -> None:
        super().after_step(step, total_steps)
        self.clock.mark("loop bookkeeping")


def time_clip(trainer: Trainer, clock: PhaseClock) -> None:
    """Marks around the trainer's gradient clip (it separates backward from the finite check)."""
    clip = trainer._clip

    def timed(max_norm: float) -> torch.Tensor:
        clock.mark("gradient clip")
        norm = clip(max_norm)
        clock.mark("finite check")
        return norm

    trainer._clip = timed


def face_pool(faces: int, cache: Path | None) -> tuple[TeacherTargets, str]:
    """`faces` cached targets: a seeded draw from the pool's cache, else random ones."""
    if cache is not None and cache.is_file():
        state = torch.load(cache, mmap=True, weights_only=True, map_location="cpu")
        pick = torch.randperm(len(state["crops"]), generator=torch.Generator().manual_seed(0))
        pick = pick[:faces]
        return (TeacherTargets(state["crops"][pick], state["targets"][pick],
                               state["labels"][pick], 0),
                f"{len(pick)} faces drawn from {cache.name} (real crops and teacher targets)")
    g = torch.Generator().manual_seed(0)
    crops = torch.randint(0, 256, (faces, 3, 112, 112), dtype=torch.uint8, generator=g)
    targets = torch.nn.functional.normalize(torch.randn(faces, 2, 256, generator=g), dim=-1)
    return (TeacherTargets(crops, targets, torch.zeros(faces, dtype=torch.int64), 0),
            f"{faces} random crops and targets (no cached pool targets found)")


def reordered(pool: TeacherTargets, seed: int) -> TeacherTargets:
    """The same faces in another order: other batches and mirror draws from the same seed."""
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))
    return TeacherTargets(pool.crops[order], pool.targets[order], pool.labels[order], 0)


def stand_in_teacher(folder: Path, width: int) -> Path:
    """A checkpoint of the targets' width: setup reads its name and width, never runs it."""
    path = folder / "stand_in_teacher.pt"
    save_checkpoint(create_model("mobilefacenet", embedding_dim=width), path)
    return path


def engine_config(name: str, precision: str, batch: int, steps: int, teacher: Path,
                  out: Path) -> dict:
    student = STUDENTS[name]
    return load_config("distill", overrides=[
        f"model.arch={name}", f"model.overrides={json.dumps(student['overrides'])}",
        f"distill.teacher={teacher}", "distill.targets=cached", "data.num_workers=0",
        f"optim.batch_size={batch}", f"optim.max_steps={steps}", f"optim.lr={student['lr']}",
        "optim.warmup_epochs=0.1", f"train.precision={precision}", "train.device=cpu",
        "train.checkpoint_every=1000000", "train.keep_checkpoints=1", "train.progress=false",
        "train.log_every=20", f"output_dir={out}"])


def run_engine(name: str, precision: str, channels_last: bool, pool: TeacherTargets,
               batch: int, steps: int, teacher: Path) -> tuple[list[float], PhaseClock]:
    """One engine run in a scratch output folder: (the loss of every step, its phase timers)."""
    clock = PhaseClock()
    with tempfile.TemporaryDirectory(prefix="train_speed_") as out:
        cfg = engine_config(name, precision, batch, steps, teacher, Path(out))
        task = TimedDistillTask(cfg, channels_last, clock)
        # as distill.build_dataset wraps cached targets
        dataset = SeededDataset(pool, MirrorTarget(cfg["augment"]["flip"]), int(cfg["seed"]))
        trainer = Trainer(cfg, task, dataset)
        time_clip(trainer, clock)
        result = trainer.fit()
    return result.losses, clock


def measure_settings(name: str, pool: TeacherTargets, batch: int, steps: int, rounds: int,
                     teacher: Path) -> list[dict]:
    """Every setting `rounds` times, interleaved; per setting the median round, with its ratio to
    the baseline's median."""
    found: dict[str, list[dict]] = {label: [] for label, _, _ in SETTINGS}
    for _ in range(rounds):
        for label, channels_last, precision in SETTINGS:
            found[label].append(measure_speed(name, channels_last, precision, pool, batch, steps,
                                              teacher))
            print(f"{name}, {label}: {found[label][-1]['images_per_s']:.1f} images/s", flush=True)
    rows = []
    for label, runs in found.items():
        median = sorted(runs, key=lambda r: r["images_per_s"])[(len(runs) - 1) // 2]
        rows.append({"setting": label, **median,
                     "rounds_images_per_s": [r["images_per_s"] for r in runs]})
    for row in rows:
        row["vs_baseline"] = row["images_per_s"] / rows[0]["images_per_s"]
    return rows


def measure_speed(name: str, channels_last: bool, precision: str, pool: TeacherTargets,
                  batch: int, steps: int, teacher: Path) -> dict:
    # one step more than measured: its start closes the last measured step
    _, clock = run_engine(name, precision, channels_last, pool, batch,
                          WARMUP_STEPS + steps + 1, teacher)
    measured = clock.steps()[WARMUP_STEPS:]
    seconds = sum(sum(step.values()) for step in measured)
    phase_ms = {p: 1000 * sum(step.get(p, 0.0) for step in measured) / len(measured)
                for p in PHASES}
    step_ms = sum(phase_ms.values())
    outside = sum(ms for p, ms in phase_ms.items() if p not in COMPUTE)
    return {"images_per_s": len(measured) * batch / seconds, "step_ms": step_ms,
            "phase_ms": phase_ms, "outside_compute_share": outside / step_ms}


def window_means(losses: list[float], window: int) -> list[float]:
    return [statistics.fmean(losses[i:i + window])
            for i in range(0, len(losses) - window + 1, window)]


def curve_gap(a: list[float], b: list[float], window: int) -> dict:
    gaps = [abs(x - y) for x, y in zip(window_means(a, window), window_means(b, window))]
    return {"max_window": max(gaps), "final_window": gaps[-1]}


def measure_curves(name: str, pool: TeacherTargets, batch: int, steps: int,
                   teacher: Path) -> dict:
    window = max(1, steps // 6)
    fp32, _ = run_engine(name, "fp32", True, pool, batch, steps, teacher)
    bf16, _ = run_engine(name, "bf16", True, pool, batch, steps, teacher)
    other_order, _ = run_engine(name, "fp32", True, reordered(pool, 1), batch, steps, teacher)
    return {"window": window, "fp32": fp32, "bf16": bf16, "fp32_other_order": other_order,
            "bf16_gap": curve_gap(fp32, bf16, window),
            "noise_gap": curve_gap(fp32, other_order, window)}


def measure(args: argparse.Namespace, teacher_folder: Path) -> dict:
    pool, data = face_pool(args.faces, None if args.targets == "random" else Path(args.targets))
    teacher = stand_in_teacher(teacher_folder, int(pool.targets.shape[-1]))
    result = {"machine": machine(), "torch": torch.__version__, "threads": args.threads,
              "batch": args.batch, "steps": args.steps, "warmup_steps": WARMUP_STEPS,
              "rounds": args.rounds, "data": data, "baseline": BASELINE,
              "curve": {"steps": args.curve_steps, "batch": args.curve_batch},
              "phases": list(PHASES), "compute_phases": list(COMPUTE), "students": {}}
    for name in args.students:
        rows = measure_settings(name, pool, args.batch, args.steps, args.rounds, teacher)
        best = max(rows, key=lambda r: r["images_per_s"])
        result["students"][name] = {
            "settings": rows, "best": best["setting"], "best_vs_baseline": best["vs_baseline"],
            "curves": measure_curves(name, pool, args.curve_batch, args.curve_steps, teacher)}
    return result


def markdown(result: dict) -> str:
    students = result["students"]
    lines = [f"{result['machine']}, torch {result['torch']}, {result['threads']} threads, "
             f"batch {result['batch']}, {result['steps']} measured steps after "
             f"{result['warmup_steps']}, median of {result['rounds']} interleaved rounds; faces: "
             f"{result['data']}", "",
             "| student | setting | images/s | vs fp32 NCHW | ms/step | forward | backward | "
             "optimizer | outside fwd/bwd/opt | largest outside |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in students.items():
        for r in s["settings"]:
            share = {p: ms / r["step_ms"] for p, ms in r["phase_ms"].items()}
            outside = sorted((p for p in share if p not in COMPUTE), key=share.get, reverse=True)
            lines.append(f"| {name} | {r['setting']} | {r['images_per_s']:.1f} | "
                         f"{r['vs_baseline']:.2f}x | {r['step_ms']:.0f} | "
                         + " | ".join(f"{100 * share[p]:.0f}%" for p in COMPUTE)
                         + f" | {100 * r['outside_compute_share']:.1f}% | "
                         + ", ".join(f"{p} {100 * share[p]:.1f}%" for p in outside[:2]) + " |")
    curve = result["curve"]
    lines += ["", "| student | loss gap bf16 vs fp32, largest / final window | noise floor: fp32 "
              "other order, same | final loss fp32 / bf16 / other order |", "|---|---|---|---|"]
    for name, s in students.items():
        c = s["curves"]
        lines.append(f"| {name} | {c['bf16_gap']['max_window']:.4f} / "
                     f"{c['bf16_gap']['final_window']:.4f} | {c['noise_gap']['max_window']:.4f} / "
                     f"{c['noise_gap']['final_window']:.4f} | {c['fp32'][-1]:.4f} / "
                     f"{c['bf16'][-1]:.4f} / {c['fp32_other_order'][-1]:.4f} |")
    lines += ["", f"Curves: {curve['steps']} steps of batch {curve['batch']}, compared as means "
              f"over windows of {students[next(iter(students))]['curves']['window']} steps."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64, help="speed: images per step")
    parser.add_argument("--steps", type=int, default=8, help=f"speed: measured steps per setting "
                        f"(after {WARMUP_STEPS} warm-up steps)")
    parser.add_argument("--rounds", type=int, default=3, help="speed: runs of every setting, "
                        "interleaved; the median is kept")
    parser.add_argument("--curve-steps", type=int, default=60)
    parser.add_argument("--curve-batch", type=int, default=32)
    parser.add_argument("--faces", type=int, default=1024, help="faces in the training pool")
    parser.add_argument("--targets", default=str(POOL_CACHE), help="cached teacher targets to "
                        "draw the faces from, or `random`")
    parser.add_argument("--students", nargs="+", choices=list(STUDENTS), default=list(STUDENTS))
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="train_speed_teacher_") as folder:
        result = measure(args, Path(folder))
    print("\n" + markdown(result), end="", flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
