"""Landmark CNN: MobileNetV3 trunk -> global average pool -> dropout -> linear -> N (x, y) points.

No landmark labels: the points are learned through the recognition loss, because the patch
sampler is differentiable with respect to them. The 2N outputs are min-max rescaled per image to
[0, S-1] pixels, which keeps every point inside the crop whatever the linear layer outputs.
"""
from __future__ import annotations

import torch
from torch import nn

from .mobilenetv3 import MobileNetV3Trunk


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

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) in [-1, 1] -> points (B, N, 2) pixel (x, y) in [0, S-1]."""
        feats = self.trunk(images).mean((2, 3))
        raw = self.head(self.dropout(feats))
        low = raw.amin(1, keepdim=True)
        high = raw.amax(1, keepdim=True)
        scaled = (raw - low) / (high - low + self.eps) * (self.image_size - 1)
        return scaled.view(-1, self.num_landmarks, 2)
