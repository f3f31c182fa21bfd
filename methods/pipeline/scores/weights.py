"""Weight-level scores that need no data: magnitude |w| (Han et al. 2015 §3; the lottery's |θ_j|) and random."""

from __future__ import annotations

import torch
from torch import nn

from foundations.seeds import generator


def magnitude_scores(model: nn.Module, names) -> dict[str, torch.Tensor]:
    """|w| of every named tensor (higher = keep)."""
    params = dict(model.named_parameters())
    return {n: params[n].detach().abs().cpu() for n in names}


def random_scores(shapes: dict[str, torch.Size], seed: int) -> dict[str, torch.Tensor]:
    """i.i.d. uniform scores, a pure function of ``seed`` and the tensors' order and shapes."""
    gen = generator(seed)
    return {n: torch.rand(shape, generator=gen) for n, shape in shapes.items()}


def shuffled(masks: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Each mask's entries permuted within its own tensor: every layer keeps its density, the positions are random."""
    gen = generator(seed)
    return {n: m.flatten()[torch.randperm(m.numel(), generator=gen)].view_as(m) for n, m in masks.items()}
