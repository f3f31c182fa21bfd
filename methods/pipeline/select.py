"""Turn importance scores into masks: the selection scopes every score-based method shares.

- ``global``: one threshold over all prunable weights (keep the top ``round(d · N)``).
- ``layerwise``: every layer keeps the same fraction (``round(d_l · n_l)``).
- ``layerwise_std``: Han et al. 2015 §3 — prune ``|w| < quality · σ(W_l)`` (σ of the layer's surviving weights).
- explicit per-layer keep fractions (Han Tables 2–3), via ``layer_density``.
- an ``N:M`` pattern (``select_nm``): in every group of M consecutive weights along a layer's input (the GEMM's
  reduction dimension K) the N highest scores survive, so every layer keeps exactly N/M (Mishra et al. 2021,
  "Accelerating Sparse Deep Neural Networks", the 2:4 sparsity of NVIDIA's Ampere sparse tensor cores).

Only survivors are ranked (a pruned weight never returns; open_lth ranks ``v[mask == 1]``). Ties are broken
deterministically by position (stable sort), so the achieved count equals the target exactly per layer (layerwise)
or overall (global).
"""

from __future__ import annotations

from typing import Optional

import torch

from foundations.checks import check
from foundations.errors import UserError
from methods.pipeline.masks import Masks, Prunable

SCOPES = ("global", "layerwise", "layerwise_std")
UNSTRUCTURED = "unstructured"


def _keep_top(scores: torch.Tensor, alive: torch.Tensor, keep: int) -> torch.Tensor:
    """The ``keep`` highest scores among ``alive``, ties broken by position (the first ones kept): the same set as
    the first ``keep`` of a stable descending sort, found in O(N) by the keep-th largest value (SynFlow's 100
    iterations select 100 times; a sort is 6x slower on LeNet-300-100)."""
    flat = torch.where(alive.flatten(), scores.flatten().double(), torch.tensor(float("-inf"), dtype=torch.float64))
    if keep <= 0 or keep >= flat.numel():
        return torch.full_like(alive, keep > 0, dtype=torch.bool)
    threshold = torch.kthvalue(flat, flat.numel() - keep + 1).values  # the keep-th largest
    mask = flat > threshold
    ties = torch.nonzero(flat == threshold).flatten()
    mask[ties[: keep - int(mask.sum())]] = True
    return mask.view_as(alive)


def select(
    scores: dict[str, torch.Tensor],
    alive: Masks,
    *,
    scope: str,
    layer_targets: dict[str, float],
    global_target: float,
    weights: dict[str, torch.Tensor] | None = None,
    quality: float | dict | None = None,
) -> Masks:
    """New masks (a subset of ``alive``).

    ``layer_targets`` are per-layer keep fractions of each layer's *original* size (used by ``layerwise``; rounding
    from the original size, not the remaining count, keeps an n-round ladder within one weight of the formula);
    ``global_target`` is the overall keep fraction (``global``).
    """
    if scope == "global":
        names = list(scores)
        total = sum(scores[n].numel() for n in names)
        keep = round(global_target * total)
        if keep > sum(int(alive[n].sum()) for n in names):
            raise UserError(
                f"method.sparsity: cannot keep {keep} weights, only {sum(int(alive[n].sum()) for n in names)} survive"
            )
        joined = _keep_top(
            torch.cat([scores[n].flatten() for n in names]), torch.cat([alive[n].flatten() for n in names]), keep
        )
        out, start = {}, 0
        for n in names:
            out[n] = joined[start : start + scores[n].numel()].view_as(scores[n])
            start += scores[n].numel()
        return out
    if scope == "layerwise":
        return {
            n: _keep_top(s, alive[n], min(round(layer_targets[n] * s.numel()), int(alive[n].sum())))
            for n, s in scores.items()
        }
    if scope == "layerwise_std":
        if weights is None or quality is None:
            raise UserError(
                "method.quality: layerwise_std (Han et al.) needs a quality parameter, e.g. method.quality=1.0"
            )
        out = {}
        for n, s in scores.items():
            q = quality[n] if isinstance(quality, dict) else quality
            sigma = weights[n][alive[n]].double().std() if alive[n].sum() > 1 else torch.tensor(0.0)
            out[n] = alive[n] & (s.double() >= q * sigma)
        return out
    raise UserError(f"method.scope: must be one of {SCOPES} (got {scope!r})")


def ladder(rounds: int, final_density: float, names: list[str] | None = None) -> list[tuple[float, dict[str, float]]]:
    """Per-round (global keep fraction, per-layer keep fractions) of an iterative schedule: every round removes the
    same fraction of what remains, so round ``rounds`` lands on ``final_density`` exactly (every layer alike). The
    lottery ticket's per-layer rates are ``methods.lottery.Lottery.levels``."""
    per_round = final_density ** (1.0 / rounds)
    steps = []
    for k in range(1, rounds + 1):
        overall = per_round**k if k < rounds else final_density
        steps.append((overall, {n: overall for n in names or []}))
    return steps


