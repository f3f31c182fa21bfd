"""Gradual magnitude pruning (GMP) — Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of pruning for
model compression", ICLR 2018 workshop (arXiv:1710.01878), §3, eq. (1); the baseline of Gale, Elsen & Hooker 2019,
"The state of sparsity in deep neural networks".

Pruning during one training run, with one optimizer: from step t₀ the masks are updated every Δt steps, n times, to

    s_t = s_f + (s_i − s_f) · (1 − (t − t₀) / (n Δt))³,   t ∈ {t₀, t₀ + Δt, …, t₀ + nΔt}          (eq. 1)

keeping the largest |w|: every prunable tensor at s_t (``scope=layerwise``, default: the paper's per-layer masks and
TF ``model_pruning``'s per-tensor thresholds, Gale et al.'s "uniform" rows) or one threshold over all of them
(``scope=global``). After t₀ + nΔt the masks are frozen and training goes on. A weight pruned by an update gets
weight, gradient and optimizer state (momentum, Adam moments) exactly zero from then on
(``methods.pipeline.masks.MaskedTraining.update``); weight decay cannot move it either.

Schedule points: ``start`` and ``end`` are fractions of the stage's optimizer steps T; t₀ = round(start·T), Δt =
``frequency`` steps, n = ⌊(round(end·T) − t₀) / Δt⌋, so the last update t₀ + nΔt is at or before end·T. Fractions,
because the LR schedule's milestones are fractions of T too (``train.milestones``): the pruning window keeps its
place in the LR schedule when the length changes (the survey's knobs, the reproduction tiers), as Zhu & Gupta ask
(pruning must end before the LR is too small to recover); Gale et al.'s grid (begin 8K–40K, end 68K–100K of 128K
steps) is such a fraction of one fixed schedule. Δt stays in steps: Zhu & Gupta found 100–1000 steps
indifferent, and each update costs one selection, whatever the schedule's length.

Where it starts (``train_from``):

- ``init`` (default; Zhu & Gupta, Gale et al.): one training run from the initialization, pruning during it, for the
  dense schedule's length (``train.*``) unless ``training.epochs`` sets its own (the survey: the one-shot
  magnitude arm's dense + recovery epochs, equal total epochs).
- ``dense``: from the trained dense model (its last iterate, as ``magnitude``'s default ``prune_from=last``),
  pruned gradually during a retraining schedule: ``training`` relative to ``train.*``, by default its whole length
  at its own LR (LR rewinding, Renda et al. 2020).

Choices against the reference implementations (default first):

- Nested masks: an update keeps the largest |w| among the weights still unmasked, a pruned weight never returns
  (``methods.pipeline.schedules.magnitude_update``; torch.ao's sparsifiers). TF ``model_pruning`` recomputes each
  mask from the raw variable, so a pruned weight could come back; here a pruned weight is exactly 0, so a
  recomputation would rank it last anyway and differs only where a surviving weight is exactly 0 too.
- The level is quantized to Δt, as eq. 1 writes it: between updates the sparsity of the last update holds.
  torch.ao's ``CubicSL`` evaluates the same cubic at every scheduler ``step()`` (its Δt·n only sets the duration),
  so its level moves at every call.
- The level at t is eq. 1 at t: jaxpruner's ``PolynomialSchedule`` takes progress (step + 1 − start)/(end −
  start), one step ahead, and updates where step % Δt == 0 (absolute steps); here updates are at t₀ + kΔt.
- Exact counts: round((1 − s)·n) weights kept per tensor (layerwise) or over all prunable tensors (global), ties
  by position; TF breaks ties at random. Before t₀ nothing is pruned (CubicSL's ``initially_zero``); at t₀ the
  masks take s_i.
- t counts optimizer steps: the update at t acts after the t-th step, before the (t+1)-th forward; t₀ = 0 prunes
  the start weights to s_i before the first step.

The record: ``target_sparsity`` = s_f, and the final model (the validation-selected checkpoint among the
evaluations after the last update, so its masks are the final ones) has exactly the target count; ``pruning_schedule``
lists T, t₀, Δt, n and each update's step and sparsity. Without a prune stage there is no accuracy "before
recovery"; with ``train_from=dense`` the dense baseline is the stage it started from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from foundations.checks import check, nondefault
from foundations.errors import UserError
from foundations.record import ExperimentRecord
from foundations.training import TrainConfig, total_iterations
from methods.pipeline.api import Method, MethodConfig, Stages
from methods.pipeline.collapse import layer_collapse
from methods.pipeline.masks import MaskSchedule
from methods.pipeline.recover import Recovery, recovery_config
from methods.pipeline.schedules import cubic_sparsity, magnitude_update, update_steps

SCOPES = ("layerwise", "global")
ORIGINS = ("init", "dense")


@dataclass
class GMPConfig(MethodConfig):
    name: str = "gmp"
    sparsity: float = 0.9  # s_f
    initial_sparsity: float = 0.0  # s_i, the sparsity of the first update (at t₀)
    start: float = 0.2  # t₀ as a fraction of the stage's optimizer steps
    end: float = 0.7  # the last update at or before this fraction of the steps
    frequency: int = 100  # Δt, optimizer steps between updates
    scope: str = "layerwise"  # layerwise (every tensor at s_t) | global (one threshold)
    train_from: str = "init"  # init (one training run) | dense (retraining the trained dense model)
    training: Recovery = field(default_factory=Recovery)  # GMP's run relative to train.* (None: the dense value)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            0.0 <= self.initial_sparsity <= self.sparsity,
            "method.initial_sparsity",
            f"s_i must be in [0, method.sparsity = {self.sparsity}] (got {self.initial_sparsity})",
        )
        check(
            0.0 <= self.start < self.end <= 1.0,
            "method.start" if not 0.0 <= self.start < 1.0 else "method.end",
            f"fractions of the training steps with 0 <= start < end <= 1 (got start={self.start}, end={self.end})",
        )
        check(self.frequency >= 1, "method.frequency", f"must be >= 1 optimizer step (got {self.frequency})")
        check(self.scope in SCOPES, "method.scope", f"must be one of {SCOPES} (got {self.scope!r})")
        check(self.train_from in ORIGINS, "method.train_from", f"must be one of {ORIGINS} (got {self.train_from!r})")
        check(
            self.training.protocol == "fine_tune",
            "method.training.protocol",
            f"GMP prunes during one training run of its own schedule; there is nothing to rewind (got "
            f"{self.training.protocol!r})",
        )


@dataclass(frozen=True)
class CubicSchedule:
    """Eq. 1 resolved on a stage of ``total`` optimizer steps."""

    total: int
    t0: int
    dt: int
    n: int
    s_i: float
    s_f: float

    @property
    def steps(self) -> list[int]:
        return update_steps(self.t0, self.n, self.dt)

    def sparsity(self, step: int) -> float:
        return cubic_sparsity(step, self.s_i, self.s_f, self.t0, self.n, self.dt)

    def spec(self) -> dict[str, Any]:
        """What the masks' sequence depends on besides the scope and the prunable set (hashed)."""
        return {"t0": self.t0, "dt": self.dt, "n": self.n, "s_i": self.s_i, "s_f": self.s_f}

    def record(self) -> dict[str, Any]:
        return {
            "total_steps": self.total,
            "start_step": self.t0,
            "end_step": self.t0 + self.n * self.dt,
            "frequency": self.dt,
            "updates": [{"step": t, "sparsity": self.sparsity(t)} for t in self.steps],
        }


