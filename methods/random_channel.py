"""Random channel pruning — Mittal, Tatikonda & Koushik, "Recovering from Random Pruning", WACV 2018:
remove a random fraction of the filters of every layer of the trained network, then fine-tune. Randomness
comes from ``seeds.prune``."""

from __future__ import annotations

from methods.pipeline.api import Stages
from methods.pipeline.scores import random_filter_scores
from methods.pipeline.structured import ChannelMethod


class RandomChannel(ChannelMethod):
    name = "random_channel"

    def channel_scores(self, stages: Stages, model, groups):
        return random_filter_scores(groups, stages.seed("prune"))


METHOD = RandomChannel
