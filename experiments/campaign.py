"""The distillation campaign (issue 21): the students' training continued over many stints of work,
on any machine, from state committed in the repository.

    python experiments/campaign.py --student mobilefacenet --hours 2     # one stint
    python experiments/campaign.py --student mobilefacenet --preset gpu --hours 1   # one GPU
    python experiments/campaign.py --student mobilefacenet --hours 2 --ship   # a stint, then ship if better

What a stint does:
1. Continue from `experiments/campaign/<student>/`: `checkpoint.pt` (the student and its projection
   to the teacher's 256-d in fp16, no optimizer moments: 2.2 MB for mobilefacenet, 6.9 MB for the
   64-landmark part_fvit_tiny) and `state.json` (recipe, images seen, schedule position,
   data-order seed, the curve). The first
   stint starts from the shipped weights with the projection fitted by ridge regression to the
   teacher on 4,096 pool faces (a fresh random projection undid what a short run gained).
   A run folder (runs/campaign/<student>) that this machine already holds at the committed step or
   later is used as is (with its AdamW moments); otherwise it is rebuilt from the committed state
   with fresh moments, and the trainer ramps the lr up again over `optim.rewarm_steps` (50).
2. Train for `--hours` (setup and the first evaluation not counted) in time slices of
   `--chunk-minutes` with `lafs-edge train distill` (targets=loader: the teacher's FP16-INT8 IR
   embeds every degraded view in the data loader's worker), `nice`d; a slice ends with SIGTERM
   (the trainer checkpoints, then exits). One cosine schedule spans the whole campaign
   (`total_images`); every chunk resumes it. `--compile` trains with `train.compile=true`
   (mobilefacenet's step 1.46x faster on one thread of this CPU; a cold compile of ~80 s, then
   inductor's cache; not for the landmark student, 0.92x: docs/benchmarks.md).
3. After every chunk: evaluate (experiments/wild_eval.py: CelebA eval identities, all pairs,
   bootstrap spread; the illumination stress set), add the point to the curve, commit-ready state.
   The stint's gain is measured against its start model, paired (`paired_gain`): the same
   identity draws for both models cancel what they share, a spread ~3x narrower than either
   figure's own. `--compare REFERENCE ARM...` does the same for A/B arms.
4. Write docs/results/campaign.{md,json,png} and docs/results.md. `--ship` puts a student whose
   CelebA TAR@FAR1e-3 beats the shipped one by more than the spread of their paired difference
   (the same identity draws for both; and by 0.01), or that matches it within the latency target
   the shipped one misses, into the package (weights, threshold, model card), rewrites the
   README's table from the package (`edge_students.py --package`), runs the quickstart and
   checks its photos' verdicts with the new student (`photo_mistakes`: the package's photo tests
   fail on any wrong name); if any of these fails, the previous files are put back. Before
   those, it times the int8 export
   against the latency reference
   (benchmarks/edge_latency.py) and records the CelebA TAR and that ratio in the package's index
   (`--figures` alone): the default student is the most accurate within 1.5x the reference.

A line (`--line NAME --set KEY=VALUE ...`) is a campaign of its own from step 0 with a changed
recipe (an A/B arm, or another start: `--set init=path/model.pt`); its recipe is fixed once it has
started. The first recipe starts from the shipped student; see `RECIPES` for every setting.
An arm's finding enters a long run as a branch: a new line that continues another line's
committed state with the changed settings (`--branch PARENT`; the parent stays as it was).

    python experiments/campaign.py --student mobilefacenet --line lr3e-4 --set lr=3e-4 --hours 1
    python experiments/campaign.py --student mobilefacenet --branch lr3e-4 --line lr3e-4-noillum \
        --set 'config={"augment.hard.illumination_prob": 0}' --hours 2
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edge_students import DATA_ARG, POOL_LIST, RESULTS, pool_list, run  # noqa: E402
from faces import REPO, celeba_eval_crops, embed_with, normalised, torch_embedder, write_json  # noqa: E402

import wild_eval  # noqa: E402

STATE = REPO / "experiments" / "campaign"
RUNS = REPO / "runs" / "campaign"
TEACHER = "train/configs/teachers/retail_0095_int8.yaml"
TARGET_CACHE = "runs/teacher_targets_pool_retail0095_int8.pt"
LATENCY_RESULTS = (REPO / "benchmarks" / "results" / "edge_latency.md",
                   REPO / "benchmarks" / "results" / "edge_latency.json")
LATENCY_BENCH = [sys.executable, "benchmarks/edge_latency.py", "--pretrained",
                 "--out", "benchmarks/results/edge_latency"]
# The schedule's keys (batch, lr, min_lr, warmup_images, total_images, seed) never change once a
# campaign has started; a loss or augmentation change between stints is recorded with the stint.
# bn_faces: the BatchNorm statistics of each exported model.pt re-estimated on this many clean pool
# faces (training on degraded views leaves statistics of degraded views: 0.366 -> 0.437 CelebA TAR
# for stint 1's student); 0 keeps the training's.
# config: any other `train distill` overrides of a line ({"augment.hard.jpeg_prob": 0}: one group
# off). degrade_scale multiplies every degradation's probability (augment.hard's and the photometric
# jitter, grey and blur of augment): 0.5 keeps more views near the clean faces the student knows.
# relational_weight starts at 0: the term's bank (the teacher on every pool face, 16 min on an idle
# 2-core machine) is the first A/B from the campaign's state, not a guess at its start.
_PRESETS = {
    "cpu": {"batch": 64, "lr": 1e-3, "min_lr": 1e-5, "warmup_images": 20000,
            "total_images": 2_000_000, "precision": "bf16", "threads": 2, "workers": 1,
            "relational_weight": 0.0, "degrade_scale": 1.0, "seed": 21,
            "checkpoint_every": 100, "init": None, "config": {}, "bn_faces": 2048},
    # One GPU: the same schedule in images; the teacher on the host's CPU cores in 6 workers.
    "gpu": {"batch": 256, "lr": 2e-3, "min_lr": 1e-5, "warmup_images": 50000,
            "total_images": 2_000_000, "precision": "auto", "threads": 8, "workers": 6,
            "relational_weight": 0.0, "degrade_scale": 1.0, "seed": 21,
            "checkpoint_every": 100, "init": None, "config": {}, "bn_faces": 2048},
}
# Keys that change only how a checkpoint is evaluated: a started line may take them (from its next
# point on; the stint records its recipe).
EVALUATION_KEYS = {"bn_faces"}
_OVERRIDES = {"mobilefacenet": {}, "part_fvit_tiny": {"pool": "landmarks"}}
RECIPES = {preset: {student: {**settings, "overrides": overrides}
                    for student, overrides in _OVERRIDES.items()}
           for preset, settings in _PRESETS.items()}


@functools.cache
def pool_size() -> int:
    """Faces in the pool (warmup is given in images; the engine takes epochs)."""
    return len(pool_list().read_text().splitlines())


# --- the committed state --------------------------------------------------------------------

def campaign_name(student: str, preset: str, line: str | None = None) -> str:
    """experiments/campaign/<student>[-<preset>][-<line>]: a line is one recipe's campaign (an A/B
    arm started from step 0 with `--set`)."""
    return "-".join([student] + ([preset] if preset != "cpu" else []) + ([line] if line else []))


def state_dir(student: str, preset: str, line: str | None = None) -> Path:
    return STATE / campaign_name(student, preset, line)


def run_dir(student: str, preset: str, line: str | None = None) -> Path:
    return RUNS / campaign_name(student, preset, line)


def read_state(student: str, preset: str, line: str | None = None,
               settings: dict | None = None) -> dict:
    """The committed state, or a new line's step 0 with the recipe plus `settings` (a started
    line's recipe never changes: the schedule and the data order are part of its curve)."""
    path = state_dir(student, preset, line) / "state.json"
    if path.is_file():
        state = json.loads(path.read_text())
        changed = {k: v for k, v in (settings or {}).items() if state["recipe"].get(k) != v}
        state["recipe"].update({k: changed.pop(k) for k in EVALUATION_KEYS & set(changed)})
        if changed:
            raise SystemExit(f"{campaign_name(student, preset, line)} has started; its recipe "
                             f"stays as it is (asked to change {sorted(changed)}): start a new "
                             "--line instead")
        return state
    unknown = set(settings or {}) - set(RECIPES[preset][student])
    if unknown:
        raise SystemExit(f"unknown recipe keys {sorted(unknown)}; known: "
                         f"{sorted(RECIPES[preset][student])}")
    return {"student": student, "preset": preset, "line": line,
            "recipe": {**RECIPES[preset][student], **(settings or {})}, "step": 0,
            "images_seen": 0, "curve": [], "stints": []}


