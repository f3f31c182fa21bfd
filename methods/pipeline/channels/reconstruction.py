"""ThiNet's math (Luo, Wu & Lin, ICCV 2017, §3) as pure tensor functions.

Channel c of layer i is judged by how little layer i+1's output changes without input channel c:

- ``collect_contributions``: at random (example, output channel, position) triples of layer i+1, the vector x̂ of
  each input channel's contribution through the kernel, x̂_c = Σ_{k1,k2} W[o, c, k1, k2] · x[c, pos + k], and
  ŷ = y − b = Σ_c x̂_c (§3.2's training set, "m" examples).
- ``greedy_channel_selection``: Alg. 1, the removed set T with |T| = n_remove, grown one channel at a time so that
  Σ_i (Σ_{j∈T} x̂_{i,j})² stays smallest (eq. 6).
- ``least_squares_scale``: ŵ = argmin Σ_i (ŷ_i − ŵᵀ x̂_{i,S})² over the kept channels S (eq. 7), multiplied into layer
  i+1's input-channel slices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

_CHUNK_ELEMENTS = 1 << 22  # bounds the gathered patches (m·C·kh·kw) per chunk: ~16 MB of float32


def _conv_padding(layer: nn.Conv2d, H: int, W: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding equivalent to the layer's ``padding``."""
    if layer.padding_mode != "zeros":
        raise ValueError(f"collect_contributions: padding_mode {layer.padding_mode!r} is not supported (only zeros)")
    if isinstance(layer.padding, str):
        if layer.padding == "valid":
            return (0, 0, 0, 0)
        pads = []
        for k, d in zip(reversed(layer.kernel_size), reversed(layer.dilation)):  # 'same' (stride 1), as PyTorch
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return (pads[0], pads[1], pads[2], pads[3])
    ph, pw = layer.padding
    return (pw, pw, ph, ph)


def _full_weight(layer: nn.Conv2d) -> torch.Tensor:
    """O × C × kh × kw weight with zeros where a grouped conv's output does not see an input channel."""
    weight = layer.weight.detach()
    if layer.groups == 1:
        return weight
    O, Cg = weight.shape[:2]
    Og, g = O // layer.groups, layer.groups
    full = weight.new_zeros(O, Cg * g, *weight.shape[2:])
    for gi in range(g):
        full[gi * Og : (gi + 1) * Og, gi * Cg : (gi + 1) * Cg] = weight[gi * Og : (gi + 1) * Og]
    return full


