"""ThiNet — Luo, Wu & Lin, "ThiNet: A Filter Level Pruning Method for Deep Neural Network Compression", ICCV 2017.

Filter c of layer i is judged by layer i+1: remove it if layer i+1's output hardly changes without its input channel
c (§3.1). Layer by layer (§3, Alg. 1 inside the loop of Fig. 1), in module order, each layer i is pruned from the
*current* (already partly pruned and fine-tuned) network:

1. Collect the training set (§3.2): run ``n_images`` training images (a fixed subset, ``seeds.prune``) through the
   current model in eval mode, hook the input of layer i+1 and, at ``locations_per_image`` random (output channel,
   position) locations per image (paper: 10), record x̂ (each input channel's contribution through the kernel) and
   ŷ = y − b = Σ_c x̂_c (eq. 2–4). ``methods.pipeline.channels.reconstruction.collect_contributions``.
2. Select (§3.3): the removed set T, |T| = round(r_removed · C), minimizing Σ_i (Σ_{j∈T} x̂_{i,j})² (eq. 5), grown
   greedily one channel at a time (eq. 6, Alg. 1). ``method.sparsity`` is the fraction *removed* per layer; the
   paper's compression rate r is the fraction *kept* (ThiNet-50 = ``sparsity: 0.5``, ThiNet-30 = ``sparsity: 0.7``).
   Every layer keeps ``max(1, ceil(min_keep_fraction · C))`` channels.
3. Rescale (§3.4, eq. 7): ŵ = argmin Σ_i (ŷ_i − ŵᵀ x̂_{i,S})² by least squares, multiplied into layer i+1's kept
   input-channel slices (``rescale: true``, as the paper).
4. Prune: filter c of layer i (weight rows, bias, the following BN's γ, β and running statistics) and input channel c
   of layer i+1 (for a Linear after a flatten, its ``in_features / C`` features of channel c) are cut out
   (``methods.pipeline.channels.compact``).
5. Fine-tune briefly (paper, as recalled, not checked against its text: ~1 epoch at LR 1e-3) —
   ``layer_fine_tune_epochs`` (or ``layer_fine_tune_iterations``) at ``train.lr × layer_fine_tune_lr_scale``,
   constant LR, last weights kept, a data order of its own per layer (``foundations.seeds.step_seed`` of
   ``seeds.data``). Not after the last layer: the longer final fine-tune (``recovery``; paper ~12 epochs with ×0.1
   steps) follows immediately.

Each layer's pruning (steps 1–4) is a plan stage of the store (``prune<k>``) and each per-layer fine-tune a train
stage (``fine_tune<k>``), so the fine-tunes log live curves, a killed run resumes inside the layer it was at, and
two configs that agree on the first layers share them. The random (output channel, position) draws of step 1 come
from one generator seeded by ``seeds.prune`` and running through the layers: each plan stage stores its state for
the next one.

Which layers: every prunable channel group (``methods.pipeline.channels.prunable_channel_groups``) that is a single
Conv2d/Linear whose output feeds exactly one Conv2d/Linear (conv→conv, conv→linear through a flatten or global
pool, linear→linear; the classifier is never pruned but is the "layer i+1" of the last hidden layer). Groups tied by a
residual sum (CIFAR ResNet stages) are skipped, as the paper's ResNet-50 prunes only the first two convs of each
bottleneck; ``layers`` restricts the list further (the paper's VGG-16 prunes conv1_1 … conv4_3 only). A depthwise conv
between the two (MobileNet's expansion conv → depthwise conv → projection) passes channel c through, so the pair is
(expansion, projection) and the depthwise conv loses the same channels (our extension; the paper has no depthwise
convs). A model without any such pair (a single Linear) is refused in ``validate``, with each group's reason.

Paper vs official code. No pruning code is referenced by the paper (``Roll920/ThiNet`` holds only the Caffe
models and a README). A later script for VGG-16 (ThiNet_Code, ``compress_model.py``; seen only in a third-party copy,
not verified against the authors' repository) differs:
- ``selection: greedy_keep``: it grows the *kept* set S instead (``value_sum``): at every step the channel whose
  single-coefficient fit best reduces the current residual y − X_S ŵ_S is added and ŵ_S is refitted by least squares
  (forward selection / OMP); for fc layers (``value_sum_another``) S is grown to minimize ‖Σ_{j∈S} x̂_j − ŷ‖².
  ``selection: greedy_remove`` (default) is the paper's Alg. 1.
- it keeps ``int(C · r)`` channels (truncation); here ``round`` of the removed count, as the other channel methods.
- its layers' selection uses the network pruned so far without BN (VGG-16 has none); here BN statistics are used in
  eval mode and the removed filter's BN entries go with it.
The record's ``outputs``: the per-layer wall time of the search (sampling forward pass + collection + greedy + least
squares) as ``thinet_selection_seconds`` (the issue asks to report it); ``thinet_reconstruction`` gives, per layer,
the relative reconstruction error Σ(ŷ − ŷ_S)²/Σŷ² on the sample without and with the rescaling.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Optional

import torch
from torch import nn

from foundations.checks import check, moved_default
from foundations.errors import ConfigError, RefusedModel
from foundations.seeds import generator, step_seed
from foundations.training import TrainConfig
from methods.pipeline.api import PlanStep, StageRef, Stages
from methods.pipeline.channels import compact, prunable_channel_groups
from methods.pipeline.channels.plan import ChannelGroup, ChannelPlan, TraceError, compose, min_kept
from methods.pipeline.channels.reconstruction import (
    collect_contributions,
    greedy_channel_selection,
    least_squares_scale,
    reconstruction_error,
)
from methods.pipeline.masks import folded
from methods.pipeline.recover import FINE_TUNE, Recovery
from methods.pipeline.results import Accuracy, PlanResult
from methods.pipeline.structured import ChannelConfig, ChannelMethod

SELECTIONS = ("greedy_remove", "greedy_keep")
# the config fields that change no layer's search itself, only which layers or what happens between them
NOT_IN_A_LAYER = (
    "layers",
    "exclude",
    "layer_fine_tune_epochs",
    "layer_fine_tune_iterations",
    "layer_fine_tune_lr_scale",
)


@dataclass
class ThiNetConfig(ChannelConfig):
    n_images: int = 1000  # training images sampled per layer (paper, ImageNet: 10 per class)
    locations_per_image: int = 10  # (output channel, position) samples per image (paper: 10)
    rescale: bool = True  # eq. 7 least-squares scaling of layer i+1's kept input slices (paper: yes)
    selection: str = "greedy_remove"  # greedy_remove (paper Alg. 1) | greedy_keep (ThiNet_Code value_sum)
    layers: Optional[list[str]] = None  # group names to prune (module order kept); None = every layer pair
    layer_fine_tune_epochs: int = 1  # brief fine-tune after each layer but the last (paper ~1 epoch); 0 = none
    layer_fine_tune_iterations: Optional[int] = None  # overrides layer_fine_tune_epochs when set
    layer_fine_tune_lr_scale: float = 0.1  # × train.lr (paper: 1e-3 after a 1e-2 … schedule)
    batch_size: int = 256  # images per forward pass while collecting (locations are drawn per batch: hashed)
    name: str = "thinet"
    sparsity: float = 0.5
    recovery: Recovery = moved_default(FINE_TUNE, hashed_as=Recovery(lr_scale=0.1))

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            self.scope == "layerwise",
            "method.scope",
            f"ThiNet prunes the same fraction of every layer (§4); only layerwise is defined (got {self.scope!r})",
        )
        check(self.n_images >= 1, "method.n_images", f"must be >= 1 (got {self.n_images})")
        check(
            self.locations_per_image >= 1,
            "method.locations_per_image",
            f"must be >= 1 (got {self.locations_per_image})",
        )
        check(
            self.selection in SELECTIONS,
            "method.selection",
            f"must be one of {', '.join(SELECTIONS)} (got {self.selection!r})",
        )
        check(
            self.layer_fine_tune_epochs >= 0,
            "method.layer_fine_tune_epochs",
            f"must be >= 0 (got {self.layer_fine_tune_epochs})",
        )
        check(
            self.layer_fine_tune_iterations is None or self.layer_fine_tune_iterations >= 0,
            "method.layer_fine_tune_iterations",
            f"must be >= 0 (got {self.layer_fine_tune_iterations})",
        )
        check(
            self.layer_fine_tune_lr_scale > 0,
            "method.layer_fine_tune_lr_scale",
            f"must be > 0 (got {self.layer_fine_tune_lr_scale})",
        )
        check(self.batch_size >= 1, "method.batch_size", f"must be >= 1 (got {self.batch_size})")


# ------------------------------------------------------------------------------------------------------ layer pairs
def _depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups == module.in_channels == module.out_channels > 1


def pair_of(model: nn.Module, group: ChannelGroup) -> tuple[Optional[str], str]:
    """(layer i+1, "") when ThiNet can prune ``group``, else (None, the reason).

    Layer i is the group's one producing layer; depthwise convs in the group (MobileNet's expansion → depthwise) pass
    channel c through unchanged, so layer i+1 is the layer consuming the last of them and x̂_c is read at its input.
    Residual-tied groups (several producers) and channels read by several layers have no single layer i+1 whose
    output ThiNet could reconstruct; a consumer that also reads other channels (a concatenation) neither.
    """
    producers = [layer for layer in group.layers if not _depthwise(model.get_submodule(layer))]
    if len(producers) != 1:
        return None, f"{len(producers)} coupled producing layers (a residual sum)"
    if len(group.consumers) != 1:
        return None, f"its channels feed {len(group.consumers)} layers"
    consumer = group.consumers[0]
    module = model.get_submodule(consumer)
    width: int = module.in_channels if isinstance(module, nn.Conv2d) else module.in_features  # type: ignore[assignment]
    if isinstance(module, nn.Conv2d) and width != group.num_channels:
        return (
            None,
            f"{consumer} reads {width} channels, {group.num_channels} of them from this layer (a concatenation)",
        )
    if isinstance(module, nn.Linear) and width % group.num_channels:
        return None, f"{consumer} reads {width} features, not a multiple of the {group.num_channels} channels"
    return consumer, ""


def layer_pairs(
    model: nn.Module, groups: list[ChannelGroup], layers: Optional[list[str]] = None
) -> list[tuple[ChannelGroup, str]]:
    """(group of layer i, name of layer i+1) for every group ThiNet can prune (``pair_of``), in module order."""
    pairs = [(g, consumer) for g in groups for consumer, _ in [pair_of(model, g)] if consumer is not None]
    if layers is not None:
        known = [g.name for g, _ in pairs]
        unknown = [name for name in layers if name not in known]
        if unknown:
            raise ConfigError(
                f"method.layers: {', '.join(map(str, unknown))} not a prunable ThiNet layer; "
                f"choose from {', '.join(known) or '(none)'}"
            )
        pairs = [(g, c) for g, c in pairs if g.name in set(layers)]
    return pairs


# ------------------------------------------------------------------------------------------------------ selection
def greedy_keep_selection(X: torch.Tensor, y: torch.Tensor, n_keep: int) -> list[int]:
    """ThiNet_Code ``value_sum``: forward selection of the kept set S (|S| = ``n_keep``).

    Each step adds the channel j whose best single-coefficient fit t·x_j most reduces the residual r = y − X_S ŵ_S,
    i.e. the largest (x_jᵀr)² / ‖x_j‖², then refits ŵ_S by least squares. Ties → lower index. Returns the removed
    channels (complement of S, ascending) so that both selections have the same output.
    """
    X64 = X.detach().to(torch.float64)
    y64 = y.detach().to(torch.float64).reshape(-1)
    C = X64.shape[1]
    col_sq = (X64 * X64).sum(0)
    chosen: list[int] = []
    residual = y64.clone()
    taken = torch.zeros(C, dtype=torch.bool)
    for _ in range(n_keep):
        gain = torch.where(col_sq > 0, (X64.T @ residual) ** 2 / col_sq.clamp_min(1e-300), torch.zeros_like(col_sq))
        gain[taken] = -1.0
        j = int(torch.argmax(gain))  # first maximum on ties
        chosen.append(j)
        taken[j] = True
        w = least_squares_scale(X64[:, chosen], y64)
        residual = y64 - X64[:, chosen] @ w
    return [c for c in range(C) if not taken[c]]


def n_removed(channels: int, sparsity: float, min_keep_fraction: float) -> int:
    """round(sparsity · C), capped so that max(1, ceil(min_keep_fraction · C)) channels stay."""
    return min(round(sparsity * channels), channels - min_kept(channels, 1, min_keep_fraction))


@torch.no_grad()
def _layer_inputs(model: nn.Module, consumer: str, sample, batch_size: int):
    """Yield the inputs of ``consumer`` batch by batch (eval mode) over the sampled images."""
    module = model.get_submodule(consumer)
    captured = []
    handle = module.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    try:
        for x, _ in sample.batches(batch_size):
            captured.clear()
            model(x)
            yield captured[0]
    finally:
        handle.remove()


def _collect(model, consumer: str, channels: int, sample, cfg: ThiNetConfig, generator: torch.Generator):
    layer = model.get_submodule(consumer)
    Xs, ys = [], []
    for inputs in _layer_inputs(model, consumer, sample, cfg.batch_size):
        if isinstance(layer, nn.Linear):  # a flattened input: channel c owns in_features / C consecutive features
            inputs = inputs.reshape(inputs.shape[0], channels, -1)
        X, y = collect_contributions(layer, inputs, cfg.locations_per_image, generator)
        Xs.append(X)
        ys.append(y)
    return torch.cat(Xs), torch.cat(ys)


@torch.no_grad()
def _scale_input_slices(layer: nn.Module, channels: int, kept: list[int], scale: torch.Tensor) -> None:
    """Multiply input channel kept[k] of ``layer`` by scale[k] (all its kernel taps / flattened features)."""
    if not isinstance(layer, (nn.Conv2d, nn.Linear)):
        raise TypeError(f"ThiNet rescales Conv2d/Linear inputs, not {type(layer).__name__}")
    weight = layer.weight
    view = weight.view(weight.shape[0], channels, -1)  # conv O×C×kh×kw and Linear O×(C·P) alike
    index = torch.tensor(kept, dtype=torch.long)
    view[:, index, :] *= scale.to(weight.dtype).view(1, -1, 1)


@dataclass(frozen=True)
class LayerFacts:
    """What one layer's plan stage stores about its step."""

    layer: str  # the group pruned (layer i)
    kept_channels: int
    search_seconds: float  # sampling forward pass + collection + greedy search + least squares
    reconstruction: dict[str, Any]  # relative error Σ(ŷ − ŷ_S)²/Σŷ² without and with the rescaling, sample size


