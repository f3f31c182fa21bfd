"""The memory layout a network trains in: channels-last (NHWC) where it is faster and safe, contiguous (NCHW) else.

On the CPU oneDNN's convolutions run ~1.5x faster in NHWC than in NCHW (``benchmarks/speed.py --conv``, conv_bn and
LeNet-5, 2 threads), deterministically, but the sums run in another order: not NCHW's bitwise numbers, so the
resolved layout is part of a train stage's hash. But torch 2.14.1's oneDNN (3.12) computes the weight gradient of
some narrow channels-last convs out of bounds (``nhwc_safe``): a network with such a conv trains in NCHW. The rule
is per network, not per layer: one layer in NCHW inside an NHWC network would need its input converted both ways
(torch picks NHWC for a conv when its input *or* its weight is), and such narrow networks gain little from NHWC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Optional

import torch
from torch import nn

from foundations.errors import UserError


@dataclass(frozen=True)
class ConvGeometry:
    """What the layout rule reads of a Conv2d (padding left out: ``nhwc_safe`` says why)."""

    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    groups: int = 1
    dilation: tuple[int, int] = (1, 1)

    @classmethod
    def of(cls, conv: nn.Conv2d) -> ConvGeometry:
        return cls(
            conv.in_channels,
            conv.out_channels,
            _pair(conv.kernel_size),
            _pair(conv.stride),
            conv.groups,
            _pair(conv.dilation),
        )

    def describe(self) -> str:
        kh, kw = self.kernel_size
        sh, sw = self.stride
        groups = f", groups {self.groups}" if self.groups > 1 else ""
        return f"{self.in_channels}->{self.out_channels}, {kh}x{kw}, stride {sh}x{sw}{groups}"


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


NARROW = 8  # input channels below which a strided 1x1 conv is unsafe: AVX2's 8 floats, oneDNN's channel block


def nhwc_safe(conv: ConvGeometry) -> bool:
    """Whether training ``conv`` channels-last on the CPU is safe: False for an ungrouped 1x1 conv with a stride > 1
    and fewer than 8 input channels (a ResNet's projection shortcut after channel pruning), True otherwise.

    ``benchmarks/layout_probe.py`` (2026-12-07, AMD EPYC with AVX2 and no AVX-512, torch 2.14.1, oneDNN 3.12; 5,514
    conv geometries x 10 channels-last passes, each case in a child process; docs/speed.md) saw failures in exactly
    that family, in oneDNN's ``jit_1x1:avx2`` weight gradient: with 1 thread the process dies ("corrupted
    double-linked list", "free(): invalid next size", SIGSEGV, two hangs) in 95 of the 114 cases in 2..7 -> any of
    1..16, 24, 32, 64 channels at stride 2 on 8x8 inputs, and in all 6 cases c -> c (c = 2..7) at stride 3 on 15x15;
    with 2 threads nothing crashes but the weight gradient is wrong (up to 99 % of its largest entry) in 79 + 5 of
    the same cases. The output and the input gradient were always right, and nothing failed with 1 input channel (88
    strided 1x1 cases), 8 and more (1,248), padding 1, depthwise or grouped convs (per-group widths 1..32) or any 3x3
    conv: every case that ran through differs from NCHW by at most 2.4e-6 of its largest entry, every wrong one by
    at least 3e-2. Whether a case fails also depends on the spatial size (8x8 at stride 3 and 15x15 at stride 2 never
    did), which a layout decided per network cannot know, so the rule ignores it, and padding; it keeps 1 input
    channel out too (the same kernel; nothing to gain).
    Measured on AVX2 only: on another CPU, run the probe (its last line counts the failures this rule allows).
    """
    pointwise = conv.kernel_size == (1, 1)
    strided = conv.stride != (1, 1)
    return not (conv.groups == 1 and pointwise and strided and conv.in_channels < NARROW)


def conv_geometries(model: nn.Module) -> dict[str, ConvGeometry]:
    """Every Conv2d of ``model`` by module name."""
    return {name: ConvGeometry.of(m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def with_shapes(
    convs: Mapping[str, ConvGeometry], shapes: Mapping[str, tuple[int, ...]]
) -> Optional[dict[str, ConvGeometry]]:
    """The convs of ``convs`` (a base network's) with the channels of stored weights ``shapes`` (parameter name ->
    shape, e.g. a channel-pruned network's): what the stored network trains with, known without building it.

    Channel pruning changes a conv's channels and nothing else of its geometry; a depthwise conv stays depthwise
    (its groups follow its channels). ``None`` where a conv's weight is not among ``shapes`` (build the model).
    """
    out = {}
    for name, conv in convs.items():
        shape = shapes.get(f"{name}.weight")
        if shape is None or len(shape) != 4:
            return None
        depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
        groups = shape[0] if depthwise else conv.groups
        out[name] = replace(conv, in_channels=shape[1] * groups, out_channels=shape[0], groups=groups)
    return out


def is_convolutional(model: nn.Module) -> bool:
    return any(isinstance(module, nn.Conv2d) for module in model.modules())


def channels_last(requested: Optional[bool], convs: Mapping[str, ConvGeometry], device: torch.device) -> Optional[bool]:
    """Whether a network with these Conv2d layers trains in NHWC; ``None`` where it has none (nothing to choose, and
    nothing hashed). The default (``requested`` None) is NHWC on the CPU when every conv is ``nhwc_safe``, NCHW
    otherwise; on a GPU NCHW (not measured here). An explicit ``True`` with an unsafe conv on the CPU is refused
    (``UserError``) rather than silently overridden: the default already picks NCHW for such a network, and a
    request for NHWC that quietly trained NCHW would name a stage that is not what was asked for."""
    if not convs:
        return None
    unsafe = [name for name, conv in convs.items() if not nhwc_safe(conv)] if device.type == "cpu" else []
    if requested is None:
        return device.type == "cpu" and not unsafe
    if requested and unsafe:
        name = unsafe[0]
        raise UserError(
            f"train.channels_last: true, but conv {name} ({convs[name].describe()}) is one whose channels-last weight "
            f"gradient oneDNN computes out of bounds on the CPU (docs/speed.md, benchmarks/layout_probe.py); leave "
            f"train.channels_last unset (this network then trains contiguous) or set it to false"
        )
    return requested
