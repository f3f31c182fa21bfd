"""LeNet-5-Caffe, the "LeNet-5" of Han et al. 2015 (Table 3) and SNIP (Lee et al. 2019, Table 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LeNet5Caffe(nn.Module):
    """conv1 20@5×5 valid → maxpool 2 → conv2 50@5×5 valid → maxpool 2 → fc1 800→500 → ReLU → fc2 500→classes.

    There is deliberately **no ReLU after the convolutions**, as in Caffe's ``lenet_train_test.prototxt`` and SNIP's
    ``LeNet5.forward``. For 1×28×28 inputs: 520 + 25,050 + 400,500 + 5,010 = 431,080 parameters. Other input sizes
    adapt the first conv's channels and fc1's input width (computed by a dummy forward).
    """

    def __init__(self, input_shape: tuple[int, int, int], widths: list[int], num_classes: int):
        super().__init__()
        c1, c2, hidden = widths
        self.conv1 = nn.Conv2d(input_shape[0], c1, kernel_size=5)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=5)
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *input_shape)).shape[1]
        self.fc1 = nn.Linear(flat, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.conv1(x), 2)
        x = F.max_pool2d(self.conv2(x), 2)
        return torch.flatten(x, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(self.features(x))))
