"""Random channel pruning — Mittal, Tatikonda & Koushik, "Recovering from Random Pruning", WACV 2018:
remove a random fraction of the filters of every layer of the trained network, then fine-tune. Randomness
comes from ``seeds.prune``."""

from __future__ import annotations

from dataclasses import dataclass

from foundations.checks import moved_default
from methods.pipeline.api import Stages
from methods.pipeline.recover import FINE_TUNE, Recovery
from methods.pipeline.scores import random_filter_scores
from methods.pipeline.structured import ChannelConfig, ChannelMethod, ScoredPlan


@dataclass
class RandomChannelConfig(ChannelConfig):
    name: str = "random_channel"
    sparsity: float = 0.5
    recovery: Recovery = moved_default(FINE_TUNE, hashed_as=Recovery(lr_scale=0.1))


class RandomChannel(ChannelMethod):
    name = "random_channel"
    Config = RandomChannelConfig

    def pruner(self, stages: Stages) -> ScoredPlan:
        seed = stages.seed("prune")
        return self.scored_plan(stages, lambda model, groups: random_filter_scores(groups, seed))


METHOD = RandomChannel
