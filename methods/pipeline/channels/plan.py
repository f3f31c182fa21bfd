"""Channel plans: which output channels of which layers survive a structured pruning step.

- ``prunable_channel_groups`` finds the groups of *coupled* channels with torch-pruning's ``DependencyGraph``: a
  Conv2d/Linear (except the classifier, the Linear producing the logits) together with the BatchNorm that follows it
  and the input slices of the layers that consume it. Residual additions tie channels together: in a CIFAR ResNet the
  stem conv and every block's ``conv2`` of stage 1 form one group, and each later stage's projection-shortcut conv and
  block ``conv2``s form one group. A depthwise conv joins the group of the layer feeding it (its channel c is that
  layer's channel c: MobileNet's expansion conv and depthwise conv lose the same channels); a concatenation maps each
  producer's channels to their slice of the consumer's input (torch-pruning's index mapping). Any model
  torch-pruning can trace works; a general grouped conv is refused naming the layer. A group is keyed by its first
  layer in module-declaration order.
- ``select_channels`` turns per-group channel scores into a ``ChannelPlan`` with a global threshold (network
  slimming, Liu et al. 2017: one percentile over all BN scales) or the same fraction per group (ThiNet's r, Mittal
  et al. 2018's random structured pruning), with a per-group floor so that no layer is emptied (a global threshold
  can remove every channel of a layer, which crashes the surgery: network-slimming#56, rethinking-network-pruning#50).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch_pruning as tp
from torch import nn

from foundations.errors import RefusedModel, UserError
from foundations.training import eval_mode
from methods.pipeline.masks import check_exclude, classifier_name, excluded

SCOPES = ("global", "layerwise")


class TraceError(RefusedModel):
    """torch-pruning cannot follow the model's channels (a failed trace, or layers the trace does not reach)."""


_BN = nn.modules.batchnorm._BatchNorm


@dataclass
class ChannelGroup:
    """One set of coupled output channels.

    - ``name``: the group's key, its first member layer in ``model.named_modules()`` order (= ``layers[0]``).
    - ``layers``: the Conv2d/Linear layers whose *output* channels the group removes, in module order.
    - ``bn``: the BatchNorm that directly follows ``name`` (or ``None``); ``bn_of`` gives it for every member layer
      (a residual group has one BN per member). ``bns`` lists the member BNs that exist.
    - ``consumers``: layers whose *input* channels are sliced (the "next layer" of ThiNet, Luo et al. 2017 §3). A
      Linear after a flatten consumes ``in_features / num_channels`` features per channel.
    - ``num_channels``: channels in the group (all members share it).
    - ``bn_channels``: every BatchNorm the group's channels pass through → the BN channel of each group channel
      (torch-pruning's index mapping): the identity for a BN right after a member, an offset slice for a BN after a
      concatenation (DenseNet's transition BN, an Inception block's).
    """

    name: str
    layers: list[str]
    bn_of: dict[str, Optional[str]]
    consumers: list[str]
    num_channels: int
    bn_channels: dict[str, list[int]] = field(default_factory=dict)

    @property
    def bn(self) -> Optional[str]:
        return self.bn_of.get(self.name)

    @property
    def bns(self) -> list[str]:
        if self.bn_channels:
            return list(self.bn_channels)
        return [bn for layer in self.layers if (bn := self.bn_of.get(layer)) is not None]

    def bn_index(self, bn: str) -> list[int]:
        """The channels of ``bn`` that carry this group's channels 0..n-1."""
        return self.bn_channels.get(bn, list(range(self.num_channels)))