@dataclass
class ThiNetOutputs:
    thinet_selection_seconds: dict[str, float]  # per layer: the search's wall time (LayerFacts.search_seconds)
    thinet_reconstruction: dict[str, dict[str, Any]]  # per layer: {"unscaled", "rescaled", "samples"}


def prune_layer(
    current: nn.Module,
    group: ChannelGroup,
    consumer: str,
    sample,
    cfg: ThiNetConfig,
    *,
    generator: torch.Generator,
    example_input: torch.Tensor,
) -> tuple[ChannelPlan, nn.Module, LayerFacts]:
    """Steps 1–4 on layer i = ``group`` of ``current`` (a plain model, eval mode, modified by the rescaling), judged
    by ``consumer`` (layer i + 1): the plan of this step over ``current``'s channels (the group is still whole, so
    they are the base architecture's), the compacted model and the step's facts."""
    C = group.num_channels  # layers are pruned once each, so layer i still has all its channels
    current.eval()
    start = time.perf_counter()
    X, y = _collect(current, consumer, C, sample, cfg, generator)
    n_remove = n_removed(C, cfg.sparsity, cfg.min_keep_fraction)
    if cfg.selection == "greedy_remove":
        removed = greedy_channel_selection(X, n_remove)
    else:
        removed = greedy_keep_selection(X, y, C - n_remove)
    kept = [c for c in range(C) if c not in set(removed)]
    scale = least_squares_scale(X[:, kept], y) if cfg.rescale else None
    seconds = time.perf_counter() - start
    norm = float((y.double() ** 2).sum()) or 1.0
    rescaled = reconstruction_error(X, y, kept, scale) / norm if scale is not None else None
    reconstruction = {
        "unscaled": reconstruction_error(X, y, kept) / norm,
        "rescaled": rescaled,
        "samples": int(X.shape[0]),
    }
    if scale is not None:
        _scale_input_slices(current.get_submodule(consumer), C, kept, scale)
    step = ChannelPlan(
        keep={group.name: kept},
        members={group.name: dict(group.bn_of)},
        bn_channels={group.name: dict(group.bn_channels)} if group.bn_channels else {},
    )
    facts = LayerFacts(group.name, len(kept), seconds, reconstruction)
    return step, compact(current, step, example_input).eval(), facts


