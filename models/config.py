"""Schemas of the ``model`` config group.

- ``ModelConfig``: the built-in architectures, one dataclass with options checked per model. Options that a model
  does not have (``depth`` on an MLP, ``batchnorm`` on LeNet-5) are refused rather than ignored, so a typo in a sweep
  cannot silently train the wrong network. ``None`` means "the model's default".
- ``TorchvisionConfig`` (``model=torchvision model.arch=resnet18``): torchvision's classification models.
- ``TargetModelConfig`` (``model=target model._target_=pkg.build``): any callable returning an ``nn.Module``.

Every schema has ``checkpoint``: a state dict to start from (``models.external.load_checkpoint``); a stage hash covers
the file's sha256, not its path (``models.identity``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING

from foundations.checks import typed, typed_target
from foundations.errors import UserError

INITS = ("kaiming_normal", "glorot_normal", "variance_scaling", "lecun_normal", "pytorch")
NATIVE = "native"  # the constructor's own initialization (torchvision / target models), drawn from the seeded RNG
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".safetensors")

# name -> (default depth, allowed depths or None if the model has no depth, default widths,
#          required number of widths or None for "any length >= 1", default batchnorm, batchnorm switchable)
VGG_CFGS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}
RESNET_DEPTHS = (20, 32, 44, 56, 110)


@dataclass(frozen=True)
class ModelSpec:
    depths: Optional[tuple[int, ...]]  # None: the model has no depth option
    default_depth: Optional[int]
    default_widths: list[int] | Callable[[int], list[int]]  # list[int], or a function depth -> list[int]
    widths_len: int | Callable[[int], int] | None  # None = any length >= 1; int; or a function depth -> int
    default_batchnorm: bool
    batchnorm_switchable: bool
    widths_meaning: str


SPECS: dict[str, ModelSpec] = {
    "lenet300": ModelSpec(None, None, [300, 100], None, False, True, "hidden layer widths"),
    "mlp_bn": ModelSpec(None, None, [500, 300], None, True, True, "hidden layer widths"),
    "lenet5": ModelSpec(None, None, [20, 50, 500], 3, False, False, "[conv1 channels, conv2 channels, fc1 width]"),
    "conv_bn": ModelSpec(None, None, [16, 32, 64], None, True, True, "channels of each conv stage"),
    "vgg": ModelSpec(
        tuple(VGG_CFGS),
        19,
        lambda d: [v for v in VGG_CFGS[d] if isinstance(v, int)],
        lambda d: sum(isinstance(v, int) for v in VGG_CFGS[d]),
        True,
        True,
        "channels of each conv layer",
    ),
    "resnet": ModelSpec(RESNET_DEPTHS, 20, [16, 32, 64], 3, True, False, "channels of the three stages"),
}
MODEL_NAMES = tuple(SPECS)
EXTERNAL_NAMES = ("torchvision", "target")


def _check_checkpoint(path: Optional[str]) -> None:
    if path is None:
        return
    file = Path(path).expanduser()
    if file.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise UserError(
            f"model.checkpoint: {path} must be a state dict saved as {', '.join(CHECKPOINT_SUFFIXES)} "
            f"(got suffix {file.suffix or 'none'!r})"
        )
    if not file.is_file():
        raise UserError(f"model.checkpoint: no such file {file}; give the path of a saved state dict")


def _check_bn_weight_init(value: Optional[float]) -> None:
    if value is not None and not math.isfinite(value):
        raise UserError(f"model.bn_weight_init: must be a finite number (got {value})")


@dataclass
class ModelConfig:
    """The ``model`` group.

    - ``name``: lenet300 | lenet5 | mlp_bn | conv_bn | vgg | resnet.
    - ``init``: kaiming_normal | glorot_normal | variance_scaling | lecun_normal | pytorch (see ``models.init``).
    - ``depth``: vgg 11/16/19 (default 19: slimming's VGGNet and LTH's VGG-19; LMC uses 16), resnet 6n+2 in
      20/32/44/56/110 (default 20).
    - ``widths``: overrides the layer widths (MLP hidden widths, conv_bn stage channels, vgg per-conv channels,
      resnet stage channels, lenet5 [conv1, conv2, fc1]).
    - ``batchnorm``: None = the model's default; switchable for the MLPs, conv_bn and vgg.
    - ``bn_weight_init``: initial BN scale γ (network slimming uses 0.5, Liu et al. 2017 §4.3).
    - ``checkpoint``: a state dict (.pt/.pth/.safetensors) the dense model starts from.
    """

    name: str = "lenet300"
    init: str = "kaiming_normal"
    depth: Optional[int] = None
    widths: Optional[list[int]] = None
    batchnorm: Optional[bool] = None
    bn_weight_init: float = 1.0
    checkpoint: Optional[str] = None

    def __post_init__(self) -> None:
        if self.name not in SPECS:
            raise UserError(
                f"model.name: unknown model {self.name!r}; choose one of {', '.join(MODEL_NAMES + EXTERNAL_NAMES)}"
            )
        spec = SPECS[self.name]
        if self.init == NATIVE:
            raise UserError(
                f"model.init: {NATIVE} is the constructor's own initialization of torchvision and target "
                f"models; {self.name} is built by prunelab: use one of {', '.join(INITS)}"
            )
        if self.init not in INITS:
            raise UserError(f"model.init: must be one of {', '.join(INITS)} (got {self.init!r})")
        if spec.depths is None:
            if self.depth is not None:
                raise UserError(f"model.depth: {self.name} has no depth option (got {self.depth}); remove it")
        elif self.depth is not None and self.depth not in spec.depths:
            raise UserError(f"model.depth: {self.name} supports {', '.join(map(str, spec.depths))} (got {self.depth})")
        if self.widths is not None:
            widths = list(self.widths)
            need = self.widths_length()
            if need is not None and len(widths) != need:
                raise UserError(
                    f"model.widths: {self.name} takes {need} widths ({spec.widths_meaning}); "
                    f"got {len(widths)}: {widths}"
                )
            if not widths or any(not isinstance(w, int) or w < 1 for w in widths):
                raise UserError(
                    f"model.widths: must be a non-empty list of positive integers ({spec.widths_meaning}); got {widths}"
                )
        if self.batchnorm is not None and not spec.batchnorm_switchable and self.batchnorm != spec.default_batchnorm:
            raise UserError(
                f"model.batchnorm: {self.name} is only defined with batchnorm={spec.default_batchnorm}; "
                f"remove the override"
            )
        _check_bn_weight_init(self.bn_weight_init)
        _check_checkpoint(self.checkpoint)

    # Resolved values (the model's defaults filled in) ------------------------------------------------------------
    @property
    def spec(self) -> ModelSpec:
        return SPECS[self.name]

    def resolved_depth(self) -> Optional[int]:
        return self.depth if self.depth is not None else self.spec.default_depth

    def required_depth(self) -> int:
        """The resolved depth of a model that has one (vgg, resnet); asking a depth-less model is a bug."""
        depth = self.resolved_depth()
        if depth is None:
            raise TypeError(f"model {self.name} has no depth option")
        return depth

    def widths_length(self) -> Optional[int]:
        need = self.spec.widths_len
        return need(self.required_depth()) if callable(need) else need

    def resolved_widths(self) -> list[int]:
        if self.widths is not None:
            return list(self.widths)
        default = self.spec.default_widths
        return list(default(self.required_depth()) if callable(default) else default)

    def resolved_batchnorm(self) -> bool:
        return self.spec.default_batchnorm if self.batchnorm is None else bool(self.batchnorm)

    @property
    def tag(self) -> str:
        """Short display name that includes the depth: ``vgg19``, ``resnet20``, ``lenet300``."""
        depth = self.resolved_depth()
        return f"{self.name}{depth}" if depth is not None else self.name


def _check_init(init: str) -> None:
    if init != NATIVE and init not in INITS:
        raise UserError(
            f"model.init: must be {NATIVE} (the constructor's own) or one of {', '.join(INITS)} (got {init!r})"
        )


@dataclass
class TorchvisionConfig:
    """``model=torchvision``: a torchvision classification model, ``torchvision.models.get_model(arch)`` without
    pretrained weights (start from your own with ``checkpoint``), ``num_classes`` from the dataset.

    - ``small_input``: the documented adaptation for small images (CIFAR-sized), off by default: ResNet-family stem
      3x3 conv stride 1 without the max-pool (as the CIFAR ResNet-18 of Liu et al. 2019's and kuangliu's code);
      MobileNet first conv stride 1. Other architectures have none (a one-line error).
    - A dataset whose channel count differs from the model's first conv (greyscale images) gets that conv rebuilt
      for its channels; nothing else changes.
    - ``kwargs``: further constructor arguments (``+model.kwargs.width_mult=0.5`` for MobileNet).
    - ``init``: ``native`` = torchvision's own initialization, seeded; or one of prunelab's schemes.
    - ``bn_weight_init``: null keeps the constructor's BN scales; a number sets every γ (slimming: 0.5).
    """

    name: str = "lenet300"  # kept as in ModelConfig so that a stage hash always names the kind
    arch: str = MISSING
    small_input: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)
    init: str = NATIVE
    bn_weight_init: Optional[float] = None
    checkpoint: Optional[str] = None

    def __post_init__(self) -> None:
        if not isinstance(self.arch, str) or not self.arch:
            raise UserError(f"model.arch: must be a torchvision classification model name (got {self.arch!r})")
        _check_init(self.init)
        _check_bn_weight_init(self.bn_weight_init)
        _check_checkpoint(self.checkpoint)
        reserved = sorted({"num_classes", "weights"} & set(self.kwargs))
        if reserved:
            raise UserError(
                f"model.kwargs.{reserved[0]}: set by prunelab (num_classes from the dataset; no "
                f"downloaded weights: use model.checkpoint); remove it"
            )

    @property
    def tag(self) -> str:
        return f"{self.arch}-small" if self.small_input else self.arch


@dataclass
class TargetModelConfig:
    """``model=target``: any callable (dotted path) returning an ``nn.Module``, called as Hydra instantiates a
    ``_target_``: the YAML's other keys (``kwargs``) are its arguments, and ``input_shape`` (C, H, W),
    ``num_classes`` and ``in_channels`` are passed too when its signature names them and the config does not."""

    name: str = "lenet300"
    target: str = MISSING
    kwargs: dict[str, Any] = field(default_factory=dict)
    init: str = NATIVE
    bn_weight_init: Optional[float] = None
    checkpoint: Optional[str] = None

    def __post_init__(self) -> None:
        if not isinstance(self.target, str) or "." not in self.target:
            raise UserError(
                f"model._target_: must be a dotted path to a callable, e.g. torchvision.models.resnet18 "
                f"(got {self.target!r})"
            )
        _check_init(self.init)
        _check_bn_weight_init(self.bn_weight_init)
        _check_checkpoint(self.checkpoint)

    @property
    def tag(self) -> str:
        return self.target


AnyModelConfig = ModelConfig | TorchvisionConfig | TargetModelConfig
# The target model's own keys; every other key of its YAML node goes to the callable.
TARGET_KEYS = ("name", "init", "bn_weight_init", "checkpoint")


def schema_for(name: str) -> type:
    return {"torchvision": TorchvisionConfig, "target": TargetModelConfig}.get(name, ModelConfig)


def model_config(cfg: Any) -> AnyModelConfig:
    """The typed config of ``cfg`` (a model config, a model name, a mapping or a DictConfig) in its schema."""
    if isinstance(cfg, (ModelConfig, TorchvisionConfig, TargetModelConfig)):
        return cfg
    if isinstance(cfg, str):
        return ModelConfig(name=cfg)
    from omegaconf import DictConfig, OmegaConf

    node: dict = dict(OmegaConf.to_container(cfg, resolve=True)) if isinstance(cfg, DictConfig) else dict(cfg)  # type: ignore[arg-type]
    schema = schema_for(node.get("name", "lenet300"))
    if schema is TargetModelConfig:
        return typed_target(schema, node, TARGET_KEYS, "model")
    return typed(schema, node, "model")