@dataclass
class ChannelPlan:
    """``keep``: group key (a prunable Conv2d/Linear) → sorted kept output-channel indices (DEVELOPERS.md).

    ``members`` (filled by ``select_channels`` / ``ChannelPlan.for_groups``) records, per key, every coupled layer and
    the BN that follows it, so that ``mask_channels`` needs no tracing and a plan read back from JSON is
    self-describing. A key without ``members`` is treated as a lone layer (``mask_channels`` then traces the model
    when given an example input).
    """

    keep: dict[str, list[int]]
    members: dict[str, dict[str, Optional[str]]] = field(default_factory=dict)
    bn_channels: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # key → ChannelGroup.bn_channels

    @classmethod
    def for_groups(cls, groups: Sequence[ChannelGroup], keep: Mapping[str, Sequence[int]]) -> ChannelPlan:
        """A plan for the given groups from a hand-made ``keep`` (indices are sorted and deduplicated)."""
        by_name = {g.name: g for g in groups}
        unknown = sorted(set(keep) - set(by_name))
        if unknown:
            raise UserError(
                f"channel plan: {', '.join(unknown)} are not prunable channel groups; "
                f"known groups: {', '.join(by_name)}"
            )
        plan = cls(
            keep={k: sorted({int(i) for i in v}) for k, v in keep.items()},
            members={k: {layer: by_name[k].bn_of.get(layer) for layer in by_name[k].layers} for k in keep},
            bn_channels={k: dict(by_name[k].bn_channels) for k in keep if by_name[k].bn_channels},
        )
        validate_plan(plan, sizes={k: by_name[k].num_channels for k in keep})
        return plan

    def to_json(self) -> str:
        extra = {"bn_channels": self.bn_channels} if self.bn_channels else {}  # plans without it read as before
        return json.dumps({"keep": self.keep, "members": self.members, **extra}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ChannelPlan:
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("keep"), dict):
            raise UserError("channel plan: JSON must be an object with a 'keep' mapping (layer -> kept channels)")
        return cls(
            keep={k: [int(i) for i in v] for k, v in data["keep"].items()},
            members={k: dict(v) for k, v in (data.get("members") or {}).items()},
            bn_channels={
                k: {bn: [int(i) for i in idx] for bn, idx in v.items()}
                for k, v in (data.get("bn_channels") or {}).items()
            },
        )

    def widths(self) -> dict[str, int]:
        """Kept channels per group key: the architecture the plan leaves, whichever channels it keeps."""
        return {key: len(kept) for key, kept in sorted(self.keep.items())}

    def architecture(self) -> ChannelPlan:
        """The plan keeping the *first* ``len(kept)`` channels of each group: the same architecture, without the
        memory of which channels were kept. Scratch-E/B start from it, so a fresh init depends on the widths alone
        and two sources that leave the same widths share their scratch stages."""
        return ChannelPlan(
            keep={key: list(range(n)) for key, n in self.widths().items()},
            members=dict(self.members),
            bn_channels=dict(self.bn_channels),
        )

    def layers_of(self, key: str) -> dict[str, Optional[str]]:
        """Member layer → following BN (or None) of group ``key``; a key without recorded members is a lone layer."""
        return self.members.get(key) or {key: None}


def validate_plan(plan: ChannelPlan, sizes: dict[str, int]) -> None:
    """Kept indices must be sorted, unique, in range and non-empty (an emptied layer breaks the network)."""
    for key, kept in plan.keep.items():
        if key not in sizes:
            raise UserError(f"channel plan: {key} is not a prunable Conv2d/Linear of the model")
        n = sizes[key]
        if len(kept) == 0:
            raise UserError(
                f"channel plan: {key} keeps no channels (an emptied layer disconnects the network); "
                f"keep at least one (select_channels' min_keep)"
            )
        if list(kept) != sorted(set(kept)):
            raise UserError(f"channel plan: kept channels of {key} must be sorted and unique")
        if kept[0] < 0 or kept[-1] >= n:
            raise UserError(f"channel plan: {key} has {n} channels, kept index out of range ({kept[0]}..{kept[-1]})")


def out_channels(module: nn.Module) -> int:
    if isinstance(module, nn.Conv2d):
        return module.out_channels
    if isinstance(module, nn.Linear):
        return module.out_features
    raise UserError(f"channel plan: {type(module).__name__} is not a Conv2d/Linear")


