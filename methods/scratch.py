"""Training the pruned architecture from scratch — Liu, Sun, Zhou, Huang & Darrell, "Rethinking the Value of
Network Pruning", ICLR 2019, as its code defines them (``Eric-mingjie/rethinking-network-pruning``).

Take the result of another pruning experiment — a channel plan (structured) or a mask (unstructured) — keep only
its *architecture*, re-initialize randomly with the baseline init and train normally. A plan's architecture is its
widths (how many channels each group keeps, not which), so two sources that leave the same widths — slimming and
ThiNet often do on an MLP — share the scratch stages instead of training the same network twice:

- ``budget=E`` (Scratch-E): the dense model's epochs (``train``), or ``epochs`` where a comparison matches every
  arm's epochs from initialization (the survey's ``survey.budget=matched``: dense + fine-tune epochs).
- ``budget=B`` (Scratch-B): the same computation, epochs = round(E · FLOPs_dense / FLOPs_pruned), where a mask counts
  only its nonzero weights (the Rethinking code's ``count_flops.py``; its ``main_B.py`` truncates with ``int()``, the
  issue asks for ``round``: ``epochs_rounding`` offers both, ``round`` default). LR milestones are fractions of the
  run, so they move with the new length (decay at 50 %/75 % of the *new* length, as ``main_B.py``). ``budget_cap``
  caps the multiple (the ImageNet runs use 2×).
- ``flops`` — how FLOPs are counted for that ratio: ``rethinking`` (default, the count Scratch-B is defined by:
  ``compute_flops.py`` / ``count_flops.py`` also count biases, BatchNorm, ReLU and pooling — see
  ``methods.pipeline.flops``) or ``conv_linear`` (the records' multiply-adds of Conv2d/Linear only). The extra
  operations scale with the kept channels, so the two give different budgets for channel pruning; the ratio and both
  counts are recorded (``scratch_flops``).

The source is referenced by its config, never by a path: ``method.source=slimming`` with this experiment's
``method.sparsity`` (plus ``method.source_overrides`` for any other field of the source method), on the same model,
data, training schedule and seed. It is looked up in the store and, with ``build_source=true`` (default, so a sweep
is self-contained), computed there if missing; a concurrent sweep job needing it waits on the store's lock.

The re-initialization draws from its own seed (``seeds.init`` + ``REINIT_OFFSET``, or ``method.reinit_seed``), so the
weights differ from the source's original initialization: with the same seed, a mask on a re-drawn init would be
the lottery ticket's winning initialization, not a random one. The mask of an unstructured source stays fixed
during training (the Rethinking code masks the gradients of pruned weights).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Optional

from foundations.checks import check, typed
from foundations.errors import ConfigError
from foundations.record import ExperimentRecord
from foundations.seeds import REINIT_OFFSET
from foundations.training import TrainConfig
from methods import get_method, registry
from methods.pipeline.api import Method, MethodConfig, Stages
from methods.pipeline.flops import rethinking_flops

FLOP_COUNTS = ("rethinking", "conv_linear")


@dataclass
class ScratchConfig(MethodConfig):
    name: str = "scratch"
    sparsity: float = 0.5
    source: str = "magnitude"  # the method whose pruned architecture is trained from scratch
    source_overrides: dict[str, Any] = field(default_factory=dict)  # other config fields of the source method
    budget: str = "E"  # E: the dense epochs | B: the dense computation (FLOPs)
    epochs: Optional[int] = None  # E, the length Scratch-B scales (None: the dense schedule's, train.*)
    budget_cap: Optional[float] = None  # Scratch-B: at most this multiple of the dense epochs (ImageNet: 2)
    epochs_rounding: str = "round"  # round (the issue) | floor (main_B.py's int())
    reinit_seed: Optional[int] = None  # None: seeds.init + REINIT_OFFSET
    build_source: bool = True  # compute the source experiment when the store lacks it
    flops: str = "rethinking"  # Scratch-B's FLOP count: rethinking (the Rethinking code's) | conv_linear

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.budget in ("E", "B"), "method.budget", f"must be E or B (got {self.budget!r})")
        check(self.budget_cap is None or self.budget_cap >= 1, "method.budget_cap", "must be >= 1")
        check(self.epochs is None or self.epochs >= 1, "method.epochs", f"must be >= 1 (got {self.epochs})")
        check(self.epochs_rounding in ("round", "floor"), "method.epochs_rounding", "must be round or floor")
        check(
            self.flops in FLOP_COUNTS, "method.flops", f"must be one of {', '.join(FLOP_COUNTS)} (got {self.flops!r})"
        )
        check(self.source != "scratch", "method.source", "scratch needs a pruning method as its source")
        check(self.source != "dense", "method.source", "dense has nothing pruned; choose a pruning method")


@dataclass
class ScratchOutputs:
    source: dict[str, Any]  # the source experiment's method config (name, sparsity, source_overrides)
    source_test_acc: Optional[float]
    source_stage: Optional[str]  # the source's final stage, whose architecture was trained from scratch
    budget: str  # "E" | "B"
    scratch_epochs: int
    scratch_iterations: Optional[int]
    scratch_flops: Optional[dict[str, Any]]  # Scratch-B: {"count": rethinking|conv_linear, "dense", "pruned"}


def scratch_b_length(
    length: int, flops_dense: float, flops_pruned: float, *, cap: Optional[float] = None, rounding: str = "round"
) -> int:
    """Scratch-B's training length: ``length`` · FLOPs_dense / FLOPs_pruned, capped at ``cap`` × ``length``."""
    ratio = flops_dense / max(flops_pruned, 1)
    if cap is not None:
        ratio = min(ratio, cap)
    scaled = length * ratio
    return max(1, int(math.floor(scaled)) if rounding == "floor" else int(round(scaled)))


