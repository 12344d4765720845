"""Stage 3: fine-tuning a LAFS-pretrained part fViT with CosFace / ArcFace on a (k-shot)
labelled set: `SupervisedTask` (its heads, Partial FC, mixup, augmentation) with

- the backbone loaded from a pretrained `model.pt` (`finetune.pretrained`; null trains from
  scratch, the baseline the paper compares against) and the stage-1 landmark CNN
  (`finetune.landmarks`), optionally frozen;
- landmark perturbation as a regulariser: N(0, sigma^2) pixels on every predicted landmark
  while training (a forward hook on the landmark CNN, so the deployable model is unchanged);
- optional layer-wise lr decay (`finetune.layer_decay` < 1: block i of L gets decay^(L+1-i) of
  the lr, the patch embedding and the landmark CNN decay^(L+1), the head the full lr);
- k-shot subsets: `data.list_file` from `lafs-edge data kshot`, or `data.kshot_k` > 0 to
  select one here (written to output_dir/kshot.lst for the record).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from lafs_edge.errors import UserError
from lafs_edge.models import FaceModel, PartViT, load_model
from lafs_edge.train.engine import TrainResult, distributed, split_decay
from lafs_edge.train.lafs import load_landmarks
from lafs_edge.train.supervised import SupervisedTask, build_dataset
from lafs_edge.train.supervised import train as train_supervised


class FinetuneTask(SupervisedTask):
    def build_backbone(self) -> FaceModel:
        f = self.cfg["finetune"]
        if f["pretrained"]:
            model = load_model(f["pretrained"]).train()
        else:
            warnings.warn("finetune.pretrained is null: training from scratch (the baseline)",
                          stacklevel=2)
            model = super().build_backbone()
        if f["landmarks"]:
            attach_landmarks(model, f["landmarks"])
        if isinstance(model, PartViT):
            if f["freeze_landmarks"]:
                model.landmarks.requires_grad_(False)
                model.landmarks.eval()  # keeps stage-1 BatchNorm statistics
            perturb_landmarks(model, float(f["perturb_sigma"]))
        elif f["freeze_landmarks"] or f["perturb_sigma"] > 0 or f["landmarks"]:
            raise UserError(f"{model.arch} has no landmark CNN: set finetune.landmarks=null, "
                            "freeze_landmarks=false, perturb_sigma=0")
        return model

    def param_groups(self) -> list[dict[str, Any]]:
        decay = float(self.cfg["finetune"]["layer_decay"])
        if decay >= 1.0 or not isinstance(self.backbone, PartViT):
            return super().param_groups()
        return layer_decay_groups(self.backbone, decay) + split_decay([self.margin_loss])


def attach_landmarks(model: nn.Module, path: str) -> None:
    """Copy the landmark CNN of the checkpoint at `path` into `model` (counts must match)."""
    source = getattr(load_model(path), "landmarks", None)
    target = getattr(model, "landmarks", None)
    if source is None or target is None:
        raise UserError(f"finetune.landmarks={path}: both it and the model must be part_fvit")
    if source.num_landmarks != target.num_landmarks:
        raise UserError(f"{path}: its landmark CNN gives {source.num_landmarks} points, the "
                        f"model has {target.num_landmarks} landmarks")
    load_landmarks(cast(PartViT, model), source, path)   # it has a landmark CNN: a part fViT


def perturb_landmarks(model: PartViT, sigma: float) -> None:
    """While `model` trains, add N(0, sigma^2) pixel noise to every landmark the CNN predicts."""
    if sigma <= 0:
        return

    def hook(module, inputs, points):
        if model.training:
            return points + sigma * torch.randn_like(points)
        return None

    model.landmarks.register_forward_hook(hook)


def layer_id(name: str, depth: int) -> int:
    """0: input end (landmark CNN, patch embedding, tokens); i+1: block i; depth+1: final norm."""
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    if name.startswith("norm."):
        return depth + 1
    return 0


def layer_decay_groups(backbone: PartViT, decay: float) -> list[dict[str, Any]]:
    """AdamW groups with lr_scale decay^(depth + 1 - layer), no weight decay on biases, norms
    and tokens (the rule of engine.split_decay)."""
    depth = len(backbone.blocks)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in backbone.named_parameters():
        if not p.requires_grad:
            continue
        layer = layer_id(name, depth)
        no_wd = p.ndim <= 1 or name.endswith(("cls_token", "pos_embed"))
        group = groups.setdefault((layer, no_wd), {
            "params": [], "lr_scale": decay ** (depth + 1 - layer),
            **({"weight_decay": 0.0} if no_wd else {})})
        group["params"].append(p)
    return list(groups.values())


def kshot_dataset(cfg: dict[str, Any]):
    """`data.kshot_k` > 0: select k images per identity here and record the list."""
    from lafs_edge.train.data.folders import LabelledFolder
    from lafs_edge.train.data.kshot import write_kshot_list

    data = cfg["data"]
    if data["list_file"]:
        raise UserError("set data.kshot_k or data.list_file, not both")
    if not data["root"]:
        raise UserError("data.root is required with data.kshot_k")
    out = Path(cfg["output_dir"]) / "kshot.lst"
    write_kshot_list(data["root"], out, int(data["kshot_k"]), float(data["kshot_fraction"]),
                     int(data["kshot_seed"]))
    return LabelledFolder(data["root"], list_file=out)


def train(cfg: dict[str, Any]) -> TrainResult:
    """Run (or resume) fine-tuning as configured."""
    with distributed(cfg["train"]["device"]):  # supervised training reuses the processes
        if cfg["data"]["kshot_k"] > 0:
            dataset = kshot_dataset(cfg)
            num_classes = dataset.num_classes
        else:
            dataset, num_classes = build_dataset(cfg["data"], int(cfg["seed"]))
        return train_supervised(cfg, dataset, FinetuneTask(cfg, num_classes))
