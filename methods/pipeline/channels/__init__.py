"""Structured (channel) pruning machinery: coupled channel groups, selection, masking, surgery, ThiNet's math.

Typical use::

    groups = prunable_channel_groups(model, x)                  # x: a batch of valid inputs
    plan = select_channels(scores, groups, sparsity=0.5)        # scores: group name -> per-channel tensor
    masked = mask_channels(model, plan)                          # same architecture, removed channels output 0
    small = compact(model, plan, x)                              # narrower network, same outputs as ``masked``
"""

from methods.pipeline.channels.compact import compact, compact_widths, mask_channels
from methods.pipeline.channels.plan import (
    ChannelGroup,
    ChannelPlan,
    channel_sparsity,
    prunable_channel_groups,
    select_channels,
)
from methods.pipeline.channels.reconstruction import (
    collect_contributions,
    greedy_channel_selection,
    least_squares_scale,
    reconstruction_error,
)

__all__ = [
    "ChannelGroup",
    "ChannelPlan",
    "channel_sparsity",
    "prunable_channel_groups",
    "select_channels",
    "mask_channels",
    "compact",
    "compact_widths",
    "collect_contributions",
    "greedy_channel_selection",
    "least_squares_scale",
    "reconstruction_error",
]
