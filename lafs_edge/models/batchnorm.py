"""BatchNorm statistics re-estimated on chosen data.

Why: a network trained on strongly degraded views (the distillation campaign's harsh light, low
resolution, grey, JPEG) keeps running means and variances of those views; on ordinary faces its
normalisation is then off. The weights are fine; only the statistics move. Re-estimating them on
faces like those it will see (a cumulative average over the given batches, the BN layers in
training mode, everything else in eval mode, no gradients) is the `update_bn` step of SWA.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


def recalibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Replace every BatchNorm layer's running statistics with their average over `batches`
    (inputs as the model takes them); returns the number of layers re-estimated. The model is left
    in eval mode."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        raise ValueError("recalibrate_batchnorm needs at least one batch")
    if not layers:
        return 0
    model.eval()
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None      # cumulative average: every batch counts the same
        m.train()
    with torch.no_grad():
        model(first)
        for batch in batches:
            model(batch)
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum
    model.eval()
    return len(layers)
