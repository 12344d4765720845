"""DINO self-distillation pieces (Caron et al. 2021; as LAFS uses them): the loss with its
centre, the schedules of teacher temperature, EMA momentum and weight decay, the EMA update.

Loss over every (teacher global view i, student view v != i) pair:
    H(t_i, s_v) = - sum_k softmax((t_i - c) / T_t)_k * log_softmax(s_v / T_s)_k
averaged over the batch and over the pairs. The centre c is an EMA (momentum 0.9), updated once
per optimizer step, of the mean teacher output over the global batch (every micro-batch of
every rank, all-reduced): every rank keeps the same centre, and N ranks equal one process
accumulating N micro-batches.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lafs_edge.train.engine import cosine_schedule


class DINOLoss(nn.Module):
    center: torch.Tensor  # buffer

    def __init__(self, out_dim: int, global_views: int = 2, student_temp: float = 0.1,
                 center_momentum: float = 0.9):
        super().__init__()
        self.global_views, self.student_temp = global_views, student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))
        self._pending: list | None = None  # (sum, count) of this step's teacher outputs

    def forward(self, student_out: torch.Tensor, teacher_out: torch.Tensor,
                teacher_temp: float) -> torch.Tensor:
        """student_out (V*B, K) view-major with the global views first; teacher_out (G*B, K)."""
        batch = teacher_out.shape[0] // self.global_views
        views = student_out.shape[0] // batch
        log_p = F.log_softmax(student_out.float() / self.student_temp, dim=-1).chunk(views)
        probs = F.softmax((teacher_out.float() - self.center) / teacher_temp, dim=-1)
        q = probs.detach().chunk(self.global_views)
        total, pairs = student_out.new_zeros((), dtype=torch.float32), 0
        for i, target in enumerate(q):
            for v, log_probs in enumerate(log_p):
                if v == i:
                    continue  # a view is never its own target
                total = total + torch.sum(-target * log_probs, dim=-1).mean()
                pairs += 1
        return total / pairs

    @torch.no_grad()
    def accumulate(self, teacher_out: torch.Tensor) -> None:
        """Add a micro-batch's teacher outputs to the step's pending centre statistics."""
        batch_sum = teacher_out.float().sum(0, keepdim=True)
        if self._pending is None:
            self._pending = [torch.zeros_like(batch_sum), 0.0]
        self._pending[0] += batch_sum
        self._pending[1] += float(teacher_out.shape[0])

    @torch.no_grad()
    def update_center(self) -> None:
        """At the end of a step: c <- m c + (1 - m) mean(teacher outputs of the global batch:
        every micro-batch of every rank), so N ranks equal one process accumulating N."""
        if self._pending is None:
            return
        batch_sum, count = self._pending[0], torch.tensor(self._pending[1], device=self.center.device)
        self._pending = None
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(batch_sum)
            dist.all_reduce(count)
        m = self.center_momentum
        self.center.mul_(m).add_(batch_sum / count, alpha=1 - m)


def teacher_temperature(step: int, warmup_steps: int, start: float, end: float) -> float:
    """Linear from `start` to `end` over `warmup_steps`, then `end` (DESIGN: 0.07 -> 0.04 over
    30 epochs; DINO's own default runs the other way, 0.04 -> 0.07; both are two numbers here)."""
    if step >= warmup_steps:
        return end
    return start + (end - start) * step / max(1, warmup_steps)


def momentum(step: int, total: int, base: float) -> float:
    """EMA momentum: cosine from `base` (0.996) to 1 at the end of training."""
    return cosine_schedule(step, total, 0, base, 1.0)


def weight_decay(step: int, total: int, start: float, end: float) -> float:
    """Cosine from `start` (0.04) to `end` (0.4)."""
    return cosine_schedule(step, total, 0, start, end)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, m: float) -> None:
    """teacher <- m * teacher + (1 - m) * student, over the student's trained parameters (in
    module order). Frozen ones (the landmark CNN) are skipped: m*x + (1-m)*x is not exactly x
    in floating point, and the frozen CNN must stay bit-identical."""
    pairs = list(zip(teacher.parameters(), student.parameters(), strict=True))
    t_params: list[torch.Tensor] = [t for t, s in pairs if s.requires_grad]
    s_params = [s.detach() for _, s in pairs if s.requires_grad]
    torch._foreach_mul_(t_params, m)
    torch._foreach_add_(t_params, s_params, alpha=1 - m)
