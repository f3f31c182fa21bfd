"""L1-norm filter pruning — Li, Kadav, Durdanovic, Samet & Graf, "Pruning Filters for Efficient ConvNets", ICLR 2017.

§3.1: rank the filters of a layer by the sum of their absolute kernel weights Σ|F_j| and remove the smallest (the
structured analogue of magnitude pruning), the same fraction per layer by default; then retrain. For a Linear
layer a "filter" is one output neuron's weight row.

Residual-tied groups (a CIFAR ResNet stage's convs whose outputs are summed) share one set of channels, so one
layer's filter norms cannot rank them. ``tied_groups=skip`` (default) leaves them whole, as ThiNet's layer pairs do
(Li et al.'s CIFAR ResNets also prune only the first layer of each residual block, §4.3, recalled and not re-checked
against the text); ``tied_groups=first_layer`` prunes them
ranked by the group's first layer (the convention of an earlier version here). ``method.sparsity`` is then the
fraction removed from the groups that are pruned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from foundations.checks import check, moved_default
from foundations.errors import ConfigError
from methods.pipeline.api import Stages
from methods.pipeline.channels import ChannelGroup
from methods.pipeline.recover import FINE_TUNE, Recovery
from methods.pipeline.scores import l1_filter_scores
from methods.pipeline.structured import ChannelConfig, ChannelMethod, ScoredPlan

TIED = ("skip", "first_layer")


@dataclass
class L1FilterConfig(ChannelConfig):
    name: str = "l1_filter"
    sparsity: float = 0.5
    recovery: Recovery = moved_default(FINE_TUNE, hashed_as=Recovery(lr_scale=0.1))
    tied_groups: str = "skip"  # skip | first_layer (rank a residual-tied group by its first layer's filters)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            self.tied_groups in TIED,
            "method.tied_groups",
            f"must be one of {', '.join(TIED)} (got {self.tied_groups!r})",
        )


class L1Filter(ChannelMethod):
    name = "l1_filter"
    Config = L1FilterConfig

    def label(self, stages: Optional[Stages] = None) -> str:
        return self.name if self.cfg.tied_groups == "skip" else f"{self.name} (tied groups by first layer)"

    def pruned_groups(self, groups: list[ChannelGroup]) -> list[ChannelGroup]:
        if self.cfg.tied_groups == "first_layer":
            return groups
        single = [g for g in groups if len(g.layers) == 1]
        if not single:
            raise ConfigError(
                "method.tied_groups: every channel group of this model is residual-tied; "
                "use method.tied_groups=first_layer to prune them ranked by their first layer"
            )
        return single

    def pruner(self, stages: Stages) -> ScoredPlan:
        return self.scored_plan(stages, l1_filter_scores, self.pruned_groups)


METHOD = L1Filter