def nm_pattern(pattern: str) -> Optional[tuple[int, int]]:
    """``"unstructured"`` → None; ``"N:M"`` → (N, M) with 0 < N < M."""
    if pattern == UNSTRUCTURED:
        return None
    n, sep, m = str(pattern).partition(":")
    if not (sep and n.strip().isdigit() and m.strip().isdigit() and 0 < int(n) < int(m)):
        # unquoted in a YAML file, 2:4 is read as the base-60 number 124
        quote = "; quote it in YAML files (pattern: '2:4')" if str(pattern).isdigit() else ""
        raise UserError(
            f"method.pattern: must be {UNSTRUCTURED} or N:M with 0 < N < M, e.g. '2:4' (got {pattern!r}){quote}"
        )
    return int(n), int(m)


def check_pattern(pattern: str, sparsity: float, prunable: Prunable, conflicts: dict[str, tuple[bool, str]]) -> None:
    """Config-time checks of an N:M pattern: ``method.sparsity`` must be the pattern's 1 − N/M (required, not
    derived, so that a sweep's target and the record's ``target_sparsity`` never disagree with what is pruned), only
    Conv2d/Linear weights are grouped, and no field of ``conflicts`` ({field: (is set, why)}) is set to something a
    fixed N/M per group cannot honour."""
    nm = nm_pattern(pattern)
    if nm is None:
        return
    n, m = nm
    check(
        abs(sparsity - (1 - n / m)) < 1e-9,
        "method.sparsity",
        f"pattern {n}:{m} keeps exactly {n} of every {m} weights, sparsity {1 - n / m:g} (got {sparsity:g}); "
        f"set method.sparsity={1 - n / m:g}",
    )
    check(
        not prunable.biases and not prunable.batchnorm,
        "method.prunable",
        f"pattern {n}:{m} groups Conv2d/Linear weights along their input; set method.prunable.biases=false and "
        f"method.prunable.batchnorm=false",
    )
    for key, (is_set, why) in conflicts.items():
        check(not is_set, f"method.{key}", f"{why}; pattern {n}:{m} keeps N/M in every layer")


def nm_rows(tensor: torch.Tensor) -> torch.Tensor:
    """A weight as the rows its N:M groups lie along: a Linear's (out, in) as it is; a Conv2d's (O, C, R, S) as
    (O·R·S, C), so that a group is M consecutive input channels at one kernel position — the GEMM's K = (R, S, C)
    with C innermost that NVIDIA's sparse convolutions use (apex ASP's ``create_mask`` permutes the same way)."""
    if tensor.dim() == 2:
        return tensor
    if tensor.dim() == 4:
        return tensor.permute(0, 2, 3, 1).reshape(-1, tensor.shape[1])
    raise ValueError(f"an N:M pattern groups 2-d (Linear) or 4-d (Conv2d) weights, not shape {tuple(tensor.shape)}")


def _from_rows(rows: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if len(shape) == 2:
        return rows
    o, c, r, s = shape
    return rows.reshape(o, r, s, c).permute(0, 3, 1, 2).contiguous()


def check_nm_shapes(pattern: str, shapes: dict[str, torch.Size]) -> None:
    """Every prunable tensor's grouped dimension (a Linear's inputs, a Conv2d's input channels) must be a multiple
    of M: a remainder group would leave the layer off N/M, so it is refused, naming the layer and the way out."""
    nm = nm_pattern(pattern)
    if nm is None:
        return
    n, m = nm
    for name, shape in shapes.items():
        if len(shape) not in (2, 4):
            raise UserError(f"method.pattern: {name} has shape {tuple(shape)}; {n}:{m} groups Conv2d/Linear weights")
        width = shape[1]
        if width % m:
            what = "inputs" if len(shape) == 2 else "input channels per group"
            raise UserError(
                f"method.pattern: {name} has {width} {what}, not a multiple of {m}, so {n}:{m} groups do not tile "
                f"it; leave it dense with method.prunable.exclude=[{name.rpartition('.')[0]}] or choose another M"
            )


def select_nm(scores: dict[str, torch.Tensor], alive: Masks, n: int, m: int) -> Masks:
    """In every group of ``m`` consecutive weights along the input dimension (``nm_rows``) the ``n`` highest
    scores among the survivors; ties go to the earlier position (stable sort). A group with fewer than ``n``
    survivors cannot keep ``n`` and is refused (a pruned weight never returns)."""
    out = {}
    for name, score in scores.items():
        rows = nm_rows(score.double()).reshape(-1, m)
        live = nm_rows(alive[name]).reshape(-1, m)
        if bool((live.sum(dim=1) < n).any()):
            raise UserError(f"method.pattern: {name} has groups of {m} with fewer than {n} surviving weights")
        ranked = torch.where(live, rows, torch.tensor(float("-inf"), dtype=torch.float64))
        order = torch.argsort(ranked, dim=1, descending=True, stable=True)[:, :n]
        keep = torch.zeros_like(live).scatter_(1, order, True)
        out[name] = _from_rows(keep.reshape(-1, score.shape[1]), score.shape)
    return out