@torch.no_grad()
def collect_contributions(
    next_layer: nn.Conv2d | nn.Linear,
    inputs: torch.Tensor,
    n_locations_per_example: int,
    generator: Optional[torch.Generator] = None,
    *,
    return_locations: bool = False,
):
    """ThiNet's training set for layer i+1 = ``next_layer`` from a batch of its inputs.

    ``inputs``: N×C×H×W for a Conv2d; N×C for a Linear, or N×C×... for a Linear after a flatten (then channel c owns
    the ``in_features / C`` consecutive features c·P … c·P+P−1 and x̂_c sums their contributions).
    For each example, ``n_locations_per_example`` (output channel, position) pairs are drawn uniformly with
    replacement from ``generator``: m = N · n_locations_per_example rows.

    Returns ``(X, y)``: X[i, c] = x̂_c (m×C) and y[i] = layer output minus bias at the sampled location, taken from the
    layer's own forward (``F.conv2d`` / ``F.linear`` without bias), so ``X.sum(1) == y`` up to rounding is a check,
    not a definition. With ``return_locations`` also the sampled indices, m×4 (n, o, h, w) for a conv, m×2 (n, o) for
    a Linear. Stride, padding, dilation and groups are honoured; the patches are gathered only at the sampled
    positions (no full unfold), in chunks.
    """
    if n_locations_per_example < 1:
        raise ValueError(f"collect_contributions: n_locations_per_example must be >= 1 (got {n_locations_per_example})")
    inputs = inputs.detach()
    N = inputs.shape[0]
    n_idx = torch.arange(N).repeat_interleave(n_locations_per_example)
    m = n_idx.numel()
    weight = next_layer.weight.detach().to(inputs.dtype)

    if isinstance(next_layer, nn.Conv2d):
        if inputs.dim() != 4 or inputs.shape[1] != next_layer.in_channels:
            raise ValueError(
                f"collect_contributions: a Conv2d with {next_layer.in_channels} input channels needs "
                f"N×{next_layer.in_channels}×H×W inputs (got {tuple(inputs.shape)})"
            )
        _, C, H, W = inputs.shape
        left, right, top, bottom = _conv_padding(next_layer, H, W)
        (kh, kw), (sh, sw), (dh, dw) = next_layer.kernel_size, next_layer.stride, next_layer.dilation
        H_out = (H + top + bottom - dh * (kh - 1) - 1) // sh + 1
        W_out = (W + left + right - dw * (kw - 1) - 1) // sw + 1
        O = next_layer.out_channels
        o_idx = torch.randint(O, (m,), generator=generator)
        h_idx = torch.randint(H_out, (m,), generator=generator)
        w_idx = torch.randint(W_out, (m,), generator=generator)
        padded = F.pad(inputs, (left, right, top, bottom))
        full = _full_weight(next_layer).to(inputs.dtype)
        channels = torch.arange(C)[None, :, None, None]
        X = inputs.new_empty(m, C)
        step = max(1, _CHUNK_ELEMENTS // (C * kh * kw))
        for start in range(0, m, step):
            sl = slice(start, start + step)
            rows = h_idx[sl, None] * sh + torch.arange(kh) * dh  # chunk × kh
            cols = w_idx[sl, None] * sw + torch.arange(kw) * dw  # chunk × kw
            patch = padded[n_idx[sl, None, None, None], channels, rows[:, None, :, None], cols[:, None, None, :]]
            X[sl] = torch.einsum("mcij,mcij->mc", patch, full[o_idx[sl]])
        out = F.conv2d(
            inputs, weight, None, next_layer.stride, next_layer.padding, next_layer.dilation, next_layer.groups
        )
        y = out[n_idx, o_idx, h_idx, w_idx]
        locations = torch.stack([n_idx, o_idx, h_idx, w_idx], dim=1)
    elif isinstance(next_layer, nn.Linear):
        flat = inputs.reshape(N, -1)
        if flat.shape[1] != next_layer.in_features:
            raise ValueError(
                f"collect_contributions: a Linear with {next_layer.in_features} inputs got inputs of "
                f"shape {tuple(inputs.shape)}"
            )
        C = inputs.shape[1] if inputs.dim() > 1 else 1
        per_channel = next_layer.in_features // C
        O = next_layer.out_features
        o_idx = torch.randint(O, (m,), generator=generator)
        grouped_inputs = flat.view(N, C, per_channel)
        grouped_weight = weight.view(O, C, per_channel)
        X = inputs.new_empty(m, C)
        step = max(1, _CHUNK_ELEMENTS // (C * per_channel))
        for start in range(0, m, step):
            sl = slice(start, start + step)
            X[sl] = torch.einsum("mcp,mcp->mc", grouped_inputs[n_idx[sl]], grouped_weight[o_idx[sl]])
        y = F.linear(flat, weight)[n_idx, o_idx]
        locations = torch.stack([n_idx, o_idx], dim=1)
    else:
        raise ValueError(
            f"collect_contributions: next_layer must be a Conv2d or Linear (got {type(next_layer).__name__})"
        )
    return (X, y, locations) if return_locations else (X, y)


def greedy_channel_selection(X: torch.Tensor, n_remove: int) -> list[int]:
    """ThiNet Alg. 1: the removed set T (in order of removal) with |T| = ``n_remove``.

    Starting from T = ∅, add the channel j ∉ T that minimizes Σ_i (Σ_{k∈T∪{j}} X[i, k])². All candidates are scored
    at once from the running sum s = Σ_{k∈T} X[:, k]: ‖s + X_j‖² = ‖s‖² + 2 sᵀX_j + ‖X_j‖² (float64). Ties go to the
    lower channel index.
    """
    if X.dim() != 2:
        raise ValueError(f"greedy_channel_selection: X must be m×C (got shape {tuple(X.shape)})")
    C = X.shape[1]
    if not 0 <= n_remove <= C:
        raise ValueError(f"greedy_channel_selection: n_remove must be in [0, {C}] (got {n_remove})")
    X = X.detach().to(torch.float64)
    col_sq = (X * X).sum(0)
    s = torch.zeros(X.shape[0], dtype=torch.float64)
    taken = torch.zeros(C, dtype=torch.bool)
    removed = []
    for _ in range(n_remove):
        objective = (s @ s) + 2 * (s @ X) + col_sq
        objective[taken] = float("inf")
        j = int(torch.argmin(objective))  # first minimum on ties
        removed.append(j)
        taken[j] = True
        s += X[:, j]
    return removed


def least_squares_scale(X_kept: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """ŵ = argmin ‖y − X_kept ŵ‖² (ThiNet eq. 7), float64, via ``torch.linalg.lstsq`` (gelsd: rank-deficient safe)."""
    X64 = X_kept.detach().to(torch.float64)
    y64 = y.detach().to(torch.float64).reshape(-1, 1)
    if X64.dim() != 2 or X64.shape[0] != y64.shape[0]:
        raise ValueError(
            f"least_squares_scale: X_kept must be m×k and y of length m (got {tuple(X_kept.shape)}, {tuple(y.shape)})"
        )
    return torch.linalg.lstsq(X64, y64, driver="gelsd").solution.reshape(-1)


def reconstruction_error(
    X: torch.Tensor, y: torch.Tensor, kept: Sequence[int], scale: Optional[torch.Tensor] = None
) -> float:
    """Σ_i (y_i − Σ_{c∈kept} ŵ_c x̂_{i,c})² with ŵ = ``scale`` (1 without rescaling)."""
    X_kept = X.detach().to(torch.float64)[:, list(kept)]
    w = torch.ones(X_kept.shape[1], dtype=torch.float64) if scale is None else scale.to(torch.float64)
    r = y.detach().to(torch.float64) - X_kept @ w
    return float(r @ r)
