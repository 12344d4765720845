"""What the campaign's committed state costs a resume on another machine: it keeps fp16 weights and
no AdamW moments (experiments/campaign.py `compact`), so a rebuilt run restarts the moments and the
trainer ramps the lr up again over `optim.rewarm_steps`.

From a line's latest run checkpoint (this machine's, with its moments) two continuations train the
same `--steps` on the same batches and augmentations (both reseeded from the step, as `expand`
does), from the same fp16-rounded weights:
- with moments: the run's AdamW state, as a resume on the machine that trained it;
- rebuilt: the committed file expanded (fresh moments, re-warm-up), as on any other machine.
The table compares their training loss (1 - teacher cosine on the degraded views) step by step,
and their CelebA TAR@FAR1e-3 at the end, paired.

    python experiments/resume_without_moments.py --line mobilefacenet-lr3e-4 --steps 150
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import campaign  # noqa: E402
from faces import write_json  # noqa: E402
from report import main as rebuild_results_page  # noqa: E402

OUT = campaign.RUNS / "resume_check"
RESULTS = campaign.RESULTS / "resume_without_moments"


def train_from(folder: Path, state: dict, step: int, steps: int, threads: int, nice: int) -> None:
    argv = campaign.distill_argv(state["student"], state["recipe"], folder, step + steps)
    code = campaign.train_chunk(argv, threads, folder / "train.log", time.time() + 3 * 3600, nice)
    if code != 0:
        raise SystemExit(f"{folder.name}: training failed ({code}); see {folder / 'train.log'}")


def losses(folder: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--line", required=True, help="a campaign line this machine has trained")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--nice", type=int, default=10)
    args = parser.parse_args()
    state = json.loads((campaign.STATE / args.line / "state.json").read_text())
    run = campaign.RUNS / args.line
    rank = campaign.latest_rank_file(run)
    if rank is None:
        raise SystemExit(f"{run}: no run checkpoint on this machine (it has the moments to compare)")
    OUT.mkdir(parents=True, exist_ok=True)
    campaign.compact(rank, OUT / "committed.pt")
    saved = torch.load(OUT / "committed.pt", map_location="cpu", weights_only=True)
    step = int(saved["step"])
    cfg = campaign.resolved_config(campaign.distill_argv(state["student"], state["recipe"], run,
                                                         step))
    kept, rebuilt = OUT / "with_moments", OUT / "rebuilt"
    for folder in (kept, rebuilt):
        shutil.rmtree(folder, ignore_errors=True)
    # the same fp16-rounded weights and RNG seed as `expand` writes, plus the run's moments
    modules = {n: {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
               for n, sd in saved["modules"].items()}
    moments = torch.load(rank, map_location="cpu", weights_only=True)["optimizer"]
    campaign.write_run_checkpoint(kept, step, modules, moments, cfg, int(cfg["seed"]) + step)
    campaign.expand(OUT / "committed.pt", rebuilt, cfg)
    for folder in (kept, rebuilt):
        train_from(folder, state, step, args.steps, args.threads, args.nice)
    a, b = losses(kept), losses(rebuilt)
    logged = sorted(set(a) & set(b))
    rows = [(s, a[s], b[s]) for s in logged]
    for folder in (kept, rebuilt):
        if state["recipe"].get("bn_faces"):
            campaign.recalibrate(folder / "model.pt", int(state["recipe"]["bn_faces"]))
    gain = campaign.paired_gain(rebuilt / "model.pt", kept / "model.pt")
    late = [s for s in logged if s - step > args.steps // 2]
    result = {"line": args.line, "from_step": step, "steps": args.steps,
              "rewarm_steps": cfg["optim"]["rewarm_steps"], "loss": rows,
              "late_loss_with_moments": float(np.mean([a[s] for s in late])),
              "late_loss_rebuilt": float(np.mean([b[s] for s in late])),
              "celeba_rebuilt_minus_kept": gain["celeba"],
              "stress_rebuilt_minus_kept": gain["stress_mean"],
              "command": f"python experiments/resume_without_moments.py --line {args.line} "
                         f"--steps {args.steps}"}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS.with_suffix(".json"), result)
    lines = [f"## Resuming `{args.line}` without AdamW's moments (issue 21)", "",
             f"`{result['command']}`: from step {step}, {args.steps} steps each, the same batches "
             f"and views; the rebuilt run re-warms the lr over {result['rewarm_steps']} steps.", "",
             "| step | loss, with moments | loss, rebuilt |", "|---|---|---|",
             *[f"| {s} | {x:.4f} | {y:.4f} |" for s, x, y in rows], "",
             f"Mean loss over the last half: {result['late_loss_with_moments']:.4f} with moments, "
             f"{result['late_loss_rebuilt']:.4f} rebuilt. CelebA TAR@1e-3, rebuilt minus with "
             f"moments, paired: {gain['celeba']['diff']:+.3f} ± {gain['celeba']['std']:.3f}; "
             f"stress mean {gain['stress_mean']['diff']:+.3f} ± {gain['stress_mean']['std']:.3f}."]
    RESULTS.with_suffix(".md").write_text("\n".join(lines) + "\n")
    rebuild_results_page()
    print("\n".join(lines[-1:]))


if __name__ == "__main__":
    main()
