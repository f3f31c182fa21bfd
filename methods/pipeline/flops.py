"""The FLOP count of the Rethinking code (Liu et al. 2019, ``Eric-mingjie/rethinking-network-pruning``), which
Scratch-B's budget is defined by: ``compute_flops.py`` (structured) / ``count_flops.py`` (weight level), one example,
``multiply_adds=True``:

- Conv2d: (2 · nonzero kernel weights + Cout if biased) · H_out · W_out
- Linear: 2 · nonzero weights + out features if biased
- BatchNorm: 2 · input elements; ReLU: input elements; max/avg pooling: k_h · k_w · output elements
- not counted (as there): adaptive/global pooling, residual additions, flatten

Differences, because our models are not theirs: operations are counted where they run (an ``aten`` op), so the
functional ``torch.relu`` / ``F.max_pool2d`` of these models count like their ``nn.ReLU`` / ``nn.MaxPool2d`` modules;
BatchNorm1d (the MLPs' per-neuron BN) counts like their BatchNorm2d; and a Linear counts only nonzero weights, as
their Conv2d does (their Linear hook counts every weight: on their CIFAR nets the classifier is a negligible share of
the FLOPs, on an MLP it would make every mask look dense). The conv/linear-only multiply-add count of the records
(``runners.metrics``) is the other choice Scratch-B offers.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from foundations.training import eval_mode

aten = torch.ops.aten


def _nonzero(t: torch.Tensor) -> int:
    return int((t != 0).sum())


def _pool_window(kernel) -> int:
    sizes = list(kernel) if isinstance(kernel, (list, tuple)) else [kernel]
    return math.prod(sizes * 2 if len(sizes) == 1 else sizes)  # k_h · k_w; one number means a square window


class _Counter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        packet = func.overloadpacket
        if packet is aten.convolution:
            weight, bias = args[1], args[2]
            spatial = out[0, 0].numel()  # H_out · W_out of one output channel
            self.flops += (2 * _nonzero(weight) + (out.shape[1] if bias is not None else 0)) * spatial
        elif packet is aten.addmm:  # Linear with bias: bias + x @ Wᵀ
            self.flops += 2 * _nonzero(args[2]) + args[0].numel()
        elif packet is aten.mm:  # Linear without bias
            self.flops += 2 * _nonzero(args[1])
        elif packet in (
            aten.native_batch_norm,
            aten._native_batch_norm_legit_no_training,
            aten._native_batch_norm_legit,
        ):
            self.flops += 2 * args[0].numel()
        elif packet in (aten.relu, aten.relu_):
            self.flops += args[0].numel()
        elif packet in (aten.max_pool2d_with_indices, aten.max_pool2d, aten.avg_pool2d):
            result = out[0] if isinstance(out, tuple) else out
            self.flops += _pool_window(args[1]) * result.numel()
        return out


def rethinking_flops(model: nn.Module, input_shape) -> int:
    """FLOPs of one example of shape ``input_shape`` (C, H, W) as the Rethinking code counts them (module docstring).
    ``model`` is plain (pruned weights exactly zero, e.g. ``masks.folded``); it runs once in eval mode."""
    device = next(model.parameters()).device
    counter = _Counter()
    with torch.no_grad(), eval_mode(model), counter:
        model(torch.zeros(1, *input_shape, device=device))
    return counter.flops