_GENERATOR = "generator"  # the state key of the sampling generator a layer's stage leaves for the next


@dataclass(frozen=True)
class LayerByLayer:
    """ThiNet's pruner (Fig. 1): for each layer pair in module order, a plan stage pruning layer i of the current
    network, then (but after the last) a brief fine-tune of the whole network."""

    method: ThiNet

    def prune(self, stages: Stages, start: StageRef) -> list[StageRef[PlanResult[Any]]]:
        cfg, prune_seed = self.method.cfg, stages.seed("prune")
        pairs = self.method.pairs(stages.base_model().eval(), stages.example_input)
        sample = stages.data.train.subset(cfg.n_images, seed=prune_seed)
        fine_tune = self.method.layer_fine_tune(stages)
        spec = {k: v for k, v in self.method.plan_spec().items() if k not in NOT_IN_A_LAYER}
        source, previous, plans = start, None, []
        for k, (group, consumer) in enumerate(pairs, start=1):

            def build(model: nn.Module, group=group, consumer=consumer, previous=previous, source=source):
                draws = generator(prune_seed) if previous is None else torch.Generator()
                if previous is not None:  # the draws continue where the previous layer's left off
                    draws.set_state(previous.state()[_GENERATOR])
                step, compacted, facts = prune_layer(
                    folded(model).cpu().eval(),
                    group,
                    consumer,
                    sample,
                    cfg,
                    generator=draws,
                    example_input=stages.example_input,
                )
                plan = compose(source.plan() if source.has_plan() else None, step)
                return PlanStep(plan, compacted, facts, {_GENERATOR: draws.get_state()})

            layer_spec = {**spec, "prune_seed": prune_seed, "layer": k, "group": group.name}
            pruned = stages.plan_stage(f"prune{k}", source, layer_spec, build, LayerFacts)
            plans.append(pruned)
            previous = source = pruned
            if fine_tune is not None and k < len(pairs):
                # a new optimizer per layer (zero momentum), and a data order of its own
                data_seed = step_seed(stages.seed("data"), k - 1)
                source = stages.train_stage(f"fine_tune{k}", pruned, fine_tune, data_seed=data_seed)
        return plans