FIXED_AT_BRANCH = {"init", "overrides", "batch", "seed"}   # what the branch's weights were built on


def branch_line(student: str, preset: str, parent: str | None, line: str, settings: dict) -> dict:
    """A new line that continues `parent`'s committed state (weights, projection, step, images
    seen, the curve so far) with `settings` changed from that point: how an A/B arm's finding
    enters a long run without rewriting the parent's recipe. `config` entries are added to the
    parent's; the architecture, start, batch and data-order seed stay the parent's."""
    import shutil

    source, target = state_dir(student, preset, parent), state_dir(student, preset, line)
    if (target / "state.json").is_file():
        raise SystemExit(f"{campaign_name(student, preset, line)} exists: branch into a new --line")
    if not (source / "checkpoint.pt").is_file():
        raise SystemExit(f"{campaign_name(student, preset, parent)} has no committed checkpoint "
                         "to branch from")
    fixed = FIXED_AT_BRANCH & set(settings)
    unknown = set(settings) - set(RECIPES[preset][student]) - fixed
    if fixed or unknown:
        raise SystemExit(f"a branch cannot change {sorted(fixed | unknown)}: start a new line")
    base = json.loads((source / "state.json").read_text())
    recipe = {**base["recipe"], **settings,
              "config": {**base["recipe"].get("config", {}), **settings.get("config", {})}}
    name = campaign_name(student, preset, parent)
    state = {**base, "line": line, "recipe": recipe,   # the parent's stints: these weights' past
             "notes": [f"Branched from {name} at step {base['step']} ({base['images_seen']:,} "
                       f"images) with {json.dumps(settings)}."],
             "parent": {"line": name, "step": base["step"], "images_seen": base["images_seen"],
                        "changed": settings}}
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "checkpoint.pt", target / "checkpoint.pt")
    save_state(state, target)
    return state


