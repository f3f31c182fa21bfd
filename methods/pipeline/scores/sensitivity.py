"""SNIP connection sensitivity (Lee, Ajanthan & Torr, ICLR 2019, §4 and Alg. 1).

With indicator variables c multiplying the weights (the network uses c ⊙ w), the sensitivity of weight j is
g_j = ∂L(c ⊙ w; D)/∂c_j at c = 1, which equals (∂L/∂w_j) · w_j (paper eqs. 3–6), and the score is
s_j = |g_j| / Σ_k |g_k| with the sum over *all* scored tensors (global, eq. 6). Using ∂L/∂w instead of g ⊙ w is
a known bug of re-implementations (szmikler/snip-pruning#2, ganguli-lab/Synaptic-Flow#3).

L is the mean cross-entropy over the union of the given batches (the paper uses one batch, and mentions
accumulating over several). Scoring runs with every module in eval mode (BatchNorm uses running statistics, as the
official code's ``is_train=False``); the previous modes are restored. The model's weights, ``requires_grad`` flags
and ``.grad`` are not touched: gradients are taken w.r.t. detached copies through ``torch.func.functional_call``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from foundations.errors import UserError
from methods.pipeline.scores.hessian import check_per_example, eval_mode, model_device_dtype, resolve_params


def snip_scores(
    model: nn.Module,
    params: dict[str, Tensor],
    batches: Iterable[tuple[Tensor, Tensor]],
    normalize: bool = True,
) -> dict[str, Tensor]:
    """|∂L/∂c_j| at c = 1 = |g_j · w_j| for every scored tensor, divided by the global sum if ``normalize``.

    Returns {name: tensor of the same shape}, detached, on the CPU, in the parameter's dtype. If every
    sensitivity is zero the unnormalized zeros are returned (no NaNs).
    """
    check_per_example(model)
    device, dtype = model_device_dtype(model)
    values, full = resolve_params(model, params)
    names = list(values)
    grads = {n: torch.zeros(values[n].shape, dtype=torch.float64, device=values[n].device) for n in names}
    count = 0
    with eval_mode(model), torch.enable_grad():
        for x, y in batches:
            x = x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device)
            y = y.to(device)
            if len(x) == 0:
                continue
            leaves = {n: values[n].clone().requires_grad_(True) for n in names}
            logits = functional_call(model, {**full, **leaves}, (x,))
            loss = F.cross_entropy(logits, y, reduction="sum")  # divided by the total count below: mean over the union
            for n, g in zip(names, torch.autograd.grad(loss, [leaves[n] for n in names], allow_unused=True)):
                if g is not None:
                    grads[n] += g.to(torch.float64)
            count += len(x)
    if count == 0:
        raise UserError("batches: no examples to compute SNIP scores on")
    scores = {n: (grads[n] / count * values[n].to(torch.float64)).abs() for n in names}
    if normalize:
        total = sum(float(s.sum()) for s in scores.values())
        if total > 0:
            scores = {n: s / total for n, s in scores.items()}
    return {n: s.to(dtype=params[n].dtype).cpu() for n, s in scores.items()}
