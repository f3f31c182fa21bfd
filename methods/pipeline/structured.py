"""The pipeline channel-pruning methods share: train dense → score channels → select (plan) → compact → fine-tune.

A method only says how to score the output channels of each prunable group (``channel_scores``) and, if it
must, which groups it prunes (``pruned_groups``); selection (global or layerwise, with a per-layer floor so no
layer is emptied), physical compaction (torch-pruning's DependencyGraph) and recovery are shared.
``method.sparsity`` is the fraction of channels removed (of the groups the method prunes). ``method.prunable`` is
about weight tensors, not channels: channel methods ignore it (it only sets what the record's density counts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from foundations.checks import check, nondefault
from foundations.record import ExperimentRecord
from methods.pipeline.api import Method, MethodConfig, StageRef, Stages
from methods.pipeline.channels import channel_sparsity, compact, prunable_channel_groups, select_channels
from methods.pipeline.masks import folded
from methods.pipeline.recover import Recovery, recovery_config


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


class ChannelMethod(Method):
    kind = "structured"
    Config = ChannelConfig
    result_neutral: ClassVar[frozenset[str]] = frozenset(
        {"prunable.biases", "prunable.batchnorm", "prunable.classifier"}
    )

    def channel_scores(self, stages: Stages, model: torch.nn.Module, groups: list) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def pruned_groups(self, groups: list) -> list:
        """The channel groups this method prunes (default: every prunable group)."""
        return groups

    def plan_spec(self) -> dict:
        # Of the prunable set only `exclude` acts on channels (its groups are skipped); the other switches are
        # weight-level and result-neutral here. An empty exclude adds nothing, so earlier hashes stay.
        spec = {k: v for k, v in nondefault(self.cfg).items() if k not in ("name", "recovery", "prunable")}
        return {**spec, **({"exclude": list(self.cfg.prunable.exclude)} if self.cfg.prunable.exclude else {})}

    def source(self, stages: Stages) -> tuple[StageRef, StageRef]:
        dense = stages.dense_stage()
        return dense, dense

    def chain(self, stages: Stages) -> ExperimentRecord:
        start, dense = self.source(stages)

        def build(model):
            model = folded(model).cpu().eval()
            groups = self.pruned_groups(prunable_channel_groups(model, stages.example_input, self.cfg.prunable.exclude))
            scores = self.channel_scores(stages, model, groups)
            plan = select_channels(
                scores, groups, self.cfg.sparsity, scope=self.cfg.scope, min_keep_fraction=self.cfg.min_keep_fraction
            )
            return plan, compact(model, plan, stages.example_input), {"channel_sparsity": channel_sparsity(plan, model)}

        pruned = stages.plan_stage("prune", start, {**self.plan_spec(), "prune_seed": stages.seed("prune")}, build)
        final = stages.train_stage("recover", pruned, recovery_config(self.cfg.recovery, stages.train_config))
        return stages.finish(final, pruned=pruned, dense=dense, channel_sparsity=pruned.result["channel_sparsity"])
