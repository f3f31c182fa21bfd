"""Schema of the ``model`` config group: one dataclass for every architecture, options checked per model.

Options that a model does not have (``depth`` on an MLP, ``batchnorm`` on LeNet-5) are refused rather than ignored,
so a typo in a sweep cannot silently train the wrong network. ``None`` means "the model's default".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

from foundations.errors import UserError

INITS = ("kaiming_normal", "glorot_normal", "variance_scaling", "lecun_normal", "pytorch")

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
    "vgg": ModelSpec(tuple(VGG_CFGS), 19, lambda d: [v for v in VGG_CFGS[d] if isinstance(v, int)],
                     lambda d: sum(isinstance(v, int) for v in VGG_CFGS[d]), True, True, "channels of each conv layer"),
    "resnet": ModelSpec(RESNET_DEPTHS, 20, [16, 32, 64], 3, True, False, "channels of the three stages"),
}
MODEL_NAMES = tuple(SPECS)


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
    """

    name: str = "lenet300"
    init: str = "kaiming_normal"
    depth: Optional[int] = None
    widths: Optional[list[int]] = None
    batchnorm: Optional[bool] = None
    bn_weight_init: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in SPECS:
            raise UserError(f"model.name: unknown model {self.name!r}; choose one of {', '.join(MODEL_NAMES)}")
        spec = SPECS[self.name]
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
                raise UserError(f"model.widths: {self.name} takes {need} widths ({spec.widths_meaning}); "
                                f"got {len(widths)}: {widths}")
            if not widths or any(not isinstance(w, int) or w < 1 for w in widths):
                raise UserError(f"model.widths: must be a non-empty list of positive integers ({spec.widths_meaning}); "
                                f"got {widths}")
        if self.batchnorm is not None and not spec.batchnorm_switchable and self.batchnorm != spec.default_batchnorm:
            raise UserError(f"model.batchnorm: {self.name} is only defined with batchnorm={spec.default_batchnorm}; "
                            f"remove the override")
        if not math.isfinite(self.bn_weight_init):
            raise UserError(f"model.bn_weight_init: must be a finite number (got {self.bn_weight_init})")

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
