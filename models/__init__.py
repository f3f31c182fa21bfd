"""Model registry: ``build_model(cfg, input_shape, num_classes, generator) -> nn.Module`` (seeded init)."""

from __future__ import annotations

import math

import torch

from models.init import initialize
from models.nets import MLP, VGG, ConvBN, LeNet5Caffe, ResNetCifar
from runners.errors import UserError


def _need_spatial(name: str, shape, minimum: int) -> None:
    if shape[1] < minimum or shape[2] < minimum:
        raise UserError(f"model {name} needs inputs of at least {minimum}x{minimum}; the dataset gives "
                        f"{'x'.join(map(str, shape))} (use an MLP such as lenet300 or mlp_bn)")


def _lenet5(cfg, shape, classes):
    _need_spatial("lenet5", shape, 28)
    return LeNet5Caffe(shape[0], shape[1], classes)


def _conv_bn(cfg, shape, classes):
    widths = cfg.widths or [16, 32, 64]
    _need_spatial("conv_bn", shape, 2 ** len(widths))
    return ConvBN(shape[0], widths, classes)


def _vgg(cfg, shape, classes):
    depth = cfg.depth or 16
    if depth not in (11, 16, 19):
        raise UserError(f"model.depth: vgg supports 11, 16, 19 (got {depth})")
    _need_spatial("vgg", shape, 32)
    return VGG(shape[0], depth, classes)


def _resnet(cfg, shape, classes):
    depth = cfg.depth or 20
    if depth not in (20, 32, 56):
        raise UserError(f"model.depth: resnet supports 20, 32, 56 (got {depth})")
    _need_spatial("resnet", shape, 8)
    return ResNetCifar(shape[0], depth, classes)


BUILDERS = {
    "lenet300": lambda cfg, shape, classes: MLP(math.prod(shape), cfg.widths or [300, 100], classes, batchnorm=False),
    "mlp_bn": lambda cfg, shape, classes: MLP(math.prod(shape), cfg.widths or [500, 300], classes, batchnorm=True),
    "lenet5": _lenet5,
    "conv_bn": _conv_bn,
    "vgg": _vgg,
    "resnet": _resnet,
}


def build_model(cfg, input_shape, num_classes: int, generator: torch.Generator | None = None):
    if cfg.name not in BUILDERS:
        raise UserError(f"model.name: unknown model {cfg.name!r}; choose one of {', '.join(sorted(BUILDERS))}")
    model = BUILDERS[cfg.name](cfg, tuple(input_shape), num_classes)
    return initialize(model, cfg.init, generator or torch.Generator().manual_seed(0), cfg.bn_weight_init)
