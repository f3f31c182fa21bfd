"""VGG-style conv nets with BatchNorm: the small ``conv_bn`` for 28×28 inputs and CIFAR VGG-11/16/19 in
the style of network slimming's CIFAR "VGGNet" (Liu et al. 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from foundations.training import eval_mode


class PlainConvNet(nn.Module):
    """``conv{i} → [bn{i}] → ReLU`` (3×3, padding 1; no conv bias when BN follows), max-pool 2 after the convs listed
    in ``pool_after``, then an optional ``avg_pool`` (kernel size), flatten, and one Linear ``fc``. The max-pool is
    applied just before the ReLU rather than after it: max-pool and ReLU commute exactly (values and gradients), and
    the ReLU then touches a quarter of the activations.

    The classifier's input width comes from a dummy forward, so any input at least as large as the pooling needs works.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        widths: list[int],
        pool_after: set[int],
        num_classes: int,
        batchnorm: bool,
        avg_pool: int | None,
        global_pool: bool,
    ):
        super().__init__()
        self.num_convs = len(widths)
        self.pool_after = frozenset(pool_after)
        self.batchnorm = batchnorm
        self.avg_pool = avg_pool
        self.global_pool = global_pool
        previous = input_shape[0]
        for i, width in enumerate(widths, start=1):
            self.add_module(f"conv{i}", nn.Conv2d(previous, width, kernel_size=3, padding=1, bias=not batchnorm))
            if batchnorm:
                self.add_module(f"bn{i}", nn.BatchNorm2d(width))
            previous = width
        with torch.no_grad(), eval_mode(self):  # a dummy forward must not touch BN running statistics
            flat = self.features(torch.zeros(1, *input_shape)).shape[1]
        self.fc = nn.Linear(flat, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.num_convs + 1):
            x = getattr(self, f"conv{i}")(x)
            if self.batchnorm:
                x = getattr(self, f"bn{i}")(x)
            if i in self.pool_after:  # max-pool before ReLU: the same function (ReLU is monotone), 4x less ReLU work
                x = F.max_pool2d(x, 2)
            x = torch.relu(x)
        if self.avg_pool:
            x = F.avg_pool2d(x, self.avg_pool)
        if self.global_pool:
            x = F.adaptive_avg_pool2d(x, 1)
        return torch.flatten(x, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class ConvBN(PlainConvNet):
    """Small CPU-tier conv net for 28×28 inputs: one conv-BN-ReLU per stage (default widths 16-32-64), max-pool 2 after
    each stage (28 → 14 → 7 → 3), global average pool, Linear. Its BN scales make it a slimming/channel-pruning target.
    """

    def __init__(self, input_shape: tuple[int, int, int], widths: list[int], num_classes: int, batchnorm: bool = True):
        super().__init__(
            input_shape, widths, set(range(1, len(widths) + 1)), num_classes, batchnorm, avg_pool=None, global_pool=True
        )


class VGG(PlainConvNet):
    """CIFAR VGG as in network slimming's ``vgg.py`` (Eric-mingjie/network-slimming ``models/vgg.py``).

    ``cfg`` lists conv widths with ``"M"`` for a 2×2 max-pool, e.g. VGG-19 = [64,64,M,128,128,M,256×4,M,512×4,M,512×4];
    3×3 convs without bias + BN + ReLU, then ``avgpool 2`` and a single ``Linear(512, classes)`` (20.04M parameters for
    VGG-19 on CIFAR-10). ``widths`` may replace the per-conv widths (e.g. a slimmed configuration).
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        cfg: list,
        num_classes: int,
        batchnorm: bool = True,
        widths: list[int] | None = None,
    ):
        convs = [v for v in cfg if v != "M"]
        pool_after, count = set(), 0
        for v in cfg:
            if v == "M":
                pool_after.add(count)
            else:
                count += 1
        super().__init__(
            input_shape,
            list(widths) if widths is not None else convs,
            pool_after,
            num_classes,
            batchnorm,
            avg_pool=2,
            global_pool=False,
        )