@dataclass
class GMPOutputs:
    # the cubic schedule as run: {total_steps, start_step, end_step, frequency, updates: [{step, sparsity}]}
    pruning_schedule: dict[str, Any]
    layer_collapse: bool  # some Conv/Linear weight tensor of the final mask kept no weight (Tanaka et al. 2020)


class GMP(Method):
    name = "gmp"
    Config = GMPConfig
    Outputs = GMPOutputs

    def label(self, stages: Optional[Stages] = None) -> str:
        notes = [self.cfg.scope] if self.cfg.scope != GMPConfig.scope else []
        notes += ["from dense"] if self.cfg.train_from == "dense" else []
        return f"{self.name} ({', '.join(notes)})" if notes else self.name

    def retrains_dense_schedule(self) -> bool:
        return self.cfg.training.epochs is None  # trains for the dense schedule's length, from init or the dense

    def check_schedule(self, stages: Stages) -> None:
        if stages.train_config.empty and self.retrains_dense_schedule():
            raise UserError(
                "method.training.epochs: GMP trains for train.epochs unless told otherwise, and train.epochs=0 "
                "(the checkpoint is only evaluated) would train nothing; set method.training.epochs=N"
            )

    def training_config(self, stages: Stages) -> TrainConfig:
        return recovery_config(self.cfg.training, stages.train_config)

    def schedule(self, stages: Stages) -> CubicSchedule:
        """Eq. 1 on this experiment's GMP stage; a window holding no update interval is refused."""
        cfg = self.training_config(stages)
        total = total_iterations(cfg, stages.data.train.num_batches(cfg.batch_size))
        t0, last = round(self.cfg.start * total), round(self.cfg.end * total)
        n = (last - t0) // self.cfg.frequency
        if n < 1:
            raise UserError(
                f"method.frequency: the pruning window (method.start={self.cfg.start}, method.end={self.cfg.end} of "
                f"{total} steps: steps {t0}-{last}) is shorter than one update interval of {self.cfg.frequency} "
                f"steps; lower method.frequency or widen the window"
            )
        return CubicSchedule(total, t0, self.cfg.frequency, n, self.cfg.initial_sparsity, self.cfg.sparsity)

    def validate(self, stages: Stages) -> None:
        self.schedule(stages)

    def chain(self, stages: Stages) -> ExperimentRecord:
        schedule = self.schedule(stages)
        scope = self.cfg.scope

        def update(weights, alive, step):
            return magnitude_update(weights, alive, schedule.sparsity(step), scope)

        dense = stages.dense_stage() if self.cfg.train_from == "dense" else None
        start = dense if dense is not None else stages.init_stage()
        trained = stages.train_stage(
            "gmp",
            start,
            self.training_config(stages),
            weights="last" if dense is not None else "selected",
            mask_schedule=MaskSchedule(tuple(schedule.steps), update),
            extra={"gmp": {**schedule.spec(), "scope": scope, "prunable": nondefault(self.cfg.prunable)}},
        )
        outputs = GMPOutputs(pruning_schedule=schedule.record(), layer_collapse=layer_collapse(trained.masks()))
        return stages.finish(trained, dense=dense, outputs=outputs)


METHOD = GMP
