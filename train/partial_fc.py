"""Partial FC (An et al., "Partial FC: Training 10 Million Identities on a Single Machine", 2021;
insightface arcface_torch's PartialFC_V2), and the head choice for supervised training.

Each rank holds a contiguous shard of the class centres. Every step:
  1. embeddings and labels of the whole global batch are all-gathered (with gradient);
  2. each rank keeps the centres of the positive classes it owns plus random negatives, up to
     `sample_rate` of its shard;
  3. cosine logits against that slice get the CosFace/ArcFace margin (`margin_logits`, label -1
     where the class lives on another rank);
  4. the softmax cross-entropy is computed across ranks (max and sum all-reduced), per sample.
The backbone's gradient then equals the one of a full softmax over all identities; with
sample_rate=1 on one rank the head is exactly `MarginHead`.

The head works in float32 with autocast off (TF32 tensor cores on GPUs: a 10-bit mantissa, as
arcface_torch's fp16 head): with bf16's 7 bits a cosine error of 4e-3 becomes a quarter of a
logit at s=64, as large as the signal the margin carries.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lafs_edge.models import MarginHead, margin_logits

INIT_STD = 0.01          # MarginHead's initialisation
INIT_BLOCK_ROWS = 4096   # centres are drawn in seeded blocks: the same matrix for any world size


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_range(num_classes: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of the classes rank `rank` owns: contiguous, sizes differ by at most one."""
    base, extra = divmod(num_classes, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def seeded_centres(start: int, stop: int, dim: int, seed: int) -> torch.Tensor:
    """Rows [start, stop) of an N(0, INIT_STD) matrix defined block by block from `seed`, so a
    shard never materialises the full matrix and any world size splits the same centres."""
    rows = []
    first, last = start // INIT_BLOCK_ROWS, (stop - 1) // INIT_BLOCK_ROWS
    for block in range(first, last + 1):
        g = torch.Generator().manual_seed(seed * 1_000_003 + block)
        full = torch.randn(INIT_BLOCK_ROWS, dim, generator=g) * INIT_STD
        lo = max(start - block * INIT_BLOCK_ROWS, 0)
        hi = min(stop - block * INIT_BLOCK_ROWS, INIT_BLOCK_ROWS)
        rows.append(full[lo:hi])
    return torch.cat(rows) if rows else torch.empty(0, dim)


class _AllGather(torch.autograd.Function):
    """Concatenate every rank's tensor along dim 0. Backward: the summed gradient of this rank's
    slice, times the world size, because DDP then averages the backbone gradient over ranks
    while the loss every rank computes is already the mean over the global batch."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        rank, size = world()
        ctx.rank, ctx.size, ctx.rows = rank, size, tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        own = grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]
        return own * ctx.size


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Global batch from equal-sized per-rank batches; identity on one process."""
    return _AllGather.apply(tensor) if world()[1] > 1 else tensor


def all_gather_no_grad(labels: torch.Tensor) -> torch.Tensor:
    size = world()[1]
    if size == 1:
        return labels
    parts = [torch.empty_like(labels) for _ in range(size)]
    dist.all_gather(parts, labels.contiguous())
    return torch.cat(parts)


class _DistCrossEntropy(torch.autograd.Function):
    """Per-sample -log softmax(target) when the class columns are split across ranks.

    `logits` (B, C_local) are this rank's columns; `local_labels` index them, -1 where the
    target lives on another rank. Every rank returns the same (B,) losses."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, local_labels: torch.Tensor) -> torch.Tensor:
        size = world()[1]
        high = logits.max(dim=1, keepdim=True).values
        if size > 1:
            dist.all_reduce(high, dist.ReduceOp.MAX)
        probs = (logits - high).exp()
        total = probs.sum(dim=1, keepdim=True)
        if size > 1:
            dist.all_reduce(total)
        probs = probs / total
        rows = torch.nonzero(local_labels >= 0).squeeze(1)
        target = torch.zeros(logits.shape[0], device=logits.device, dtype=logits.dtype)
        target[rows] = logits[rows, local_labels[rows]]
        if size > 1:
            dist.all_reduce(target)  # only the owner of each target column contributes
        ctx.save_for_backward(probs, local_labels, rows)
        # log-sum-exp minus the target logit: exact even where the target's probability
        # underflows (s=64 at initialisation easily gives losses above 80)
        return high.squeeze(1) + total.squeeze(1).log() - target

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        probs, local_labels, rows = ctx.saved_tensors
        grad = probs.clone()
        grad[rows, local_labels[rows]] -= 1.0
        return grad * grad_loss[:, None], None


def dist_cross_entropy(logits: torch.Tensor, local_labels: torch.Tensor) -> torch.Tensor:
    return _DistCrossEntropy.apply(logits, local_labels)


class PartialFC(nn.Module):
    """Sharded, sampled class centres with a CosFace/ArcFace margin; returns the mean loss."""

    def __init__(self, embedding_dim: int, num_classes: int, kind: str = "cosface",
                 scale: float = 64.0, margin: float | None = None, sample_rate: float = 1.0,
                 seed: int = 0):
        super().__init__()
        if not 0 < sample_rate <= 1:
            raise ValueError(f"Partial FC sample_rate must be in (0, 1], got {sample_rate}")
        rank, size = world()
        if num_classes < size:
            raise ValueError(f"Partial FC needs at least one identity per rank "
                             f"({num_classes} identities, {size} ranks)")
        self.kind, self.scale, self.sample_rate = kind, scale, sample_rate
        self.margin = margin if margin is not None else (0.4 if kind == "cosface" else 0.5)
        self.num_classes = num_classes
        self.class_start, self.class_stop = shard_range(num_classes, rank, size)
        self.num_local = self.class_stop - self.class_start
        self.num_sample = max(1, int(round(sample_rate * self.num_local)))
        self.weight = nn.Parameter(
            seeded_centres(self.class_start, self.class_stop, embedding_dim, seed))

    def sample(self, local_labels: list[torch.Tensor]) -> torch.Tensor:
        """Sorted indices of the centres used this step: every positive plus random negatives."""
        if self.num_sample >= self.num_local:
            return torch.arange(self.num_local, device=self.weight.device)
        positives = torch.unique(torch.cat([lab[lab >= 0] for lab in local_labels]))
        if positives.numel() >= self.num_sample:
            return positives
        score = torch.rand(self.num_local, device=self.weight.device)
        score[positives] = 2.0  # positives always win the top-k
        return torch.topk(score, self.num_sample).indices.sort().values

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor,
                partner: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                ) -> torch.Tensor:
        """Mean loss over the global batch. `partner`/`weight` (B,) mix two targets (mixup):
        loss_i = weight_i * CE(labels_i) + (1 - weight_i) * CE(labels[partner_i])."""
        with torch.autocast(embeddings.device.type, enabled=False):
            labels_b = labels if partner is None else labels[partner]
            weight = torch.ones_like(labels, dtype=torch.float32) if weight is None else weight
            embeddings = all_gather_with_grad(embeddings.float())
            targets = [self._to_local(all_gather_no_grad(lab)) for lab in (labels, labels_b)]
            weight = all_gather_no_grad(weight.float())
            index = self.sample(targets)
            targets = [self._remap(t, index) for t in targets]
            centres = self.weight if index.numel() == self.num_local else self.weight[index]
            cosine = F.linear(F.normalize(embeddings), F.normalize(centres)).clamp(-1, 1)
            loss_a = dist_cross_entropy(self._margin(cosine, targets[0]), targets[0])
            if partner is None:
                return loss_a.mean()
            loss_b = dist_cross_entropy(self._margin(cosine, targets[1]), targets[1])
            return (weight * loss_a + (1 - weight) * loss_b).mean()

    def _margin(self, cosine: torch.Tensor, local_labels: torch.Tensor) -> torch.Tensor:
        return margin_logits(cosine, local_labels, self.kind, self.scale, self.margin)

    def _to_local(self, labels: torch.Tensor) -> torch.Tensor:
        inside = (labels >= self.class_start) & (labels < self.class_stop)
        return torch.where(inside, labels - self.class_start, torch.full_like(labels, -1))

    def _remap(self, local_labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Column of each label within the sampled `index` (positives are always sampled)."""
        if index.numel() == self.num_local:
            return local_labels
        found = torch.searchsorted(index, local_labels.clamp_min(0))
        return torch.where(local_labels >= 0, found, local_labels)


class MarginLoss(nn.Module):
    """A replicated `MarginHead` with the same call as PartialFC (used below the threshold):
    every rank scores its own micro-batch against all centres; DDP averages the gradients."""

    def __init__(self, embedding_dim: int, num_classes: int, kind: str = "cosface",
                 scale: float = 64.0, margin: float | None = None, seed: int = 0):
        super().__init__()
        self.head = MarginHead(embedding_dim, num_classes, kind, scale, margin)
        with torch.no_grad():
            self.head.weight.copy_(seeded_centres(0, num_classes, embedding_dim, seed))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor,
                partner: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                ) -> torch.Tensor:
        with torch.autocast(embeddings.device.type, enabled=False):
            loss_a = F.cross_entropy(self.head(embeddings.float(), labels), labels,
                                     reduction="none")
            if partner is None:
                return loss_a.mean()
            assert weight is not None   # mixup passes partner and weight together
            labels_b = labels[partner]
            loss_b = F.cross_entropy(self.head(embeddings.float(), labels_b), labels_b,
                                     reduction="none")
            return (weight * loss_a + (1 - weight) * loss_b).mean()


def build_margin_loss(embedding_dim: int, num_classes: int, head_cfg: dict, seed: int,
                      ) -> tuple[nn.Module, bool]:
    """(loss module, sharded?): Partial FC above `partial_fc_above` identities, else MarginLoss."""
    kind, scale, margin = head_cfg["kind"], head_cfg["scale"], head_cfg["margin"]
    if kind not in ("cosface", "arcface"):
        raise ValueError(f"head.kind must be cosface or arcface, got {kind!r}")
    if num_classes > head_cfg["partial_fc_above"]:
        return PartialFC(embedding_dim, num_classes, kind, scale, margin,
                         head_cfg["sample_rate"], seed), True
    return MarginLoss(embedding_dim, num_classes, kind, scale, margin, seed), False
