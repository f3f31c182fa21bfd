"""Gradient signal preservation (Wang, Zhang & Grosse, ICLR 2020, §4, eqs. 7–8): the Hessian-gradient product Hg.

Removing weight q (δ = −θ_q e_q) changes the gradient norm by S(−θ_q) ≈ −θ_q (Hg)_q to first order (eq. 8), with g
the gradient of the loss at θ and H its Hessian. As the official ``pruner/GraSP.py`` computes it, the loss is the
cross-entropy of the logits divided by a temperature T (200) on each of a few batches ("halves"):

    g  = Σ_b ∇_θ L_b(θ)                        (first pass, no graph: g is a constant below)
    Hg = Σ_b ∇_θ [ g · ∇_θ L_b(θ) ] = Σ_b H_b g  (second pass, double backward)

Every module runs in the mode the given model is in (the official code scores in train mode: BN uses each batch's
own statistics, so H_b is the Hessian of that batch's loss as a function of θ through its batch statistics too) and
the running statistics of a train-mode BN are updated: pass a copy. ``.grad`` and ``requires_grad`` of the model's
parameters are not used or changed (``torch.autograd.grad``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from foundations.errors import UserError


def hessian_gradient(
    model: nn.Module, names: list[str], batches: Iterable[tuple[Tensor, Tensor]], temperature: float = 200.0
) -> dict[str, Tensor]:
    """Hg of Σ_b CE(f(x_b)/T, y_b) at the model's parameters, for the named ones (all others held fixed)."""
    batches = list(batches)
    if not batches:
        raise UserError("batches: no examples to compute the GraSP scores on")
    params = dict(model.named_parameters())
    leaves = [params[n] for n in names]
    flags = [p.requires_grad for p in leaves]
    for p in leaves:
        p.requires_grad_(True)
    try:

        def loss(x: Tensor, y: Tensor) -> Tensor:
            return F.cross_entropy(model(x) / temperature, y)

        def grad(value: Tensor, **kwargs) -> list[Tensor]:
            out = torch.autograd.grad(value, leaves, allow_unused=True, **kwargs)
            return [torch.zeros_like(p) if d is None else d for p, d in zip(leaves, out)]

        g = [torch.zeros_like(p) for p in leaves]
        for x, y in batches:
            g = [a + d for a, d in zip(g, grad(loss(x, y)))]
        hg = [torch.zeros_like(p) for p in leaves]
        for x, y in batches:
            first = grad(loss(x, y), create_graph=True)
            z = torch.stack([(a.detach() * d).sum() for a, d in zip(g, first)]).sum()
            hg = [a + d for a, d in zip(hg, grad(z))]
    finally:
        for p, flag in zip(leaves, flags):
            p.requires_grad_(flag)
    return {n: h.detach() for n, h in zip(names, hg)}