# ------------------------------------------------------------------------------------------------------ method
class ThiNet(ChannelMethod):
    name = "thinet"
    Config = ThiNetConfig
    Outputs = ThiNetOutputs

    def pairs(self, model: nn.Module, example_input: torch.Tensor) -> list[tuple[ChannelGroup, str]]:
        groups = prunable_channel_groups(model, example_input, self.cfg.prunable.exclude)
        return layer_pairs(model, groups, self.cfg.layers)

    def _refusals(self, model: nn.Module, example_input: torch.Tensor) -> str:
        """Why each channel group is no ThiNet pair (the first three), for the error message."""
        try:
            groups = prunable_channel_groups(model, example_input, self.cfg.prunable.exclude)
        except RefusedModel:
            return ""
        why = [f"{g.name}: {pair_of(model, g)[1]}" for g in groups][:3]
        return f" ({'; '.join(why)})" if why else ""

    def validate(self, stages: Stages) -> None:
        model = stages.base_model()
        try:
            pairs = self.pairs(model, stages.example_input)
        except TraceError:
            raise
        except RefusedModel:  # e.g. no Linear classifier at all, or only the classifier: no pair either
            pairs = []
        if not pairs:
            reasons = self._refusals(model, stages.example_input)
            raise RefusedModel(
                f"method=thinet: model {stages.model_name} has no prunable layer pair (a Conv2d/Linear "
                f"whose channels feed exactly one Conv2d/Linear){reasons}; ThiNet needs at least two "
                f"weight layers in a chain, e.g. one hidden layer (model.widths=[h])"
            )

    def ignored_fields(self) -> dict[str, str]:
        if self.cfg.layer_fine_tune_iterations is None:
            return super().ignored_fields()
        wins = "method.layer_fine_tune_iterations is set and decides the per-layer fine-tune's length"
        return {**super().ignored_fields(), "layer_fine_tune_epochs": wins}

    def layer_fine_tune(self, stages: Stages) -> Optional[TrainConfig]:
        """The schedule of the brief fine-tune after each layer (None: none)."""
        cfg = self.cfg
        if cfg.layer_fine_tune_iterations == 0 or (
            cfg.layer_fine_tune_iterations is None and cfg.layer_fine_tune_epochs == 0
        ):
            return None
        base = stages.train_config
        return replace(
            base,
            lr=base.lr * cfg.layer_fine_tune_lr_scale,
            schedule="constant",
            milestones=[],
            warmup_iterations=0,
            selection="last",
            eval_every=0,
            epochs=max(cfg.layer_fine_tune_epochs, 1),
            iterations=cfg.layer_fine_tune_iterations,
        )

    def pruner(self, stages: Stages) -> LayerByLayer:
        return LayerByLayer(self)

    def before_pruning(self, plans: list[StageRef[PlanResult[Any]]]) -> Optional[Accuracy]:
        return plans[0].result.before_pruning  # the layer-by-layer pruning as a whole started from the dense model

    def outputs(self, stages: Stages, start: StageRef, plans: list[StageRef[PlanResult[Any]]]) -> ThiNetOutputs:
        layers = [plan.result.facts for plan in plans]
        return ThiNetOutputs(
            thinet_selection_seconds={f.layer: f.search_seconds for f in layers},
            thinet_reconstruction={f.layer: f.reconstruction for f in layers},
        )


METHOD = ThiNet
