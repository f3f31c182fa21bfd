"""L1-norm filter pruning — Li, Kadav, Durdanovic, Samet & Graf, "Pruning Filters for Efficient ConvNets", ICLR 2017.

§3.1: rank the filters of a layer by the sum of their absolute kernel weights Σ|F_j| and remove the smallest (the
structured analogue of magnitude pruning), the same fraction per layer by default; then retrain. For a Linear
layer a "filter" is one output neuron's weight row. Coupled layers (ResNet stages) are ranked by the filters of the
group's first layer.
"""

from __future__ import annotations

from methods.structured import ChannelMethod


class L1Filter(ChannelMethod):
    name = "l1_filter"

    def channel_scores(self, exp, model, groups):
        modules = dict(model.named_modules())
        return {g.name: modules[g.name].weight.detach().abs().flatten(1).sum(1) for g in groups}


METHOD = L1Filter
