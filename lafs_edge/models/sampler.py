"""Landmark patch sampler: cut a size x size bilinear patch centred on every landmark.

Reference semantics (what the part fViT code computes with one `grid_sample` per landmark):
out[b, n, :, i, j] = F.grid_sample(images, grid, "bilinear", "zeros", align_corners=False) at
grid = ((x + j - size/2) / (W/2) - 1, (y + i - size/2) / (H/2) - 1).

With align_corners=False that grid point is the pixel-centre coordinate u = x + j - size/2 - 0.5.
Because the patch offsets are whole pixels, all taps of one patch fall in one (size+1)^2
integer-aligned window, and every tap of a column (row) shares one fractional offset. The
"gather" method (the default) fetches every window with one `torch.gather` (ONNX GatherElements:
no grid_sample, which Core ML runs off the Neural Engine and full-int8 TFLite breaks) from the
image with one zero pixel appended (zero padding: taps outside the image point at it), then
blends two shifted slices of the window along x and two along y (one lerp each).

Which form runs is decided by what the caller is doing, never by a flag the user must know:
- exported or compiled (torch.jit trace/script as OpenVINO and Core ML use, torch.onnx,
  torch.export as LiteRT uses, torch.compile): the plain form, slices + multiply-add, which every
  converter maps to its own ops;
- eager (training and inference): `grid_sample`, one fused kernel. In the runs of
  benchmarks/sampler_bench.py on a 2-core CPU (docs/benchmarks.md) it was the fastest eager form
  forward at 2 threads (within 10% of a flat-row gather variant at 1 thread, since removed) and
  2-5x faster forward+backward than the gather forms; values within 1e-5 and gradients within 1e-4 of the
  gather form (tests/test_sampler.py).
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
        form = gather_form(images, points)
        if form == "grid_sample":
            return _sample_grid(images, points, size)
        return _sample_gather(images, points, size)
    if method == "grid_sample":
        return _sample_grid(images, points, size)
    raise ValueError(f"unknown sampler method {method!r}; choose from {METHODS}")


def exporting() -> bool:
    """True while a tracer, exporter or compiler records the computation."""
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return True
    if torch.onnx.is_in_onnx_export():
        return True
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and compiler.is_compiling())


def gather_form(images: torch.Tensor, points: torch.Tensor) -> str:
    """Which implementation the default method uses here: "export" (traced, exported, compiled)
    or "grid_sample" (eager)."""
    return "export" if exporting() else "grid_sample"


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


def _sample_gather(images: torch.Tensor, points: torch.Tensor, size: int) -> torch.Tensor:
    b, c, h, w = images.shape
    n, s1 = points.shape[1], size + 1
    offsets = torch.arange(size, dtype=points.dtype, device=points.device) - size / 2
    ux = _tap_coordinates(points[..., 0], offsets, w)  # (B,N,S)
    uy = _tap_coordinates(points[..., 1], offsets, h)
    # One integer base per patch; each tap's own fraction (in [-eps, 1+eps]) carries the rounding
    # of the reference and the gradient with respect to the points.
    steps = torch.arange(s1, device=images.device)
    base_x = torch.floor(ux[..., :1])  # (B,N,1)
    base_y = torch.floor(uy[..., :1])
    fx = ux - (base_x + steps[:size].to(ux.dtype))  # (B,N,S)
    fy = uy - (base_y + steps[:size].to(uy.dtype))
    cols = base_x.to(torch.int64) + steps  # (B,N,S+1)
    rows = base_y.to(torch.int64) + steps
    # Zero padding: every tap outside the image reads the zero pixel appended at index h*w. A row
    # or column outside adds h*w to the index, so any tap with one is clamped to h*w.
    col_index = torch.where((cols >= 0) & (cols < w), cols, h * w)
    row_index = torch.where((rows >= 0) & (rows < h), rows * w, h * w)
    # minimum, not clamp: Core ML's clip is float-only and would turn the indices into fp32.
    pixel = row_index[..., :, None] + col_index[..., None, :]  # (B,N,S+1,S+1)
    pixel = torch.minimum(pixel, torch.full_like(pixel, h * w))
    flat = torch.cat([images.reshape(b, c, h * w), images.new_zeros(b, c, 1)], dim=2)
    index = pixel.reshape(b, 1, n * s1 * s1).expand(b, c, n * s1 * s1)
    window = torch.gather(flat, 2, index)  # (B, C, N*(S+1)^2): one gather for every patch
    window = window.reshape(b, c, n, s1, s1)
    # Bilinear blend: two shifted slices along x, then two along y (a + f * (b - a)).
    left, right = window[..., :size], window[..., 1:]
    rows_blend = left + fx[:, None, :, None, :] * (right - left)  # (B,C,N,S+1,S)
    top, bottom = rows_blend[..., :size, :], rows_blend[..., 1:, :]
    patches = top + fy[:, None, :, :, None] * (bottom - top)  # (B,C,N,S,S)
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
