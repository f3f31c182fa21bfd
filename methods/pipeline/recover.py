"""Recovery: how a pruned network is trained afterwards (fine-tune, retrain), relative to the dense schedule."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from foundations.checks import check
from foundations.training import TrainConfig


@dataclass
class Recovery:
    """``epochs``/``lr`` of None keep the dense values; ``lr_scale`` multiplies the LR (Han: 0.1)."""

    epochs: Optional[int] = None
    lr: Optional[float] = None
    lr_scale: float = 1.0
    schedule: Optional[str] = None
    milestones: Optional[list[float]] = None

    def __post_init__(self) -> None:
        check(self.epochs is None or self.epochs >= 1, "method.recovery.epochs", f"must be >= 1 (got {self.epochs})")
        check(self.lr_scale > 0, "method.recovery.lr_scale", f"must be > 0 (got {self.lr_scale})")


# The fine-tune of a pruned trained network unless a method says otherwise: 5 epochs at LR x 0.1. The YAMLs of
# conf/method/ set it until it moved into the schemas (``moved_default``: hashed against what the schemas said then).
FINE_TUNE = Recovery(epochs=5, lr_scale=0.1)


def recovery_config(recovery: Recovery, base: TrainConfig) -> TrainConfig:
    """The training schedule of a recovery stage: ``base`` (the dense schedule) with the recovery's changes."""
    changes: dict = {"lr": (recovery.lr if recovery.lr is not None else base.lr) * recovery.lr_scale}
    if recovery.epochs is not None:
        changes.update(epochs=recovery.epochs, iterations=None)
    if recovery.schedule is not None:
        changes["schedule"] = recovery.schedule
    if recovery.milestones is not None:
        changes["milestones"] = list(recovery.milestones)
    return replace(base, **changes)
