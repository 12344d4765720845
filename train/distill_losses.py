"""The distillation losses: how far the student's (projected) embedding is from the teacher's.

`embedding_loss` matches each embedding's direction (cosine) or value (l2); `relational_loss`
matches each face's neighbourhood among the teacher's embeddings of the pool (CompRess, Abbasi
Koohpayegani et al. 2020), which is what decides the low-FAR tail. `DistillTask.loss`
(train/distill.py) weighs them (`distill.embedding_weight`, `distill.relational_weight`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lafs_edge.errors import UserError


def embedding_loss(kind: str, student: torch.Tensor, teacher: torch.Tensor,
                   hard_gamma: float = 0.0) -> torch.Tensor:
    """cosine: mean 1 - cos(student, teacher); l2: mean squared difference (per dimension).
    hard_gamma > 0 weighs each face by (its loss / the batch's mean loss) ** hard_gamma, the
    weights (no gradient) rescaled to mean 1: the faces the student fits worst (a stranger's
    near-twin, a harsh view) pull harder, the loss's scale stays that of the plain mean."""
    student, teacher = student.float(), teacher.float()
    if kind == "cosine":
        per_face = 1 - F.cosine_similarity(student, teacher, dim=1)
    elif kind == "l2":
        per_face = (student - teacher).pow(2).mean(1)
    else:
        raise UserError(f"distill.loss must be cosine or l2, got {kind!r}")
    if hard_gamma == 0:
        return per_face.mean()
    with torch.no_grad():
        weight = (per_face / per_face.mean().clamp_min(1e-12)).clamp_min(0) ** hard_gamma
        weight = weight / weight.mean().clamp_min(1e-12)
    return (weight * per_face).mean()


def relational_loss(student: torch.Tensor, teacher: torch.Tensor, bank: torch.Tensor,
                    temperature: float) -> torch.Tensor:
    """KL(teacher || student) between each face's softmax similarities to the bank (N, D) of
    unit rows, per face (batchmean). In fp32 even under autocast: bf16 similarities are
    off by ~0.004, a tenth of a logit at temperature 0.04."""
    with torch.autocast(student.device.type, enabled=False):
        s = F.normalize(student.float(), dim=1) @ bank.T / temperature
        t = F.normalize(teacher.float(), dim=1) @ bank.T / temperature
        return F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), log_target=True,
                        reduction="batchmean")
