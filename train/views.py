"""Views for self-distillation and distillation, made on the batch as tensors (on the training
device): random resized crops + flips in one `grid_sample`, DINO's photometric augmentation,
and the token sets the part-ViT reads.

Every random number comes from CPU `torch.Generator`s the caller seeds (per step and per
micro-batch slot), so views are the same on a CPU or a GPU, on any number of ranks, and on
resume. Geometry and photometry draw from separate generators: the clean view (what the
frozen landmark CNN sees) never depends on the photometric settings.

Token sets (`TokenViews`): patches (V*B, n, 3, P, P) and landmark ids (V*B, n), view-major
(rows v*B .. v*B+B-1 are view v). Two kinds:
- `landmark_views` (LAFS): the frozen landmark CNN finds the points on the photometrically
  clean view; patches are cut at those points from the augmented view. Global views use all N
  landmarks in order; local views draw `n` ids with replacement, in random order (landmark
  shuffle; `views.shuffle=false`: the same evenly spaced `n` ids for every local view). Every
  coordinate gets N(0, sigma^2) pixel noise (coordinate perturbation).
- `grid_views` (plain DINO baseline): ordinary image patches on a regular grid of each crop;
  a smaller local crop has a coarser grid whose tokens take the position ids of the global
  grid cells they fall in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from lafs_edge.models import sample_patches

GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale


# --- random numbers -------------------------------------------------------------------------

def generator(*seed_parts: int) -> torch.Generator:
    """A CPU generator seeded from a tuple of integers (seed, step, slot, purpose...)."""
    import numpy as np

    seed = int(np.random.default_rng([int(p) for p in seed_parts]).integers(2**62))
    return torch.Generator().manual_seed(seed)


def uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


# --- geometry -------------------------------------------------------------------------------

def crop_boxes(n: int, scale: Sequence[float], ratio: Sequence[float], gen: torch.Generator,
               attempts: int = 10) -> torch.Tensor:
    """RandomResizedCrop boxes for square images: (n, 4) = (centre x, centre y, width, height)
    as fractions of the side. The first of `attempts` candidates that fits wins (torchvision's
    rule); if none fits, the whole image. The project's one random resized crop: the supervised
    augmentation (`augment.random_resized_crop`) draws its boxes here too."""
    area = uniform(n * attempts, scale[0], scale[1], gen).view(n, attempts)
    log_r = torch.log(torch.tensor([float(ratio[0]), float(ratio[1])]))
    aspect = torch.exp(uniform(n * attempts, float(log_r[0]), float(log_r[1]), gen)).view(n, attempts)
    width, height = torch.sqrt(area * aspect), torch.sqrt(area / aspect)
    fits = (width <= 1) & (height <= 1)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.zeros(n, dtype=torch.long))
    pick = lambda t: t.gather(1, first[:, None]).squeeze(1)  # noqa: E731
    width = torch.where(fits.any(1), pick(width), torch.ones(n))
    height = torch.where(fits.any(1), pick(height), torch.ones(n))
    cx = width / 2 + (1 - width) * torch.rand(n, generator=gen)
    cy = height / 2 + (1 - height) * torch.rand(n, generator=gen)
    return torch.stack([cx, cy, width, height], 1)


def crop_and_resize(images: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor,
                    size: int) -> torch.Tensor:
    """Bilinear crop of `boxes` (n, 4 fractions) out of `images` (n, C, H, W), resized to
    size x size, mirrored where `flips` (n,) is true: one affine grid_sample call."""
    n = images.shape[0]
    theta = torch.zeros(n, 2, 3)
    sign = 1.0 - 2.0 * flips.float()
    theta[:, 0, 0] = boxes[:, 2] * sign
    theta[:, 0, 2] = 2 * boxes[:, 0] - 1
    theta[:, 1, 1] = boxes[:, 3]
    theta[:, 1, 2] = 2 * boxes[:, 1] - 1
    theta = theta.to(images.device, images.dtype)
    with torch.autocast(images.device.type, enabled=False):  # pixels stay fp32 under bf16 training
        grid = F.affine_grid(theta, [n, images.shape[1], size, size], align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="border",
                             align_corners=False)


def random_crops(images: torch.Tensor, count: int, size: int, scale: Sequence[float],
                 ratio: Sequence[float], flip_prob: float, gen: torch.Generator) -> torch.Tensor:
    """`count` random resized crops of every image, view-major: (count*B, C, size, size)."""
    repeated = images.repeat(count, 1, 1, 1)
    n = repeated.shape[0]
    boxes = crop_boxes(n, scale, ratio, gen)
    flips = torch.rand(n, generator=gen) < flip_prob
    return crop_and_resize(repeated, boxes, flips, size)


# --- photometry (DINO): images in [0, 1] -----------------------------------------------------

@dataclass
class Photometric:
    """Colour jitter (brightness, contrast, saturation, hue) with probability `jitter_prob`,
    grayscale, Gaussian blur and solarization, each per sample. Probabilities of blur and
    solarization are per view (dinov2: blur 1.0 / 0.1 on the two global views, 0.5 on local
    views; solarization 0.2 on the second global view)."""

    color_jitter: Sequence[float] = (0.4, 0.4, 0.2, 0.1)
    jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    blur_sigma: Sequence[float] = (0.1, 2.0)
    blur_kernel: int = 9

    @classmethod
    def from_config(cls, aug: dict) -> "Photometric":
        return cls(tuple(aug["color_jitter"]), aug["jitter_prob"], aug["grayscale_prob"],
                   tuple(aug["blur_sigma"]), int(aug["blur_kernel"]))

    def __call__(self, images: torch.Tensor, blur_prob: torch.Tensor,
                 solarize_prob: torch.Tensor, gen: torch.Generator,
                 sigma_scale: float = 1.0) -> torch.Tensor:
        """images (n, 3, H, W) in [-1, 1]; blur_prob, solarize_prob (n,) -> augmented, [-1, 1]."""
        params = self.draw(images.shape[0], blur_prob, solarize_prob, gen)
        return self.apply(images, params, sigma_scale)

    def draw(self, n: int, blur_prob: torch.Tensor, solarize_prob: torch.Tensor,
             gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Per-sample parameters; identity values where an op is not applied."""
        b, c, s, h = self.color_jitter
        jitter = torch.rand(n, generator=gen) < self.jitter_prob
        keep = lambda v, neutral: torch.where(jitter, v, torch.full_like(v, neutral))  # noqa: E731
        return {
            "order": torch.randperm(4, generator=gen),
            "brightness": keep(uniform(n, max(0.0, 1 - b), 1 + b, gen), 1.0),
            "contrast": keep(uniform(n, max(0.0, 1 - c), 1 + c, gen), 1.0),
            "saturation": keep(uniform(n, max(0.0, 1 - s), 1 + s, gen), 1.0),
            "hue": keep(uniform(n, -h, h, gen), 0.0),
            "grey": torch.rand(n, generator=gen) < self.grayscale_prob,
            "blur_sigma": torch.where(torch.rand(n, generator=gen) < blur_prob,
                                      uniform(n, self.blur_sigma[0], self.blur_sigma[1], gen),
                                      torch.zeros(n)),
            "solarize": torch.rand(n, generator=gen) < solarize_prob,
        }

    def apply(self, images: torch.Tensor, p: dict[str, torch.Tensor],
              sigma_scale: float = 1.0) -> torch.Tensor:
        """Apply drawn parameters (the same ones can go to two crops of one view: the student's
        and an external teacher's; `sigma_scale` adapts the blur to the second crop's size)."""
        with torch.autocast(images.device.type, enabled=False):  # fp32 pixels under bf16 training
            return self._apply(images.float(), p, sigma_scale)

    def _apply(self, images: torch.Tensor, p: dict[str, torch.Tensor],
               sigma_scale: float) -> torch.Tensor:
        dev = images.device
        col = lambda t: t.to(dev, images.dtype).view(-1, 1, 1, 1)  # noqa: E731
        x = (images + 1) / 2
        ops = [lambda y: (y * col(p["brightness"])).clamp(0, 1),
               lambda y: adjust_contrast(y, col(p["contrast"])),
               lambda y: adjust_saturation(y, col(p["saturation"])),
               lambda y: adjust_hue(y, col(p["hue"]))]
        for i in p["order"].tolist():
            x = ops[i](x)
        x = torch.where(col(p["grey"]).bool(), grey(x).expand_as(x), x)
        x = gaussian_blur(x, p["blur_sigma"] * sigma_scale, self.blur_kernel)
        x = torch.where(col(p["solarize"]).bool() & (x >= 0.5), 1 - x, x)
        return x * 2 - 1


