"""Model registry: ``build_model(cfg, input_shape, num_classes, generator) -> nn.Module``, seeded initialization.

Built-in conv models adapt to the dataset: the first layer takes the input's channels and the classifier's width
comes from a dummy forward; only input sizes too small for the pooling are refused (one-line ``UserError``).
MLPs flatten any input shape. ``model=torchvision`` and ``model=target`` build models prunelab did not write
(``models.external``); any model can start from ``model.checkpoint`` (``load_checkpoint``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from foundations.checks import nondefault
from foundations.errors import UserError
from foundations.hashing import file_sha256
from models.config import (
    INITS,
    MODEL_NAMES,
    VGG_CFGS,
    AnyModelConfig,
    ModelConfig,
    TargetModelConfig,
    TorchvisionConfig,
    model_config,
)
from models.external import build_target, build_torchvision, load_checkpoint, read_checkpoint
from models.init import initialize
from models.lenet5 import LeNet5Caffe
from models.mlp import MLP
from models.resnet import ResNetCifar
from models.vgg import VGG, ConvBN

__all__ = [
    "ModelConfig",
    "TorchvisionConfig",
    "TargetModelConfig",
    "model_config",
    "build_model",
    "initialize",
    "REGISTRY",
    "INITS",
    "INPUT_SHAPE",
    "MODEL_NAMES",
    "min_input_size",
    "display_name",
    "identity",
    "load_checkpoint",
    "read_checkpoint",
]

Shape = tuple[int, int, int]
# The attribute ``build_model`` records the input shape (C, H, W) under, so that code holding only the model can run
# it (the classifier is found by a forward pass: methods.pipeline.masks.classifier_name).
INPUT_SHAPE = "prunelab_input_shape"


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
    "lenet300": _mlp,
    "mlp_bn": _mlp,
    "lenet5": _lenet5,
    "conv_bn": _conv_bn,
    "vgg": _vgg,
    "resnet": _resnet,
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


def display_name(cfg) -> str:
    """How records and tables name the model: a built-in by its name (vgg, resnet), torchvision by its architecture
    (``resnet18``, ``resnet18-small`` with the small-input stem), a callable by its dotted path."""
    cfg = model_config(cfg)
    return cfg.name if isinstance(cfg, ModelConfig) else cfg.tag


def identity(cfg) -> dict:
    """The part of a model config a stage hash covers: its non-default fields, with the checkpoint named by the
    sha256 of its file (a changed checkpoint is a different experiment; a moved one is not)."""
    cfg = model_config(cfg)
    out = nondefault(cfg)
    if cfg.checkpoint is not None:
        out["checkpoint"] = f"sha256:{file_sha256(Path(cfg.checkpoint).expanduser())}"
    return out


def build_model(
    cfg: AnyModelConfig,
    input_shape: tuple[int, int, int],
    num_classes: int,
    generator: Optional[torch.Generator] = None,
    *,
    initialized: bool = True,
) -> nn.Module:
    """Build ``cfg.name`` for inputs of ``input_shape`` (C, H, W) and initialize it with ``cfg.init``.

    ``generator`` seeds the initialization (same seed → identical weights); ``None`` uses the global torch RNG.
    ``initialized=False`` skips prunelab's initialization of a built-in model (a shape check, which needs no
    weights: ``runners.config.check_model_fits``).
    The model records ``bn_weight_init`` so that ``initialize(model, scheme, gen)`` of a compacted copy reuses it.
    The checkpoint is not loaded here: the dense stage loads it (``load_checkpoint``) into these weights.
    """
    cfg = model_config(cfg)
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise UserError(f"model {cfg.name}: input_shape must be (channels, height, width) (got {tuple(input_shape)})")
    if num_classes < 1:
        raise UserError(f"model {cfg.name}: num_classes must be >= 1 (got {num_classes})")
    if isinstance(cfg, TorchvisionConfig):
        return _described(build_torchvision(cfg, shape, num_classes, generator), shape)
    if isinstance(cfg, TargetModelConfig):
        return _described(build_target(cfg, shape, num_classes, generator), shape)
    need = min_input_size(cfg)
    if shape[1] < need or shape[2] < need:
        raise UserError(
            f"model {cfg.tag} needs inputs of at least {need}x{need}; the dataset gives "
            f"{'x'.join(map(str, shape))} (use an MLP such as lenet300 or mlp_bn, or resnet)"
        )
    model = REGISTRY[cfg.name](cfg, shape, num_classes)
    model.bn_weight_init = float(cfg.bn_weight_init)  # type: ignore[assignment]  # torch types attributes as Tensor | Module
    return _described(initialize(model, cfg.init, generator, cfg.bn_weight_init) if initialized else model, shape)


def _described(model: nn.Module, shape: Shape) -> nn.Module:
    setattr(model, INPUT_SHAPE, tuple(shape))  # a plain attribute: copies (deepcopy, compaction) keep it
    return model
