"""BatchNorm statistics re-estimated after pruning ("BN recalibration", "adaptive BN").

After a deletion every pre-BN activation loses the removed weights' contribution, so its mean and variance change,
while in eval mode BatchNorm still normalizes with the dense network's ``running_mean`` / ``running_var``.
Re-estimating them on training data changes no weight. The convention is ``torch.optim.swa_utils.update_bn``
(PyTorch's standard recipe; Izmailov et al., UAI 2018, "Averaging weights leads to wider optima", the paragraph
"Batch normalization" of the SWA algorithm): reset the running statistics, set ``momentum=None`` (a cumulative,
equal-weight average over the batches), forward the batches without gradients, restore the momenta and modes. So
``running_mean`` is the mean of the per-batch means and ``running_var`` the mean of the per-batch *unbiased*
variances (what BatchNorm's train-mode update accumulates). Unlike ``update_bn``, only the BatchNorm layers are in
train mode: dropout and everything else stay in eval mode (the statistics are those of the evaluated network).
EagleEye (Li et al., ECCV 2020, "EagleEye: fast sub-net evaluation for efficient neural network pruning", adaptive
batch normalization) forwards ~50 training batches at momentum 0.1 instead; the cumulative average over the same
batches weighs them equally and leaves nothing of the stale statistics.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

_BATCHNORM = nn.modules.batchnorm._BatchNorm


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The model's BatchNorm layers that keep running statistics (the ones evaluation normalizes with)."""
    return [m for m in model.modules() if isinstance(m, _BATCHNORM) and m.track_running_stats]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[Tensor]) -> int:
    """Re-estimate every BatchNorm's running statistics of ``model`` (masks active in its forward) over ``batches``
    of inputs: reset, cumulative average (``momentum=None``), BatchNorm alone in train mode, no gradients. Returns
    the number of batches forwarded; the model's modes and the layers' momenta are restored."""
    layers = batchnorm_layers(model)
    modes = {m: m.training for m in model.modules()}
    momenta = [m.momentum for m in layers]
    count = 0
    try:
        model.eval()
        for bn in layers:
            bn.reset_running_stats()  # mean 0, var 1, num_batches_tracked 0: nothing of the dense network's left
            bn.momentum = None
            bn.train()
        for x in batches:
            model(x)
            count += 1
    finally:
        for bn, momentum in zip(layers, momenta):
            bn.momentum = momentum
        for module, training in modes.items():
            module.training = training
    return count