def compose(previous: Optional[ChannelPlan], step: ChannelPlan) -> ChannelPlan:
    """``step`` indexes the channels of a model already compacted by ``previous``: the same selection as one plan over
    the base architecture (a stage's plan, from which ``compact`` rebuilds its model). A group ``step`` leaves alone
    keeps ``previous``'s channels; a group ``previous`` left alone is still the base's, so ``step``'s indices stand
    (ThiNet prunes one group per step, slimming every group in every pass)."""
    if previous is None:
        return step
    keep = {
        key: [kept[i] for i in step.keep[key]] if key in step.keep else list(kept)
        for key, kept in previous.keep.items()
    }
    keep.update({key: list(kept) for key, kept in step.keep.items() if key not in previous.keep})
    # bn_channels index the base architecture's BNs: a group's first plan has them (a later step's index the
    # compacted model)
    new = {key: v for key, v in step.bn_channels.items() if key not in previous.keep}
    return ChannelPlan(
        keep=keep, members={**previous.members, **step.members}, bn_channels={**previous.bn_channels, **new}
    )


def channel_sparsity(plan: ChannelPlan, model: nn.Module) -> float:
    """Removed / total channels over the plan's keys, each group counted once (sizes from the *unpruned* model)."""
    total = sum(out_channels(model.get_submodule(key)) for key in plan.keep)
    kept = sum(len(v) for v in plan.keep.values())
    return (total - kept) / total if total else 0.0


@contextmanager
def _tracing_mode(model: nn.Module) -> Iterator[None]:
    """Trace in eval mode (the trace forward must not update BN running stats) and restore every module's flag
    afterwards: ``DependencyGraph._trace`` calls ``model.eval()`` and never switches back. The DependencyGraph
    traces autograd's graph, so gradients are on whatever the caller had."""
    with eval_mode(model), torch.enable_grad():
        yield


def _first_input(example_input: torch.Tensor) -> torch.Tensor:
    # The graph does not depend on the batch size; one example keeps the trace cheap.
    return example_input[:1] if isinstance(example_input, torch.Tensor) and example_input.dim() > 0 else example_input


def dependency_graph(model: nn.Module, example_input: torch.Tensor) -> tp.DependencyGraph:
    """torch-pruning's DependencyGraph of ``model``, traced in eval mode without changing any module's mode."""
    with _tracing_mode(model):
        # An explicit forward_fn: torch-pruning's default first tries ``model(*example_inputs)``, which for a tensor
        # unpacks the batch dimension and may half-run the model on an unbatched input before falling back.
        try:
            return tp.DependencyGraph().build_dependency(
                model, example_inputs=_first_input(example_input), forward_fn=lambda m, x: m(x), verbose=False
            )
        except Exception as err:  # whatever torch-pruning's tracer trips on, the user gets one line
            reason = " ".join(str(err).split())[:300] or type(err).__name__
            raise TraceError(
                f"channel pruning: torch-pruning cannot trace {type(model).__name__} ({reason}); channel "
                f"methods need a model its DependencyGraph can follow (weight-level methods such as "
                f"magnitude work on any model)"
            ) from None


def _is_depthwise(module: nn.Conv2d) -> bool:
    return module.groups == module.in_channels == module.out_channels


