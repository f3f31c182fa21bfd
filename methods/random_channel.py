"""Random channel pruning — Mittal, Tatikonda & Koushik, "Recovering from Random Pruning", WACV 2018:
remove a random fraction of the filters of every layer of the trained network, then fine-tune. Randomness
comes from ``seeds.prune``."""

from __future__ import annotations

from dataclasses import dataclass

from foundations.checks import moved_default
from methods.pipeline.api import Stages
from methods.pipeline.recover import FINE_TUNE, Recovery
from methods.pipeline.scores import random_filter_scores
from methods.pipeline.structured import ChannelConfig, ChannelMethod


@dataclass
class RandomChannelConfig(ChannelConfig):
    name: str = moved_default("random_channel", hashed_as="dense")
    sparsity: float = moved_default(0.5, hashed_as=0.0)
    recovery: Recovery = moved_default(FINE_TUNE, hashed_as=Recovery(lr_scale=0.1))


class RandomChannel(ChannelMethod):
    name = "random_channel"
    Config = RandomChannelConfig

    def channel_scores(self, stages: Stages, model, groups):
        return random_filter_scores(groups, stages.seed("prune"))


METHOD = RandomChannel
