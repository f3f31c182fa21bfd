"""The pipeline every score-based weight-pruning method shares (ShrinkBench's "method in ten lines").

    train dense (or take the init) → for each round: score survivors → select (scope) → mask → recover

A method only says how to score: ``scores(stages, model, alive) -> {name: tensor}`` (higher = keep).
Iterative schedules remove the same fraction of the remaining weights each round, so round ``rounds`` lands exactly
on the target; each round is its own pair of stages in the store.

- ``prune_from`` (after training): which weights of the trained stage are scored — ``last`` (default: the end of
  training, the trained minimum OBD's Taylor expansion assumes, LeCun et al. 1990 §2 "extremal" approximation, and
  what the lottery ticket prunes) or ``selected`` (the validation-selected checkpoint, ``train.selection``).
- ``recalibrate_bn`` (N, default 0 = off): after each round's masks are applied and before the prune stage stores and
  evaluates the network ("accuracy right after pruning", and what the fine-tune starts from), every BatchNorm's
  running statistics are re-estimated over N training batches (``train.batch_size`` examples each, a fixed random
  subset of the training split drawn from ``seeds.prune``, no augmentation): reset, cumulative average, BatchNorm
  alone in train mode, no gradients (``methods.pipeline.batchnorm``; ``torch.optim.swa_utils.update_bn``'s
  convention). A network without BatchNorm is refused: the option would silently do nothing there.
- Pruning at initialization (``when=init``) is one-shot: ``rounds > 1`` is refused. Iterative pruning at init
  (SNIP-it, FORCE: score, prune, re-score the pruned network at the same init, no training in between) is a
  method's own ``selector`` (SynFlow's 100 iterations), never training between rounds — what the loop would
  otherwise do, and neither that nor the method.

Frankle, Dziugaite, Roy & Carbin, ICLR 2021 ("Pruning neural networks at initialization: why are we missing the
mark?") ablate every pruning-at-init method three ways; here they are options of every ``when=init`` method:

- ``shuffle``: train the mask shuffled within each layer (every layer keeps its count exactly, the positions are a
  uniform permutation drawn from ``seeds.prune``). A separate stage after the method's own mask, which it shares.
  ``random``'s ``variant=shuffle`` is the same permutation of another experiment's final mask (any weight-level
  method, after training too) and gives the identical mask when that experiment is this method at init.
- ``fresh_init``: train the mask from a fresh draw of the same initialization (``seeds.init + REINIT_OFFSET``), as
  the lottery's ``reinit`` control and SNIP's official code (``weights_ap``) do. The mask stage is shared.
- ``invert``: keep the lowest-scoring weights (every step of an iterative selector ranks inverted scores).

Layer collapse (Tanaka et al. 2020) is recorded for every score-based method (``layer_collapse``: a Conv/Linear
weight tensor of the final mask kept nothing); ``measure_collapse=true`` also measures, at init, the method's
critical compression on the grid 10^{k/4} (``methods.pipeline.collapse``) into the record's
``critical_compression``: the scores are computed again on the init and the selector re-run per grid point. Both
are ``ScoreOutputs``, with ``rounds`` (per pruning round: its density, the method's facts, the accuracy right
after pruning).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import torch

from foundations.checks import check, nondefault
from foundations.errors import UserError
from foundations.record import ExperimentRecord
from foundations.seeds import REINIT_OFFSET
from methods.pipeline.api import CalibrateFn, Method, MethodConfig, StageRef, Stages, Weights
from methods.pipeline.batchnorm import batchnorm_layers, recalibrate_bn
from methods.pipeline.collapse import compression_grid, critical_compression, layer_collapse
from methods.pipeline.masks import Masks, folded
from methods.pipeline.recover import FINE_TUNE_ONLY, Recovery, recovery_config, rewind_iteration, rewind_start
from methods.pipeline.results import MaskResult
from methods.pipeline.scores import shuffled
from methods.pipeline.select import (
    SCOPES,
    UNSTRUCTURED,
    check_nm_shapes,
    check_pattern,
    ladder,
    nm_pattern,
    select,
    select_nm,
)

# What a method keeps for a target: (overall keep fraction, per-layer keep fractions) -> masks
Keep = Callable[[float, dict[str, float]], Masks]


# How a rewinding recovery shows in a label (fine-tuning, the default, shows nothing)
REWIND_NOTES = {"weight_rewind": "weight rewinding", "lr_rewind": "LR rewinding"}

# Fields that act after the method's mask stage (which they share with the plain method) or only on the record.
AFTER_THE_MASK = ("shuffle", "fresh_init", "measure_collapse")


@dataclass
class ScoreConfig(MethodConfig):
    scope: str = "global"  # global | layerwise | layerwise_std
    rounds: int = 1  # iterative pruning: each round removes the same fraction of the remaining weights
    layer_density: dict[str, float] = field(default_factory=dict)  # explicit final keep fraction per tensor
    # layerwise_std: prune |w| < q · σ(layer); one q for every layer or Han's per-layer q_l ({tensor: q})
    quality: Any = None
    when: str = "after_training"  # after_training (then recover) | init (then train)
    prune_from: str = "last"  # after training: last (end of training) | selected (validation-selected checkpoint)
    # unstructured | "N:M" (e.g. "2:4"): N of every M consecutive weights along each layer's input survive
    # (methods/pipeline/select.py: select_nm); method.sparsity must then be 1 - N/M
    pattern: str = UNSTRUCTURED
    recovery: Recovery = field(default_factory=Recovery)
    # Frankle et al. 2021's ablations of pruning at init (when=init): shuffle the mask within each layer, train it
    # from a fresh init, keep the lowest scores
    shuffle: bool = False
    fresh_init: bool = False
    invert: bool = False
    measure_collapse: bool = False  # at init: the record's critical_compression (Tanaka et al. 2020)
    # BatchNorm running statistics re-estimated over this many training batches after each deletion (0: off)
    recalibrate_bn: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.scope in SCOPES, "method.scope", f"must be one of {SCOPES} (got {self.scope!r})")
        check(self.rounds >= 1, "method.rounds", f"iterative pruning needs at least 1 round (got {self.rounds})")
        check(
            self.recalibrate_bn >= 0,
            "method.recalibrate_bn",
            f"must be a number of training batches >= 0 (0: off; got {self.recalibrate_bn})",
        )
        check(
            self.when in ("after_training", "init"),
            "method.when",
            f"must be after_training or init (got {self.when!r})",
        )
        check(
            self.when != "init" or self.rounds == 1,
            "method.rounds",
            f"pruning at initialization is one-shot here (got rounds={self.rounds}); iterative pruning at init "
            f"(SNIP-it/FORCE re-scoring without training) is not implemented: set method.rounds=1",
        )
        check(
            self.prune_from in ("last", "selected"),
            "method.prune_from",
            f"must be last or selected (got {self.prune_from!r})",
        )
        check(
            all(0 < d <= 1 for d in self.layer_density.values()),
            "method.layer_density",
            "keep fractions must be in (0, 1]",
        )
        for flag in ("shuffle", "fresh_init", "invert", "measure_collapse"):
            check(
                not getattr(self, flag) or self.when == "init",
                f"method.{flag}",
                "an ablation (Frankle et al. 2021) or measure of pruning at initialization; set method.when=init",
            )
        check(
            not (self.invert or self.measure_collapse) or (self.scope != "layerwise_std" and not self.layer_density),
            "method.invert" if self.invert else "method.measure_collapse",
            "needs a ranking to a target density (scope=global or layerwise, no layer_density); layerwise_std "
            "thresholds q·σ",
        )
        check(
            _is_quality(self.quality),
            "method.quality",
            f"must be a number >= 0 or a mapping tensor -> number >= 0, e.g. {{fc1.weight: 1.0}} (got {self.quality!r})",
        )
        check_pattern(
            self.pattern,
            self.sparsity,
            self.prunable,
            {
                "rounds": (self.rounds > 1, "iterative rounds reach N/M only at the last round"),
                "scope": (self.scope == "layerwise_std", "layerwise_std thresholds set their own sparsity"),
                "layer_density": (bool(self.layer_density), "per-layer targets differ from N/M"),
            },
        )


@dataclass
class ScoreOutputs:
    # per pruning round: {round, density (the keep target), the method's facts (OBD: predicted_loss_increase,
    # measured_loss_increase), test_acc_after_pruning}
    rounds: list[dict[str, Any]]
    layer_collapse: bool  # some Conv/Linear weight tensor of the final mask kept no weight (Tanaka et al. 2020)
    # at init with method.measure_collapse: the largest compression 10^{k/4} the method reaches on this init before a
    # layer collapses (methods.pipeline.collapse)
    critical_compression: Optional[float] = None


def _is_quality(value: Any) -> bool:
    def number(q: Any) -> bool:
        return isinstance(q, (int, float)) and not isinstance(q, bool) and q >= 0

    return value is None or number(value) or (isinstance(value, dict) and all(number(q) for q in value.values()))


class ScoreMethod(Method):
    Config = ScoreConfig
    Outputs = ScoreOutputs
    # the critical compression is measured beside the stages, into the record only
    result_neutral: ClassVar[frozenset[str]] = frozenset({"measure_collapse"})

    def scores(self, stages: Stages, model: torch.nn.Module, alive: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def selector(self, stages: Stages, model: torch.nn.Module, alive: Masks, weights: dict) -> tuple[Keep, dict]:
        """(what the method keeps for a target, the scores it ranks): one-shot methods score ``model`` once and
        select (``choose``) among ``alive``; an iterative method at init (SynFlow) re-scores inside ``Keep``."""
        scores = self.scores(stages, model, alive)
        ranked = self.ranked({n: scores[n].cpu() for n in alive})

        def keep(overall: float, layers: dict[str, float]) -> Masks:
            return self.choose(ranked, alive, overall, layers, weights)

        return keep, scores

    def ranked(self, scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The scores as selection ranks them: negated under ``invert`` (keep the lowest, Frankle et al. 2021)."""
        return {n: -s.double() for n, s in scores.items()} if self.cfg.invert else scores

    def label(self, stages: Optional[Stages] = None) -> str:
        notes = self.variant_notes() + self.ablation_notes()
        notes += self.experiment_notes(stages) if stages is not None else []
        return f"{self.name} ({', '.join(notes)})" if notes else self.name

    def ablation_notes(self) -> list[str]:
        cfg = self.cfg
        return (
            (["inverted"] if cfg.invert else [])
            + (["shuffled"] if cfg.shuffle else [])
            + (["fresh init"] if cfg.fresh_init else [])
        )

    def experiment_notes(self, stages: Stages) -> list[str]:
        """Variant notes from facts outside the method's config (the model's init for SNIP)."""
        return []

    def variant_notes(self) -> list[str]:
        """What sets this variant apart from the method's defaults, so that variants never share a table row."""
        default, cfg = type(self.cfg)(), self.cfg
        scoped = "scope" not in self.ignored_fields()  # random: its variant decides the scope (and names it)
        notes = [cfg.scope] if scoped and cfg.scope != default.scope and not cfg.layer_density else []
        notes += ["per-layer targets"] if cfg.layer_density else []
        notes += [f"{cfg.rounds} rounds"] if cfg.rounds != default.rounds else []
        if cfg.when != default.when:
            notes.append("at init" if cfg.when == "init" else "after training")
        if cfg.prune_from != default.prune_from and cfg.when == "after_training":
            notes.append(f"prune {cfg.prune_from}")
        if cfg.recovery.rewinds and cfg.when == "after_training":
            notes.append(REWIND_NOTES[cfg.recovery.protocol])
        notes += [cfg.pattern] if cfg.pattern != default.pattern else []
        notes += [f"BN re-estimated on {cfg.recalibrate_bn} batches"] if cfg.recalibrate_bn else []
        return notes

    def sets_own_sparsity(self) -> bool:
        # q·σ thresholds and per-layer targets decide the overall sparsity; `method.sparsity` is then not what is hit
        return self.scope() == "layerwise_std" or bool(self.cfg.layer_density)

    def scope(self) -> str:
        """How scores become a mask at a target: one threshold (global), the same fraction per tensor (layerwise,
        also for per-layer targets), Han's q·σ (layerwise_std)."""
        return "layerwise" if self.cfg.layer_density else self.cfg.scope

    def validate(self, stages: Stages) -> None:
        self.check_recalibration(stages)
        if self.cfg.when == "after_training" and self.cfg.recovery.rewinds:
            self.rewind_iteration(stages)  # t <= T, refused before any stage
        params = dict(stages.base_model().named_parameters())
        check_nm_shapes(self.cfg.pattern, {n: params[n].shape for n in self.names(stages)})
        if isinstance(self.cfg.quality, dict):
            names = self.names(stages)
            missing = [n for n in names if n not in self.cfg.quality]
            unknown = [n for n in self.cfg.quality if n not in names]
            if missing or unknown:
                raise UserError(
                    f"method.quality: a per-layer quality needs exactly the prunable tensors "
                    f"{', '.join(names)} (missing: {', '.join(missing) or '-'}; unknown: "
                    f"{', '.join(unknown) or '-'})"
                )

    def check_recalibration(self, stages: Stages) -> None:
        n = self.cfg.recalibrate_bn
        if not n:
            return
        if not batchnorm_layers(stages.base_model()):
            raise UserError(
                f"method.recalibrate_bn: model {stages.model_name} has no BatchNorm layer with running statistics, "
                f"so re-estimating them would change nothing; set method.recalibrate_bn=0"
            )
        size, available = stages.train_config.batch_size, len(stages.data.train)
        if n * size > available:
            raise UserError(
                f"method.recalibrate_bn: {n} batches of train.batch_size={size} need {n * size} training examples, "
                f"the training split has {available}; set method.recalibrate_bn <= {available // size}"
            )

    def recalibration_spec(self) -> dict:
        """The re-estimation for a stage's spec where ``mask_spec`` is not in it; empty when off (old hashes kept)."""
        return {"recalibrate_bn": self.cfg.recalibrate_bn} if self.cfg.recalibrate_bn else {}

    def calibrator(self, stages: Stages) -> Optional[CalibrateFn]:
        """What a prune stage does to the masked network before storing and evaluating it: BatchNorm statistics
        re-estimated on ``recalibrate_bn`` batches of a fixed training subset (``seeds.prune``), or None (off)."""
        n = self.cfg.recalibrate_bn
        if not n:
            return None
        size = stages.train_config.batch_size

        def calibrate(model: torch.nn.Module) -> None:
            data = stages.data.train.subset(n * size, stages.seed("prune"))
            recalibrate_bn(model, (x for x, _ in data.batches(size, device=stages.device)))

        return calibrate

    def mask_spec(self) -> dict:
        """Everything in the config that changes which weights are removed (hashed into the prune stage; which
        weights of the source are pruned, ``prune_from``, is hashed by the stage itself; a field the method declares
        result-neutral is not)."""
        neutral = self.neutral_fields()
        return {
            k: v
            for k, v in nondefault(self.cfg).items()
            if k not in ("name", "sparsity", "recovery", "rounds", "prune_from", *AFTER_THE_MASK) and k not in neutral
        }

    def round_spec(self, stages: Stages) -> dict:
        """What else a round's result depends on, beyond the config (random shuffle: the source's final stage)."""
        return {}

    def prune_weights(self, source: StageRef) -> Weights:
        """Which weights of ``source`` a round scores: an init stage has only its initial weights."""
        return self.cfg.prune_from if source.kind == "train" else "selected"

    def round_targets(self, names: list[str]) -> list[tuple[float, dict[str, float]]]:
        final = 1.0 - self.cfg.sparsity
        steps = ladder(self.cfg.rounds, final, names=names)
        if self.cfg.layer_density:  # Han Tables 2-3: per-layer targets, reached geometrically over the rounds
            k = self.cfg.rounds
            steps = [
                (overall, {n: self.cfg.layer_density.get(n, final) ** (r / k) for n in names})
                for r, (overall, _) in enumerate(steps, start=1)
            ]
        return steps

    def choose(self, scores: dict, alive: dict, overall: float, layers: dict, weights: dict) -> dict:
        nm = nm_pattern(self.cfg.pattern)
        if nm is not None:
            return select_nm(scores, alive, *nm)
        return select(
            scores,
            alive,
            scope=self.scope(),
            layer_targets=layers,
            global_target=overall,
            weights=weights,
            quality=self.cfg.quality,
        )

    def retrains_dense_schedule(self) -> bool:
        return self.cfg.when == "init"  # pruned at initialization, then trained for the dense schedule

    def ignored_fields(self) -> dict[str, str]:
        if self.cfg.when != "init":
            if not self.cfg.recovery.rewinds:
                return super().ignored_fields()
            replays = f"recovery.protocol={self.cfg.recovery.protocol} replays the dense schedule (train.*)"
            return {**super().ignored_fields(), **{f"recovery.{f}": replays for f in FINE_TUNE_ONLY}}
        at_init = "it prunes at initialization, then trains for the dense schedule (train.*)"
        return {
            **super().ignored_fields(),
            "recovery": f"{at_init}: there is no fine-tune",
            "prune_from": f"{at_init}: there are no trained weights to choose from",
        }

    def start(self, stages: Stages) -> tuple[StageRef, Optional[StageRef]]:
        """(stage to prune, dense stage or None)."""
        if self.cfg.when == "init":
            return stages.init_stage(), None
        if self.cfg.recovery.protocol == "weight_rewind":  # the dense run keeps its weights at the rewind point
            dense, _, _ = rewind_start(stages, self.rewind_iteration(stages))
        else:
            dense = stages.dense_stage()
        return dense, dense

    def rewind_iteration(self, stages: Stages) -> int:
        """Where a rewinding recovery restarts the dense schedule: T − t (``methods.pipeline.recover``)."""
        per_epoch = stages.data.train.num_batches(stages.train_config.batch_size)
        return rewind_iteration(self.cfg.recovery, stages.train_config, per_epoch)

    def recovery_stage(self, stages: Stages, round_index: int, pruned: StageRef, source: StageRef) -> StageRef:
        if self.cfg.when == "init":  # pruning at initialization: train the sparse network normally
            if self.cfg.fresh_init:  # the same mask on a fresh draw of the initialization
                fresh = stages.init_stage("fresh_init", seed=stages.seed("init") + REINIT_OFFSET)
                return stages.train_stage(f"train{round_index}", fresh, stages.train_config, masks=pruned)
            return stages.train_stage(f"train{round_index}", pruned, stages.train_config)
        name, protocol = f"recover{round_index}", self.cfg.recovery.protocol
        if protocol == "fine_tune":
            return stages.train_stage(name, pruned, recovery_config(self.cfg.recovery, stages.train_config))
        k = self.rewind_iteration(stages)
        if protocol == "lr_rewind":  # the pruned trained weights, the dense schedule replayed from T − t
            return stages.train_stage(name, pruned, stages.train_config, start_iteration=k)
        _, rewound, weights = rewind_start(stages, k)  # the dense run's weights at T − t, under the pruned mask
        return stages.train_stage(name, rewound, stages.train_config, weights=weights, masks=pruned, start_iteration=k)

    def shuffle_stage(self, stages: Stages, pruned: StageRef, init: StageRef) -> StageRef:
        """The mask of ``pruned`` permuted within each layer, applied to the init's weights."""
        seed = stages.seed("prune")

        def shuffle(model, alive):
            source = pruned.masks()
            return shuffled({n: source[n] for n in alive}, seed), {}

        spec = {"shuffle_seed": seed, "mask": pruned.ref, **self.recalibration_spec()}
        return stages.mask_stage("shuffle", init, spec, shuffle, calibrate=self.calibrator(stages))

    def chain(self, stages: Stages) -> ExperimentRecord:
        state, dense = self.start(stages)
        init = state
        pruned: Optional[StageRef[MaskResult]] = None
        rounds = []
        for index, (overall, layers) in enumerate(self.round_targets(self.names(stages)), start=1):

            def select_round(model, alive, overall=overall, layers=layers):
                weights = {n: p.detach().cpu() for n, p in model.named_parameters() if n in alive}
                keep, scores = self.selector(stages, model, alive, weights)
                masks = keep(overall, layers)
                return masks, self.round_info(stages, model, alive, masks, scores)

            pruned = stages.mask_stage(
                f"prune{index}",
                state,
                {
                    **self.mask_spec(),
                    **self.round_spec(stages),
                    "round": index,
                    "keep": overall,
                    "layers": layers,
                    "prune_seed": stages.seed("prune"),
                },
                select_round,
                weights=self.prune_weights(state),
                calibrate=self.calibrator(stages),
            )
            rounds.append(
                {
                    "round": index,
                    "density": overall,
                    **pruned.result.info,
                    "test_acc_after_pruning": pruned.result.after_pruning.test_acc,
                }
            )
            if self.cfg.shuffle:  # at init: one round
                pruned = self.shuffle_stage(stages, pruned, state)
            state = self.recovery_stage(stages, index, pruned, state)
        assert pruned is not None  # round_targets has at least one round
        outputs = ScoreOutputs(
            rounds=rounds,
            layer_collapse=layer_collapse(pruned.masks()),
            critical_compression=self.critical_compression(stages, init) if self.cfg.measure_collapse else None,
        )
        return stages.finish(state, pruned=pruned, dense=dense, outputs=outputs)

    def critical_compression(self, stages: Stages, init: StageRef) -> float:
        """Tanaka et al. 2020's critical compression of this method at ``init`` (``methods.pipeline.collapse``)."""
        model = folded(stages.model_from(init))
        params = dict(model.named_parameters())
        alive = {n: torch.ones_like(params[n], dtype=torch.bool).cpu() for n in stages.prunable(model)}
        weights = {n: params[n].detach().cpu() for n in alive}
        keep, _ = self.selector(stages, model, alive, weights)
        return critical_compression(lambda d: keep(d, {n: d for n in alive}), compression_grid(alive))

    def names(self, stages: Stages) -> list[str]:
        return stages.prunable(stages.base_model())

    def round_info(self, stages: Stages, model: torch.nn.Module, alive: dict, masks: dict, scores: dict) -> dict:
        """Numbers about one pruning round for the record's ``rounds`` (OBD: predicted vs measured loss increase)."""
        return {}


@dataclass
class AtInitConfig(ScoreConfig):
    when: str = "init"

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.when == "init", "method.when", f"{self.name} prunes at initialization (when=init)")


class AtInitMethod(ScoreMethod):
    """A method defined at initialization only (SNIP, GraSP, SynFlow): pruned once at init, then trained for the
    dense schedule, so there is no fine-tune and no trained checkpoint to choose from."""

    Config = AtInitConfig
    result_neutral: ClassVar[frozenset[str]] = frozenset(
        {
            "prune_from",
            "recovery.epochs",
            "recovery.lr",
            "recovery.lr_scale",
            "recovery.schedule",
            "recovery.milestones",
            "recovery.protocol",
        }
    )
