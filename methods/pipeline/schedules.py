"""Gradual magnitude pruning's schedule and selection (Zhu & Gupta 2017, "To prune, or not to prune", §3, eq. 1).

The sparsity is raised from s_i to s_f over n pruning steps Δt apart, starting at step t₀:

    s_t = s_f + (s_i − s_f) · (1 − (t − t₀) / (n Δt))³,   t ∈ {t₀, t₀ + Δt, …, t₀ + n Δt}

fast at first, slowly near s_f. Masks change only at those steps (``update_steps``): between them the sparsity of
the last update holds, before t₀ nothing is pruned (0), after t₀ + nΔt the masks are frozen at s_f. (torch.ao's
``CubicSL`` instead moves the level at every ``step()`` call, and jaxpruner's ``PolynomialSchedule`` adds 1 to the
step; neither is the paper's quantized schedule.)

Each update keeps the largest |w| among the weights still unmasked (``magnitude_update``): masks are nested, a pruned
weight never returns. TF ``model_pruning`` (used by Gale et al. 2019) recomputes the mask from the raw variable, so a
pruned weight could come back; prunelab's masked training keeps pruned weights exactly 0 (zero gradient, zero
optimizer state), so a recomputation from the raw weights would rank them last anyway and differ from nested
selection only where a surviving weight is exactly 0 too. Per layer (``layerwise``: every layer at s_t, the
paper's per-layer masks) or one global threshold (``global``); counts are exact (``round((1 − s) · n)``).
"""

from __future__ import annotations

import torch

from foundations.errors import UserError
from methods.pipeline.masks import Masks
from methods.pipeline.select import select

CUBIC = 3  # Zhu & Gupta's exponent (TF model_pruning's sparsity_function_exponent default)


def _check(s_i: float, s_f: float, t0: int, n: int, dt: int) -> None:
    if not 0.0 <= s_i <= s_f < 1.0:
        raise UserError(f"s_i, s_f: need 0 <= s_i <= s_f < 1 (got s_i={s_i}, s_f={s_f})")
    if n < 1 or dt < 1 or t0 < 0:
        raise UserError(f"t0, n, dt: need t0 >= 0, n >= 1 pruning steps, dt >= 1 (got t0={t0}, n={n}, dt={dt})")


def update_steps(t0: int, n: int, dt: int) -> list[int]:
    """The steps at which the masks are recomputed: t₀, t₀ + Δt, …, t₀ + nΔt."""
    _check(0.0, 0.0, t0, n, dt)
    return [t0 + k * dt for k in range(n + 1)]


def cubic_sparsity(step: int, s_i: float, s_f: float, t0: int, n: int, dt: int) -> float:
    """The sparsity of the masks in force at ``step`` (eq. 1 at the last update step ≤ ``step``)."""
    _check(s_i, s_f, t0, n, dt)
    if step < t0:
        return 0.0
    done = min((step - t0) // dt, n)  # update steps passed since t0
    if done == n:
        return s_f  # exactly the target, not a rounding of the formula
    return s_f + (s_i - s_f) * (1.0 - done / n) ** CUBIC


def magnitude_update(weights: dict[str, torch.Tensor], alive: Masks, sparsity: float, scope: str) -> Masks:
    """The masks of one update: the ``1 − sparsity`` largest |w| among ``alive`` (nested: a subset of ``alive``),
    of all prunable weights (``global``) or of every layer (``layerwise``)."""
    if scope not in ("global", "layerwise"):
        raise UserError(f"scope: GMP selects global or layerwise (got {scope!r})")
    keep = 1.0 - sparsity
    scores = {n: w.detach().abs().cpu() for n, w in weights.items()}
    return select(scores, alive, scope=scope, layer_targets={n: keep for n in scores}, global_target=keep)