def parse_settings(pairs: list[str]) -> dict:
    """["lr=3e-4", "degrade_scale=0.5"] -> {"lr": 0.0003, "degrade_scale": 0.5}."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set takes KEY=VALUE, not {pair!r}")
        out[key] = json.loads(value)
    return out


def compact(rank_file: Path, out: Path) -> None:
    """A run's checkpoint -> the committed one: the modules' weights in fp16 and the optimizer's
    param groups, nothing else. AdamW's moments (as large as the weights) and the RNG stay in the
    run folder: a machine that rebuilds the run from here restarts the moments, and the trainer
    ramps the lr up again over `optim.rewarm_steps`; the RNG is reseeded from the step."""
    import torch

    from lafs_edge.models.registry import atomic_torch_save

    state = torch.load(rank_file, map_location="cpu", weights_only=True)
    modules = {name: {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
               for name, sd in state["modules"].items()}
    atomic_torch_save({"format": "lafs-edge-campaign/2", "step": state["step"], "modules": modules,
                       "param_groups": state["optimizer"]["param_groups"],
                       "config": state["config"]}, out)


def expand(committed: Path, folder: Path, cfg: dict) -> int:
    """The committed checkpoint -> a run folder the trainer resumes from (fresh optimizer
    moments); returns its step. Reads the first format's files too (their moments are dropped)."""
    import torch

    saved = torch.load(committed, map_location="cpu", weights_only=True)
    step = int(saved["step"])
    modules = {n: {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
               for n, sd in saved["modules"].items()}
    groups = saved["param_groups"] if "param_groups" in saved else saved["optimizer"]["param_groups"]
    write_run_checkpoint(folder, step, modules, {"state": {}, "param_groups": groups},
                         saved["config"], int(cfg["seed"]) + step)
    return step


def write_run_checkpoint(folder: Path, step: int, modules: dict, optimizer: dict, config: dict,
                         seed: int) -> None:
    """A one-rank engine checkpoint (train/engine/state.py's layout) at `step`, named `latest`;
    its RNG is seeded from `seed`."""
    import torch

    from lafs_edge.fileio import write_text_atomic
    from lafs_edge.models.registry import atomic_torch_save
    from lafs_edge.train.engine.state import STATE_FORMAT, rng_state, seed_everything

    seed_everything(seed)
    if config["distill"]["ema_decay"] > 0 and "average" not in modules:
        # a line that averages from here on: the average starts at the student's weights
        modules = {**modules, "average": model_weights(modules["student"])}
    steps_per_epoch = pool_size() // int(config["optim"]["batch_size"])
    state = {"format": STATE_FORMAT, "step": step, "world": 1, "modules": modules,
             "optimizer": optimizer, "scaler": {}, "schedule": {"step": step},
             "sampler": {"epoch": step // steps_per_epoch,
                         "step_in_epoch": step % steps_per_epoch, "lanes": 0},
             "rng": rng_state(torch.device("cpu")), "config": config}
    name = f"step_{step:08d}"
    atomic_torch_save(state, folder / "checkpoints" / name / "rank00000.pt")
    write_text_atomic(folder / "checkpoints" / "latest", name + "\n")


def model_weights(student_state: dict) -> dict:
    """The model's weights in a `Student` (model + projection) state dict."""
    return {k[len("model."):]: v for k, v in student_state.items() if k.startswith("model.")}


def latest_rank_file(folder: Path) -> Path | None:
    from lafs_edge.train.engine.state import latest_checkpoint

    latest = latest_checkpoint(folder / "checkpoints")
    return latest / "rank00000.pt" if latest else None


def run_step(folder: Path) -> int:
    rank = latest_rank_file(folder)
    if rank is None:
        return -1
    return int(rank.parent.name.split("_")[1])


# --- the first start: shipped weights + a fitted projection ---------------------------------

def initial_checkpoint(student: str, recipe: dict, folder: Path, cfg: dict) -> None:
    """Step 0 of the campaign as a run checkpoint: the shipped student and a projection fitted by
    ridge regression to the teacher's unit embeddings of 4,096 clean pool faces."""
    import torch
    from torch import nn

    from lafs_edge.models import create_model
    from lafs_edge.models.pretrained import has_weights, weights_file
    from lafs_edge.models.registry import load_model
    from lafs_edge.train.distill import Student
    from lafs_edge.train.engine.optim import build_optimizer, split_decay

    if recipe.get("init"):
        model = load_model(REPO / recipe["init"])
    elif has_weights(student):
        model = load_model(weights_file(student))
    else:
        model = create_model(student, **recipe["overrides"])
    student_emb, teacher_emb = cached_projection_data(model, 4096, int(recipe["seed"]))
    projection = nn.Linear(model.embedding_dim, teacher_emb.shape[1])
    weight, bias = ridge(student_emb, teacher_emb, 1e-2)
    with torch.no_grad():
        projection.weight.copy_(torch.from_numpy(weight.T).float())
        projection.bias.copy_(torch.from_numpy(bias).float())
    fitted = normalised(student_emb @ weight + bias)
    print(f"projection fitted: mean cosine to the teacher {np.mean((fitted * teacher_emb).sum(1)):.3f} "
          "on the 4,096 faces it was fitted on", flush=True)
    net = Student(model.train(), projection)
    optimizer = build_optimizer(split_decay([net]), cfg["optim"], torch.device("cpu"))
    write_run_checkpoint(folder, 0, {"student": net.state_dict()}, optimizer.state_dict(), cfg,
                         int(cfg["seed"]))


def weights_digest(state_dict: dict) -> str:
    """The first 24 hex digits of the sha256 of a state dict's values (as fp32): the key of the
    campaign's caches, so lines from one start share their projection data and first point."""
    from lafs_edge.hashing import sha256_bytes

    return sha256_bytes(b"".join(v.float().numpy().tobytes() for v in state_dict.values()))[:24]


def cached_projection_data(model, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`projection_data`, kept by the weights' hash (lines from one start share it)."""
    cache = RUNS / "projection_cache" / f"{weights_digest(model.state_dict())}-{count}-{seed}.npz"
    if cache.is_file():
        saved = np.load(cache)
        return saved["student"], saved["teacher"]
    student, teacher = projection_data(model, count, seed)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, student=student, teacher=teacher)
    return student, teacher


def projection_data(model, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(student embeddings, unit teacher embeddings) of `count` clean pool faces."""
    import torch

    from lafs_edge.landmark_lists import LandmarkFaces
    from lafs_edge.train.sources import normalise, student_matrix, template_change, warp
    from lafs_edge.train.teachers import load_teacher
    from lafs_edge.image import read_image

    faces = LandmarkFaces(REPO / POOL_LIST, root=REPO / DATA_ARG).entries
    picks = np.random.default_rng(seed).choice(len(faces), count, replace=False)
    teacher = load_teacher(REPO / TEACHER, torch.device("cpu"))
    width, height = teacher.geometry.crop_size
    students, teachers = [], []
    for start in range(0, count, 128):
        crops, views = [], []
        for i in picks[start:start + 128]:
            path, points = faces[i]
            image = read_image(path)
            crops.append(warp(image, student_matrix(points), 112, 112))
            views.append(warp(image, template_change(points, teacher.geometry.template)
                              @ student_matrix(points), width, height))
        students.append(torch_embedder(model.eval())(np.stack(crops)))
        target, _ = teacher(normalise(torch.from_numpy(np.stack(views)).permute(0, 3, 1, 2)))
        teachers.append(target.numpy())
    return np.concatenate(students), normalised(np.concatenate(teachers))


def ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """W, b minimising ||x W + b - y||^2 + alpha ||W||^2 (x centred for the bias)."""
    mean_x, mean_y = x.mean(0), y.mean(0)
    xc = x - mean_x
    weight = np.linalg.solve(xc.T @ xc + alpha * len(x) * np.eye(x.shape[1]), xc.T @ (y - mean_y))
    return weight, mean_y - mean_x @ weight


# --- training -------------------------------------------------------------------------------

def distill_argv(student: str, recipe: dict, folder: Path, stop_after: int) -> list[str]:
    batch = recipe["batch"]
    total_steps = recipe["total_images"] // batch
    warmup_epochs = recipe["warmup_images"] / pool_size()
    argv = ["lafs-edge", "train", "distill", "--config", "distill", f"model.arch={student}",
            f"distill.teacher={TEACHER}", "distill.targets=loader",
            f"distill.target_cache={TARGET_CACHE}",
            f"distill.relational_weight={recipe['relational_weight']}",
            "data.format=landmarks", f"data.root={DATA_ARG}", f"data.list_file={POOL_LIST}",
            f"data.num_workers={recipe['workers']}", f"seed={recipe['seed']}",
            f"optim.batch_size={batch}", f"optim.max_steps={total_steps}",
            f"optim.lr={recipe['lr']}", f"optim.min_lr={recipe['min_lr']}",
            f"optim.warmup_epochs={warmup_epochs:.4f}", f"train.precision={recipe['precision']}",
            f"train.checkpoint_every={recipe['checkpoint_every']}", "train.log_every=20",
            "train.progress=false", f"train.stop_after={stop_after}", f"output_dir={folder}"]
    scale = recipe.get("degrade_scale", 1.0)
    if scale != 1.0:
        argv += [f"{key}={value * scale:.4g}" for key, value in degradation_probs().items()]
    argv += [f"{key}={json.dumps(value)}" for key, value in recipe.get("config", {}).items()]
    if recipe["overrides"]:
        argv.append(f"model.overrides={json.dumps(recipe['overrides'], separators=(',', ':'))}")
    return argv


@functools.cache
def degradation_probs() -> dict[str, float]:
    """{config key: default probability} of every degradation of distill.yaml's augment block."""
    from lafs_edge.train.config import load_config

    augment = load_config("distill", overrides=[])["augment"]
    probs = {f"augment.hard.{k}": v for k, v in augment["hard"].items() if k.endswith("_prob")}
    return {**probs, **{f"augment.{k}": augment[k]
                        for k in ("jitter_prob", "grayscale_prob", "blur_prob")}}


def resolved_config(argv: list[str]) -> dict:
    from lafs_edge.train.config import load_config

    return load_config("distill", overrides=argv[5:])


def train_chunk(argv: list[str], threads: int, log: Path, deadline: float, nice: int) -> int:
    """One `lafs-edge train distill` run, nice'd; SIGTERM (a checkpoint, then exit) at the deadline."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    print("$ " + shlex.join(argv), flush=True)
    with open(log, "a") as out:
        job = subprocess.Popen(["nice", "-n", str(nice), *argv], cwd=REPO, env=env, stdout=out,
                               stderr=subprocess.STDOUT)
        while job.poll() is None:
            if time.time() > deadline:
                job.send_signal(signal.SIGTERM)
                return job.wait()
            time.sleep(5)
    return job.returncode


# --- evaluation -----------------------------------------------------------------------------

def pool_crops(count: int, seed: int = 0) -> np.ndarray:
    """`count` aligned 112x112 pool faces (uint8 RGB), a seeded draw."""
    from lafs_edge.image import read_image
    from lafs_edge.landmark_lists import LandmarkFaces
    from lafs_edge.train.sources import student_matrix, warp

    pool_list()
    faces = LandmarkFaces(REPO / POOL_LIST, root=REPO / DATA_ARG).entries
    picks = np.random.default_rng(seed).choice(len(faces), count, replace=False)
    return np.stack([warp(read_image(faces[i][0]), student_matrix(faces[i][1]), 112, 112)
                     for i in picks])


def recalibrate(model_pt: Path, faces: int) -> None:
    """model.pt's BatchNorm statistics re-estimated on `faces` clean pool faces (batches of 64),
    written back in place (atomically), every other key of the checkpoint kept."""
    import torch

    from lafs_edge.image import MEAN, STD
    from lafs_edge.models import load_model
    from lafs_edge.models.batchnorm import recalibrate_batchnorm
    from lafs_edge.models.registry import atomic_torch_save, read_checkpoint

    model = load_model(model_pt)
    crops = torch.from_numpy(pool_crops(faces, seed=1)).permute(0, 3, 1, 2).float()
    recalibrate_batchnorm(model, ((crops[i:i + 64] - MEAN) / STD for i in range(0, faces, 64)))
    payload = read_checkpoint(model_pt)
    payload["state_dict"] = model.state_dict()
    payload["bn_recalibrated_on"] = f"{faces} clean pool faces"
    atomic_torch_save(payload, model_pt)


def evaluate_student(model_pt: Path) -> dict:
    """The wild_eval report of a model.pt; kept by the weights' hash (lines from one start share
    their first point)."""
    cache = RUNS / "eval_cache" / f"{loaded(model_pt)[1]}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    figures = evaluate_model(model_pt)
    write_json(cache, figures)
    return figures


def evaluate_line_model(model_pt: Path, recipe: dict) -> dict:
    """A line's exported model.pt scored as its recipe says: BatchNorm statistics re-estimated
    on `bn_faces` clean pool faces first (in place), then `evaluate_student`."""
    if recipe.get("bn_faces"):
        recalibrate(model_pt, int(recipe["bn_faces"]))
    return evaluate_student(model_pt)


def evaluate_model(model_pt: Path) -> dict:
    sets = eval_embeddings(model_pt)
    return wild_eval.report_of(sets["clean"], sets, celeba_eval_crops()[1])


def pair_sets(model_pt: Path) -> list:
    """A model's wild_eval.PairScores: the CelebA all-pairs set, then each stress condition's."""
    sets, labels = eval_embeddings(model_pt), celeba_eval_crops()[1]
    return [wild_eval.all_pair_scores(sets["clean"], labels),
            *[wild_eval.cross_pair_scores(sets["clean"], sets[c], labels)
              for c in wild_eval.RELIGHT]]


def loaded(model_pt: Path) -> tuple:
    """(the model in eval mode, its `weights_digest`), read once per version of the file."""
    stat = Path(model_pt).stat()
    return _loaded(str(Path(model_pt).resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _loaded(path: str, mtime_ns: int, size: int) -> tuple:
    from lafs_edge.models import load_model

    model = load_model(path).eval()
    return model, weights_digest(model.state_dict())


EMBEDDINGS: dict[str, dict[str, np.ndarray]] = {}    # weights digest -> eval_embeddings


def eval_embeddings(model_pt: Path) -> dict[str, np.ndarray]:
    """A model's unit embeddings of the CelebA eval crops ("clean") and of each relit set (by
    condition), kept in this process by the weights' hash: a stint's evaluation, its paired gain
    and the ship check embed each model once."""
    model, key = loaded(model_pt)
    if key not in EMBEDDINGS:
        embed = torch_embedder(model)
        if len(EMBEDDINGS) >= 8:
            EMBEDDINGS.pop(next(iter(EMBEDDINGS)))
        EMBEDDINGS[key] = {"clean": embed_with(embed, celeba_eval_crops()[0]),
                           **{c: embed_with(embed, relit_eval_crops(c)) for c in wild_eval.RELIGHT}}
    return EMBEDDINGS[key]


@functools.cache
def relit_eval_crops(condition: str) -> np.ndarray:
    """The stress set's crops under `condition` (wild_eval.relit), made once per process."""
    return wild_eval.relit(celeba_eval_crops()[0], condition)


