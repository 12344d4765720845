"""Does LAFS pretraining help when labels are few? The paper's claim (Sun et al., CVPR 2024) in
small, on real faces, end to end through the project's own training commands (issue 8, points 2
and 3).

Study (also written into the results fragment):
- landmark CNN: no large labelled set here, so the stage-1 landmark CNN (100 points) is that of a
  `part_fvit_tiny` DISTILLED from the external teacher face-reidentification-retail-0095 on the
  unlabelled wild5 pool (`--landmarks`, default runs/experiments/edge_students/part_fvit_tiny/model.pt,
  written by experiments/edge_students.py); frozen everywhere;
- unlabelled pool: ../shared/data/wild5 (7,641 faces aligned by their 5 points);
- arms at the same compute (steps, batch, views): `lafs` (landmark views + shuffle +
  perturbation), `dino` (plain DINO on grid patches of random crops, `views.kind=random_crops`),
  `scratch` (no pretraining: `finetune.pretrained=null`), all part_fvit_tiny;
- fine-tuning (`lafs-edge train finetune`, CosFace) on k = 1 and 3 images per identity of ORL and
  Yale (aligned by the device pipeline, `faces.aligned_folder`); evaluation on the held-out
  images only: k-shot identification with the k training images as the gallery and the
  held-out images as probes, verification (TAR at FAR 1e-2, 10-fold accuracy) on pairs of
  held-out images; the pretrained embeddings are also evaluated without fine-tuning (same split);
- seeds (default 3) change the pretraining / from-scratch init and the k-shot selection;
- ablations (1 seed by default) of LAFS: landmark shuffle off, perturbation sigma 0 / 2 / 5 px,
  local-view landmark count 16 / 36 / 64 (the main LAFS run is the sigma-2, 36, shuffle-on cell).

Every run lives in runs/experiments/lafs_small/<tag>/ (tag = preset, budgets and a hash of the
landmark checkpoint); a run with a model.pt is not trained again, one with a result.json not
evaluated again, and a crashed pretraining resumes from its checkpoints. Training runs go
`--jobs` at a time as single-threaded subprocesses (cpu preset: one per core, at most 4).
Outputs: docs/results/lafs_small.{json,md} and lafs_small_{shots,roc,ablation}.png, then
docs/results.md is regenerated (experiments/report.py).

    python experiments/lafs_small.py                   # cpu preset: 24 min on 2 idle cores
    python experiments/lafs_small.py --preset gpu      # a GPU
    python experiments/lafs_small.py --pretrain-steps 2 --finetune-steps 2 --seeds 1 \
        --results /tmp/lafs_small_dev                  # pipeline check
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import faces  # noqa: E402

REPO = faces.REPO
WILD5 = faces.SHARED_DATA / "wild5"
SETS = ("orl", "yale")
SHOTS = (1, 3)
ARMS = ("lafs", "dino", "scratch")
ARM_LABEL = {"lafs": "LAFS (landmark views)", "dino": "DINO (random crops)",
             "scratch": "no pretraining"}

# Budgets. cpu: the whole study in 24 min on a 2-core CPU (measured; details in the fragment).
# gpu: the paper's recipe where a single GPU and wild5 allow it (batch 128, 8 local views, 65,536
# prototypes, ~41 epochs of wild5), still part_fvit_tiny (its 100-point landmark CNN is the
# distilled one; part_fvit_base would need a 196-point stage-1 CNN that only a large labelled set
# gives).
PRESETS = {
    "cpu": {"pretrain_steps": 40, "batch": 32, "local_views": 4, "local_landmarks": 36,
            "out_dim": 4096, "hidden_dim": 512, "bottleneck_dim": 128, "momentum": 0.99,
            "pretrain_lr": 5e-4, "finetune_steps": 30, "finetune_batch": 32, "seeds": 3,
            "ablation_seeds": 1, "ablation_shots": (1,), "workers": 0, "device": "cpu",
            "jobs": min(4, os.cpu_count() or 1)},
    "gpu": {"pretrain_steps": 2500, "batch": 128, "local_views": 8, "local_landmarks": 36,
            "out_dim": 65536, "hidden_dim": 2048, "bottleneck_dim": 256, "momentum": 0.996,
            "pretrain_lr": 5e-4, "finetune_steps": 400, "finetune_batch": 64, "seeds": 3,
            "ablation_seeds": 1, "ablation_shots": (1, 3), "workers": 8, "device": "auto",
            "jobs": 1},
}
# Why the landmark CNN stays frozen in fine-tuning (a development check, 1 seed, 15 fine-tuning
# steps after 10 pretraining steps, all 3 arms x 4 settings, an earlier distilled landmark CNN).
FREEZE_WHY = (" Frozen rather than trained: in a quick check (15 fine-tuning steps, 1 seed, 3 "
              "arms x 4 settings) training it gave a mean held-out rank-1 of 25.1% against 24.1% frozen, "
              "no difference beyond noise, at 35% more time per step; frozen, every arm keeps "
              "the same landmarks (its BatchNorm statistics are not re-estimated on batches of "
              "15-32 images) and the arms differ only in the ViT's initialisation.")
SIGMA = 2.0  # LAFS coordinate perturbation of the main arm (code: 2 to 5 px)
# name -> views overrides of the LAFS ablations (the main lafs run is the reference cell)
ABLATIONS = {
    "shuffle_off": {"views.shuffle": False},
    "sigma0": {"views.perturb_sigma": 0.0},
    "sigma5": {"views.perturb_sigma": 5.0},
    "local16": {"views.local_landmarks": 16},
    "local64": {"views.local_landmarks": 64},
}
ABLATION_GROUPS = [("landmark shuffle", [("on", "lafs"), ("off", "shuffle_off")]),
                   ("perturbation sigma", [("0 px", "sigma0"), ("2 px", "lafs"),
                                           ("5 px", "sigma5")]),
                   ("local-view landmarks", [("16", "local16"), ("36", "lafs"),
                                             ("64", "local64")])]


# --- running the project's training commands ------------------------------------------------

def cli(args: list[str]) -> None:
    from lafs_edge.cli import main

    print("$ lafs-edge " + " ".join(shlex.quote(a) for a in args), flush=True)
    code = main(args)
    if code:
        raise SystemExit(f"lafs-edge {' '.join(args[:2])} failed with exit code {code}")


def done(run: Path) -> bool:
    return (run / "model.pt").is_file() and (run / "result.json").is_file()


def pretrain_args(run: Path, kind: str, seed: int, b: dict, landmarks: str,
                  extra: dict | None = None) -> list[str]:
    """The `lafs-edge train pretrain` arguments of one run (LAFS or plain DINO) at the preset's
    budget."""
    steps, spe = b["pretrain_steps"], max(1, 7641 // b["batch"])
    views = {"views.kind": kind, "views.local_views": b["local_views"],
             "views.local_landmarks": b["local_landmarks"], "views.perturb_sigma": SIGMA,
             **(extra or {})}
    overrides = {
        "output_dir": str(run), "seed": seed, "model.arch": "part_fvit_tiny",
        "landmarks.checkpoint": landmarks, "data.format": "landmarks",
        "data.list_file": str(WILD5 / "landmarks.txt"), "data.root": str(WILD5),
        "data.num_workers": b["workers"], **views,
        "dino.out_dim": b["out_dim"], "dino.hidden_dim": b["hidden_dim"],
        "dino.bottleneck_dim": b["bottleneck_dim"], "dino.momentum_teacher": b["momentum"],
        # schedules in epochs of wild5, scaled to the short run: teacher temperature warmup over
        # 30% of the steps, prototypes frozen for the first 5%, lr warmup 10%
        "dino.warmup_teacher_temp_epochs": round(0.3 * steps / spe, 4),
        "dino.freeze_last_layer_epochs": round(0.05 * steps / spe, 4),
        "optim.batch_size": b["batch"], "optim.max_steps": steps,
        "optim.warmup_epochs": round(0.1 * steps / spe, 4),
        "optim.lr": b["pretrain_lr"], "optim.scale_lr": False,
        "train.device": b["device"], "train.progress": False, "train.log_every": 10,
        "train.checkpoint_every": max(10, steps // 4)}
    return ["train", "pretrain", *[f"{k}={yaml_value(v)}" for k, v in overrides.items()]]


def finetune_args(run: Path, pretrained: str | None, seed: int, root: Path, list_file: Path,
                  images: int, b: dict, landmarks: str, freeze: bool) -> list[str]:
    """The `lafs-edge train finetune` arguments of one run."""
    steps = b["finetune_steps"]
    batch = min(b["finetune_batch"], images)
    spe = max(1, images // batch)
    overrides = {
        "output_dir": str(run), "seed": seed, "finetune.pretrained": pretrained,
        "finetune.landmarks": landmarks, "finetune.freeze_landmarks": freeze,
        "finetune.perturb_sigma": SIGMA, "model.arch": "part_fvit_tiny",
        "data.format": "folder", "data.root": str(root), "data.list_file": str(list_file),
        "data.num_workers": b["workers"], "optim.batch_size": batch, "optim.max_steps": steps,
        "optim.warmup_epochs": round(0.1 * steps / spe, 4), "train.device": b["device"],
        "train.progress": False, "train.log_every": 10, "train.checkpoint_every": 10**6}
    return ["train", "finetune", *[f"{k}={yaml_value(v)}" for k, v in overrides.items()]]


def timed(args: list[str]) -> tuple[float, float]:
    """Run a training command in this process; -> (wall seconds, CPU seconds, all threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    cli(args)
    return time.perf_counter() - wall, time.process_time() - cpu


def timed_subprocess(args: list[str], log: Path, threads: int) -> tuple[float, float]:
    """Run `python -m lafs_edge.cli ARGS` with `threads` intra-op threads, output to `log`;
    -> (wall seconds, CPU seconds of the child)."""
    import subprocess

    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    print(f"$ lafs-edge {' '.join(shlex.quote(a) for a in args)}  > {log}", flush=True)
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "lafs_edge.cli", *args], stdout=out,
                                stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise SystemExit(f"lafs-edge {' '.join(args[:2])} failed with exit code {code}: see {log}")
    return time.perf_counter() - start, usage.ru_utime + usage.ru_stime


