"""Typed stage results: what each kind of stage returns to the method that chained it, and stores in its
``result.json``. Each type is the one codec between the two (``to_json`` / ``from_json``); nothing else reads a
stored result by its keys.

The JSON of every type is exactly what the stages stored before these types existed (the checksums of old stores
and the reuse of their stages depend on reading them back), which is why a channel plan's facts sit at the top
level of its result while a mask's are under ``info``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, ClassVar, Generic, Optional, TypeVar

from foundations.training import TrainConfig

Json = dict[str, Any]


@dataclass(frozen=True)
class Accuracy:
    """Loss and accuracy of one set of weights on the validation and the test split."""

    val_loss: float
    val_acc: float
    test_loss: float
    test_acc: float

    def accuracy_json(self) -> Json:
        return {f.name: getattr(self, f.name) for f in fields(Accuracy)}

    @classmethod
    def accuracy_from(cls, data: Mapping[str, Any]) -> Accuracy:
        return Accuracy(**{f.name: data[f.name] for f in fields(Accuracy)})


@dataclass(frozen=True)
class Evaluation(Accuracy):
    """One evaluation of a training stage: a row of its ``metrics.jsonl`` (``foundations.training.train``)."""

    iteration: int
    epoch: float
    train_loss: Optional[float]  # None: a zero-length schedule's start weights, evaluated
    lr: float

    def to_json(self) -> Json:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Evaluation:
        return cls(**{f.name: data[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class ModelInput:
    """What rebuilds a stage's model without the data (``runners/export.py``): not hashed, the identity decides it."""

    input_shape: list[int]
    num_classes: int
    mean: list[float]  # the normalization the model expects: (pixels / 255 − mean) / std per channel
    std: list[float]

    @property
    def shape(self) -> tuple[int, int, int]:
        channels, height, width = self.input_shape
        return channels, height, width

    def to_json(self) -> Json:
        return {
            "input_shape": self.input_shape,
            "num_classes": self.num_classes,
            "normalization": {"mean": self.mean, "std": self.std},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelInput:
        norm = data["normalization"]
        return cls(list(data["input_shape"]), int(data["num_classes"]), list(norm["mean"]), list(norm["std"]))


@dataclass(frozen=True, kw_only=True)
class StageResult:
    """What every stage stores besides its own facts."""

    kind: ClassVar[str]
    model_input: Optional[ModelInput] = None  # set by the experiment; absent in stages stored before it

    def to_json(self) -> Json:
        extra = {"model_input": self.model_input.to_json()} if self.model_input is not None else {}
        return {**self.facts_json(), **extra}

    def facts_json(self) -> Json:
        raise NotImplementedError

    @staticmethod
    def model_input_of(data: Mapping[str, Any]) -> Optional[ModelInput]:
        found = data.get("model_input")
        return ModelInput.from_json(found) if isinstance(found, Mapping) else None


@dataclass(frozen=True, kw_only=True)
class InitResult(StageResult):
    """Freshly initialized weights (``init_seed``), or a checkpoint's (``checkpoint``: its sha256 id)."""

    kind: ClassVar[str] = "init"
    init_seed: Optional[int] = None
    checkpoint: Optional[str] = None

    def facts_json(self) -> Json:
        return {"checkpoint": self.checkpoint} if self.checkpoint is not None else {"init_seed": self.init_seed}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InitResult:
        return cls(
            init_seed=data.get("init_seed"), checkpoint=data.get("checkpoint"), model_input=cls.model_input_of(data)
        )


@dataclass(frozen=True, kw_only=True)
class TrainResult(StageResult):
    """A training run: the evaluation of the checkpoint it reports (``train.selection``) and of its last iterate."""

    kind: ClassVar[str] = "train"
    selected: Evaluation
    final: Evaluation
    iterations: int
    early_stop_iteration: Optional[int]  # minimum validation loss; None without a validation split
    train: TrainConfig  # the schedule as run (its layout resolved)

    def facts_json(self) -> Json:
        return {
            "selected": self.selected.to_json(),
            "final": self.final.to_json(),
            "iterations": self.iterations,
            "early_stop_iteration": self.early_stop_iteration,
            "train": asdict(self.train),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrainResult:
        known = {f.name for f in fields(TrainConfig)}
        return cls(
            selected=Evaluation.from_json(data["selected"]),
            final=Evaluation.from_json(data["final"]),
            iterations=int(data["iterations"]),
            early_stop_iteration=data["early_stop_iteration"],
            train=TrainConfig(**{k: v for k, v in data["train"].items() if k in known}),
            model_input=cls.model_input_of(data),
        )


@dataclass(frozen=True, kw_only=True)
class PruneResult(StageResult):
    """A pruning step: the accuracy of the weights it started from (None when never evaluated: an init, a snapshot,
    another prune stage) and right after it."""

    kind: ClassVar[str] = "prune"
    before_pruning: Optional[Accuracy]
    after_pruning: Accuracy

    def accuracies_json(self) -> Json:
        before = self.before_pruning.accuracy_json() if self.before_pruning is not None else None
        return {"before_pruning": before, "after_pruning": self.after_pruning.accuracy_json()}

    @staticmethod
    def accuracies(data: Mapping[str, Any]) -> dict[str, Any]:
        before = data.get("before_pruning")
        return {
            "before_pruning": Accuracy.accuracy_from(before) if before else None,
            "after_pruning": Accuracy.accuracy_from(data["after_pruning"]),
        }


@dataclass(frozen=True, kw_only=True)
class MaskResult(PruneResult):
    """Weight-level pruning: the masks' density per tensor, and the method's facts about the step (``info``: OBD's
    predicted and measured loss increase), which the record's ``rounds`` carry as they are."""

    info: dict[str, Any] = field(default_factory=dict)
    layer_density: dict[str, float] = field(default_factory=dict)

    def facts_json(self) -> Json:
        return {"info": self.info, **self.accuracies_json(), "layer_density": self.layer_density}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MaskResult:
        return cls(
            info=dict(data.get("info") or {}),
            layer_density=dict(data.get("layer_density") or {}),
            model_input=cls.model_input_of(data),
            **cls.accuracies(data),
        )


# A plan stage's facts: a dataclass of the method's (its fields are top-level keys of the stage's result.json).
F = TypeVar("F")


@dataclass(frozen=True, kw_only=True)
class PlanResult(PruneResult, Generic[F]):
    """Channel pruning: the method's facts about the plan (``facts``, a dataclass the method defines)."""

    facts: F

    def facts_json(self) -> Json:
        own = asdict(self.facts) if is_dataclass(self.facts) and not isinstance(self.facts, type) else {}
        return {**own, **self.accuracies_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], facts: type[F]) -> PlanResult[F]:
        if not is_dataclass(facts):
            raise TypeError(f"a plan stage's facts are a dataclass (got {facts!r})")
        found = facts(**{f.name: data[f.name] for f in fields(facts) if f.name in data})
        return cls(facts=found, model_input=cls.model_input_of(data), **cls.accuracies(data))


@dataclass(frozen=True)
class NoFacts:
    """A plan stage read without its method's facts type (a source experiment's final stage)."""


def decode(kind: str, data: Mapping[str, Any], *, has_plan: bool, facts: type = NoFacts) -> StageResult:
    """The typed result of a stored stage of ``kind`` (a prune stage with a channel plan: its facts as ``facts``)."""
    if kind == "init":
        return InitResult.from_json(data)
    if kind == "train":
        return TrainResult.from_json(data)
    if kind == "prune":
        return PlanResult.from_json(data, facts) if has_plan else MaskResult.from_json(data)
    raise ValueError(f"no typed result for stages of kind {kind!r}")
