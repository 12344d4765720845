"""RNG and checkpoint state: what a checkpoint holds, how a run resumes from one, and the checks
that refuse a checkpoint this run cannot continue.

Checkpoints: `checkpoints/step_XXXXXXXX/rankNNNNN.pt` (model, optimizer, scaler, schedule step,
sampler position, python/numpy/torch/cuda RNG), then `checkpoints/latest` names it; every file is
written atomically and loads with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from lafs_edge.errors import UserError
from lafs_edge.train.engine.distributed import DistInfo

STATE_FORMAT = "lafs-edge-train-state/1"

# Keys that only steer the run itself; changing them on resume is the normal thing to do.
_RUN_KEYS = {"train.resume", "train.stop_after", "train.progress", "train.log_every",
             "train.checkpoint_every", "train.keep_checkpoints", "train.compile",
             "data.num_workers"}


# --- RNG ----------------------------------------------------------------------------------------

def rng_state(device: torch.device) -> dict[str, Any]:
    """Every RNG a step may draw from, as tensors and plain values (weights_only-loadable)."""
    version, words, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = cast(tuple, np.random.get_state())  # numpy's stub: a dict
    state = {"python": {"version": version, "words": torch.tensor(words, dtype=torch.int64),
                        "gauss": gauss},
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)},
             "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["words"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(("MT19937", npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- checkpoints --------------------------------------------------------------------------------

def config_changes(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """`key old -> new` for every leaf that differs between two resolved configs."""
    out = []
    for key in sorted(set(saved) | set(current)):
        name = f"{prefix}{key}"
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            out += config_changes(old, new, f"{name}.")
        elif old != new and name not in _RUN_KEYS:
            out.append(f"{name} {old!r} -> {new!r}")
    return out


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint folder `root/latest` names, if it exists."""
    pointer = root / "latest"
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    return path if path.is_dir() else None


def rank_state(step: int, info: DistInfo, modules: dict[str, nn.Module],
               optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               schedule: dict[str, int], steps_per_epoch: int, lanes: int,
               cfg: dict[str, Any]) -> dict[str, Any]:
    """This rank's checkpoint file. `lanes`: a stream's order depends on them (its DataLoader
    workers); 0: the order does not."""
    return {"format": STATE_FORMAT, "step": step, "world": info.world,
            "modules": {k: m.state_dict() for k, m in modules.items()},
            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "schedule": {"step": step, **schedule},
            "sampler": {"epoch": step // steps_per_epoch, "step_in_epoch": step % steps_per_epoch,
                        "lanes": lanes},
            "rng": rng_state(info.device), "config": cfg}


def find_resume_state(out: Path, root: Path, resume: bool, info: DistInfo,
                      lanes: int) -> tuple[Path, Path, dict[str, Any]] | None:
    """(checkpoint folder, this rank's file, its state) to resume from, None for a fresh run;
    a UserError when `out` holds checkpoints this run may not or cannot continue."""
    latest = latest_checkpoint(root)
    if latest is None:
        return None
    if not resume:
        raise UserError(f"{out} already holds checkpoints ({latest.name}); resume with "
                        "train.resume=true or choose another output_dir")
    path = latest / f"rank{info.rank:05d}.pt"
    if not path.is_file():
        raise UserError(f"{latest} has no state for rank {info.rank}: resume with the "
                        "number of ranks that wrote it")
    # On the CPU first: RNG states must stay CPU tensors; modules and the optimizer copy
    # their tensors to the device as they load them.
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != STATE_FORMAT or state["world"] != info.world:
        raise UserError(f"{path}: written by {state.get('world')} ranks; resume with the same "
                        f"number (this run has {info.world})")
    saved = state["sampler"].get("lanes", 0)
    if lanes and saved and lanes != saved:
        raise UserError(f"{path}: written streaming shards with data.num_workers="
                        f"{saved if saved > 1 else '0 or 1'}; resume with that (the shard "
                        "order depends on the number of workers)")
    return latest, path, state


def restore(path: Path, state: dict[str, Any], modules: dict[str, nn.Module],
            optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
            device: torch.device) -> int:
    """Load a checkpoint's state into the run; returns its step."""
    try:
        for name, module in modules.items():
            module.load_state_dict(state["modules"][name])
        optimizer.load_state_dict(state["optimizer"])
    except (KeyError, RuntimeError, ValueError) as e:
        raise UserError(f"{path} does not fit this model/config ({str(e).splitlines()[0]}); "
                        "use another output_dir or the config that wrote it") from None
    scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"], device)
    return int(state["step"])


def prune_checkpoints(root: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoint folders (never the one `latest` names)."""
    current = latest_checkpoint(root)
    folders = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in folders[:-keep]:
        if old != current:
            shutil.rmtree(old, ignore_errors=True)