def yaml_value(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


# --- embeddings and evaluation ---------------------------------------------------------------

def embed(model_path: str, crops: np.ndarray, grid: bool = False) -> np.ndarray:
    """L2-normalised embeddings of uint8 crops; `grid`: the tokens of plain-DINO pretraining
    (regular grid of patches of the whole crop), not landmark patches."""
    from lafs_edge.models import load_model
    from lafs_edge.train.views import grid_views

    model = load_model(model_path).eval()

    def grid_forward(x):
        tokens = grid_views(x, model.num_landmarks, model.image_size, model.patch_size,
                            model.sampler)
        return model.encode_patches(tokens.patches, tokens.ids)

    return faces.embed_with(faces.torch_embedder(grid_forward if grid else model), crops)


def kshot_rows(root: Path, k: int, seed: int, out: Path) -> np.ndarray:
    """Write the k-shot list (k images per identity, seeded) and return its rows (file stems)."""
    from lafs_edge.train.data.kshot import write_kshot_list

    selected = write_kshot_list(root, out, k, 1.0, seed)
    return np.array(sorted(int(Path(p).stem) for p, _ in selected))


def heldout_eval(emb: np.ndarray, labels: np.ndarray, train_rows: np.ndarray,
                 roc: bool = False) -> dict:
    """Gallery = the k training images per identity, probes = every other image; verification on
    pairs among the held-out images only."""
    from lafs_edge.train.evaluate.kshot import identification_report

    held = np.setdiff1d(np.arange(len(labels)), train_rows)
    split = {"enroll": train_rows, "probe": held, "unknown": np.array([], dtype=int)}
    ident = identification_report(emb, labels, split)
    return {"rank1": ident["rank1"], "rank5": ident["rank5"], "probes": ident["probes"],
            **faces.verification(emb[held], labels[held], roc_points=300 if roc else 0)}


# --- the study -------------------------------------------------------------------------------

class Study:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        b = dict(PRESETS[args.preset])
        for key in ("pretrain_steps", "finetune_steps", "seeds", "ablation_seeds",
                    "ablation_shots", "jobs"):
            if getattr(args, key) is not None:
                b[key] = getattr(args, key)
        b["ablation_shots"] = tuple(sorted(b["ablation_shots"]))
        self.b = b
        self.landmarks = str(Path(args.landmarks).resolve())
        # runs are reused only for the same budgets and the same landmark CNN file (the
        # distilled student may be refreshed)
        import hashlib

        digest = hashlib.sha256(Path(self.landmarks).read_bytes()).hexdigest()[:8]
        self.tag = f"{args.preset}_p{b['pretrain_steps']}_f{b['finetune_steps']}_lm{digest}"
        self.root = REPO / "runs" / "experiments" / "lafs_small" / self.tag
        self.data = {name: (faces.aligned_folder(name), *faces.aligned_faces(name))
                     for name in SETS}

    # -- where things are --
    def cells(self) -> list[tuple[str, str, int, tuple[int, ...]]]:
        """(block, arm, seed, fine-tuning shots), seed-major in the main block (a partial run
        already holds every arm)."""
        out = [("main", arm, seed, SHOTS) for seed in range(self.b["seeds"]) for arm in ARMS]
        if not self.args.no_ablations:
            out += [("ablations", arm, seed, self.b["ablation_shots"])
                    for arm in ["lafs", *ABLATIONS] for seed in range(self.b["ablation_seeds"])]
        return out

    def pretrain_run(self, arm: str, seed: int) -> Path:
        return self.root / "pretrain" / f"{arm}_s{seed}"

    def finetune_run(self, arm: str, seed: int, name: str, k: int) -> Path:
        stage = "finetune_trained_landmarks" if self.args.train_landmarks else "finetune"
        return self.root / stage / f"{arm}_s{seed}" / f"{name}_k{k}"

    # -- training --
    def pretrain_job(self, arm: str, seed: int) -> tuple[str, Path, list[str]] | None:
        run = self.pretrain_run(arm, seed)
        if arm == "scratch" or (run / "model.pt").is_file():
            return None
        kind = "random_crops" if arm == "dino" else "landmarks"
        return "pretrain", run, pretrain_args(run, kind, seed, self.b, self.landmarks,
                                              ABLATIONS.get(arm))

    def finetune_job(self, arm: str, seed: int, name: str, k: int,
                     ) -> tuple[str, Path, list[str]] | None:
        run = self.finetune_run(arm, seed, name, k)
        if (run / "model.pt").is_file():
            return None
        root = self.data[name][0]
        run.mkdir(parents=True, exist_ok=True)
        rows = kshot_rows(root, k, seed, run / "train.lst")
        pretrained = None if arm == "scratch" else str(self.pretrain_run(arm, seed) / "model.pt")
        return "finetune", run, finetune_args(run, pretrained, seed, root, run / "train.lst",
                                              len(rows), self.b, self.landmarks,
                                              not self.args.train_landmarks)

    def execute(self, jobs: list[tuple[str, Path, list[str]]]) -> None:
        """Run training jobs: in this process one after the other (jobs=1), or as
        `self.b['jobs']` parallel single-threaded subprocesses (a 2-core CPU runs two small
        single-threaded trainings faster than one two-threaded one)."""
        parallel = int(self.b["jobs"])

        def one(job) -> None:
            stage, run, args = job
            if parallel <= 1:
                wall, cpu = timed(args)
            else:
                threads = max(1, (os.cpu_count() or 1) // parallel)
                wall, cpu = timed_subprocess(args, run.parent / f"{run.name}.log", threads)
            steps = self.b[f"{stage}_steps"]
            faces.write_json(run / "timing.json", {"stage": stage, "steps": steps, "wall_s": wall,
                                                   "cpu_s": cpu, "parallel_jobs": parallel})

        if parallel <= 1:
            for job in jobs:
                one(job)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(parallel) as pool:
            for _ in pool.map(one, jobs):
                pass

    def train_all(self) -> None:
        """Every pretraining run, then every fine-tuning run that has no model.pt yet."""
        cells = self.cells()
        pending = {(arm, seed): self.pretrain_job(arm, seed) for _, arm, seed, _ in cells}
        self.execute([job for job in pending.values() if job])
        jobs = {(arm, seed, name, k): self.finetune_job(arm, seed, name, k)
                for _, arm, seed, shots in cells for name in SETS for k in shots}
        self.execute([job for job in jobs.values() if job])

    # -- evaluation (cached in each run's result.json) --
    def pretrained_only(self, arm: str, seed: int) -> dict:
        """Held-out evaluation of the pretrained embeddings (scratch: a random init with the
        distilled landmark CNN, the floor)."""
        run = self.pretrain_run("random" if arm == "scratch" else arm, seed)
        if not done(run):
            if arm == "scratch":
                import torch

                from lafs_edge.models import create_model, load_model, save_checkpoint
                from lafs_edge.train.lafs import load_landmarks

                torch.manual_seed(seed)
                model = create_model("part_fvit_tiny")
                load_landmarks(model, load_model(self.landmarks).landmarks, self.landmarks)
                run.mkdir(parents=True, exist_ok=True)
                save_checkpoint(model, run / "model.pt")
            result = {"arm": arm, "seed": seed, "pretrained_only": {}}
            for name, (root, crops, labels) in self.data.items():
                emb = embed(str(run / "model.pt"), crops, grid=arm == "dino")
                for k in SHOTS:
                    rows = kshot_rows(root, k, seed, run / f"{name}_k{k}.lst")
                    result["pretrained_only"][f"{name}_k{k}"] = heldout_eval(emb, labels, rows)
            faces.write_json(run / "result.json", result)
        return json.loads((run / "result.json").read_text())["pretrained_only"]

    def finetuned(self, arm: str, seed: int, name: str, k: int) -> dict:
        run = self.finetune_run(arm, seed, name, k)
        if not done(run):
            root, crops, labels = self.data[name]
            rows = kshot_rows(root, k, seed, run / "train.lst")
            result = {"arm": arm, "seed": seed, "set": name, "k": k,
                      "train_images": int(len(rows)),
                      **heldout_eval(embed(str(run / "model.pt"), crops), labels, rows, roc=True)}
            faces.write_json(run / "result.json", result)
        return json.loads((run / "result.json").read_text())

    def timings(self) -> dict:
        """Seconds per step (wall and CPU, start-up included) of every training run of this
        tag, from the timing.json each run leaves, and the summed training wall time."""
        out: dict = {}
        for stage in ("pretrain", "finetune"):
            rows = [json.loads(f.read_text()) for f in sorted(self.root.glob("**/timing.json"))]
            rows = [r for r in rows if r["stage"] == stage]
            if rows:
                out[stage] = {"runs": len(rows),
                              "wall_s_per_step": float(np.mean([r["wall_s"] / r["steps"]
                                                                for r in rows])),
                              "cpu_s_per_step": float(np.mean([r["cpu_s"] / r["steps"]
                                                               for r in rows])),
                              "wall_s_total": float(sum(r["wall_s"] for r in rows)),
                              "cpu_s_total": float(sum(r["cpu_s"] for r in rows))}
        return out

    def run(self) -> dict:
        self.train_all()
        out: dict = {"main": {}, "ablations": {}}
        for block, arm, seed, shots in self.cells():
            entry = out[block].setdefault(arm, {"finetuned": {}, "pretrained_only": {}})
            entry["pretrained_only"][seed] = self.pretrained_only(arm, seed)
            for name in SETS:
                for k in shots:
                    entry["finetuned"].setdefault(f"{name}_k{k}", {})[seed] = \
                        self.finetuned(arm, seed, name, k)
        return out


# --- summaries, plots, fragment --------------------------------------------------------------

METRICS = ("rank1", "tar_at_far_1e-2", "verification_accuracy")


def summarise(per_seed: dict) -> dict:
    """{seed: {metric: value}} -> {metric: mean, metric_std: std, seeds: n}."""
    rows = list(per_seed.values())
    out = {"seeds": len(rows)}
    for m in METRICS:
        values = [r[m] for r in rows]
        out[m], out[f"{m}_std"] = float(np.mean(values)), float(np.std(values))
    return out


def settings(shots=SHOTS) -> list[str]:
    return [f"{name}_k{k}" for name in SETS for k in shots]


def setting_label(s: str) -> str:
    name, k = s.split("_k")
    return f"{name.upper()} k={k}"


def summary(results: dict) -> dict:
    def block(entry: dict) -> dict:
        return {"finetuned": {s: summarise(v) for s, v in entry["finetuned"].items()},
                "pretrained_only": {s: summarise({seed: r[s] for seed, r in
                                                  entry["pretrained_only"].items()})
                                    for s in settings()}}

    return {"main": {arm: block(e) for arm, e in results["main"].items()},
            "ablations": {arm: block(e) for arm, e in results["ablations"].items()}}


def cell(s: dict, metric: str = "rank1") -> str:
    std = f" ± {100 * s[metric + '_std']:.1f}" if s["seeds"] > 1 else ""
    return f"{100 * s[metric]:.1f}{std}"


def plot_shots(summ: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SETS), figsize=(9, 4.4), sharey=True)
    for ax, name in zip(axes, SETS):
        for i, arm in enumerate(ARMS):
            for stage, style in (("finetuned", "-o"), ("pretrained_only", ":s")):
                values = [summ["main"][arm][stage][f"{name}_k{k}"] for k in SHOTS]
                label = ARM_LABEL[arm] + (" + fine-tune" if stage == "finetuned" else
                                          (", no fine-tune" if arm != "scratch" else
                                           ", random init"))
                ax.errorbar(np.array(SHOTS) + 0.04 * (i - 1), [100 * v["rank1"] for v in values],
                            yerr=[100 * v["rank1_std"] for v in values], fmt=style, capsize=3,
                            color=f"C{i}", label=label, alpha=1.0 if stage == "finetuned" else 0.6)
        ax.set_title(f"{name.upper()}: held-out rank-1")
        ax.set_xlabel("labelled images per identity (k)")
        ax.set_xticks(SHOTS)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("rank-1 identification (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_roc(results: dict, setting: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 3.8))
    for i, arm in enumerate(ARMS):
        r = results["main"][arm]["finetuned"][setting][0]
        ax.plot(np.maximum(r["roc"]["fpr"], 1e-4), r["roc"]["tpr"], color=f"C{i}",
                label=f"{ARM_LABEL[arm]} (TAR@1e-2 {100 * r['tar_at_far_1e-2']:.1f}%)")
    ax.set_xscale("log")
    ax.set_xlim(1e-3, 1)
    ax.axvline(1e-2, color="grey", lw=0.5, ls="--")
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(f"verification, {setting.replace('_', ' ')}, fine-tuned, seed 0", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_ablation(summ: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(g, [(lab, arm) for lab, arm in cells if arm in summ["ablations"]])
              for g, cells in ABLATION_GROUPS]
    fig, axes = plt.subplots(1, len(groups), figsize=(10, 3.8), sharey=True)
    shown = [s for s in settings() if s in summ["ablations"]["lafs"]["finetuned"]]
    width = 0.8 / len(shown)
    for ax, (title, cells) in zip(axes, groups):
        for j, s in enumerate(shown):
            values = [100 * summ["ablations"][arm]["finetuned"][s]["rank1"] for _, arm in cells]
            x = np.arange(len(cells)) + (j - (len(shown) - 1) / 2) * width
            ax.bar(x, values, width, color=f"C{j}", label=setting_label(s) + ", fine-tuned")
            before = [100 * summ["ablations"][arm]["pretrained_only"][s]["rank1"]
                      for _, arm in cells]
            ax.plot(x, before, "k_", ms=12, mew=2,
                    label="no fine-tune" if j == 0 else None)
        ax.set_xticks(np.arange(len(cells)))
        ax.set_xticklabels([lab for lab, _ in cells])
        ax.set_title(f"LAFS: {title}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("held-out rank-1 (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def machine() -> str:
    import torch

    from lafs_edge.convert.bench import machine as cpu

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.system()} {platform.machine()}, {cpu()}, torch {torch.__version__} "
            f"with {torch.get_num_threads()} threads, {gpu}")


def verdict(summ: dict) -> list[str]:
    """Plain statements of who wins each setting (mean rank-1 after fine-tuning), with whether
    the gap exceeds the seed spread; written as measured, not as hoped."""
    lines = []
    for s in settings():
        rows = {arm: summ["main"][arm]["finetuned"][s] for arm in ARMS}
        best = max(ARMS, key=lambda a: rows[a]["rank1"])
        second = max((a for a in ARMS if a != best), key=lambda a: rows[a]["rank1"])
        gap = rows[best]["rank1"] - rows[second]["rank1"]
        spread = max(rows[best]["rank1_std"], rows[second]["rank1_std"])
        clear = "beyond" if gap > spread and rows[best]["seeds"] > 1 else "within"
        lines.append(f"- {setting_label(s)}: best {ARM_LABEL[best]} "
                     f"({100 * rows[best]['rank1']:.1f}%), {100 * gap:.1f} points over "
                     f"{ARM_LABEL[second]}, {clear} the seed spread ({100 * spread:.1f}).")
    return lines


def context(summ: dict, study: Study) -> list[str]:
    """What bounds the comparison, computed: the untrained reference, and whether the DINO
    objective left the uniform solution (final loss against ln K)."""
    scratch = summ["main"]["scratch"]
    below = [s for s in settings() if max(summ["main"][a]["finetuned"][s]["rank1"] for a in ARMS)
             < scratch["pretrained_only"][s]["rank1"]]
    finals = {}
    for arm in ("lafs", "dino"):
        losses = []
        for seed in range(study.b["seeds"]):
            metrics = study.root / "pretrain" / f"{arm}_s{seed}" / "metrics.jsonl"
            if metrics.is_file():
                losses.append(json.loads(metrics.read_text().strip().splitlines()[-1])["loss"])
        if losses:
            finals[arm] = float(np.mean(losses))
    uniform = float(np.log(study.b["out_dim"]))
    lines = [f"- Reference: the untrained random init (no fine-tuning) beats every fine-tuned arm "
             f"in {len(below)} of {len(settings())} settings"
             + (f" ({', '.join(setting_label(s) for s in below)})." if below else ".")]
    if finals:
        lines.append("- Final pretraining loss (mean over seeds): "
                     + ", ".join(f"{ARM_LABEL[a]} {v:.2f}" for a, v in finals.items())
                     + f", against ln K = {uniform:.2f} for a uniform (collapsed) output.")
    collapsed = finals and all(v > uniform - 1.0 for v in finals.values())
    if collapsed and 2 * len(below) >= len(settings()):
        lines.append("- Read together: at this budget neither pretraining objective got far from "
                     "the uniform solution, and fine-tuning on 15-120 images mostly memorises; "
                     "the differences between arms are the size of the seed spread, so this run "
                     "neither confirms nor refutes the paper's claim. The `gpu` preset is the "
                     "test of it.")
    return lines


def fragment(summ: dict, results: dict, study: Study, command: str, files: dict,
             roc_setting: str, minutes: float, timing: dict) -> str:
    b = study.b
    seeds = b["seeds"]
    head = "| arm | " + " | ".join(setting_label(s) for s in settings()) + " |"
    sep = "|---" * (len(settings()) + 1) + "|"
    out = [
        "## LAFS pretraining with few labels, in small (issue 8.2-8.3)", "",
        "Does LAFS self-supervised pretraining ([architecture.md](architecture.md#the-method)) help when labels are few? "
        "Three arms at the same compute, each fine-tuned on k = 1 and 3 labelled images per "
        "identity of ORL (40 people) and Yale (15 people), evaluated on the held-out images only.",
        "",
        "**Study.**",
        f"- Landmark CNN: the 100-point landmark CNN of a `part_fvit_tiny` **distilled** from the "
        f"external teacher face-reidentification-retail-0095 on the unlabelled wild5 pool "
        f"(`{os.path.relpath(study.landmarks, REPO)}`); there is no large labelled set here for "
        "the paper's supervised stage 1. Frozen in every arm.",
        "- Unlabelled pool: `../shared/data/wild5` (7,641 in-the-wild faces aligned by their 5 "
        "points).",
        f"- Arms, all `part_fvit_tiny`, same steps ({b['pretrain_steps']}), batch ({b['batch']}) "
        f"and views (2 global + {b['local_views']} local): **LAFS** (landmark views, "
        f"{b['local_landmarks']} shuffled landmarks per local view, coordinate perturbation "
        f"sigma {SIGMA:g} px); **DINO** on ordinary random crops (`views.kind=random_crops`, "
        "10x10 grid of patches); **no pretraining** (fine-tuned from a random init with the same "
        "landmark CNN).",
        f"- DINO head {b['out_dim']} prototypes, hidden {b['hidden_dim']}, bottleneck "
        f"{b['bottleneck_dim']} (reference: 100,000 / 2,048 / 256; a 100k-prototype head would "
        "dominate the step time on a CPU and has far more prototypes than the "
        f"{b['pretrain_steps'] * b['batch']:,} images the run sees); teacher momentum "
        f"{b['momentum']} (0.996 barely moves the teacher in a few hundred steps), lr "
        f"{b['pretrain_lr']:g} unscaled, schedules (lr warmup, teacher-temperature warmup, "
        "frozen prototypes) scaled to 10% / 30% / 5% of the run.",
        f"- Fine-tuning: `lafs-edge train finetune`, CosFace, {b['finetune_steps']} steps, batch "
        f"min({b['finetune_batch']}, training images), landmark CNN "
        + ("trained" if study.args.train_landmarks else
           "frozen (`finetune.freeze_landmarks=true`)") +
        f", perturbation sigma {SIGMA:g} px, the recipe's augmentation (RandAugment, mixup)."
        + ("" if study.args.train_landmarks else FREEZE_WHY),
        "- Evaluation on held-out images only: k-shot identification with the k training images "
        "as the gallery (one mean template per identity) and every other image as a probe; "
        "verification (TAR at FAR 1e-2, 10-fold accuracy) on all genuine pairs among held-out "
        "images and as many impostor pairs. \"No fine-tune\" rows evaluate the pretrained "
        "embeddings on the same split (DINO with its own grid tokens; the no-pretraining row is "
        "the random init).",
        f"- Seeds: {seeds} (seed = pretraining or from-scratch init and k-shot selection); "
        "mean ± standard deviation over seeds. Ablations of LAFS: "
        f"{b['ablation_seeds']} seed(s), fine-tuned with k = "
        f"{', '.join(map(str, b['ablation_shots']))}, every k evaluated without fine-tuning.",
        "",
        "### Held-out rank-1 identification (%)", "", head, sep]
    for stage, suffix in (("finetuned", " + fine-tune"), ("pretrained_only", ", no fine-tune")):
        for arm in ARMS:
            label = ARM_LABEL[arm] + (suffix if not (arm == "scratch" and
                                                     stage == "pretrained_only")
                                      else ", random init")
            out.append(f"| {label} | " + " | ".join(cell(summ["main"][arm][stage][s])
                                                     for s in settings()) + " |")
    out += ["", "### Verification after fine-tuning: TAR at FAR 1e-2 / accuracy (%)", "", head,
            sep]
    for arm in ARMS:
        out.append(f"| {ARM_LABEL[arm]} | " + " | ".join(
            f"{cell(summ['main'][arm]['finetuned'][s], 'tar_at_far_1e-2')} / "
            f"{cell(summ['main'][arm]['finetuned'][s], 'verification_accuracy')}"
            for s in settings()) + " |")
    out += ["", "**Does LAFS win at this scale?** (mean held-out rank-1 after fine-tuning)", "",
            *verdict(summ), *context(summ, study), "",
            f"![accuracy vs shots](results/{files['shots']})", "",
            f"![ROC](results/{files['roc']}) (ROC: {roc_setting.replace('_', ' ')}, seed 0)", ""]
    if summ["ablations"]:
        shown = [s for s in settings() if s in summ["ablations"]["lafs"]["finetuned"]]
        n = b["ablation_seeds"]
        out += ["### Ablations of LAFS (held-out rank-1 %: after fine-tuning / pretrained "
                f"embeddings without fine-tuning; {'seed 0' if n == 1 else f'{n} seeds'})", "",
                "| ablation | value | " + " | ".join(setting_label(s) for s in shown) +
                " |", "|---|---" + "|---" * len(shown) + "|"]
        for title, cells in ABLATION_GROUPS:
            for lab, arm in cells:
                if arm not in summ["ablations"]:
                    continue
                e = summ["ablations"][arm]
                out.append(f"| {title} | {lab} | " + " | ".join(
                    f"{cell(e['finetuned'][s])} / {cell(e['pretrained_only'][s])}"
                    for s in shown) + " |")
        out += ["", "Shuffle off: every local view uses the same evenly spaced landmark ids "
                "(`views.shuffle=false`).", "", f"![ablations](results/{files['ablation']})", ""]
    out += ["**Reproduce** (numbers within seed variance):", "", "```", command, "```", "",
            f"Machine: {machine()}; training runs {parallel_text(b)}. Wall time of this "
            f"invocation: {minutes:.0f} min (runs already present are reused)."
            + "".join(f" {stage}: {t['runs']} runs, {t['wall_s_per_step']:.2f} s per step "
                      f"({t['cpu_s_per_step']:.2f} s CPU), start-up included."
                      for stage, t in timing.items())
            + (f" All training together: {sum(t['cpu_s_total'] for t in timing.values()) / 60:.0f}"
               " CPU-minutes." if timing else ""), ""]
    return "\n".join(out)


def parallel_text(b: dict) -> str:
    if int(b["jobs"]) <= 1:
        return "one at a time in the script's process"
    threads = max(1, (os.cpu_count() or 1) // int(b["jobs"]))
    return f"{b['jobs']} at a time, each a subprocess with {threads} thread(s)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--pretrain-steps", type=int)
    p.add_argument("--finetune-steps", type=int)
    p.add_argument("--seeds", type=int, help="seeds of the main comparison")
    p.add_argument("--ablation-seeds", type=int)
    p.add_argument("--ablation-shots", type=int, nargs="+",
                   help="k of the ablation fine-tunes (cpu: 1; every k gets the cheap "
                        "no-fine-tune evaluation)")
    p.add_argument("--no-ablations", action="store_true")
    p.add_argument("--jobs", type=int, help="training runs at once, each a single-threaded "
                   "subprocess (cpu: the number of cores, at most 4; 1: in this process)")
    p.add_argument("--train-landmarks", action="store_true",
                   help="fine-tune the landmark CNN too (default: frozen)")
    p.add_argument("--landmarks", default=str(REPO / "runs" / "experiments" / "edge_students"
                                              / "part_fvit_tiny" / "model.pt"),
                   help="model.pt whose landmark CNN (100 points) all arms use")
    p.add_argument("--results", default=str(faces.RESULTS),
                   help="where the JSON, PNGs and markdown fragment go")
    args = p.parse_args(argv)
    if not Path(args.landmarks).is_file():
        raise SystemExit(f"{args.landmarks}: no landmark checkpoint (train the distilled "
                         "part_fvit_tiny first, see docs/results)")
    start = time.perf_counter()
    study = Study(args)
    results = study.run()
    summ = summary(results)
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    files = {"shots": "lafs_small_shots.png", "roc": "lafs_small_roc.png",
             "ablation": "lafs_small_ablation.png"}
    roc_setting = "orl_k1"
    plot_shots(summ, out / files["shots"])
    plot_roc(results, roc_setting, out / files["roc"])
    if summ["ablations"]:
        plot_ablation(summ, out / files["ablation"])
    command = "python experiments/lafs_small.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    minutes = (time.perf_counter() - start) / 60
    timing = study.timings()
    print("training runs, seconds per step (start-up included):", json.dumps(timing))
    faces.write_json(out / "lafs_small.json", {
        "budgets": study.b, "tag": study.tag, "landmarks": study.landmarks,
        "command": command.strip(), "machine": machine(), "minutes": minutes,
        "training_time": timing, "summary": summ,
        "runs": {"main": strip_roc(results["main"]), "ablations": strip_roc(results["ablations"])},
        "roc": {arm: results["main"][arm]["finetuned"][roc_setting][0]["roc"] for arm in ARMS}})
    from lafs_edge.fileio import write_text_atomic

    write_text_atomic(out / "lafs_small.md",
                      fragment(summ, results, study, command.strip(), files, roc_setting, minutes,
                               timing))
    print(f"wrote {out / 'lafs_small.md'} ({minutes:.1f} min)")
    if out.resolve() == faces.RESULTS.resolve():  # the shared page: docs/results.md
        import subprocess

        subprocess.run([sys.executable, str(Path(__file__).parent / "report.py")], check=True)
    return 0


def strip_roc(block: dict) -> dict:
    """Per-run numbers without the ROC arrays (kept once, for the plotted setting)."""
    def clean(v):
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items() if k != "roc"}
        return v
    return clean(block)


if __name__ == "__main__":
    raise SystemExit(main())
