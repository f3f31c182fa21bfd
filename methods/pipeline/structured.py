"""The chain every channel-pruning method shares, and the parts a method composes it from.

    train dense → pruning start → prune (plan stages) → fine-tune → record

As Torch-Pruning separates the importance of channels from the pruner that acts on it, a method here is made of:

- a **pruning start** (``pruning_start``): the dense model, or a training of the method's own (slimming's
  sparsity training of the BN scales);
- a **pruner** (``pruner``): the plan stages that remove channels. ``ScoredPlan`` is the one-shot pruner: the
  groups a method prunes (``prunable_channel_groups``, filtered by ``GroupChoice``: l1_filter leaves residual-tied
  groups whole) ranked by an ``Importance`` (|W| L1 norms, random scores, |γ|), cut by ``select_channels`` (global
  or layerwise, with a per-layer floor so that no layer is emptied) and compacted (torch-pruning's
  DependencyGraph). Slimming's passes are one ``ScoredPlan`` each; ThiNet's pruner searches layer by layer
  (``methods/thinet.py``);
- a **recovery** (``recovery()``): the fine-tune's schedule relative to the dense one;
- its **outputs** (``outputs``): what it reports beyond the common record.

``method.sparsity`` is the fraction of channels removed (of the groups the method prunes). ``method.prunable`` is
about weight tensors, not channels: of it only ``exclude`` acts (its groups are skipped); the other switches only
set what the record's density counts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional, Protocol

import torch
from torch import nn

from foundations.checks import check, nondefault
from foundations.record import ExperimentRecord
from methods.pipeline.api import Method, MethodConfig, PlanStep, StageRef, Stages
from methods.pipeline.channels import ChannelGroup, channel_sparsity, compact, prunable_channel_groups, select_channels
from methods.pipeline.channels.plan import compose, out_channels, validate_plan
from methods.pipeline.masks import folded
from methods.pipeline.recover import Recovery, recovery_config
from methods.pipeline.results import Accuracy, PlanResult, TrainResult

# Per-group channel scores, higher = keep: (the model to prune, its groups) -> {group name: scores}
Importance = Callable[[nn.Module, list[ChannelGroup]], dict[str, torch.Tensor]]
# Which of the prunable groups a method prunes (default: all)
GroupChoice = Callable[[list[ChannelGroup]], list[ChannelGroup]]


@dataclass
class ChannelConfig(MethodConfig):
    scope: str = "layerwise"  # layerwise (Li et al., Mittal et al.: the same fraction per layer) | global
    min_keep_fraction: float = 0.0  # per-layer floor; at least one channel is always kept
    recovery: Recovery = field(default_factory=lambda: Recovery(lr_scale=0.1))

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            self.scope in ("global", "layerwise"), "method.scope", f"must be global or layerwise (got {self.scope!r})"
        )
        check(0 <= self.min_keep_fraction < 1, "method.min_keep_fraction", "must be in [0, 1)")
        check(
            self.recovery.protocol == "fine_tune",
            "method.recovery.protocol",
            f"channel methods fine-tune the compacted network (fine_tune); {self.recovery.protocol} is offered by the "
            f"weight-level methods (magnitude, obd, random after training)",
        )


@dataclass(frozen=True)
class ChannelFacts:
    """What a one-shot plan stage stores about its plan."""

    channel_sparsity: float  # of the plan over the base architecture (removed / total channels of its groups)

    @classmethod
    def of(cls, total: float, step: float) -> ChannelFacts:
        return cls(total)


class Pruner(Protocol):
    """A channel method's plan stages from ``start``, in order; the last one's plan covers every step."""

    def prune(self, stages: Stages, start: StageRef) -> list[StageRef[PlanResult[Any]]]: ...


def every_group(groups: list[ChannelGroup]) -> list[ChannelGroup]:
    return groups


@dataclass(frozen=True)
class ScoredPlan:
    """One-shot channel pruning in one plan stage: ``groups`` of the model ranked by ``importance``, the lowest
    ``sparsity`` removed by ``select_channels``, the model compacted.

    From a source that has a plan already (slimming's later passes) the new plan indexes the compacted model's
    channels; it is composed with the source's into one plan over the base architecture, which is what the stage
    stores (``compose``). ``facts``: what the stage stores about its plan (``ChannelFacts`` or a subclass)."""

    importance: Importance
    sparsity: float
    scope: str
    min_keep_fraction: float
    exclude: list[str]
    spec: dict  # hashed: everything in the method's config that changes the plan
    groups: GroupChoice = every_group
    name: str = "prune"
    facts: type[ChannelFacts] = ChannelFacts

    def prune(self, stages: Stages, start: StageRef) -> list[StageRef[PlanResult[Any]]]:
        return [self.stage(stages, start)]

    def stage(self, stages: Stages, start: StageRef) -> StageRef[PlanResult[Any]]:
        previous = start.plan() if start.has_plan() else None

        def build(model: nn.Module) -> PlanStep[ChannelFacts]:
            base = stages.base_model().eval()  # the architecture the stored plan indexes
            model = folded(model).cpu().eval()
            groups = self.groups(prunable_channel_groups(model, stages.example_input, self.exclude))
            step = select_channels(
                self.importance(model, groups),
                groups,
                self.sparsity,
                scope=self.scope,
                min_keep_fraction=self.min_keep_fraction,
            )
            plan = compose(previous, step)
            validate_plan(plan, {key: out_channels(base.get_submodule(key)) for key in plan.keep})
            facts = self.facts.of(channel_sparsity(plan, base), channel_sparsity(step, model))
            return PlanStep(plan, compact(model, step, stages.example_input), facts)

        return stages.plan_stage(self.name, start, self.spec, build, self.facts)


class ChannelMethod(Method):
    """A channel method: its pruning start, pruner, recovery and outputs, in the one chain (``chain``)."""

    kind = "structured"
    Config = ChannelConfig
    result_neutral: ClassVar[frozenset[str]] = frozenset(
        {"prunable.biases", "prunable.batchnorm", "prunable.classifier"}
    )

    def plan_spec(self) -> dict:
        """The method's config as its plan stages hash it. Of the prunable set only ``exclude`` acts on channels
        (its groups are skipped); the other switches are weight-level and result-neutral here. An empty exclude
        adds nothing, so earlier hashes stay."""
        spec = {k: v for k, v in nondefault(self.cfg).items() if k not in ("name", "recovery", "prunable")}
        return {**spec, **({"exclude": list(self.cfg.prunable.exclude)} if self.cfg.prunable.exclude else {})}

    def scored_plan(self, stages: Stages, importance: Importance, groups: GroupChoice = every_group) -> ScoredPlan:
        """The one-shot pruner on this method's config (``method.sparsity``, ``scope``, ``min_keep_fraction``)."""
        return ScoredPlan(
            importance,
            self.cfg.sparsity,
            self.cfg.scope,
            self.cfg.min_keep_fraction,
            list(self.cfg.prunable.exclude),
            {**self.plan_spec(), "prune_seed": stages.seed("prune")},
            groups,
        )

    def recovery(self) -> Recovery:
        return self.cfg.recovery

    def pruning_start(self, stages: Stages, dense: StageRef[TrainResult]) -> StageRef:
        """The stage whose weights are pruned: the dense model unless the method trains its own."""
        return dense

    def pruner(self, stages: Stages) -> Pruner:
        raise NotImplementedError

    def outputs(self, stages: Stages, start: StageRef, plans: list[StageRef[PlanResult[Any]]]) -> Any:
        """The method's ``Outputs``, from its pruning start and its plan stages."""
        return self.Outputs()

    def before_pruning(self, plans: list[StageRef[PlanResult[Any]]]) -> Optional[Accuracy]:
        """The weights the record's ``test_loss_before_pruning`` is of: what the last plan stage pruned."""
        return plans[-1].result.before_pruning

    def chain(self, stages: Stages) -> ExperimentRecord:
        dense = stages.dense_stage()
        start = self.pruning_start(stages, dense)
        plans = self.pruner(stages).prune(stages, start)
        final = stages.train_stage("recover", plans[-1], recovery_config(self.recovery(), stages.train_config))
        return stages.finish(
            final,
            pruned=plans[-1],
            dense=dense,
            outputs=self.outputs(stages, start, plans),
            before_pruning=self.before_pruning(plans),
        )
