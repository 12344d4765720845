"""MobileFaceNet (Chen et al. 2018): the CNN student for targets too weak for a transformer.

About 1.0M parameters with a 128-d embedding; global depthwise conv instead of average pooling,
because face crops are aligned and each spatial position means a fixed facial region.
"""
from __future__ import annotations

from typing import cast

import torch
from torch import nn

from lafs_edge.models.base import FaceModel


def conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1,
            act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.PReLU(cout))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        self.block = nn.Sequential(conv_bn(cin, hidden), conv_bn(hidden, hidden, 3, stride, hidden),
                                   conv_bn(hidden, cout, act=False))
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


# (expansion, channels, repeats, first stride)
STAGES = [(2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1)]


class MobileFaceNet(FaceModel):
    def __init__(self, embedding_dim: int = 128, image_size: int = 112):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.image_size = image_size
        layers: list[nn.Module] = [conv_bn(3, 64, 3, 2), conv_bn(64, 64, 3, 1, 64)]
        cin = 64
        for expansion, cout, repeats, stride in STAGES:
            for r in range(repeats):
                layers.append(Bottleneck(cin, cout, stride if r == 0 else 1, expansion))
                cin = cout
        layers.append(conv_bn(cin, 512))
        self.features = nn.Sequential(*layers)
        side = image_size // 16
        self.gdc = conv_bn(512, 512, side, 1, 512, act=False)
        cast(nn.Conv2d, self.gdc[0]).padding = (0, 0)  # global depthwise conv: one output position
        self.embed = nn.Sequential(nn.Conv2d(512, embedding_dim, 1, bias=False),
                                   nn.BatchNorm2d(embedding_dim))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) in [-1, 1] -> embeddings (B, embedding_dim), not L2-normalised."""
        return self.embed(self.gdc(self.features(images))).flatten(1)
