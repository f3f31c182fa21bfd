"""Recovery: how a pruned network is trained afterwards, relative to the dense schedule (T = its length, t =
``epochs``, the retraining budget). ``protocol`` names the paper each one comes from:

- ``fine_tune`` (default; Han, Pool, Tran & Dally, NeurIPS 2015 §3): keep the pruned trained weights, train t epochs
  at the dense LR × ``lr_scale`` (Han: 0.1), on the dense schedule's shape over the t epochs (``schedule`` and
  ``milestones`` may change it).
- ``weight_rewind`` (Frankle, Dziugaite, Roy & Carbin, ICML 2020, "Linear mode connectivity and the lottery ticket
  hypothesis"; Renda, Frankle & Carbin, ICLR 2020 §2 "weight rewinding"): reset the surviving weights to their
  values at iteration k = T − t of the dense run (k = 0: the initialization, the original lottery ticket) and retrain
  them for the rest of the dense schedule, LR and data order replayed from k.
- ``lr_rewind`` (Renda, Frankle & Carbin, ICLR 2020 §2 "learning rate rewinding"): keep the pruned trained weights
  and retrain t epochs with the dense schedule's LR (and data order) replayed from epoch T − t (the official code's
  ``--lottery_reset_global_step_to``); t = T replays it from the start.

The rewinding protocols replay the dense schedule itself: ``lr``, ``lr_scale``, ``schedule`` and ``milestones`` do
not apply, and t ≤ T. Both start with fresh optimizer state (momentum 0), where the TF code restores the rewound
checkpoint's momentum (Renda et al.'s ``PruningHook``): a documented difference.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from foundations.checks import check
from foundations.errors import UserError
from foundations.training import TrainConfig, total_iterations
from methods.pipeline.api import StageRef, Stages, Weights

PROTOCOLS = ("fine_tune", "weight_rewind", "lr_rewind")
REWINDING = ("weight_rewind", "lr_rewind")
# The fields a rewinding protocol does not read: it replays the dense schedule (``ignored_fields`` refuses them set)
FINE_TUNE_ONLY = ("lr", "lr_scale", "schedule", "milestones")


@dataclass
class Recovery:
    """``epochs``/``lr`` of None keep the dense values; ``lr_scale`` multiplies the LR (Han: 0.1)."""

    epochs: Optional[int] = None
    lr: Optional[float] = None
    lr_scale: float = 1.0
    schedule: Optional[str] = None
    milestones: Optional[list[float]] = None
    protocol: str = "fine_tune"  # fine_tune | weight_rewind | lr_rewind (module docstring)

    def __post_init__(self) -> None:
        check(self.epochs is None or self.epochs >= 1, "method.recovery.epochs", f"must be >= 1 (got {self.epochs})")
        check(self.lr_scale > 0, "method.recovery.lr_scale", f"must be > 0 (got {self.lr_scale})")
        check(
            self.protocol in PROTOCOLS,
            "method.recovery.protocol",
            f"must be one of {', '.join(PROTOCOLS)} (got {self.protocol!r})",
        )

    @property
    def rewinds(self) -> bool:
        return self.protocol in REWINDING


# The fine-tune of a pruned trained network unless a method says otherwise: 5 epochs at LR x 0.1. The YAMLs of
# conf/method/ set it until it moved into the schemas (``moved_default``: hashed against what the schemas said then).
FINE_TUNE = Recovery(epochs=5, lr_scale=0.1)


def recovery_config(recovery: Recovery, base: TrainConfig) -> TrainConfig:
    """The training schedule of a fine-tune: ``base`` (the dense schedule) with the recovery's changes. A rewinding
    protocol trains ``base`` itself from ``rewind_iteration`` (``methods.pipeline.unstructured``); only weight-level
    methods offer it."""
    if recovery.rewinds:
        raise UserError(
            f"method.recovery.protocol: {recovery.protocol} is offered by the weight-level methods (magnitude, obd, "
            f"random after training); this method fine-tunes (protocol=fine_tune)"
        )
    changes: dict = {"lr": (recovery.lr if recovery.lr is not None else base.lr) * recovery.lr_scale}
    if recovery.epochs is not None:
        changes.update(epochs=recovery.epochs, iterations=None)
    if recovery.schedule is not None:
        changes["schedule"] = recovery.schedule
    if recovery.milestones is not None:
        changes["milestones"] = list(recovery.milestones)
    return replace(base, **changes)


def rewind_iteration(recovery: Recovery, base: TrainConfig, batches_per_epoch: int) -> int:
    """k = T − t in iterations: where a rewinding protocol restarts the dense schedule ``base`` (t = T without
    ``epochs``)."""
    total = total_iterations(base, batches_per_epoch)
    retrain = total if recovery.epochs is None else recovery.epochs * batches_per_epoch
    if retrain > total:
        raise UserError(
            f"method.recovery.epochs: {recovery.protocol} replays the last t epochs of the dense schedule, so t must "
            f"be at most its {total / batches_per_epoch:g} epochs (got {recovery.epochs}); lower it, or lengthen "
            f"train.epochs"
        )
    return total - retrain


def rewind_start(stages: Stages, k: int, name: str = "dense") -> tuple[StageRef, StageRef, Weights]:
    """(the dense run from the init, keeping its weights at iteration ``k``; where a retraining rewound to ``k``
    starts: the init itself for k = 0, else that snapshot). The lottery's levels and ``weight_rewind`` share it, so
    both rewind to the same stored weights."""
    init = stages.init_stage()
    dense = stages.train_stage(name, init, stages.train_config, snapshots=(k,) if k else ())
    return (dense, init, "selected") if k == 0 else (dense, dense, k)
