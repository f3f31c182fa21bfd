"""L1-norm filter pruning — Li, Kadav, Durdanovic, Samet & Graf, "Pruning Filters for Efficient ConvNets", ICLR 2017.

§3.1: rank the filters of a layer by the sum of their absolute kernel weights Σ|F_j| and remove the smallest (the
structured analogue of magnitude pruning), the same fraction per layer by default; then retrain. For a Linear
layer a "filter" is one output neuron's weight row. Coupled layers (ResNet stages) are ranked by the filters of the
group's first layer.
"""

from __future__ import annotations

from methods.pipeline.api import Stages
from methods.pipeline.scores import l1_filter_scores
from methods.pipeline.structured import ChannelMethod


class L1Filter(ChannelMethod):
    name = "l1_filter"

    def channel_scores(self, stages: Stages, model, groups):
        return l1_filter_scores(model, groups)


METHOD = L1Filter
