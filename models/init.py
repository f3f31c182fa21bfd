"""Seeded weight initializers.

Every scheme draws from the given ``torch.Generator`` on the CPU, in ``named_modules`` order, and copies the result
onto the parameter's device: the same generator seed gives identical weights on any device. Conv2d/Linear weights:

- ``kaiming_normal``: N(0, 2/fan_in) (He et al. 2015; open_lth's default, ``nn.init.kaiming_normal_``).
- ``glorot_normal``: N(0, 2/(fan_in+fan_out)) (Glorot & Bengio 2010; LTH's "Gaussian Glorot"; ``xavier_normal_``).
- ``variance_scaling``: TF1 ``tf.variance_scaling_initializer()`` defaults, SNIP's init: scale 1, mode fan_in,
  truncated normal with stddev = sqrt(1/fan_in)/0.87962566103423978 cut at ±2 stddev, so the drawn weights have std
  sqrt(1/fan_in).
- ``lecun_normal``: plain (untruncated) N(0, 1/fan_in), LeCun et al. 1998. Keras' ``lecun_normal`` is truncated,
  i.e. identical to ``variance_scaling`` above; this variant is the untruncated one.
- ``pytorch``: PyTorch's own defaults (``kaiming_uniform_(a=√5)`` = U(±1/sqrt(fan_in)) for weights and
  U(±1/sqrt(fan_in)) for biases), reproduced analytically so they come from the generator too.

Biases start at 0 (except ``pytorch``). BatchNorm: weight = ``bn_weight_init`` (network slimming uses 0.5), bias 0,
running statistics reset. Modules masked by ``torch.nn.utils.prune`` are initialized through ``weight_orig`` and
stay masked. Other parametrized modules fall back to their own ``reset_parameters`` under an RNG forked and seeded
from the generator.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Optional

import torch
from torch import nn

from foundations.errors import UserError

SCHEMES = ("kaiming_normal", "glorot_normal", "variance_scaling", "lecun_normal", "pytorch")
TF_TRUNCATED_NORMAL_STD = 0.87962566103423978  # std of a unit normal truncated at ±2


def fans(shape: torch.Size) -> tuple[int, int]:
    """(fan_in, fan_out) as PyTorch and TF compute them: in/out channels × receptive field size."""
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _target(module: nn.Module, name: str) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """The tensor to write for ``module.<name>`` (``<name>_orig`` when pruned) and its mask, if any."""
    if hasattr(module, f"{name}_orig"):
        return getattr(module, f"{name}_orig"), getattr(module, f"{name}_mask", None)
    return getattr(module, name, None), None


def _write(module: nn.Module, name: str, value: torch.Tensor) -> None:
    target, mask = _target(module, name)
    if target is None:
        return
    target.copy_(value.to(device=target.device, dtype=target.dtype))
    if mask is not None:
        target.mul_(mask)


def _draw_weight(scheme: str, shape: torch.Size, gen: Optional[torch.Generator]) -> torch.Tensor:
    fan_in, fan_out = fans(shape)
    out = torch.empty(shape)
    if scheme == "kaiming_normal":
        return out.normal_(0.0, math.sqrt(2.0 / fan_in), generator=gen)
    if scheme == "glorot_normal":
        return out.normal_(0.0, math.sqrt(2.0 / (fan_in + fan_out)), generator=gen)
    if scheme == "lecun_normal":
        return out.normal_(0.0, math.sqrt(1.0 / fan_in), generator=gen)
    if scheme == "variance_scaling":
        std = math.sqrt(1.0 / fan_in) / TF_TRUNCATED_NORMAL_STD
        return nn.init.trunc_normal_(out, 0.0, std, -2 * std, 2 * std, generator=gen)
    bound = 1.0 / math.sqrt(fan_in)  # pytorch: kaiming_uniform_(a=sqrt(5)) gives exactly this bound
    return out.uniform_(-bound, bound, generator=gen)


def _fork(model: nn.Module):
    cuda = sorted({p.device.index or 0 for p in model.parameters() if p.is_cuda})
    return torch.random.fork_rng(devices=cuda)


def initialize(
    model: nn.Module, scheme: str, generator: Optional[torch.Generator] = None, bn_weight_init: Optional[float] = None
) -> nn.Module:
    """Initialize ``model`` in place (and return it). ``generator=None`` draws from the global torch RNG.

    ``bn_weight_init=None`` uses the value ``build_model`` recorded on the model (``model.bn_weight_init``, from
    ``ModelConfig.bn_weight_init``), else 1.0, so re-initializing a compacted copy keeps slimming's γ = 0.5.
    """
    if scheme not in SCHEMES:
        raise UserError(f"model.init: must be one of {', '.join(SCHEMES)} (got {scheme!r})")
    if bn_weight_init is None:
        bn_weight_init = float(getattr(model, "bn_weight_init", 1.0))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                weight, _ = _target(module, "weight")
                if weight is None:
                    raise TypeError(f"{type(module).__name__} has no weight to initialize")
                _write(module, "weight", _draw_weight(scheme, weight.shape, generator))
                bias, _ = _target(module, "bias")
                if bias is not None:
                    if scheme == "pytorch":
                        bound = 1.0 / math.sqrt(fans(weight.shape)[0])
                        _write(module, "bias", torch.empty(bias.shape).uniform_(-bound, bound, generator=generator))
                    else:
                        _write(module, "bias", torch.zeros(bias.shape))
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
                if module.affine:
                    _write(module, "weight", torch.full((module.num_features,), float(bn_weight_init)))
                    _write(module, "bias", torch.zeros(module.num_features))
            elif any(True for _ in module.parameters(recurse=False)) and hasattr(module, "reset_parameters"):
                seed = int(torch.randint(0, 2**62, (1,), generator=generator))
                with _fork(model) if generator is not None else nullcontext():
                    if generator is not None:
                        torch.manual_seed(seed)
                    module.reset_parameters()  # type: ignore[operator]  # hasattr-checked; torch's __getattr__ says Tensor
    return model
