"""Landmark CNN: MobileNetV3 trunk -> global average pool -> dropout -> linear -> N (x, y) points.

No landmark labels: the points are learned through the recognition loss, because the patch
sampler is differentiable with respect to them. The 2N outputs are min-max rescaled per image to
[0, S-1] pixels, which keeps every point inside the crop whatever the linear layer outputs.

Initialisation: the linear layer starts as a regular grid (bias) with small weights, so an
untrained model is a plain ViT over evenly spread patches and training moves the points from
there. With PyTorch's default init the points start as a random scatter whose layout also
changes from image to image, so a landmark's position embedding starts with no fixed place.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from lafs_edge.models.mobilenetv3 import MobileNetV3Trunk


class LandmarkCNN(nn.Module):
    def __init__(self, num_landmarks: int = 196, trunk: str = "large", image_size: int = 112,
                 dropout: float = 0.5, eps: float = 1e-6):
        super().__init__()
        self.num_landmarks = num_landmarks
        self.image_size = image_size
        self.eps = eps
        self.trunk = MobileNetV3Trunk(trunk)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.trunk.out_channels, 2 * num_landmarks)
        with torch.no_grad():
            self.head.weight.mul_(0.01)
            # In pixels, not [0, 1]: min-max makes the scale free, and at pixel scale one
            # optimiser step on the weights moves a point by about a pixel instead of
            # scrambling the whole layout in the first steps.
            self.head.bias.copy_(grid_layout(num_landmarks).flatten() * (image_size - 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) in [-1, 1] -> points (B, N, 2) pixel (x, y) in [0, S-1]."""
        feats = self.trunk(images).mean((2, 3))
        raw = self.head(self.dropout(feats))
        low = raw.amin(1, keepdim=True)
        high = raw.amax(1, keepdim=True)
        scaled = (raw - low) / (high - low + self.eps) * (self.image_size - 1)
        return scaled.view(-1, self.num_landmarks, 2)


def grid_layout(num_landmarks: int) -> torch.Tensor:
    """(N, 2) points in [0, 1]: the first N cells of the smallest square grid that holds N,
    row by row (a full grid when N is a square such as 100 or 196)."""
    side = math.ceil(math.sqrt(num_landmarks))
    ticks = torch.linspace(0.0, 1.0, side)
    ys, xs = torch.meshgrid(ticks, ticks, indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], 1)[:num_landmarks]
