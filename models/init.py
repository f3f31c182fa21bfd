"""Seeded initializers. Biases start at 0 and BN scales at ``bn_weight_init`` (except for ``pytorch``)."""

from __future__ import annotations

import math

import torch
from torch import nn


def _fans(weight: torch.Tensor) -> tuple[int, int]:
    receptive = weight[0][0].numel() if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def _truncated_normal(shape, std: float, gen: torch.Generator) -> torch.Tensor:
    out = torch.randn(shape, generator=gen)
    while True:  # resample beyond 2σ, as TF's truncated_normal does
        bad = out.abs() > 2
        if not bad.any():
            return out * std
        out[bad] = torch.randn(int(bad.sum()), generator=gen)


def initialize(model: nn.Module, scheme: str, generator: torch.Generator, bn_weight_init: float = 1.0) -> nn.Module:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                fan_in, fan_out = _fans(module.weight)
                shape = module.weight.shape
                if scheme == "pytorch":
                    bound = 1 / math.sqrt(fan_in)  # PyTorch's default kaiming_uniform(a=√5), drawn from our generator
                    module.weight.copy_((torch.rand(shape, generator=generator) * 2 - 1) * bound)
                    if module.bias is not None:
                        module.bias.copy_((torch.rand(module.bias.shape, generator=generator) * 2 - 1) * bound)
                    continue
                if scheme == "kaiming_normal":
                    w = torch.randn(shape, generator=generator) * math.sqrt(2.0 / fan_in)
                elif scheme == "glorot_normal":
                    w = torch.randn(shape, generator=generator) * math.sqrt(2.0 / (fan_in + fan_out))
                elif scheme == "lecun_normal":
                    w = torch.randn(shape, generator=generator) * math.sqrt(1.0 / fan_in)
                else:  # TF variance_scaling_initializer defaults: scale 1, fan_in, truncated normal (SNIP's init)
                    w = _truncated_normal(shape, math.sqrt(1.0 / fan_in) / 0.87962566103423978, generator)
                module.weight.copy_(w)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
                module.weight.fill_(bn_weight_init)
                module.bias.zero_()
    return model
