"""Channel (filter) scores: one score per output channel of each prunable group (higher = keep)."""

from __future__ import annotations

import torch
from torch import nn

from foundations.errors import UserError
from foundations.seeds import generator

BN_MODELS = "mlp_bn, conv_bn, vgg, resnet"


def l1_filter_scores(model: nn.Module, groups) -> dict[str, torch.Tensor]:
    """Li et al. 2017 §3.1: Σ|F_j| of each filter (a Linear layer's filter is one output neuron's weight row)."""
    modules = dict(model.named_modules())
    return {g.name: modules[g.name].weight.detach().abs().flatten(1).sum(1) for g in groups}


def random_filter_scores(groups, seed: int) -> dict[str, torch.Tensor]:
    gen = generator(seed)
    return {g.name: torch.rand(g.num_channels, generator=gen) for g in groups}


def bn_scale_scores(model: nn.Module, groups) -> dict[str, torch.Tensor]:
    """Liu et al. 2017 §3: |γ| of the BN after each group; the max over the members' BNs for a residual group (the
    coupled channel is removable only if it is unimportant after every member, and unlike a sum the max does not
    inflate groups with many members under a global threshold)."""
    modules = dict(model.named_modules())
    scores = {}
    for g in groups:
        if not g.bns:
            raise UserError(
                f"method=slimming: channel group {g.name} is not followed by a BatchNorm, so it has no γ "
                f"to score; use a model with BN (built in: {BN_MODELS}) or leave the layer out "
                f"(method.prunable.exclude=[{g.name}])"
            )
        scores[g.name] = torch.stack([modules[bn].weight.detach().abs().cpu()[g.bn_index(bn)] for bn in g.bns]).amax(0)
    return scores
