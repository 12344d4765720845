"""The gather sampler as it was before issue 16 (commit 6c6d0e0..a52b90a): one gather of every
(S+1)^2 window, then the bilinear blend as two small batched matmuls (blend_y @ window @ blend_x^T).
Kept only so that benchmarks can show, in the same run, what the current form changed."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lafs_edge.models.sampler import _tap_coordinates


def _blend_matrix(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    size = first.shape[-1]
    eye = torch.eye(size, dtype=first.dtype, device=first.device)
    return (first[..., None] * F.pad(eye, (0, 1)) + second[..., None] * F.pad(eye, (1, 0)))


def previous_gather(images: torch.Tensor, points: torch.Tensor, size: int, fast: bool = False) -> torch.Tensor:
    b, c, h, w = images.shape
    n = points.shape[1]
    offsets = torch.arange(size, dtype=points.dtype, device=points.device) - size / 2
    ux = _tap_coordinates(points[..., 0], offsets, w)
    uy = _tap_coordinates(points[..., 1], offsets, h)
    steps = torch.arange(size + 1, device=images.device)
    base_x = torch.floor(ux[..., :1]).to(torch.int64)
    base_y = torch.floor(uy[..., :1]).to(torch.int64)
    fx = ux - (base_x + steps[:size]).to(ux.dtype)
    fy = uy - (base_y + steps[:size]).to(uy.dtype)
    cols, rows = base_x + steps, base_y + steps
    col_in = ((cols >= 0) & (cols < w)).to(images.dtype)
    row_in = ((rows >= 0) & (rows < h)).to(images.dtype)
    blend_y = _blend_matrix((1 - fy) * row_in[..., :-1], fy * row_in[..., 1:])
    blend_x = _blend_matrix((1 - fx) * col_in[..., :-1], fx * col_in[..., 1:])
    pixel = rows.clamp(0, h - 1)[..., :, None] * w + cols.clamp(0, w - 1)[..., None, :]
    index = pixel.reshape(b, 1, -1).expand(b, c, -1)
    window = torch.gather(images.reshape(b, c, h * w), 2, index)
    window = window.reshape(b, c, n, size + 1, size + 1)
    patches = blend_y[:, None] @ window @ blend_x[:, None].transpose(-1, -2)
    return patches.transpose(1, 2)
