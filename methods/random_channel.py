"""Random channel pruning — Mittal, Tatikonda & Koushik, "Recovering from Random Pruning", WACV 2018 (methods.md
§7e): remove a random fraction of the filters of every layer of the trained network, then fine-tune. Randomness
comes from ``seeds.prune``."""

from __future__ import annotations

import torch

from methods.structured import ChannelMethod


class RandomChannel(ChannelMethod):
    name = "random_channel"

    def channel_scores(self, exp, model, groups):
        gen = torch.Generator().manual_seed(exp.run.seed_for("prune"))
        return {g.name: torch.rand(g.num_channels, generator=gen) for g in groups}


METHOD = RandomChannel
