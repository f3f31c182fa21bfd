"""Synaptic flow (Tanaka, Kunin, Yamins & Ganguli, NeurIPS 2020, Alg. 1): data-free, iterative, conservative.

R_SF = 1ᵀ (∏_l |θ^[l]|) 1 is the sum over every input→output path of the product of the absolute weights on it; the
score of a weight is S = |∂R_SF/∂θ ⊙ θ| (the sum of the path products through it). R is computed as the released code
does: a copy of the network with the absolute value of its *whole state dict* (weights, biases, BN γ, β,
running mean and variance), in eval mode, fed one all-ones input; R = the sum of its outputs.

- Exactness: with zero biases and eval-mode BN at its initial statistics (γ = 1, β = 0, mean 0, variance 1: BN is the
  scaling x/√(1+ε)), R is exactly 1ᵀ∏|W|1 up to those per-BN constants, and scores are conserved: every layer's
  scores sum to R, and for every hidden neuron the scores into it sum to the scores out of it. prunelab's
  initializers set biases to 0 (``models.init``; not ``model.init=pytorch``). Nonzero biases or trained BN
  statistics add paths that start inside the network (|b|, |β|), so conservation then holds only approximately —
  as in the released code.
- Precision: R is a product over all layers, so float32 can underflow or overflow on deep or wide networks
  (ganguli-lab/Synaptic-Flow#11, "all gradients are zero"). Default float64 (the released code has
  ``model.double()`` commented out: float32 is the option). A layer whose scores are all zero on the full network, or
  any non-finite score, is refused in one line rather than pruned by position.
- Pruned weights are exactly zero in the scored network, so they score 0 (no path through them) and the caller ranks
  survivors only: they stay pruned.
- Activations: with non-negative weights and input every ReLU passes its input, so the forward pass computes the
  path-product sum R. A clamp (``nn.ReLU6``, ``nn.Hardtanh``: MobileNetV2) cuts the flow to 0 once the path sums
  exceed 6 — every score of the first layers is then 0 — so the scored copy replaces them by ReLUs, which computes
  the paper's R (the released code only has ReLU networks). Another saturating activation that zeroes a whole
  layer's scores is refused in one line (``check_scores``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn

from foundations.errors import UserError

DTYPES = {"float64": torch.float64, "float32": torch.float32}
Masks = dict[str, Tensor]


def _unclamp(model: nn.Module) -> None:
    """Clamped ReLUs (``nn.ReLU6``, ``nn.Hardtanh``: MobileNetV2) become ReLUs, in place."""
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Hardtanh):  # ReLU6 is a Hardtanh(0, 6)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, nn.ReLU())


def linearized(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of ``model`` in ``dtype`` and eval mode with every floating tensor of its state dict replaced by its
    absolute value (the released code's ``linearize``) and clamped ReLUs unclamped; the original is untouched."""
    plain = copy.deepcopy(model).to(dtype).eval()
    _unclamp(plain)
    with torch.no_grad():
        for tensor in plain.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    for p in plain.parameters():
        p.requires_grad_(True)
    return plain


def flow(linear: nn.Module, names: list[str], ones: Tensor) -> dict[str, Tensor]:
    """|∂R/∂θ ⊙ θ| for the named parameters of a ``linearized`` network, R = Σ outputs at the all-ones ``ones``."""
    params = dict(linear.named_parameters())
    tensors = [params[n] for n in names]
    grads = torch.autograd.grad(linear(ones).sum(), tensors, allow_unused=True)
    return {
        n: (torch.zeros_like(p) if g is None else g * p).detach().abs().cpu() for n, p, g in zip(names, tensors, grads)
    }


def synflow_scores(model: nn.Module, names: list[str], input_shape: tuple, dtype: torch.dtype = torch.float64):
    """One pass of synaptic-flow scores of ``model`` (its pruned weights exactly 0); the model is untouched."""
    linear = linearized(model, dtype)
    device = next(linear.parameters()).device
    scores = flow(linear, names, torch.ones(1, *input_shape, dtype=dtype, device=device))
    check_scores(scores, dtype)
    return scores


def check_scores(scores: dict[str, Tensor], dtype: torch.dtype) -> None:
    """Refuse scores that overflowed, or a layer whose scores all underflowed to 0 (meaningful on the unpruned
    network only: later, a disconnected weight legitimately scores 0). Biases start at 0 and score 0: not checked."""
    hint = "; score in float64 (method.precision=float64)" if dtype != torch.float64 else ""
    for name, s in scores.items():
        if not bool(torch.isfinite(s).all()):
            raise UserError(f"method.precision: the synaptic flow overflowed in {name} (non-finite scores){hint}")
        if s.dim() > 1 and not bool((s > 0).any()):
            raise UserError(
                f"method.precision: every synaptic-flow score of {name} is 0 on the unpruned network: the path "
                f"product underflowed{hint}, or an activation that saturates (sigmoid, tanh, a clamp inside "
                f"forward) blocks the flow: SynFlow needs ReLU-like activations"
            )


def iterative_synflow(
    model: nn.Module,
    alive: Masks,
    choose: Callable[[dict[str, Tensor], Masks, int], Masks],
    iterations: int,
    input_shape: tuple,
    dtype: torch.dtype = torch.float64,
) -> Masks:
    """Alg. 1: for k = 1…n, score the network masked by the current survivors and keep ``choose(scores, alive, k)``
    (the k-th target of the schedule; it must rank survivors only). Returns the masks after iteration n."""
    linear = linearized(model, dtype)
    params = dict(linear.named_parameters())
    device = params[next(iter(alive))].device
    ones = torch.ones(1, *input_shape, dtype=dtype, device=device)
    for k in range(1, iterations + 1):
        with torch.no_grad():
            for n, m in alive.items():
                params[n].mul_(m.to(device=device, dtype=dtype))
        scores = flow(linear, list(alive), ones)
        if k == 1:
            check_scores(scores, dtype)
        alive = choose(scores, alive, k)
    return alive
