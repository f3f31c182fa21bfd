"""Apply a ``ChannelPlan``: mask the removed channels (same architecture) or cut them out (a narrower network).

``mask_channels`` is network slimming's pre-prune "mask test" (its official code sets γ and β of pruned channels to
0) extended to layers without BN; ``compact`` is the channel surgery that builds slimming's narrower network (Liu et al.
2017) and the pruned architectures Scratch-E/B train (Liu et al. 2019): conv in/out slices, BN weight/bias *and
running statistics* (as the official ``vggprune.py`` copies them), the consumer's input slice including a flatten into a
Linear, and residual stages tied — all done by torch-pruning's ``DependencyGraph`` (``get_pruning_group`` +
``Group.prune``), which handles every model family of ``models/`` (lenet300, lenet5, mlp_bn, conv_bn, vgg, resnet)
with torch 2.14 and torch-pruning 1.6.1, so no hand-written surgery is needed. On the same input, the compacted model's
output equals the channel-masked model's (tests/test_channels.py).
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import nn
from torch.nn.utils import parametrize

from foundations.errors import UserError
from foundations.training import eval_mode
from methods.pipeline.channels.plan import (
    ChannelPlan,
    _first_input,
    dependency_graph,
    groups_from_graph,
    out_channels,
    validate_plan,
)


def _check_plain(model: nn.Module) -> None:
    for name, module in model.named_modules():
        if hasattr(module, "weight_orig") or parametrize.is_parametrized(module):
            raise UserError(
                f"channel pruning: {name or 'model'} carries weight masks/parametrizations; "
                f"pass a plain model (methods.pipeline.masks.folded)"
            )


def _members(
    model: nn.Module, plan: ChannelPlan, example_input: Optional[torch.Tensor]
) -> tuple[dict[str, dict], dict[str, dict[str, list[int]]]]:
    """(group key → {member layer: following BN or None}, group key → {BN: its channel per group channel}); traced
    when the plan does not record its members."""
    if all(key in plan.members for key in plan.keep):
        return {key: plan.members[key] for key in plan.keep}, dict(plan.bn_channels)
    if example_input is None:
        raise UserError(
            "channel plan: the plan does not record its coupled layers (build it with select_channels "
            "or ChannelPlan.for_groups), so mask_channels needs an example_input to trace the model"
        )
    groups = {g.name: g for g in groups_from_graph(model, dependency_graph(model, example_input))}
    out, bns = {}, dict(plan.bn_channels)
    for key in plan.keep:
        if key in plan.members:
            out[key] = plan.members[key]
        elif key in groups:
            out[key] = {layer: groups[key].bn_of.get(layer) for layer in groups[key].layers}
            if groups[key].bn_channels:
                bns[key] = dict(groups[key].bn_channels)
        else:
            raise UserError(
                f"channel plan: {key} is not the key of a prunable channel group; groups: {', '.join(groups)}"
            )
    return out, bns


def _zero_bn(model: nn.Module, bn_name: str, channels: list[int]) -> None:
    bn = model.get_submodule(bn_name)
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
        raise UserError(f"channel plan: {bn_name} is a {type(bn).__name__}, not a BatchNorm")
    if bn.weight is not None:
        bn.weight[channels] = 0
        bn.bias[channels] = 0
    elif bn.running_mean is not None:
        bn.running_mean[channels] = 0
    else:
        raise UserError(
            f"channel pruning: {bn_name} has neither affine parameters nor running statistics; "
            f"its removed channels cannot be masked to zero"
        )


@torch.no_grad()
def mask_channels(model: nn.Module, plan: ChannelPlan, example_input: Optional[torch.Tensor] = None) -> nn.Module:
    """A deep copy of ``model`` whose removed channels output exactly zero everywhere downstream.

    For every member layer of each group: the weight rows and bias of removed channels are zeroed; a following BN gets
    γ = β = 0 for them (then its output is 0 whatever the running statistics, in train and eval mode; a BN without
    affine parameters gets running_mean = 0 instead, which gives 0 in eval mode). A zero channel stays zero through
    ReLU, max/avg-pooling and the residual sum because every layer feeding that sum is in the group. A BN after a
    concatenation gets its slice of the group's channels zeroed (``ChannelPlan.bn_channels``). The consumers' input
    weights are left untouched (they multiply zeros).
    """
    _check_plain(model)
    members, bn_channels = _members(model, plan, example_input)
    validate_plan(plan, {key: out_channels(model.get_submodule(key)) for key in plan.keep})
    masked = copy.deepcopy(model)
    for key, kept in plan.keep.items():
        n = out_channels(model.get_submodule(key))
        removed = torch.ones(n, dtype=torch.bool)
        removed[kept] = False
        for layer, bn_name in members[key].items():
            module = masked.get_submodule(layer)
            if not isinstance(module, (nn.Conv2d, nn.Linear)):
                raise UserError(f"channel plan: {layer} is a {type(module).__name__}, not a Conv2d/Linear")
            if out_channels(module) != n:
                raise UserError(f"channel plan: {layer} has {out_channels(module)} channels, its group {key} has {n}")
            module.weight[removed] = 0
            if module.bias is not None:
                module.bias[removed] = 0
            if bn_name is not None and key not in bn_channels:
                _zero_bn(masked, bn_name, removed.nonzero().flatten().tolist())
        gone = removed.nonzero().flatten().tolist()
        for bn_name, index in bn_channels.get(key, {}).items():
            _zero_bn(masked, bn_name, [index[c] for c in gone])
    return masked


def compact(model: nn.Module, plan: ChannelPlan, example_input: torch.Tensor) -> nn.Module:
    """A deep copy of ``model`` with the removed channels physically cut out (the narrower architecture).

    ``example_input`` is a batch of valid inputs (one example is traced). Each group is pruned through its key layer:
    ``DependencyGraph.get_pruning_group(layer, prune_out_channels, removed)`` collects the coupled BNs, residual
    members and consumer input slices (including the channel → features mapping of a flatten into a Linear) and
    ``Group.prune`` slices them. The original is untouched and the copy keeps every module's train/eval mode.
    """
    _check_plain(model)
    validate_plan(plan, {key: out_channels(model.get_submodule(key)) for key in plan.keep})
    small = copy.deepcopy(model)
    graph = dependency_graph(small, example_input)
    known = {g.name: g for g in groups_from_graph(small, graph)}
    for key in plan.keep:
        if key not in known:
            raise UserError(
                f"channel plan: {key} is not the key of a prunable channel group; groups: {', '.join(known)}"
            )
    for key, kept in plan.keep.items():
        layer = small.get_submodule(key)
        removed = sorted(set(range(out_channels(layer))) - set(kept))
        if not removed:
            continue
        pruner = graph.get_pruner_of_module(layer)
        group = graph.get_pruning_group(layer, pruner.prune_out_channels, removed)
        group.prune(record_history=False)
    for key, kept in plan.keep.items():
        for member in known[key].layers:
            got = out_channels(small.get_submodule(member))
            if got != len(kept):  # a torch-pruning regression would show up here rather than as a shape error later
                raise RuntimeError(f"compact: {member} has {got} channels after surgery, expected {len(kept)}")
    _check_forward(small, example_input)
    return small


@torch.no_grad()
def _check_forward(model: nn.Module, example_input: torch.Tensor) -> None:
    with eval_mode(model):  # must not touch running statistics
        model(_first_input(example_input))


def compact_widths(model: nn.Module, plan: ChannelPlan) -> dict[str, int]:
    """Kept channels per prunable layer (every member of a group), e.g. to rebuild the pruned architecture."""
    out = {}
    for key, kept in plan.keep.items():
        for layer in plan.layers_of(key):
            out[layer] = len(kept)
    return out


__all__ = ["mask_channels", "compact", "compact_widths"]