class Scratch(Method):
    name = "scratch"
    Config = ScratchConfig
    Outputs = ScratchOutputs
    # build_source: where the source comes from, not what it is; prunable: the source is configured by
    # source_overrides, scratch's own prunable set only changes what its record's density counts
    result_neutral: ClassVar[frozenset[str]] = frozenset(
        {"build_source", "prunable.biases", "prunable.batchnorm", "prunable.classifier", "prunable.exclude"}
    )

    def __init__(self, cfg):
        super().__init__(cfg)
        # Tables and plots put scratch next to its source: a channel plan's scratch is a structured result.
        self.kind = get_method(cfg.source).kind if cfg.source in registry() else "unstructured"

    def label(self, stages: Optional[Stages] = None) -> str:
        notes = [self.cfg.source]
        if self.cfg.budget == "B":
            notes += [f"cap {self.cfg.budget_cap:g}×"] if self.cfg.budget_cap is not None else []
            notes += ["conv/linear FLOPs"] if self.cfg.flops == "conv_linear" else []
        return f"scratch-{self.cfg.budget} ({', '.join(notes)})"

    def source_config(self) -> dict:
        return {**self.cfg.source_overrides, "name": self.cfg.source, "sparsity": self.cfg.sparsity}

    def retrains_dense_schedule(self) -> bool:
        return True  # Scratch-E/B train for the dense epochs (or FLOPs)

    def ignored_fields(self) -> dict[str, str]:
        if self.cfg.budget == "B":
            return super().ignored_fields()
        only_b = "Scratch-E trains for the dense epochs; only method.budget=B reads it"
        return {**super().ignored_fields(), **dict.fromkeys(("budget_cap", "epochs_rounding", "flops"), only_b)}

    def sets_own_sparsity(self) -> bool:
        if self.cfg.source not in registry():
            return False
        source = get_method(self.cfg.source)
        return source(typed(source.Config, self.source_config(), "method.source")).sets_own_sparsity()

    def validate(self, stages: Stages) -> None:
        get_method(self.cfg.source)  # an unknown source method: one line listing the methods
        if not self.cfg.build_source:  # resolve now, so a missing source stops the run before any stage is written
            stages.source_experiment(self.source_config(), build=False)

    def chain(self, stages: Stages) -> ExperimentRecord:
        record = stages.source_experiment(self.source_config(), build=self.cfg.build_source)
        source_final = stages.stage_at(record.final_ref())
        structured = source_final.has_plan()
        if not structured and not source_final.has_masks():
            raise ConfigError(
                f"method.source: the {self.cfg.source} experiment left neither a channel plan nor a mask; "
                f"scratch needs a pruned architecture"
            )
        seed = self.cfg.reinit_seed if self.cfg.reinit_seed is not None else stages.seed("init") + REINIT_OFFSET
        init = stages.init_stage("scratch_init", seed=seed, architecture=source_final.plan() if structured else None)
        flops = self.flops_of(stages, record) if self.cfg.budget == "B" else None
        train_cfg = self.budget_config(stages, flops)
        final = stages.train_stage("scratch", init, train_cfg, masks=None if structured else source_final)
        outputs = ScratchOutputs(
            source=self.source_config(),
            source_test_acc=record.test_acc,
            source_stage=record.final_stage,
            budget=self.cfg.budget,
            scratch_epochs=train_cfg.epochs,
            scratch_iterations=train_cfg.iterations,
            scratch_flops=flops,
        )
        return stages.finish(final, dense=stages.dense_stage(), outputs=outputs)

    def flops_of(self, stages: Stages, source_record: ExperimentRecord) -> dict:
        """FLOPs of the dense and the source's pruned model, counted as ``method.flops`` says."""
        if self.cfg.flops == "conv_linear":
            dense, pruned = source_record.flops_dense or 0, source_record.flops_effective or 0
        else:
            shape = tuple(stages.example_input.shape[1:])
            dense = rethinking_flops(stages.base_model(), shape)
            pruned = rethinking_flops(stages.model_from(stages.stage_at(source_record.final_ref())), shape)
        return {"count": self.cfg.flops, "dense": int(dense), "pruned": int(pruned)}

    def budget_config(self, stages: Stages, flops: Optional[dict]) -> TrainConfig:
        base = stages.train_config
        if self.cfg.epochs is not None:  # E set by the comparison, not by the dense schedule
            base = replace(base, epochs=self.cfg.epochs, iterations=None)
        if self.cfg.budget == "E" or flops is None:
            return base
        kwargs = dict(cap=self.cfg.budget_cap, rounding=self.cfg.epochs_rounding)
        ratio = (flops["dense"], flops["pruned"])
        if base.iterations is not None:
            return replace(base, iterations=scratch_b_length(base.iterations, *ratio, **kwargs))
        return replace(base, epochs=scratch_b_length(base.epochs, *ratio, **kwargs))


METHOD = Scratch
