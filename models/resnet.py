"""CIFAR ResNet-20/32/44/56/110 (He et al., CVPR 2016, §4.2)."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """conv1-bn1-ReLU-conv2-bn2 (+ shortcut) → ReLU.

    Shortcut: identity when the shape is unchanged; otherwise a **1×1 strided conv + BN projection** (He et al.'s
    option B, as in open_lth's ``cifar_resnet``), rather than the paper's CIFAR option A (zero-padded identity). The
    projection is a plain module, so torch-pruning can trace the residual coupling, and it adds only 2,752 parameters
    to ResNet-20 (272,474 instead of 269,722 for CIFAR-10).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                    bn=nn.BatchNorm2d(out_channels),
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class ResNetCifar(nn.Module):
    """conv1 3×3 (16) - bn1 - ReLU, three stages ``layer1..3`` of n = (depth−2)/6 basic blocks with 16/32/64 channels
    (stride 2 at the start of stages 2 and 3), global average pool, ``fc``. 6n+2 weighted layers.
    """

    layer1: nn.Sequential  # registered with add_module in __init__
    layer2: nn.Sequential
    layer3: nn.Sequential

    def __init__(
        self, input_shape: tuple[int, int, int], depth: int, num_classes: int, widths: list[int] | None = None
    ):
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (got {depth})")
        n = (depth - 2) // 6
        widths = list(widths) if widths is not None else [16, 32, 64]
        self.conv1 = nn.Conv2d(input_shape[0], widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        previous = widths[0]
        for stage, width in enumerate(widths, start=1):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(previous, width, stride=2 if stage > 1 and i == 0 else 1))
                previous = width
            self.add_module(f"layer{stage}", nn.Sequential(*blocks))
        self.fc = nn.Linear(previous, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