def groups_from_graph(model: nn.Module, graph: tp.DependencyGraph, exclude: Sequence[str] = ()) -> list[ChannelGroup]:
    """The prunable groups of a traced model; a group with a member matching ``exclude`` is left out."""
    names = {module: name for name, module in model.named_modules()}
    order = {name: i for i, name in enumerate(names.values())}
    classifier = model.get_submodule(classifier_name(model))
    groups = []
    for group in graph.get_all_groups(ignored_layers=[classifier], root_module_types=(nn.Conv2d, nn.Linear)):
        layers, consumers, width = [], [], None
        bn_channels: dict[str, list[int]] = {}
        for dep, idxs in group:
            module = dep.target.module
            if isinstance(module, _BN) and module in names and graph.is_out_channel_pruning_fn(dep.handler):
                bn_channels[names[module]] = [int(i) for i in idxs]
            if not isinstance(module, (nn.Conv2d, nn.Linear)) or module not in names:
                continue
            if graph.is_out_channel_pruning_fn(dep.handler):
                layers.append(names[module])
                width = len(idxs) if width is None else width
            elif graph.is_in_channel_pruning_fn(dep.handler):
                consumers.append(names[module])
        if not layers:
            continue
        for layer in layers:
            module = model.get_submodule(layer)
            # A depthwise conv's channel c is its input channel c: torch-pruning removes it with its producer's.
            if isinstance(module, nn.Conv2d) and module.groups != 1 and not _is_depthwise(module):
                raise RefusedModel(
                    f"channel pruning: {layer} is a grouped conv ({module.groups} groups of "
                    f"{module.in_channels // module.groups} channels); only plain and depthwise convs "
                    f"can lose channels (exclude it: method.prunable.exclude=[{layer}])"
                )
        if any(excluded(layer, list(exclude)) for layer in layers):
            continue
        layers = sorted(set(layers), key=order.__getitem__)
        consumers = sorted(set(consumers), key=order.__getitem__)
        bn_of = {}
        for layer in layers:
            node = graph.module2node[model.get_submodule(layer)]
            following = [n.module for n in node.outputs if isinstance(n.module, _BN)]
            bn_of[layer] = names[following[0]] if len(following) == 1 else None
        n = out_channels(model.get_submodule(layers[0]))
        # Only a BN whose channels are not the identity needs its index list in the plan; in module order.
        mapped = {bn: idx for bn, idx in sorted(bn_channels.items(), key=lambda item: order[item[0]])}
        if all(idx == list(range(n)) for idx in mapped.values()) and set(mapped) == set(filter(None, bn_of.values())):
            mapped = {}
        groups.append(
            ChannelGroup(
                name=layers[0], layers=layers, bn_of=bn_of, consumers=consumers, num_channels=n, bn_channels=mapped
            )
        )
    return sorted(groups, key=lambda g: order[g.name])


def prunable_channel_groups(
    model: nn.Module, example_input: torch.Tensor, exclude: Sequence[str] = ()
) -> list[ChannelGroup]:
    """The groups of coupled, removable output channels of ``model``, in module order (see the module docstring).

    ``example_input`` is any batch of valid inputs (only its first example is traced). The model is not modified:
    the trace runs in eval mode and every module's train/eval flag is restored. ``exclude``
    (``method.prunable.exclude``) leaves out every group with a matching member.
    """
    check_exclude(model, list(exclude))
    graph = dependency_graph(model, example_input)
    groups = groups_from_graph(model, graph, exclude)
    if not groups:
        name = type(model).__name__
        layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        unreached = [n for n, m in layers if m not in graph.module2node]
        if unreached:
            raise TraceError(
                f"channel pruning: torch-pruning's trace of {name} does not reach {', '.join(unreached[:3])}"
                f": its output leaves autograd's graph (torch.no_grad, .detach() or a non-torch step in "
                f"forward), so its channels cannot be followed"
            )
        why = (
            f"every group has a member in method.prunable.exclude={list(exclude)}"
            if exclude
            else f"its only Conv2d/Linear is the classifier {classifier_name(model)}, whose outputs are the logits"
        )
        raise RefusedModel(f"channel pruning: {name} has no prunable channel group ({why})")
    return groups


def min_kept(n: int, min_keep: int, min_keep_fraction: float) -> int:
    # The 1e-9 absorbs float noise such as 0.3 * 10 = 3.0000000000000004 (whose ceil would be 4).
    return min(n, max(int(min_keep), math.ceil(min_keep_fraction * n - 1e-9)))


