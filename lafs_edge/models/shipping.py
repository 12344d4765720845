"""Shipping a trained student: its weights, index entry and model card into lafs_edge/weights/
(the layout `pretrained.py` reads).

A study decides *whether* to ship and measures what the card reports (experiments/edge_students.py,
experiments/campaign.py); this module owns *what shipping writes*, so every student is shipped the
same way:

    <name>.pt    the checkpoint's tensors in fp16 (half the size; loaded back as fp32) with the
                 open-set threshold measured for it, the threshold's one stored place
    <name>.md    the model card: how to load it, the file's size and sha256, the threshold and how
                 it was measured, then the study's Training, Accuracy and Terms sections
    index.json   {name: {"file", "sha256", "card"} + the figures that pick the default student
                 (`celeba_tar`, `latency_ratio`: lafs_edge.runtime.shipped.default_student)},
                 other entries kept

Every file is written atomically and the index last: it is what makes a student "shipped", so a
crash part-way leaves the previous index pointing at files that still match it.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lafs_edge.fileio import atomic_write, write_text_atomic
from lafs_edge.hashing import sha256_file
from lafs_edge.models import pretrained
from lafs_edge.models.registry import list_models, read_checkpoint


@dataclass(frozen=True)
class ModelCard:
    """What a study writes on a student's card (markdown lines per section)."""

    threshold_source: str   # how the threshold was measured, e.g. "cosine at FAR 1e-3 over ..."
    training: list[str]     # data, steps, machine, the commands that trained it
    accuracy: list[str]     # protocol and the figures, measured on data it never saw
    terms: str              # the weights' licence terms (they follow the training data's)


FIGURES = ("celeba_tar", "latency_ratio")


def ship_student(name: str, checkpoint: str | os.PathLike, threshold: float, card: ModelCard,
                 weights: str | os.PathLike | None = None,
                 figures: dict[str, float] | None = None) -> dict[str, Any]:
    """Put the student trained into `checkpoint` (a lafs-edge model.pt of registry model `name`)
    into `weights` (default the package's lafs_edge/weights/); returns its index entry. The
    replaced student's figures are dropped: `figures` are the new one's (`record_figures` adds
    those measured later)."""
    folder = Path(weights) if weights is not None else pretrained.WEIGHTS
    payload = _checked_payload(name, checkpoint, threshold)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.pt"
    with atomic_write(path) as f:
        torch.save(payload, f)
    entry: dict[str, Any] = {"file": path.name, "sha256": sha256_file(path), "card": f"{name}.md"}
    write_text_atomic(folder / entry["card"],
                      model_card(name, path, entry["sha256"], payload["threshold"], card))
    entry.update(_checked_figures(name, figures or {}))
    _write_index(folder, {**pretrained.shipped(folder), name: entry})
    return entry


def record_figures(name: str, figures: dict[str, float],
                   weights: str | os.PathLike | None = None) -> dict[str, Any]:
    """Add measured `figures` (CelebA TAR@FAR1e-3, int8 latency over the reference's) to the
    shipped `name`'s index entry; returns the entry."""
    folder = Path(weights) if weights is not None else pretrained.WEIGHTS
    index = pretrained.shipped(folder)
    if name not in index:
        raise ValueError(f"cannot record figures for {name}: not shipped in {folder}")
    index[name] = {**index[name], **_checked_figures(name, figures)}
    _write_index(folder, index)
    return index[name]


def _checked_figures(name: str, figures: dict[str, float]) -> dict[str, float]:
    unknown = sorted(set(figures) - set(FIGURES))
    if unknown:
        raise ValueError(f"unknown figures for {name}: {', '.join(unknown)} (known: "
                         f"{', '.join(FIGURES)})")
    for key, value in figures.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name}: {key} must be a finite number >= 0, got {value!r}")
    return {key: round(float(value), 4) for key, value in figures.items()}


def _write_index(folder: Path, index: dict[str, dict[str, Any]]) -> None:
    write_text_atomic(folder / "index.json", json.dumps(dict(sorted(index.items())), indent=1) + "\n")


def _checked_payload(name: str, checkpoint: str | os.PathLike, threshold: float) -> dict[str, Any]:
    """The shipped checkpoint: fp16 tensors and the threshold, refusing what would not load as
    `create_model(name, pretrained=True)`."""
    if name not in list_models():
        raise ValueError(f"cannot ship {name!r}: not a registered model ({', '.join(list_models())})")
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and -1 < threshold < 1):
        raise ValueError(f"cannot ship {name}: the threshold must be a cosine in (-1, 1), got {threshold!r}")
    saved = read_checkpoint(checkpoint)
    if saved["arch"] != name:
        raise ValueError(f"cannot ship {checkpoint} as {name}: it holds a {saved['arch']} model")
    state = {k: v.half() if v.is_floating_point() else v for k, v in saved["state_dict"].items()}
    return {"format": saved["format"], "arch": saved["arch"], "config": saved["config"],
            "state_dict": state, "threshold": round(float(threshold), 4)}


def model_card(name: str, path: Path, sha256: str, threshold: float, card: ModelCard) -> str:
    """The card's markdown: a header from the shipped file, then the study's sections."""
    header = (f"`lafs_edge.create_model(\"{name}\", pretrained=True)`; `lafs-edge models` lists it. "
              f"File `{path.name}` ({path.stat().st_size / 1e6:.1f} MB, fp16 tensors loaded as "
              f"fp32), sha256 `{sha256}` (checked on every load). Open-set threshold {threshold} "
              f"({card.threshold_source}).")
    lines = [f"# {name}: shipped weights", "", header, ""]
    for title, section in (("Training", card.training), ("Accuracy", card.accuracy),
                           ("Terms", [card.terms])):
        lines += [f"## {title}", "", *_trimmed(section), ""]
    return "\n".join(lines)


def _trimmed(lines: list[str]) -> list[str]:
    """A section's lines without trailing blank lines (the card puts one between sections)."""
    end = len(lines)
    while end and not lines[end - 1].strip():
        end -= 1
    return lines[:end]
