"""Model registry: ``build_model(cfg, input_shape, num_classes, generator) -> nn.Module``, seeded initialization.

Conv models adapt to the dataset: the first layer takes the input's channels and the classifier's width comes from a
dummy forward; only input sizes too small for the pooling are refused (one-line ``UserError``).
MLPs flatten any input shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import torch
from torch import nn

from foundations.errors import UserError
from models.config import INITS, MODEL_NAMES, VGG_CFGS, ModelConfig
from models.init import initialize
from models.lenet5 import LeNet5Caffe
from models.mlp import MLP
from models.resnet import ResNetCifar
from models.vgg import VGG, ConvBN

__all__ = ["ModelConfig", "build_model", "initialize", "REGISTRY", "INITS", "MODEL_NAMES", "min_input_size"]

Shape = tuple[int, int, int]


def _mlp(cfg: ModelConfig, shape: Shape, classes: int) -> nn.Module:
    return MLP(shape, cfg.resolved_widths(), classes, batchnorm=cfg.resolved_batchnorm())


def _lenet5(cfg: ModelConfig, shape: Shape, classes: int) -> nn.Module:
    return LeNet5Caffe(shape, cfg.resolved_widths(), classes)


def _conv_bn(cfg: ModelConfig, shape: Shape, classes: int) -> nn.Module:
    return ConvBN(shape, cfg.resolved_widths(), classes, batchnorm=cfg.resolved_batchnorm())


def _vgg(cfg: ModelConfig, shape: Shape, classes: int) -> nn.Module:
    return VGG(shape, VGG_CFGS[cfg.required_depth()], classes, batchnorm=cfg.resolved_batchnorm(), widths=cfg.widths)


def _resnet(cfg: ModelConfig, shape: Shape, classes: int) -> nn.Module:
    return ResNetCifar(shape, cfg.required_depth(), classes, widths=cfg.widths)


REGISTRY: dict[str, Callable[[ModelConfig, Shape, int], nn.Module]] = {
    "lenet300": _mlp, "mlp_bn": _mlp, "lenet5": _lenet5, "conv_bn": _conv_bn, "vgg": _vgg, "resnet": _resnet,
}


def min_input_size(cfg: ModelConfig) -> int:
    """Smallest height/width the model can process (valid convs and pooling must leave at least one pixel)."""
    if cfg.name == "lenet5":
        return 16  # 16 → conv 12 → pool 6 → conv 2 → pool 1
    if cfg.name == "conv_bn":
        return 2 ** len(cfg.resolved_widths())
    if cfg.name == "vgg":
        return 2 * 2 ** VGG_CFGS[cfg.required_depth()].count("M")  # the max-pools, then avgpool 2
    return 1  # MLPs flatten; ResNet's strided 3×3 convs are padded and it pools globally


def _as_config(cfg) -> ModelConfig:
    if isinstance(cfg, ModelConfig):
        return cfg
    if isinstance(cfg, str):
        return ModelConfig(name=cfg)
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    return ModelConfig(**dict(cfg))


def build_model(cfg: ModelConfig, input_shape: tuple[int, int, int], num_classes: int,
                generator: Optional[torch.Generator] = None) -> nn.Module:
    """Build ``cfg.name`` for inputs of ``input_shape`` (C, H, W) and initialize it with ``cfg.init``.

    ``generator`` seeds the initialization (same seed → identical weights); ``None`` uses the global torch RNG.
    The model records ``bn_weight_init`` so that ``initialize(model, scheme, gen)`` of a compacted copy reuses it.
    """
    cfg = _as_config(cfg)
    if cfg.name not in REGISTRY:
        raise UserError(f"model.name: unknown model {cfg.name!r}; choose one of {', '.join(REGISTRY)}")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise UserError(f"model {cfg.name}: input_shape must be (channels, height, width) (got {tuple(input_shape)})")
    if num_classes < 1:
        raise UserError(f"model {cfg.name}: num_classes must be >= 1 (got {num_classes})")
    need = min_input_size(cfg)
    if shape[1] < need or shape[2] < need:
        raise UserError(f"model {cfg.tag} needs inputs of at least {need}x{need}; the dataset gives "
                        f"{'x'.join(map(str, shape))} (use an MLP such as lenet300 or mlp_bn, or resnet)")
    model = REGISTRY[cfg.name](cfg, shape, num_classes)
    model.bn_weight_init = float(cfg.bn_weight_init)  # type: ignore[assignment]  # torch types attributes as Tensor | Module
    return initialize(model, cfg.init, generator, cfg.bn_weight_init)
