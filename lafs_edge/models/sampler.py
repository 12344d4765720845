"""Landmark patch sampler: cut a size x size bilinear patch centred on every landmark.

Reference semantics (what the part fViT code computes with one `grid_sample` per landmark):
out[b, n, :, i, j] = F.grid_sample(images, grid, "bilinear", "zeros", align_corners=False) at
grid = ((x + j - size/2) / (W/2) - 1, (y + i - size/2) / (H/2) - 1).

With align_corners=False that grid point is the pixel-centre coordinate u = x + j - size/2 - 0.5.
Because the patch offsets are whole pixels, all taps of one patch fall in one (size+1)^2
integer-aligned window. The "gather" method fetches every window with one `torch.gather`
(ONNX GatherElements, OpenVINO, TFLite and Core ML gather: no grid_sample, which Core ML runs off
the Neural Engine and full-int8 TFLite breaks) and blends it separably (x, then y). "grid_sample"
calls grid_sample once for all landmarks. Both are single batched computations.
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


def _tap_coordinates(centres: torch.Tensor, offsets: torch.Tensor, extent: int) -> torch.Tensor:
    """Pixel-centre coordinate of every tap, rounded as grid_sample rounds it: normalise to [-1, 1]
    as the reference grid does, then unnormalise with a fused multiply-add as ATen's CPU kernel
    does. (Matching the reference's rounding is what keeps the two within 1e-5.)"""
    grid = (centres[..., None] + offsets) / (extent / 2) - 1
    return torch.addcmul(torch.full_like(grid, (extent - 1) / 2), grid,
                         torch.full_like(grid, extent / 2))


def _blend_matrix(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """(B,N,S) weights -> (B,N,S,S+1) matrix with `first` on the diagonal, `second` right of it."""
    size = first.shape[-1]
    eye = torch.eye(size, dtype=first.dtype, device=first.device)
    return (first[..., None] * F.pad(eye, (0, 1)) + second[..., None] * F.pad(eye, (1, 0)))


def _sample_gather(images: torch.Tensor, points: torch.Tensor, size: int) -> torch.Tensor:
    b, c, h, w = images.shape
    n = points.shape[1]
    offsets = torch.arange(size, dtype=points.dtype, device=points.device) - size / 2
    ux = _tap_coordinates(points[..., 0], offsets, w)  # (B,N,S)
    uy = _tap_coordinates(points[..., 1], offsets, h)
    # One integer base per patch; each tap's own fraction (in [-eps, 1+eps]) carries the rounding
    # of the reference and the gradient with respect to the points.
    steps = torch.arange(size + 1, device=images.device)
    base_x = torch.floor(ux[..., :1]).to(torch.int64)  # (B,N,1)
    base_y = torch.floor(uy[..., :1]).to(torch.int64)
    fx = ux - (base_x + steps[:size]).to(ux.dtype)
    fy = uy - (base_y + steps[:size]).to(uy.dtype)
    cols, rows = base_x + steps, base_y + steps  # (B,N,S+1)
    # Zero padding: taps outside the image get weight 0 (their clamped index is never used).
    col_in = ((cols >= 0) & (cols < w)).to(images.dtype)
    row_in = ((rows >= 0) & (rows < h)).to(images.dtype)
    blend_y = _blend_matrix((1 - fy) * row_in[..., :-1], fy * row_in[..., 1:])  # (B,N,S,S+1)
    blend_x = _blend_matrix((1 - fx) * col_in[..., :-1], fx * col_in[..., 1:])
    # Fetch the (S+1)^2 window of every patch with one gather (the same index for each channel).
    pixel = rows.clamp(0, h - 1)[..., :, None] * w + cols.clamp(0, w - 1)[..., None, :]
    index = pixel.reshape(b, 1, -1).expand(b, c, -1)
    window = torch.gather(images.reshape(b, c, h * w), 2, index)
    window = window.reshape(b, c, n, size + 1, size + 1)
    # Bilinear blend as two small matmuls: patch = blend_y @ window @ blend_x^T.
    patches = blend_y[:, None] @ window @ blend_x[:, None].transpose(-1, -2)  # (B,C,N,S,S)
    return patches.transpose(1, 2)


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
