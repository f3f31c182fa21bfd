"""What a pruning method is, and the small typed API it is written against.

A method is a typed ``Config`` dataclass, an ``Outputs`` dataclass (what it reports beyond the common record) and
``chain(stages)``, which chains store stages through ``Stages`` and returns ``stages.finish(...)``. ``Stages``
(implemented by ``runners.experiment.Experiment``) is everything a method may use: read-only facts (data, device,
seeds, the dense schedule) and the stage constructors. A stage comes back as a ``StageRef``: its typed result
(``methods.pipeline.results``) and its stored weights, masks or channel plan, never a file name.

A method module defines one subclass and sets ``METHOD = TheClass``; the registry in ``methods/__init__.py`` finds
it, so a new method is one module plus one ``conf/method/<name>.yaml``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, ClassVar, Generic, Optional, Protocol, TypeVar

import torch
from torch import nn

from datasets.base import DataBundle
from foundations.checks import check
from foundations.errors import UserError
from foundations.record import ExperimentRecord
from foundations.store import Stage, Weights
from foundations.training import Hooks, TrainConfig
from methods.pipeline.channels.plan import ChannelPlan
from methods.pipeline.masks import Masks, MaskSchedule, Prunable
from methods.pipeline.results import (
    Accuracy,
    F,
    InitResult,
    MaskResult,
    PlanResult,
    PruneResult,
    StageResult,
    TrainResult,
)

__all__ = ["Weights"]  # re-exported: which weights of a stage ("selected" | "last" | an iteration)

R = TypeVar("R", bound=StageResult, covariant=True)
SelectFn = Callable[[nn.Module, Masks], tuple[Masks, dict]]
# What a prune stage does to the masked network before storing and evaluating it (BatchNorm re-estimation); the
# method puts whatever decides it into the stage's spec.
CalibrateFn = Callable[[nn.Module], None]


@dataclass(frozen=True)
class StageRef(Generic[R]):
    """A finished stage in the store: its typed result, and its stored weights, masks, channel plan or state."""

    stored: Stage  # the store's folder (foundations.store); read through the methods below
    result: R

    @property
    def kind(self) -> str:
        return self.stored.kind

    @property
    def hash(self) -> str:
        return self.stored.hash

    @property
    def ref(self) -> str:  # "kind/hash", as records name stages
        return self.stored.ref

    @property
    def reused(self) -> bool:
        return self.stored.reused

    def has_plan(self) -> bool:
        return self.stored.has_plan()

    def has_masks(self) -> bool:
        return self.stored.has_masks()

    def plan(self) -> ChannelPlan:
        return ChannelPlan.from_json(self.stored.plan_json())

    def masks(self) -> Masks:
        return self.stored.masks()

    def weights(self, which: Weights = "selected") -> dict[str, torch.Tensor]:
        """The stage's validation-selected weights, its last iterate ("last") or its snapshot at iteration k."""
        return self.stored.weights(which)

    def shapes(self, which: Weights = "selected") -> dict[str, tuple[int, ...]]:
        """The shapes of ``weights(which)``, read without loading them."""
        return self.stored.shapes(which)

    def state(self) -> dict[str, torch.Tensor]:
        """What the stage kept for a stage continuing from it (``PlanStep.state``)."""
        return self.stored.state()


@dataclass
class PlanStep(Generic[F]):
    """What a channel-pruning step built: the plan over the base architecture, the compacted model, the method's
    facts about the step (a dataclass of its own, stored in the stage's result) and tensors a later step continues
    from (``state``: a random generator's state)."""

    plan: ChannelPlan
    model: nn.Module
    facts: F
    state: dict[str, torch.Tensor] = field(default_factory=dict)


BuildFn = Callable[[nn.Module], PlanStep[F]]


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
    ) -> StageRef[InitResult]: ...

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
        data_seed: Optional[int] = None,
    ) -> StageRef[TrainResult]: ...

    def mask_stage(
        self,
        name: str,
        source: StageRef,
        spec: dict,
        select: SelectFn,
        *,
        weights: Weights = "selected",
        calibrate: Optional[CalibrateFn] = None,
    ) -> StageRef[MaskResult]: ...

    def plan_stage(
        self,
        name: str,
        source: StageRef,
        spec: dict,
        build: BuildFn[F],
        facts: type[F],
        *,
        weights: Weights = "selected",
    ) -> StageRef[PlanResult[F]]: ...

    def dense_stage(self) -> StageRef[TrainResult]: ...

    def finish(
        self,
        final: StageRef[TrainResult],
        *,
        pruned: Optional[StageRef[PruneResult]] = None,
        dense: Optional[StageRef[TrainResult]] = None,
        outputs: Any = None,
        before_pruning: Optional[Accuracy] = None,
    ) -> ExperimentRecord: ...

    def source_experiment(self, overrides: dict, *, build: bool = True) -> ExperimentRecord: ...

    def stage_at(self, ref: str) -> StageRef[StageResult]: ...


@dataclass
class MethodConfig:
    """What every method's config has. ``name`` and ``sparsity`` are what a job is: every hash measures them against
    these defaults (``nondefault``: dense, 0), whatever a method's own ``Config`` declares as its defaults."""

    HASH_DEFAULTS: ClassVar[Mapping[str, Any]] = {"name": "dense", "sparsity": 0.0}  # foundations.checks.nondefault

    name: str = "dense"
    sparsity: float = 0.0  # fraction of prunable weights (unstructured) or channels (structured) removed
    prunable: Prunable = field(default_factory=Prunable)

    def __post_init__(self) -> None:
        check(0.0 <= self.sparsity < 1.0, "method.sparsity", f"must be in [0, 1) (got {self.sparsity})")


@dataclass(frozen=True)
class NoOutputs:
    """A method that reports nothing beyond the common record (dense, l1_filter, random_channel)."""


O = TypeVar("O")


def outputs_json(outputs: Any) -> dict[str, Any]:
    """A method's ``Outputs`` as the record's ``outputs`` mapping (its fields, nested values as they are)."""
    if not is_dataclass(outputs) or isinstance(outputs, type):
        raise TypeError(f"a method's outputs are an instance of its Outputs dataclass (got {outputs!r})")
    return {f.name: getattr(outputs, f.name) for f in fields(outputs)}


def outputs_from(kind: type[O], data: Mapping[str, Any]) -> O:
    """A record's ``outputs`` mapping as the method's ``Outputs`` (fields the record lacks take their defaults)."""
    names = {f.name for f in fields(kind)}  # type: ignore[arg-type]
    return kind(**{k: v for k, v in data.items() if k in names})


class Method:
    name: ClassVar[str]
    kind: str = "unstructured"  # dense | unstructured | structured
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    # What the method reports beyond the common record: a dataclass, passed as ``stages.finish(outputs=...)`` and
    # stored as the record's ``outputs`` mapping (tables and claims read ``outputs.<field>``).
    Outputs: ClassVar[type] = NoOutputs
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