def paired_gain(model_pt: Path, reference_pt: Path) -> dict:
    """CelebA TAR@1e-3 and stress-mean TAR of `model_pt` minus `reference_pt`'s, each with the
    spread of the difference under identity draws shared by both models (wild_eval
    .paired_difference): the yardstick for a stint's gain and an A/B arm against its reference."""
    return set_difference(pair_sets(model_pt), pair_sets(reference_pt))


def set_difference(model: list, reference: list) -> dict:
    """`paired_gain` of two models' `pair_sets`."""
    n_ids = int(celeba_eval_crops()[1].max()) + 1
    return {"celeba": wild_eval.paired_difference(model[:1], reference[:1], n_ids),
            "stress_mean": wild_eval.paired_difference(model[1:], reference[1:], n_ids,
                                                       bootstraps=50)}


def evaluate_teacher(precision: str) -> dict:
    """The teacher's figures on the same protocol (its own crop cut from each 112x112 crop)."""
    import torch

    from lafs_edge.train.sources import normalise
    from lafs_edge.train.teachers import load_teacher

    yaml = TEACHER if precision == "FP16-INT8" else "train/configs/teachers/retail_0095.yaml"
    teacher = load_teacher(REPO / yaml, torch.device("cpu"))
    crops, labels = celeba_eval_crops()
    width, height = teacher.geometry.crop_size

    def embed(batch: np.ndarray) -> np.ndarray:
        views = wild_eval.teacher_views(batch, teacher.geometry.template, (width, height))
        return teacher(normalise(torch.from_numpy(views).permute(0, 3, 1, 2)))[0].numpy()

    return wild_eval.report(lambda c: embed_with(embed, c), crops, labels)


