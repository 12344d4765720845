"""Landmark patch sampler: cut a size x size bilinear patch centred on every landmark.

Reference semantics (what the part fViT code computes with one `grid_sample` per landmark):
out[b, n, :, i, j] = F.grid_sample(images, grid, "bilinear", "zeros", align_corners=False) at
grid = ((x + j - size/2) / (W/2) - 1, (y + i - size/2) / (H/2) - 1).

With align_corners=False that grid point is the pixel-centre coordinate u = x + j - size/2 - 0.5.
Because the patch offsets are whole pixels, every tap of one patch shares the same fractional
part, so a patch is a (size+1)^2 integer-aligned window blended with four constant weights. The
"gather" method fetches those windows with one row gather (TFLite GATHER, ONNX Gather, Core ML
gather: supported everywhere, int8-safe) and blends them; "grid_sample" calls grid_sample once
for all landmarks. Both are single batched computations.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

METHODS = ("gather", "grid_sample")


def sample_patches(images: torch.Tensor, points: torch.Tensor, size: int,
                   method: str = "gather") -> torch.Tensor:
    """images (B, C, H, W), points (B, N, 2) pixel (x, y) -> patches (B, N, C, size, size)."""
    if images.dim() != 4 or points.dim() != 3 or points.shape[-1] != 2:
        raise ValueError(f"expected images (B,C,H,W) and points (B,N,2), got "
                         f"{tuple(images.shape)} and {tuple(points.shape)}")
    if method == "gather":
        return _sample_gather(images, points, size)
    if method == "grid_sample":
        return _sample_grid(images, points, size)
    raise ValueError(f"unknown sampler method {method!r}; choose from {METHODS}")


def _sample_grid(images: torch.Tensor, points: torch.Tensor, size: int) -> torch.Tensor:
    b, c, h, w = images.shape
    n = points.shape[1]
    offsets = torch.arange(size, dtype=points.dtype, device=points.device) - size / 2
    gx = (points[..., 0, None, None] + offsets[None, None, None, :]) / (w / 2) - 1  # (B,N,1,S)
    gy = (points[..., 1, None, None] + offsets[None, None, :, None]) / (h / 2) - 1  # (B,N,S,1)
    grid = torch.stack(torch.broadcast_tensors(gx, gy), dim=-1)  # (B,N,S,S,2)
    out = F.grid_sample(images, grid.reshape(b, n * size, size, 2), mode="bilinear",
                        padding_mode="zeros", align_corners=False)  # (B,C,N*S,S)
    return out.reshape(b, c, n, size, size).permute(0, 2, 1, 3, 4)


def _sample_gather(images: torch.Tensor, points: torch.Tensor, size: int) -> torch.Tensor:
    b, c, h, w = images.shape
    n = points.shape[1]
    # Top-left tap of each patch in pixel-centre coordinates, split into integer base + fraction.
    origin = points - (size / 2 + 0.5)
    base = torch.floor(origin)
    frac = origin - base  # (B,N,2); carries the gradient with respect to the points
    base = base.to(torch.int64)
    steps = torch.arange(size + 1, device=images.device)
    cols = base[..., 0, None] + steps  # (B,N,S+1)
    rows = base[..., 1, None] + steps
    inside = ((cols >= 0) & (cols < w))[:, :, None, :] & ((rows >= 0) & (rows < h))[:, :, :, None]
    flat = rows.clamp(0, h - 1)[:, :, :, None] * w + cols.clamp(0, w - 1)[:, :, None, :]
    flat = flat + (torch.arange(b, device=images.device) * (h * w))[:, None, None, None]
    pixels = images.permute(0, 2, 3, 1).reshape(b * h * w, c)  # one row per pixel
    window = pixels[flat.reshape(-1)].reshape(b, n, size + 1, size + 1, c)
    window = window * inside[..., None].to(window.dtype)  # zero padding outside the image
    fx = frac[..., 0, None, None, None]  # (B,N,1,1,1)
    fy = frac[..., 1, None, None, None]
    top = window[:, :, :-1, :-1] * (1 - fx) + window[:, :, :-1, 1:] * fx
    bottom = window[:, :, 1:, :-1] * (1 - fx) + window[:, :, 1:, 1:] * fx
    patches = top * (1 - fy) + bottom * fy  # (B,N,S,S,C)
    return patches.permute(0, 1, 4, 2, 3)


def sample_patches_reference(images: torch.Tensor, points: torch.Tensor, size: int) -> torch.Tensor:
    """The reference code's loop: one grid_sample call per landmark. Kept for tests and benchmarks."""
    b, c, h, w = images.shape
    offsets = torch.arange(size, dtype=points.dtype, device=points.device) - size / 2
    patches = []
    for k in range(points.shape[1]):
        gx = (points[:, k, 0, None, None] + offsets[None, None, :]) / (w / 2) - 1  # (B,1,S)
        gy = (points[:, k, 1, None, None] + offsets[None, :, None]) / (h / 2) - 1  # (B,S,1)
        grid = torch.stack(torch.broadcast_tensors(gx, gy), dim=-1)  # (B,S,S,2)
        patches.append(F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                                     align_corners=False))
    return torch.stack(patches, dim=1)
