"""Margin heads for supervised training (CosFace, ArcFace) and the DINO projection head.

Margin heads return logits already scaled by s; the caller applies cross-entropy. They take
L2-normalised embeddings and normalise their class centres themselves, so Partial FC can hand
them a sampled slice of centres.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


def margin_logits(cosine: torch.Tensor, labels: torch.Tensor, kind: str, scale: float,
                  margin: float) -> torch.Tensor:
    """Apply the CosFace or ArcFace margin to the target column of `cosine` (B, C).

    `labels` may hold -1 for rows whose class is not in this slice of centres (Partial FC):
    those rows get no margin.
    """
    rows = torch.nonzero(labels >= 0).squeeze(1)
    target = cosine[rows, labels[rows]]
    if kind == "cosface":
        new_target = target - margin
    elif kind == "arcface":
        # cos(t + m) without acos: stable gradients near |cos| = 1. Past t = pi - m the margin
        # would make the logit increase again, so fall back to a linear penalty (insightface).
        sin = torch.sqrt((1.0 - target * target).clamp_min(1e-9))
        new_target = target * math.cos(margin) - sin * math.sin(margin)
        threshold = math.cos(math.pi - margin)
        new_target = torch.where(target > threshold, new_target,
                                 target - math.sin(math.pi - margin) * margin)
    else:
        raise ValueError(f"unknown margin head {kind!r}; choose cosface or arcface")
    cosine = cosine.clone()
    cosine[rows, labels[rows]] = new_target.to(cosine.dtype)
    return cosine * scale


class MarginHead(nn.Module):
    """Class centres + CosFace (s=64, m=0.4) or ArcFace (s=64, m=0.5) margin."""

    def __init__(self, embedding_dim: int, num_classes: int, kind: str = "cosface",
                 scale: float = 64.0, margin: float | None = None):
        super().__init__()
        self.kind, self.scale = kind, scale
        self.margin = margin if margin is not None else (0.4 if kind == "cosface" else 0.5)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim).normal_(0, 0.01))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cosine = F.linear(F.normalize(embeddings.float()), F.normalize(self.weight.float()))
        return margin_logits(cosine.clamp(-1, 1), labels, self.kind, self.scale, self.margin)


class CosFace(MarginHead):
    def __init__(self, embedding_dim: int, num_classes: int, scale: float = 64.0,
                 margin: float = 0.4):
        super().__init__(embedding_dim, num_classes, "cosface", scale, margin)


class ArcFace(MarginHead):
    def __init__(self, embedding_dim: int, num_classes: int, scale: float = 64.0,
                 margin: float = 0.5):
        super().__init__(embedding_dim, num_classes, "arcface", scale, margin)


class DINOHead(nn.Module):
    """MLP -> bottleneck -> L2 normalise -> weight-normalised prototypes (Caron et al. 2021)."""

    def __init__(self, in_dim: int, out_dim: int = 65536, hidden_dim: int = 2048,
                 bottleneck_dim: int = 256, layers: int = 3, norm_last_layer: bool = True):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (layers - 1)
        mlp: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            mlp += [nn.Linear(a, b), nn.GELU()]
        mlp.append(nn.Linear(dims[-1], bottleneck_dim))
        self.mlp = nn.Sequential(*mlp)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last_layer.parametrizations.weight.original0.data.fill_(1.0)
        if norm_last_layer:  # the norm stays 1: only the direction of each prototype learns
            self.last_layer.parametrizations.weight.original0.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1)
        return self.last_layer(x)