def point(state: dict, figures: dict, minutes: float) -> dict:
    return {"step": state["step"], "images_seen": state["images_seen"],
            "celeba": figures["celeba"], "stress": figures.get("stress"),
            "stress_mean": figures.get("stress_mean"), "train_minutes": round(minutes, 1),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def compare_arms(reference: str, arms: list[str]) -> None:
    """Each arm's CelebA and stress-mean TAR minus the reference's, paired (`paired_gain`), into
    docs/results/campaign_ab.json (kept across calls, keyed by arm) for the report. A name is a
    line (its run folder's model.pt, BatchNorm as its recipe evaluates it) or a model.pt path."""
    def resolve(name: str) -> tuple[str, Path, dict]:
        """(label, model.pt, the line's images and settings): a line's name, or a model.pt
        path named after its line (a line's model kept elsewhere)."""
        from lafs_edge.models.registry import read_checkpoint

        path = Path(name)
        label = path.stem if path.suffix == ".pt" else name
        model_pt = path if path.suffix == ".pt" else RUNS / name / "model.pt"
        state_file = STATE / label / "state.json"
        info = {}
        if state_file.is_file():
            state = json.loads(state_file.read_text())
            info = {"images_seen": state["images_seen"],
                    "config": state["recipe"].get("config", {})}
        own = read_checkpoint(model_pt).get("images_seen") if model_pt.is_file() else None
        if own is not None:
            info["images_seen"] = own   # the model's own (a line's later models differ)
        return label, model_pt, info

    ref_label, ref_pt, ref_info = resolve(reference)
    ref_sets: list = []
    table_file = RESULTS / "campaign_ab.json"
    table = json.loads(table_file.read_text()) if table_file.is_file() else {}
    for name in arms:
        arm, arm_pt, info = resolve(name)
        for path in (ref_pt, arm_pt):
            if not path.is_file():
                raise SystemExit(f"{path}: no such model (a line's run folder exists only on the "
                                 "machine that trained it)")
        ref_sets = ref_sets or pair_sets(ref_pt)
        gain = set_difference(pair_sets(arm_pt), ref_sets)
        table[arm] = {"reference": ref_label, "reference_images": ref_info.get("images_seen"),
                      "images_seen": info.get("images_seen"), "config": info.get("config"),
                      **gain}
        print(f"{arm} - {ref_label}: CelebA {gain['celeba']['diff']:+.3f} ± "
              f"{gain['celeba']['std']:.3f}, stress mean {gain['stress_mean']['diff']:+.3f} ± "
              f"{gain['stress_mean']['std']:.3f} (paired)", flush=True)
        write_json(table_file, table)


def ab_table() -> list[str]:
    table_file = RESULTS / "campaign_ab.json"
    if not table_file.is_file():
        return []
    lines = ["A/B arms against their reference, paired: each figure is the arm's TAR@1e-3 minus "
             "the reference's, ± the std of that difference over 200 identity draws (50 for the "
             "stress mean) shared by both models, with its 2.5-97.5% range "
             "(`python experiments/campaign.py --compare REFERENCE ARM...`):", "",
             "| arm | its settings | reference | images (reference's) | CelebA difference | "
             "range | stress-mean difference | range |", "|---|---|---|---|---|---|---|---|"]
    for arm, row in json.loads(table_file.read_text()).items():
        images = (f"{row['images_seen']:,} ({row['reference_images']:,})"
                  if row.get("images_seen") and row.get("reference_images") else "-")
        c, m = row["celeba"], row["stress_mean"]
        lines.append(f"| {arm} | `{json.dumps(row.get('config') or {})}` | {row['reference']} | "
                     f"{images} | "
                     f"{c['diff']:+.3f} ± {c['std']:.3f} | {c['ci95'][0]:+.3f} to {c['ci95'][1]:+.3f} | "
                     f"{m['diff']:+.3f} ± {m['std']:.3f} | {m['ci95'][0]:+.3f} to {m['ci95'][1]:+.3f} |")
    return lines


# --- report ---------------------------------------------------------------------------------

def write_report(states: dict[str, dict], teacher: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, state in states.items():
        curve = own_part(state)[0]
        x = [p["images_seen"] / 1e6 for p in curve]
        y = [p["celeba"]["tar"] for p in curve]
        err = [p["celeba"]["std"] for p in curve]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=name)
    ax.axhline(teacher["FP16"]["celeba"]["tar"], color="k", ls="--",
               label="teacher (retail-0095 FP16)")
    ax.set_xlabel("student images seen in the campaign (millions)")
    ax.set_ylabel("CelebA eval TAR @ FAR 1e-3")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "campaign_curve.png", dpi=90)
    plt.close(fig)
    write_json(RESULTS / "campaign.json", {"students": states, "teacher": teacher})
    (RESULTS / "campaign.md").write_text(fragment(states, teacher))
    subprocess.run([sys.executable, str(Path(__file__).parent / "report.py")], check=True)


def own_part(state: dict) -> tuple[list[dict], list[dict]]:
    """(curve points, stints) a line has of its own: a branch (`--branch`) carries its parent's
    past in its state, and the report shows that past once, under the parent; the branch's own
    curve starts at the point it branched from."""
    parent = state.get("parent")
    if not parent:
        return state["curve"], state.get("stints", [])
    return ([p for p in state["curve"] if p["step"] >= parent["step"]],
            [s for s in state.get("stints", []) if s["start_step"] >= parent["step"]])


def fmt(fig: dict) -> str:
    return f"{fig['tar']:.3f} ± {fig['std']:.3f}"


def fragment(states: dict[str, dict], teacher: dict) -> str:
    conditions = list(wild_eval.RELIGHT)
    lines = [
        "## The distillation campaign: students in the wild (issue 21)", "",
        "Produced by `python experiments/campaign.py --student STUDENT --hours H` (one stint; "
        "state in `experiments/campaign/`). TAR at FAR 1e-3 on the 44 CelebA eval identities over "
        "**all** pairs (13,271 genuine, 545,882 impostor), ± the std of a 200-draw bootstrap over "
        "identities; the stress set is every eval crop relit in linear light (enrolment clean, "
        "TAR over all clean x relit pairs; experiments/wild_eval.py). The teacher sees its own "
        "crop of the same view. Student figures: PyTorch fp32 of the campaign's checkpoint.", "",
        "![TAR@FAR1e-3 against images seen](results/campaign_curve.png)", "",
        "| model | images seen | CelebA TAR@1e-3 | " + " | ".join(conditions) + " | stress mean |",
        "|---|---|---|" + "---|" * len(conditions) + "---|"]
    for precision, fig in teacher.items():
        lines.append(f"| teacher {precision} | - | {fmt(fig['celeba'])} | "
                     + " | ".join(f"{fig['stress'][c]['tar']:.3f}" for c in conditions)
                     + f" | {fig['stress_mean']:.3f} |")
    for name, state in states.items():
        for p in own_part(state)[0]:
            stress = p.get("stress") or {}
            lines.append(f"| {name} | {p['images_seen']:,} | {fmt(p['celeba'])} | "
                         + " | ".join(f"{stress[c]['tar']:.3f}" if c in stress else "-"
                                      for c in conditions)
                         + (f" | {p['stress_mean']:.3f} |" if p.get("stress_mean") else " | - |"))
    lines += ["", *targets_table(states, teacher)]
    ab = ab_table()
    lines += ["", *ab] if ab else []
    for name, state in states.items():
        lines += ["", *[f"- {name}: {note}" for note in state.get("notes", [])]]
    lines += ["", "Recipes (each student's whole campaign; `experiments/campaign.py` RECIPES):", ""]
    for name, state in states.items():
        lines.append(f"- {name}: `{json.dumps(state['recipe'], separators=(', ', ': '))}`")
    lines += ["", "Stints:", ""]
    for name, state in states.items():
        for s in own_part(state)[1]:
            gain = s.get("gain")
            paired = (f"; CelebA gain over the stint {gain['celeba']['diff']:+.3f} ± "
                      f"{gain['celeba']['std']:.3f}, stress mean {gain['stress_mean']['diff']:+.3f}"
                      f" ± {gain['stress_mean']['std']:.3f} (paired)" if gain else "")
            lines.append(f"- {name}: {s['start_step']} -> {s['end_step']} steps "
                         f"(+{s['images']:,} images, {s['minutes']:.0f} min on {s['machine']}"
                         f"{paired}); command: `{s['command']}`")
    return "\n".join(lines) + "\n"


