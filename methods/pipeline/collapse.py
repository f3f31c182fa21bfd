"""Layer collapse and critical compression (Tanaka, Kunin, Yamins & Ganguli, NeurIPS 2020, §3).

A mask *collapses a layer* when a Conv/Linear weight tensor keeps none of its weights: the layer's output no longer
depends on its input, and the network is disconnected. Biases and BN scales (1-d tensors) are not layers: a fully
pruned bias disconnects nothing. (A network can also be disconnected with every layer non-empty — a kept weight
whose input neuron has no kept incoming weight; that is not what the paper calls layer collapse and is not counted.)

The *critical compression* of a pruning algorithm is the largest compression ratio ρ = 1/density it reaches before a
layer collapses; no algorithm passes N/L, the *maximal* critical compression (one weight per layer, N prunable
weights, L layers). Measured here on the grid ρ = 10^{k/4}, k = 0, 1, … up to N/L (the paper's axes are powers of
10 in quarter steps): scanning up from ρ = 1, the last grid point before the first one that collapses, or the
largest grid point ≤ N/L if none does. ``masks_at(density)`` must run the whole algorithm for that target (an
iterative method's schedule depends on it: SynFlow re-runs its 100 iterations per grid point).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from methods.pipeline.masks import Masks

GRID_STEP = 0.25  # log10 of the ratio between neighbouring compressions


def layers(masks: Masks) -> list[str]:
    """The tensors of a mask set that are layers (Conv/Linear weights, ≥ 2-d), not biases or BN scales."""
    return [n for n, m in masks.items() if m.dim() > 1]


def kept_per_layer(masks: Masks) -> dict[str, int]:
    """Weights kept in every layer of the mask set."""
    return {n: int(masks[n].sum()) for n in layers(masks)}


def layer_collapse(masks: Masks) -> bool:
    """Whether some layer kept none of its weights."""
    return any(count == 0 for count in kept_per_layer(masks).values())


def compression_grid(masks: Masks, step: float = GRID_STEP) -> list[float]:
    """ρ = 10^{k·step}, k = 0, 1, … while ρ ≤ N/L (N: every tensor of the mask set, L: its layers)."""
    total, count = sum(m.numel() for m in masks.values()), len(layers(masks))
    if count == 0:
        return [1.0]
    top = math.floor(math.log10(total / count) / step + 1e-9)
    return [10 ** (k * step) for k in range(top + 1)]


def critical_compression(masks_at: Callable[[float], Masks], grid: list[float]) -> float:
    """The last compression of ``grid`` (ascending, starting at 1) before the first whose masks collapse a layer."""
    reached = grid[0]
    for rho in grid[1:]:
        if layer_collapse(masks_at(1.0 / rho)):
            break
        reached = rho
    return reached
