"""The optimiser: AdamW over a task's parameter groups, linear warmup + cosine decay of the lr,
and the usual weight-decay split (none on biases, norms and tokens)."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def cosine_schedule(step: int, total: int, warmup: int, peak: float, final: float) -> float:
    """Linear warmup to `peak` over `warmup` steps, then cosine to `final` at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def split_decay(modules: list[nn.Module]) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases, norm weights and the class/position tokens."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            skip = p.ndim <= 1 or name.endswith(("cls_token", "pos_embed"))
            (no_decay if skip else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(groups: list[dict[str, Any]], optim: dict[str, Any],
                    device: torch.device) -> torch.optim.Optimizer:
    """AdamW (fused on GPUs) over `groups`; a group without `weight_decay` gets optim's, one
    without `lr_scale` 1 (the factor on the scheduled lr)."""
    for g in groups:
        g.setdefault("weight_decay", optim["weight_decay"])
        g.setdefault("lr_scale", 1.0)
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=optim["lr"], betas=tuple(optim["betas"]),
                             eps=optim["eps"], weight_decay=optim["weight_decay"],
                             fused=fused or None)
