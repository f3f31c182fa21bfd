"""What a pruning method is, and the small typed API it is written against.

A method is a typed ``Config`` dataclass and ``chain(stages)``, which chains store stages through ``Stages`` and
returns the experiment record. ``Stages`` (implemented by ``runners.experiment.Experiment``) is everything a method
may use: read-only facts (data, device, seeds, the dense schedule) and the stage constructors. A stage comes back as
a ``StageRef``: its result and its stored weights, masks or channel plan, never a file name.

A method module defines one subclass and sets ``METHOD = TheClass``; the registry in ``methods/__init__.py`` finds
it, so a new method is one module plus one ``conf/method/<name>.yaml``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional, Protocol, Union

import torch
from torch import nn

from datasets.base import DataBundle
from foundations.checks import check
from foundations.errors import UserError
from foundations.record import ExperimentRecord
from foundations.training import Hooks, TrainConfig
from methods.pipeline.channels.plan import ChannelPlan
from methods.pipeline.masks import Masks, MaskSchedule, Prunable

# Which weights of a stage: its validation-selected checkpoint, its last iterate, or its snapshot at iteration k.
Weights = Union[str, int]  # "selected" | "last" | k
SelectFn = Callable[[nn.Module, Masks], tuple[Masks, dict]]
BuildFn = Callable[[nn.Module], tuple[ChannelPlan, nn.Module, dict]]
# What a prune stage does to the masked network before storing and evaluating it (BatchNorm re-estimation); the
# method puts whatever decides it into the stage's spec.
CalibrateFn = Callable[[nn.Module], None]


class StageRef(Protocol):
    """A finished stage in the store."""

    kind: str
    hash: str
    result: dict[str, Any]
    reused: bool

    @property
    def ref(self) -> str: ...  # "kind/hash", as records name stages

    def has_plan(self) -> bool: ...

    def has_masks(self) -> bool: ...

    def plan(self) -> ChannelPlan: ...

    def masks(self) -> Masks: ...

    def weights(self, which: Weights = "selected") -> dict[str, torch.Tensor]: ...

    def shapes(self, which: Weights = "selected") -> dict[str, tuple[int, ...]]: ...  # of weights(which), not loaded

    def snapshot(self, iteration: int) -> dict[str, torch.Tensor]: ...


class Stages(Protocol):
    """The experiment as a method sees it."""

    data: DataBundle
    device: torch.device
    train_config: TrainConfig  # the dense schedule (`train` group)
    progress: bool  # show progress bars
    model_name: str
    from_checkpoint: bool  # model.checkpoint: "the init" (init_stage with no other seed or architecture) is its weights
    model_init: str  # the initialization scheme of the model config (`model.init`)

    def seed(self, purpose: str) -> int: ...  # "init" | "data" | "prune"

    @property
    def example_input(self) -> torch.Tensor: ...

    def base_model(self, seed: Optional[int] = None) -> nn.Module: ...

    def prunable(self, model: nn.Module) -> list[str]: ...

    def model_from(self, stage: StageRef, weights: Weights = "selected") -> nn.Module: ...  # compacted and masked

    def init_stage(
        self,
        name: str = "init",
        *,
        seed: Optional[int] = None,
        architecture: Optional[ChannelPlan] = None,
        prepare: Optional[Callable[[nn.Module], None]] = None,
        extra: Optional[dict] = None,
    ) -> StageRef: ...

    def train_stage(
        self,
        name: str,
        start: StageRef,
        train_cfg: TrainConfig,
        *,
        weights: Weights = "selected",
        masks: Optional[StageRef] = None,
        hooks: Optional[Hooks] = None,
        extra: Optional[dict] = None,
        start_iteration: int = 0,
        snapshots: tuple[int, ...] = (),
        mask_schedule: Optional[MaskSchedule] = None,
    ) -> StageRef: ...

    def mask_stage(
        self,
        name: str,
        source: StageRef,
        spec: dict,
        select: SelectFn,
        *,
        weights: Weights = "selected",
        calibrate: Optional[CalibrateFn] = None,
    ) -> StageRef: ...

    def plan_stage(
        self, name: str, source: StageRef, spec: dict, build: BuildFn, *, weights: Weights = "selected"
    ) -> StageRef: ...

    def dense_stage(self) -> StageRef: ...

    def finish(
        self, final: StageRef, *, pruned: Optional[StageRef] = None, dense: Optional[StageRef] = None, **extra: Any
    ) -> ExperimentRecord: ...

    def source_experiment(self, overrides: dict, *, build: bool = True) -> ExperimentRecord: ...

    def stage_at(self, ref: str) -> StageRef: ...


@dataclass
class MethodConfig:
    name: str = "dense"
    sparsity: float = 0.0  # fraction of prunable weights (unstructured) or channels (structured) removed
    prunable: Prunable = field(default_factory=Prunable)

    def __post_init__(self) -> None:
        check(0.0 <= self.sparsity < 1.0, "method.sparsity", f"must be in [0, 1) (got {self.sparsity})")


class Method:
    name: ClassVar[str]
    kind: str = "unstructured"  # dense | unstructured | structured
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    # Config fields (dotted paths) that change no stored stage: how an experiment is run or reported, never what it
    # computes. Every other field must be in the hash of the stage it changes; tests/test_hashes.py flips each field
    # of each method and checks both sides. Declared here (and extended by subclasses along the MRO) only.
    result_neutral: ClassVar[frozenset[str]] = frozenset({"name"})
    # Config fields (dotted paths; a path covers its sub-fields) the method never reads, each with the reason. A value
    # set for one (unlike the method's default) is refused before any job starts (runners/jobs.py): whoever set it
    # expects an effect there is none. Merged along the MRO; ``ignored_fields()`` adds what the config switches off.
    ignored: ClassVar[Mapping[str, str]] = {}

    def __init__(self, cfg: Any):
        self.cfg = cfg

    @classmethod
    def neutral_fields(cls) -> frozenset[str]:
        return frozenset().union(*(getattr(c, "result_neutral", frozenset()) for c in cls.__mro__))

    def ignored_fields(self) -> dict[str, str]:
        """The fields this configuration of the method never reads (``ignored``, and e.g. random at init: its
        fine-tune), each with the reason."""
        out: dict[str, str] = {}
        for cls in reversed(type(self).__mro__):
            out.update(getattr(cls, "ignored", {}))
        return out

    def label(self, stages: Optional[Stages] = None) -> str:
        """How the method appears in tables and legends (``stages``: the experiment, for facts outside the method's
        own config that make a variant, e.g. SNIP's initialization)."""
        return self.name

    def sets_own_sparsity(self) -> bool:
        """True when the achieved sparsity is the method's own outcome rather than ``method.sparsity`` hit exactly
        (Han's q·σ thresholds, multi-pass slimming): tables then show the achieved value, marked."""
        return False

    def validate(self, stages: Stages) -> None:
        """Refuse impossible requests (UserError) before any stage is written."""

    def retrains_dense_schedule(self) -> bool:
        """Whether ``chain`` trains a stage other than the dense one for the dense schedule itself (``train.*``):
        the lottery's levels, training after pruning at initialization, Scratch-E/B."""
        return False

    def recovery(self) -> Optional[Any]:
        """The ``Recovery`` (methods.pipeline.recover) of the fine-tune, if the method has one."""
        return getattr(self.cfg, "recovery", None)

    def check_schedule(self, stages: Stages) -> None:
        """With ``train.epochs=0`` (a checkpoint, only evaluated) the dense schedule trains nothing, so nothing else
        may take its length from it: refused before any stage is written."""
        if not stages.train_config.empty:
            return
        if self.retrains_dense_schedule():
            raise UserError(
                f"train.epochs: method={self.name} trains for the dense schedule after pruning (or from a "
                f"re-initialization); train.epochs=0 would train nothing; set train.epochs >= 1"
            )
        recovery = self.recovery()
        if recovery is not None and recovery.epochs is None:
            raise UserError(
                "method.recovery.epochs: the fine-tune takes its length from train.epochs, which is 0 "
                "(the checkpoint is only evaluated); set method.recovery.epochs=N"
            )

    def chain(self, stages: Stages) -> ExperimentRecord:
        """Chain stages through ``stages`` and return ``stages.finish(...)``."""
        raise NotImplementedError
