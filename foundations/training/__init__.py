"""The training schedule (``TrainConfig``) and the one loop every stage trains with."""

from foundations.training.config import OPTIMIZERS, SCHEDULES, TrainConfig
from foundations.training.layout import (
    ConvGeometry,
    channels_last,
    conv_geometries,
    is_convolutional,
    nhwc_safe,
    with_shapes,
)
from foundations.training.loop import (
    Diverged,
    Hooks,
    IterationHook,
    TrainOutcome,
    eval_mode,
    evaluate,
    resolve_device,
    total_iterations,
    train,
)

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "ConvGeometry",
    "Diverged",
    "Hooks",
    "IterationHook",
    "TrainConfig",
    "TrainOutcome",
    "channels_last",
    "conv_geometries",
    "eval_mode",
    "evaluate",
    "is_convolutional",
    "nhwc_safe",
    "resolve_device",
    "total_iterations",
    "train",
    "with_shapes",
]