def targets_table(states: dict[str, dict], teacher: dict) -> list[str]:
    """Where each long line (a stint of an hour or more) stands against issue 21's targets and
    its rule for stopping: two stints in a row of 2 h or more, each gaining no more than its
    spread (and 0.01)."""
    teacher_stress = teacher["FP16"]["stress"]
    lines = ["Against the targets (latest point of each line with a stint of an hour or more; "
             "mobilefacenet >= 0.80, the landmark student >= mobilefacenet, stress >= 0.9x the "
             "teacher's TAR under each lighting; last stint: training minutes and the gain over "
             "it ± its spread, paired (the same identity draws for the stint's start and end "
             "models) where the stint recorded it; no gain: at most the larger of that spread "
             "and 0.01):", "",
             "| line | images seen | CelebA TAR@1e-3 | stress / teacher, mean (worst) | "
             "last stint | gain over it | no gain? |", "|---|---|---|---|---|---|---|"]
    for name, state in states.items():
        stints = own_part(state)[1]
        if not any(stint_minutes(s) >= 60 for s in stints):
            continue
        last, point = stints[-1], state["curve"][-1]
        gain, spread, paired = stint_gain(last, state["curve"])
        ratios = [point["stress"][c]["tar"] / teacher_stress[c]["tar"] for c in teacher_stress
                  if c in point.get("stress", {})]
        stress = f"{np.mean(ratios):.2f} ({min(ratios):.2f})" if ratios else "-"
        lines.append(f"| {name} | {point['images_seen']:,} | {fmt(point['celeba'])} | {stress} | "
                     f"{stint_minutes(last):.0f} min | {gain:+.3f} ± {spread:.3f}"
                     f"{' (paired)' if paired else ''} | "
                     f"{'yes' if stint_minutes(last) >= 120 and gain <= max(spread, 0.01) else 'no'} |")
    return lines


def stint_gain(stint: dict, curve: list[dict]) -> tuple[float, float, bool]:
    """(gain, its spread, paired?) of a stint's CelebA TAR: the paired difference against the
    stint's start model when the stint recorded it; older stints: the difference of the two
    curve points against the end point's own (unpaired, wider) spread."""
    if stint.get("gain"):
        fig = stint["gain"]["celeba"]
        return fig["diff"], fig["std"], True
    start = next(p for p in curve if p["step"] >= stint["start_step"])
    end = next(p for p in reversed(curve) if p["step"] <= stint["end_step"])
    return end["celeba"]["tar"] - start["celeba"]["tar"], end["celeba"]["std"], False


def stint_minutes(stint: dict) -> float:
    """Training minutes of a stint (older stints recorded wall minutes only)."""
    return float(stint.get("train_minutes", stint["minutes"]))


# --- the stint ------------------------------------------------------------------------------

