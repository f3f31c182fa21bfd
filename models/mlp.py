"""Fully connected nets: LeNet-300-100 (784-300-100-10, ReLU; Han et al. 2015, Frankle & Carbin 2019) and network
slimming's MNIST MLP 784-500-300-10 (Liu et al. 2017, Table 3)."""

from __future__ import annotations

import math

import torch
from torch import nn


class MLP(nn.Module):
    """``fc1 [bn1] relu ... fc{k+1}``; any input shape is flattened (a CIFAR image gives 3·32·32 = 3072 inputs).

    With ``batchnorm`` each hidden Linear is followed by BatchNorm1d and has no bias (the BN shift makes it redundant);
    slimming treats each hidden neuron as a 1×1 channel whose BN scale γ is the pruning criterion.
    """

    def __init__(self, input_shape: tuple[int, ...], widths: list[int], num_classes: int, batchnorm: bool):
        super().__init__()
        self.num_hidden = len(widths)
        self.batchnorm = batchnorm
        previous = math.prod(input_shape)
        for i, width in enumerate(widths, start=1):
            self.add_module(f"fc{i}", nn.Linear(previous, width, bias=not batchnorm))
            if batchnorm:
                self.add_module(f"bn{i}", nn.BatchNorm1d(width))
            previous = width
        self.add_module(f"fc{len(widths) + 1}", nn.Linear(previous, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        for i in range(1, self.num_hidden + 1):
            x = getattr(self, f"fc{i}")(x)
            if self.batchnorm:
                x = getattr(self, f"bn{i}")(x)
            x = torch.relu(x)
        return getattr(self, f"fc{self.num_hidden + 1}")(x)