def select_channels(
    scores: dict[str, torch.Tensor],
    groups: Sequence[ChannelGroup],
    sparsity: float,
    scope: str = "global",
    min_keep_fraction: float = 0.0,
    min_keep: int = 1,
) -> ChannelPlan:
    """Keep the highest-scoring channels of every group; ``sparsity`` is the fraction of channels removed.

    - ``global``: one threshold over all groups (network slimming's percentile of all |γ|, Liu et al. 2017): the
      ``round(sparsity · total)`` lowest channels are removed, ordering by (score, group order, channel index) so that
      ties are broken deterministically.
    - ``layerwise``: every group removes its ``round(sparsity · n)`` lowest (ties → lower index first).

    Floor: every group keeps at least ``max(min_keep, ceil(min_keep_fraction · n))`` channels (capped at n).
    In ``global`` scope a group that reaches its floor stops losing channels and the deficit goes to the next-lowest
    channels of the other groups, so exactly ``round(sparsity · total)`` channels are removed; if the floors leave
    fewer removable channels than that, ``UserError``. In ``layerwise`` scope a group removes
    ``min(round(sparsity · n), n − floor)`` (the per-group fraction is the point of the scope, so a clipped deficit
    is not moved elsewhere; the achieved sparsity — ``channel_sparsity`` — may then be below the target).
    """
    if scope not in SCOPES:
        raise UserError(f"method.scope: channel selection supports {', '.join(SCOPES)} (got {scope!r})")
    try:
        sparsity = float(sparsity)
    except (TypeError, ValueError):
        raise UserError(f"method.sparsity: channel sparsity must be a number in [0, 1) (got {sparsity!r})") from None
    if not (0.0 <= sparsity < 1.0):
        raise UserError(f"method.sparsity: channel sparsity must be in [0, 1) (got {sparsity!r})")
    if not (0.0 <= float(min_keep_fraction) <= 1.0):
        raise UserError(f"method.min_keep_fraction: must be in [0, 1] (got {min_keep_fraction!r})")
    if int(min_keep) < 1:
        raise UserError(f"method.min_keep: every group keeps at least one channel (got {min_keep!r})")
    if not groups:
        raise UserError("channel pruning: the model has no prunable channel groups")
    missing = [g.name for g in groups if g.name not in scores]
    if missing:
        raise UserError(f"channel scores: missing for {', '.join(missing)}")
    flat_scores = []
    for g in groups:
        s = scores[g.name].detach().reshape(-1).to("cpu", torch.float64)
        if s.numel() != g.num_channels:
            raise UserError(f"channel scores: {g.name} has {g.num_channels} channels but {s.numel()} scores")
        if torch.isnan(s).any():
            raise UserError(f"channel scores: {g.name} has NaN scores")
        flat_scores.append(s)
    floors = [min_kept(g.num_channels, min_keep, min_keep_fraction) for g in groups]
    caps = [g.num_channels - f for g, f in zip(groups, floors)]  # the most each group may lose

    removed: list[list[int]] = []
    if scope == "layerwise":
        for s, cap in zip(flat_scores, caps):
            n_remove = min(round(sparsity * s.numel()), cap)
            order = torch.argsort(s, stable=True)  # ascending; ties → lower index first
            removed.append(order[:n_remove].tolist())
    else:
        total = sum(s.numel() for s in flat_scores)
        target = round(sparsity * total)
        if target > sum(caps):
            raise UserError(
                f"method.sparsity: cannot remove {target} of {total} channels ({sparsity:g}) while every "
                f"group keeps its floor (min_keep={min_keep}, min_keep_fraction={min_keep_fraction:g}); "
                f"at most {sum(caps)} ({sum(caps) / total:.4f}) can go"
            )
        values = torch.cat(flat_scores)
        group_id = torch.cat([torch.full((s.numel(),), i, dtype=torch.int64) for i, s in enumerate(flat_scores)])
        index = torch.cat([torch.arange(s.numel()) for s in flat_scores])
        # The concatenation is in (group, index) order, so a stable sort by score orders by (score, group, index).
        order = torch.argsort(values, stable=True)
        # Within a group the global order is its own ascending order, so a channel is removable iff fewer than
        # `cap` channels of its group precede it; removing the first `target` removable channels moves every
        # floored group's deficit onto the other groups' lowest channels.
        g_sorted = group_id[order]
        rank_in_group = torch.zeros_like(g_sorted)
        for i in range(len(flat_scores)):
            where = (g_sorted == i).nonzero().squeeze(1)
            rank_in_group[where] = torch.arange(where.numel())
        removable = rank_in_group < torch.tensor(caps, dtype=torch.int64)[g_sorted]
        chosen = order[removable][:target]
        removed = [[] for _ in flat_scores]
        for gi, ci in zip(group_id[chosen].tolist(), index[chosen].tolist()):
            removed[gi].append(ci)

    keep = {}
    for g, gone in zip(groups, removed):
        cut = set(gone)
        keep[g.name] = [i for i in range(g.num_channels) if i not in cut]
    return ChannelPlan.for_groups(groups, keep)