def stint(student: str, preset: str, hours: float, chunk_minutes: float, nice: int,
          threads: int | None = None, line: str | None = None,
          settings: dict | None = None, until_images: int = 0, compiled: bool = False) -> dict:
    import platform

    state = read_state(student, preset, line, settings)
    recipe = state["recipe"]
    folder, saved = run_dir(student, preset, line), state_dir(student, preset, line)
    folder.mkdir(parents=True, exist_ok=True)
    saved.mkdir(parents=True, exist_ok=True)
    pool_list()
    start_step = state["step"]
    argv = distill_argv(student, recipe, folder, start_step)
    cfg = resolved_config(argv)
    if run_step(folder) < state["step"]:
        if (saved / "checkpoint.pt").is_file():
            expand(saved / "checkpoint.pt", folder, cfg)
        else:
            initial_checkpoint(student, recipe, folder, cfg)
    if not state["curve"]:
        (folder / "model.pt").exists() or export_latest(folder, cfg)
        state["curve"].append(point(state, evaluate_student(folder / "model.pt"), 0.0))
        save_state(state, saved)
    # the stint's gain is judged against its start, pair by pair (paired_gain)
    export_latest(folder, cfg, folder / "stint_start.pt")
    if recipe.get("bn_faces"):
        recalibrate(folder / "stint_start.pt", int(recipe["bn_faces"]))
    # `hours` of training from here (setup and the first point do not count); each chunk is a
    # time slice that ends with SIGTERM (a checkpoint, then exit), then an evaluation.
    started = time.time()
    deadline = started + hours * 3600
    trained = 0.0
    total_steps = recipe["total_images"] // recipe["batch"]
    # an A/B arm stops at equal images seen (the schedule still spans total_images)
    end_step = min(total_steps, until_images // recipe["batch"]) if until_images else total_steps
    while time.time() + 60 < deadline and state["step"] < end_step:
        chunk_start = time.time()
        chunk_end = min(chunk_start + chunk_minutes * 60, deadline)
        # train.compile: a run key (not the recipe's): the same weights, a faster step for some
        # students, minutes of compiling at each chunk's start (benchmarks/compile_speed.py)
        argv = distill_argv(student, recipe, folder, end_step) + ["train.compile=true"] * compiled
        code = train_chunk(argv, threads or recipe["threads"], folder / "train.log", chunk_end, nice)
        trained += time.time() - chunk_start
        if code not in (0, 130, 143, -signal.SIGTERM):   # 130/143: stopped at the slice's end
            raise SystemExit(f"training failed ({code}); see {folder / 'train.log'}")
        rank = latest_rank_file(folder)
        assert rank is not None
        state["step"] = run_step(folder)
        state["images_seen"] = state["step"] * recipe["batch"]
        compact(rank, saved / "checkpoint.pt")
        state["curve"].append(point(state, evaluate_line_model(folder / "model.pt", recipe),
                                    (time.time() - started) / 60))
        save_state(state, saved)
        print(f"{campaign_name(student, preset, line)}: step {state['step']}, images "
              f"{state['images_seen']:,}, CelebA TAR@1e-3 {fmt(state['curve'][-1]['celeba'])}",
              flush=True)
    if state["step"] == start_step:
        print(f"{campaign_name(student, preset, line)}: nothing to train (at step {start_step})",
              flush=True)
        return state
    gain = paired_gain(folder / "model.pt", folder / "stint_start.pt")
    state["stints"].append({"start_step": start_step, "end_step": state["step"],
                            "images": (state["step"] - start_step) * recipe["batch"],
                            "gain": gain,
                            "minutes": round((time.time() - started) / 60, 1),
                            "train_minutes": round(trained / 60, 1),
                            "recipe": dict(recipe),
                            "machine": platform.processor() or platform.machine(),
                            "command": stint_command(student, preset, hours, line, settings,
                                                     until_images, compiled)})
    save_state(state, saved)
    return state


def stint_command(student: str, preset: str, hours: float, line: str | None,
                  settings: dict | None, until_images: int = 0, compiled: bool = False) -> str:
    words = ["python", "experiments/campaign.py", "--student", student, "--preset", preset,
             "--hours", str(hours)] + ["--compile"] * compiled
    words += ["--until-images", str(until_images)] if until_images else []
    words += ["--line", line] if line else []
    for key, value in (settings or {}).items():
        words += ["--set", f"{key}={json.dumps(value)}"]
    return shlex.join(words)


def export_latest(folder: Path, cfg: dict, out: Path | None = None) -> None:
    """model.pt (or `out`) of the run folder's latest checkpoint (step 0: the curve's first
    point)."""
    import torch

    from lafs_edge.models import create_model, save_checkpoint

    rank = latest_rank_file(folder)
    assert rank is not None
    state = torch.load(rank, map_location="cpu", weights_only=True)
    modules = state["modules"]
    model = create_model(cfg["model"]["arch"], **cfg["model"]["overrides"])
    # distill.ema_decay > 0: the average, what the trainer exports too
    model.load_state_dict(modules.get("average") or model_weights(modules["student"]))
    save_checkpoint(model, out or folder / "model.pt", step=int(state["step"]),
                    images_seen=int(state["step"]) * int(cfg["optim"]["batch_size"]))


# --- shipping -------------------------------------------------------------------------------

THRESHOLD_SOURCE = ("cosine at FAR 1e-3 over all 545,882 impostor pairs of the CelebA eval "
                    "identities, PyTorch fp32 (experiments/wild_eval.py)")


def ship_reason(gain: dict, package_ratio: float | None) -> str | None:
    """Why a line's student replaces the package's, or None. `gain`: the paired CelebA
    TAR@FAR1e-3 difference (line minus package, `paired_gain`'s "celeba"). Better: by more than
    the difference's spread and at least 0.01. Within the latency target: the package's student
    misses it (`package_ratio`, its int8 latency over the reference's) and the line's is at
    least as accurate; the line's own ratio is checked after the latency run."""
    from lafs_edge.runtime.shipped import LATENCY_TARGET

    if gain["diff"] > max(gain["std"], 0.01):
        return "better"
    if package_ratio is not None and package_ratio > LATENCY_TARGET and gain["diff"] >= 0:
        return "within the latency target"
    return None


def ship_card(state: dict, figures: dict, shipped: dict, teacher: dict, gain: dict):
    """The model card of a campaign student: how it was trained (every stint's command) and its
    figures beside the student it replaces (with the paired difference, `gain`) and the
    teacher's."""
    from edge_students import TERMS
    from lafs_edge.models.shipping import ModelCard

    recipe, conditions = state["recipe"], list(wild_eval.RELIGHT)
    name = campaign_name(state["student"], state["preset"], state.get("line"))
    start = f"`{recipe['init']}`" if recipe.get("init") else "the previously shipped weights"
    training = [
        f"Campaign line `{name}` (experiments/campaign.py; state in `experiments/campaign/{name}/`): "
        f"distilled from face-reidentification-retail-0095 (its FP16-INT8 IR) by consistent "
        f"teaching: the teacher embeds, in the data loader's worker, the exact degraded view the "
        f"student sees (distill.targets=loader), cosine loss through a linear projection to its "
        f"256-d. Started from {start}; {state['images_seen']:,} images seen "
        f"({state['images_seen'] / pool_size():.1f} passes over the {pool_size():,}-face pool). "
        + (f"BatchNorm statistics re-estimated on {recipe['bn_faces']} clean pool faces. "
           if recipe.get("bn_faces") else "")
        + f"Recipe: `{json.dumps(recipe, separators=(', ', ': '))}`.", "",
        "Stints (each continues the committed state):", "",
        *[f"- {s['start_step']} -> {s['end_step']} steps, {s['minutes']:.0f} min on {s['machine']}: "
          f"`{s['command']}`" for s in state["stints"]]]
    accuracy = [
        "CelebA eval identities (44 people never in the pool), TAR at FAR 1e-3 over all 13,271 "
        "genuine and 545,882 impostor pairs ± the std of an identity bootstrap; the stress set is "
        "each crop relit (experiments/wild_eval.py).", "",
        "| model | CelebA TAR@1e-3 | " + " | ".join(conditions) + " | stress mean |",
        "|---|---|" + "---|" * len(conditions) + "---|"]
    for label, fig in (("this student", figures), ("the student it replaces", shipped),
                       ("teacher FP16", teacher["FP16"])):
        accuracy.append(f"| {label} | {fmt(fig['celeba'])} | "
                        + " | ".join(f"{fig['stress'][c]['tar']:.3f}" for c in conditions)
                        + f" | {fig['stress_mean']:.3f} |")
    accuracy += ["", f"Against the student it replaces, paired (the same identity draws for both "
                     f"models): CelebA TAR@1e-3 {gain['diff']:+.3f} ± {gain['std']:.3f} "
                     f"(2.5-97.5%: {gain['ci95'][0]:+.3f} to {gain['ci95'][1]:+.3f})."]
    return ModelCard(THRESHOLD_SOURCE, training, accuracy, TERMS)


def ship_if_better(student: str, preset: str, line: str | None) -> bool:
    """`ship_line` with the package to itself: two stints ending together rewrite the same
    index, README and latency results, so the second waits for the first."""
    import fcntl

    RUNS.mkdir(parents=True, exist_ok=True)
    with open(RUNS / "ship.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return ship_line(student, preset, line)


def ship_line(student: str, preset: str, line: str | None) -> bool:
    """Put the line's latest student into the package when `ship_reason` gives one; then the
    `photo_mistakes` (first), the latency run, the README's table from the package
    (edge_students.py --package) and `make quickstart`'s check, which put the previous files
    back if they fail."""
    from lafs_edge.models.pretrained import INDEX, WEIGHTS, shipped, weights_file
    from lafs_edge.models.shipping import ship_student

    state = read_state(student, preset, line)
    folder = run_dir(student, preset, line)
    cfg = resolved_config(distill_argv(student, state["recipe"], folder, state["step"]))
    if run_step(folder) != state["step"]:
        expand(state_dir(student, preset, line) / "checkpoint.pt", folder, cfg)
    export_latest(folder, cfg)
    figures = evaluate_line_model(folder / "model.pt", state["recipe"])
    current = evaluate_student(weights_file(student))
    gain = paired_gain(folder / "model.pt", weights_file(student))
    entry = shipped()[student]
    reason = ship_reason(gain["celeba"], entry.get("latency_ratio"))
    name = campaign_name(student, preset, line)
    against = (f"CelebA TAR@1e-3 {fmt(figures['celeba'])} against the shipped "
               f"{fmt(current['celeba'])}, paired difference {gain['celeba']['diff']:+.3f} ± "
               f"{gain['celeba']['std']:.3f}")
    if reason is None:
        print(f"{name}: {against}: not shipped", flush=True)
        return False
    previous = {p: p.read_bytes() for p in (WEIGHTS / entry["file"], WEIGHTS / entry["card"], INDEX,
                                            REPO / "README.md", REPO / "docs" / "deploy.md",
                                            *LATENCY_RESULTS)}
    ship_student(student, folder / "model.pt", figures["celeba"]["threshold"],
                 ship_card(state, figures, current, teacher_figures(), gain["celeba"]),
                 figures={"celeba_tar": figures["celeba"]["tar"]})

    def put_back(why: str) -> NoReturn:
        from lafs_edge.fileio import atomic_write

        for path, data in previous.items():
            with atomic_write(path) as f:
                f.write(data)
        raise SystemExit(f"{why} with {name}'s student: the previous {student} is back in the "
                         "package")

    try:   # first: the cheapest check, and the one most often failed
        mistakes = photo_mistakes(student)
    except Exception as e:   # noqa: BLE001 - whatever stops the check, the package goes back
        put_back(f"the quickstart's photos could not be checked ({e})")
    if mistakes:
        put_back("the quickstart's photos: " + "; ".join(
            f"{photo}: {truth} called {called} ({score:.2f})"
            for photo, truth, called, score in mistakes) + ",")
    for argv in (LATENCY_BENCH, [sys.executable, "experiments/campaign.py", "--figures"],
                 [sys.executable, "experiments/edge_students.py", "--package"],
                 [sys.executable, "-m", "lafs_edge.apps.quickstart"]):
        if run(argv, check=False):
            put_back(f"{shlex.join(argv)} failed")
        if argv[1:2] == ["experiments/campaign.py"] and reason != "better":
            from lafs_edge.runtime.shipped import LATENCY_TARGET

            ratio = shipped()[student]["latency_ratio"]
            if ratio > LATENCY_TARGET:
                put_back(f"int8 latency {ratio:.2f}x the reference, above {LATENCY_TARGET}x,")
    print(f"{name}: shipped ({reason}; {against})", flush=True)
    return True


def photo_mistakes(student: str) -> list[tuple]:
    """The quickstart's device part with the shipped `student`'s artifact (the one `enroll`,
    `identify` and `demo` export and use): the faces of the group photos it names wrongly.
    `make quickstart` reports them without failing; the package's own photo tests
    (tests/test_python_api.py, tests/test_quickstart.py) fail on any, so a student that makes
    one does not ship."""
    import tempfile

    from lafs_edge.apps.quickstart import run_device, wrong_verdicts
    from lafs_edge.commands.artifacts import default_artifact

    with tempfile.TemporaryDirectory() as tmp:
        return wrong_verdicts(run_device(default_artifact(student), Path(tmp))["verdicts"])


def record_package_figures() -> None:
    """Write what picks the default student into the package's index (`celeba_tar`: this
    campaign's CelebA evaluation of the shipped weights; `latency_ratio`: the int8 latency over
    the reference's in benchmarks/results/edge_latency.json, run on the shipped weights by
    LATENCY_BENCH), then name the default student."""
    from lafs_edge.models.pretrained import shipped, weights_file
    from lafs_edge.models.shipping import record_figures
    from lafs_edge.runtime.shipped import LATENCY_TARGET, default_student

    bench = json.loads(LATENCY_RESULTS[1].read_text())
    if not bench.get("pretrained"):
        raise SystemExit(f"{LATENCY_RESULTS[1]} timed random weights: run {shlex.join(LATENCY_BENCH)}")
    for student in sorted(shipped()):
        figures = {"celeba_tar": evaluate_student(weights_file(student))["celeba"]["tar"],
                   "latency_ratio": latency_ratio(student, bench)}
        record_figures(student, figures)
        print(f"{student}: CelebA TAR@FAR1e-3 {figures['celeba_tar']:.3f}, int8 latency "
              f"{figures['latency_ratio']:.2f}x the reference (target <= {LATENCY_TARGET})")
    print(f"default student: {default_student()}")


def latency_ratio(student: str, bench: dict) -> float:
    """`student`'s OpenVINO int8 latency over the reference's in one edge_latency run: the
    larger of the CPU plugin's two settings (f32 and its default, bf16 here)."""
    ratios = [row["vs_peer_same_setting"] for row in bench["rows"]
              if row["model"] == student and row["ir"] == "int8"]
    if not ratios:
        raise SystemExit(f"{LATENCY_RESULTS[1]} has no int8 timing of {student}: run "
                         f"{shlex.join(LATENCY_BENCH)}")
    return max(ratios)


def save_state(state: dict, folder: Path) -> None:
    write_json(folder / "state.json", state)


def teacher_figures() -> dict:
    cache = STATE / "teacher.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    figures = {p: evaluate_teacher(p) for p in ("FP16", "FP16-INT8")}
    write_json(cache, figures)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", choices=sorted(RECIPES["cpu"]), action="append")
    parser.add_argument("--preset", choices=sorted(RECIPES), default="cpu")
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--chunk-minutes", type=float, default=30.0)
    parser.add_argument("--nice", type=int, default=10,
                        help="the training's nice level (10: tests and other work come first)")
    parser.add_argument("--threads", type=int, default=None,
                        help="the student's CPU threads (default: the recipe's)")
    parser.add_argument("--compile", action="store_true",
                        help="train with train.compile=true (torch.compile; on this CPU at 1 "
                             "thread: mobilefacenet's step 1.46x faster, the landmark student's "
                             "0.92x; docs/benchmarks.md)")
    parser.add_argument("--line", default=None,
                        help="a named campaign of its own (an A/B arm): its own state and run folder")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe value for a line's first stint (JSON value), e.g. lr=3e-4")
    parser.add_argument("--branch", metavar="PARENT", default=None,
                        help="start --line from line PARENT's committed state ('' for the "
                             "student's main line) with the --set values changed from there on")
    parser.add_argument("--until-images", type=int, default=0, metavar="N",
                        help="end the stint once the line has seen N images (A/B arms compared "
                             "at equal images); the schedule still spans the recipe's total")
    parser.add_argument("--compare", nargs="+", metavar=("REFERENCE", "ARM"), default=None,
                        help="only compare A/B arms (line names or model.pt paths) with the "
                             "reference, paired, into docs/results/campaign_ab.json and the report")
    parser.add_argument("--report", action="store_true", help="only rewrite the report")
    parser.add_argument("--figures", action="store_true",
                        help="only record the shipped students' CelebA TAR and int8 latency ratio "
                             "in the package's index (what picks the default student)")
    parser.add_argument("--ship", action="store_true",
                        help="after the stint: put each student into the package if it beats the "
                             "shipped one by more than their paired difference's spread (and "
                             "0.01), or matches it within the latency target the shipped one "
                             "misses; then regenerate the README's table and check `make "
                             "quickstart`")
    args = parser.parse_args()
    students = args.student or ["mobilefacenet"]
    settings = parse_settings(args.set)
    if args.figures:
        return record_package_figures()
    if args.compare:
        if len(args.compare) < 2:
            raise SystemExit("--compare takes a reference and at least one arm")
        compare_arms(args.compare[0], args.compare[1:])
        args.report = True
    if args.branch is not None:
        if not args.line or len(students) != 1:
            raise SystemExit("--branch needs one --student and the new --line")
        branch_line(students[0], args.preset, args.branch or None, args.line, settings)
        settings = {}     # now the branch's recipe
    if not args.report:
        for student in students:
            if args.hours > 0:
                stint(student, args.preset, args.hours / len(students), args.chunk_minutes,
                      args.nice, args.threads, args.line, settings, args.until_images,
                      args.compile)
            if args.ship:
                ship_if_better(student, args.preset, args.line)
    states = {p.name: json.loads((p / "state.json").read_text())
              for p in sorted(STATE.iterdir()) if (p / "state.json").is_file()}
    write_report(states, teacher_figures())


if __name__ == "__main__":
    main()
