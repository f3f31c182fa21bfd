"""The training schedule every stage trains with (dense training, fine-tuning, rewinding, scratch)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from foundations.checks import check

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "multistep", "cosine", "inv")


@dataclass
class TrainConfig:
    """One training run (dense training, fine-tuning, retraining all use it).

    ``milestones`` are fractions of the total iterations, so a longer (Scratch-B) or shorter budget rescales them
    automatically, as the Rethinking code does.
    """

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "constant"
    milestones: list[float] = field(default_factory=list)
    gamma: float = 0.1
    inv_gamma: float = 1e-4  # Caffe "inv": lr * (1 + inv_gamma * it) ** -inv_power
    inv_power: float = 0.75
    warmup_iterations: int = 0
    epochs: int = 10  # 0 only from a checkpoint (model.checkpoint): the dense stage is then loaded and evaluated
    iterations: Optional[int] = None  # overrides epochs when set
    batch_size: int = 128
    eval_every: int = 0  # iterations between evaluations; 0 = once per epoch
    selection: str = "val_acc"  # which checkpoint the record reports: best val_acc, min val_loss, or last
    channels_last: Optional[bool] = None  # NHWC layout for a network with 2-d convolutions; None: on the CPU only

    @property
    def empty(self) -> bool:
        """No training step at all (``epochs: 0``): a stage trained with it is its start, evaluated."""
        return self.iterations is None and self.epochs == 0

    def __post_init__(self) -> None:
        check(self.optimizer in OPTIMIZERS, "train.optimizer", f"must be one of {OPTIMIZERS} (got {self.optimizer!r})")
        check(self.schedule in SCHEDULES, "train.schedule", f"must be one of {SCHEDULES} (got {self.schedule!r})")
        check(math.isfinite(self.lr) and self.lr > 0, "train.lr", f"must be a finite number > 0 (got {self.lr})")
        check(self.epochs >= 0, "train.epochs", f"must be >= 1, or 0 to only evaluate a checkpoint (got {self.epochs})")
        check(
            self.iterations is None or self.iterations >= 1, "train.iterations", f"must be >= 1 (got {self.iterations})"
        )
        check(self.batch_size >= 1, "train.batch_size", f"must be >= 1 (got {self.batch_size})")
        check(self.weight_decay >= 0, "train.weight_decay", f"must be >= 0 (got {self.weight_decay})")
        check(0 <= self.momentum < 1, "train.momentum", f"must be in [0, 1) (got {self.momentum})")
        check(
            all(0 < m < 1 for m in self.milestones),
            "train.milestones",
            f"are fractions of training in (0, 1), e.g. [0.5, 0.75] (got {list(self.milestones)})",
        )
        check(self.eval_every >= 0, "train.eval_every", f"must be >= 0 (got {self.eval_every})")
        check(self.warmup_iterations >= 0, "train.warmup_iterations", f"must be >= 0 (got {self.warmup_iterations})")
        check(
            self.selection in ("val_acc", "val_loss", "last"),
            "train.selection",
            f"must be val_acc, val_loss or last (got {self.selection!r})",
        )
