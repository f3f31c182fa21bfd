"""The reference architectures (methods.md §0, §4, §5). Modules are declared in forward order; the classifier is
the last Linear."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn


class MLP(nn.Module):
    """LeNet-300-100 (``widths=[300, 100]``) or, with BatchNorm1d after each hidden Linear, slimming's MNIST net."""

    def __init__(self, in_features: int, widths: list[int], num_classes: int, batchnorm: bool):
        super().__init__()
        layers, previous = [], in_features
        for i, width in enumerate(widths, start=1):
            layers += [(f"fc{i}", nn.Linear(previous, width))]
            if batchnorm:
                layers += [(f"bn{i}", nn.BatchNorm1d(width))]
            layers += [(f"relu{i}", nn.ReLU())]
            previous = width
        layers += [(f"fc{len(widths) + 1}", nn.Linear(previous, num_classes))]
        self.flatten = nn.Flatten()
        self.layers = nn.Sequential(OrderedDict(layers))

    def forward(self, x):
        return self.layers(self.flatten(x))


class LeNet5Caffe(nn.Module):
    """Caffe LeNet-5: conv20-5x5, pool, conv50-5x5, pool, fc500, ReLU, fc10 — no ReLU after the convolutions."""

    def __init__(self, in_channels: int, spatial: int, num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 20, 5)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.pool2 = nn.MaxPool2d(2)
        side = ((spatial - 4) // 2 - 4) // 2
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(50 * side * side, 500)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x):
        x = self.pool2(self.conv2(self.pool1(self.conv1(x))))
        return self.fc2(self.relu(self.fc1(self.flatten(x))))


def conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class ConvBN(nn.Module):
    """Small VGG-style net for 28x28 inputs: per stage conv-BN-ReLU then max-pool; global average pool; Linear."""

    def __init__(self, in_channels: int, widths: list[int], num_classes: int):
        super().__init__()
        layers, previous = [], in_channels
        for width in widths:
            layers += conv_bn_relu(previous, width) + [nn.MaxPool2d(2)]
            previous = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(previous, num_classes)

    def forward(self, x):
        return self.classifier(self.flatten(self.pool(self.features(x))))


VGG_CFGS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}


class VGG(nn.Module):
    """CIFAR VGG with BN as in network slimming's ``vgg.py``: 3x3 convs without bias, avgpool 2, one Linear."""

    def __init__(self, in_channels: int, depth: int, num_classes: int):
        super().__init__()
        layers, previous = [], in_channels
        for item in VGG_CFGS[depth]:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += conv_bn_relu(previous, item)
                previous = item
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(previous, num_classes)

    def forward(self, x):
        return self.classifier(self.flatten(self.pool(self.features(x))))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:  # projection shortcut (He et al. option B) where the shape changes
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU()

    def forward(self, x):
        return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))) + self.shortcut(x))


class ResNetCifar(nn.Module):
    """CIFAR ResNet-20/32/56 (He et al. 2016 §4.2): 16/32/64 channels, (depth-2)/6 blocks per stage."""

    def __init__(self, in_channels: int, depth: int, num_classes: int):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        blocks, previous = [], 16
        for stage, width in enumerate((16, 32, 64)):
            for i in range(n):
                blocks.append(BasicBlock(previous, width, 2 if stage > 0 and i == 0 else 1))
                previous = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.blocks(self.relu(self.bn1(self.conv1(x)))))))
