"""The training schedule (``TrainConfig``) and the one loop every stage trains with."""

from foundations.training.config import OPTIMIZERS, SCHEDULES, TrainConfig
from foundations.training.loop import (
    Diverged,
    Hooks,
    IterationHook,
    TrainOutcome,
    channels_last,
    eval_mode,
    evaluate,
    is_convolutional,
    resolve_device,
    total_iterations,
    train,
)

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "Diverged",
    "Hooks",
    "IterationHook",
    "TrainConfig",
    "TrainOutcome",
    "channels_last",
    "eval_mode",
    "evaluate",
    "is_convolutional",
    "resolve_device",
    "total_iterations",
    "train",
]