def grey(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(GREY_WEIGHTS, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = grey(x).mean((1, 2, 3), keepdim=True)
    return (mean + factor * (x - mean)).clamp(0, 1)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    g = grey(x)
    return (g + factor * (x - g)).clamp(0, 1)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    if not bool((shift != 0).any()):
        return x
    h, s, v = rgb_to_hsv(x).unbind(1)
    h = torch.remainder(h + shift.view(-1, 1, 1), 1.0)
    return hsv_to_rgb(torch.stack([h, s, v], 1))


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(n, 3, H, W) RGB in [0, 1] -> HSV, hue in [0, 1) (torchvision's formulas)."""
    r, g, b = x.unbind(1)
    maxc, minc = x.max(1).values, x.min(1).values
    flat = maxc == minc
    chroma = maxc - minc
    ones = torch.ones_like(maxc)
    s = chroma / torch.where(flat, ones, maxc)
    div = torch.where(flat, ones, chroma)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.remainder((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack([h, s, maxc], 1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Closed form: channel n in (5, 3, 1) for (R, G, B) is V - V S clamp(min(k, 4 - k), 0, 1)
    with k = (n + 6 H) mod 6 (the same values as torchvision's six-sector table)."""
    h, s, v = x[:, :1], x[:, 1:2], x[:, 2:]
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * h, 6.0)
    return v - v * s * torch.minimum(k, 4.0 - k).clamp(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel: int) -> torch.Tensor:
    """Separable Gaussian blur with a per-sample sigma (0: unchanged), reflect padding."""
    if not bool((sigma > 0).any()):
        return x
    n, c, h, w = x.shape
    offsets = torch.arange(kernel, dtype=torch.float32) - (kernel - 1) / 2
    safe = sigma.clamp_min(1e-6)[:, None]
    weights = torch.exp(-0.5 * (offsets[None] / safe) ** 2)
    weights = weights / weights.sum(1, keepdim=True)
    delta = (offsets == 0).float().expand(n, -1)
    weights = torch.where((sigma > 0)[:, None], weights, delta)
    weights = weights.repeat_interleave(c, 0).to(x.device, x.dtype)  # (n*c, k)
    pad = kernel // 2
    y = F.pad(x.reshape(1, n * c, h, w), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, weights.view(n * c, 1, 1, kernel), groups=n * c)
    y = F.conv2d(y, weights.view(n * c, 1, kernel, 1), groups=n * c)
    return y.view(n, c, h, w)


# --- token sets -----------------------------------------------------------------------------

@dataclass
class TokenViews:
    patches: torch.Tensor  # (V*B, n, 3, P, P)
    ids: torch.Tensor      # (V*B, n) landmark (position) ids


def per_view(values: Sequence[float], batch: int) -> torch.Tensor:
    """One probability per view, repeated for the view's `batch` rows (view-major)."""
    return torch.tensor([float(v) for v in values]).repeat_interleave(batch)


def shuffled_ids(rows: int, count: int, total: int, gen: torch.Generator) -> torch.Tensor:
    """Landmark shuffle: `count` ids per row drawn uniformly with replacement from `total`,
    in random order."""
    return torch.randint(0, total, (rows, count), generator=gen)


def fixed_ids(rows: int, count: int, total: int) -> torch.Tensor:
    """Landmark shuffle off: the same `count` ids for every row, evenly spaced over 0..total-1
    in index order (distinct when count <= total)."""
    ids = torch.floor(torch.arange(count, dtype=torch.float64) * total / count).long()
    return ids.expand(rows, count)


def perturb(points: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """Gaussian noise N(0, sigma^2) pixels on every coordinate."""
    if sigma <= 0:
        return points
    noise = torch.randn(points.shape, generator=gen) * sigma
    return points + noise.to(points.device, points.dtype)


def landmark_views(clean: torch.Tensor, augmented: torch.Tensor, landmark_cnn: torch.nn.Module,
                   count: int | None, sigma: float, patch_size: int, sampler: str,
                   gen: torch.Generator, shuffle: bool = True) -> tuple[TokenViews, torch.Tensor]:
    """Tokens of views whose clean and augmented versions are given (V*B rows each).

    `count` None: all landmarks in order (global views); else `count` shuffled ids (local), or
    with `shuffle` false the same fixed, evenly spaced `count` ids for every view (ablation).
    Returns the tokens and the landmark CNN's points (V*B, N, 2) on the clean views."""
    with torch.no_grad():
        points = landmark_cnn(clean).float()
    rows, total = points.shape[:2]
    if count is None:
        ids = torch.arange(total).expand(rows, total)
    elif shuffle:
        ids = shuffled_ids(rows, count, total, gen)
    else:
        ids = fixed_ids(rows, count, total)
    ids = ids.to(points.device)
    chosen = points.gather(1, ids[..., None].expand(-1, -1, 2))
    chosen = perturb(chosen, sigma, gen)
    patches = sample_patches(augmented, chosen.to(augmented.dtype), patch_size, sampler)
    return TokenViews(patches, ids), points


def grid_side(num_positions: int) -> int:
    side = math.isqrt(num_positions)
    if side * side != num_positions:
        raise ValueError(f"views=random_crops needs a square number of positions (the grid "
                         f"of patches), the model has {num_positions} landmarks")
    return side


def grid_points(side: int, size: int) -> torch.Tensor:
    """(side*side, 2) patch centres of a regular grid over a size x size crop (row-major);
    for size = side * P the patches tile the crop exactly (centres at P*k + P/2 + 0.5 in the
    sampler's convention)."""
    centres = (torch.arange(side, dtype=torch.float32) + 0.5) * size / side + 0.5
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], 1)


def grid_ids(local_side: int, global_side: int) -> torch.Tensor:
    """Position id of each local grid cell: the global grid cell its centre falls in."""
    cells = torch.floor((torch.arange(local_side) + 0.5) * global_side / local_side).long()
    return (cells[:, None] * global_side + cells[None, :]).reshape(-1)


def grid_views(augmented: torch.Tensor, num_positions: int, image_size: int, patch_size: int,
               sampler: str) -> TokenViews:
    """Ordinary image patches of (augmented) crops: a regular grid with the global grid's
    position ids (a crop of side < image_size gets a proportionally coarser grid)."""
    side = grid_side(num_positions)
    size = augmented.shape[-1]
    local_side = side if size == image_size else max(1, round(side * size / image_size))
    points = grid_points(local_side, size).to(augmented.device, augmented.dtype)
    rows = augmented.shape[0]
    patches = sample_patches(augmented, points.expand(rows, -1, -1), patch_size, sampler)
    ids = grid_ids(local_side, side).to(augmented.device).expand(rows, -1)
    return TokenViews(patches, ids)
