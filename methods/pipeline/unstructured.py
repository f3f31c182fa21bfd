"""The pipeline every score-based weight-pruning method shares (ShrinkBench's "method in ten lines").

    train dense (or take the init) → for each round: score survivors → select (scope) → mask → recover

A method only says how to score: ``scores(stages, model, alive) -> {name: tensor}`` (higher = keep).
Iterative schedules remove the same fraction of the remaining weights each round, so round ``rounds`` lands exactly
on the target; each round is its own pair of stages in the store.

- ``prune_from`` (after training): which weights of the trained stage are scored — ``last`` (default: the end of
  training, the trained minimum OBD's Taylor expansion assumes, LeCun et al. 1990 §2 "extremal" approximation, and
  what the lottery ticket prunes) or ``selected`` (the validation-selected checkpoint, ``train.selection``).
- Pruning at initialization (``when=init``) is one-shot: ``rounds > 1`` is refused. Iterative pruning at init
  (SNIP-it, FORCE: score, prune, re-score the pruned network at the same init, no training in between) is not
  implemented, and training between rounds — what the loop would otherwise do — is neither that nor the method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from foundations.checks import check, nondefault
from foundations.errors import UserError
from foundations.record import ExperimentRecord
from methods.pipeline.api import Method, MethodConfig, StageRef, Stages, Weights
from methods.pipeline.recover import Recovery, recovery_config
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

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.scope in SCOPES, "method.scope", f"must be one of {SCOPES} (got {self.scope!r})")
        check(self.rounds >= 1, "method.rounds", f"iterative pruning needs at least 1 round (got {self.rounds})")
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


def _is_quality(value: Any) -> bool:
    def number(q: Any) -> bool:
        return isinstance(q, (int, float)) and not isinstance(q, bool) and q >= 0

    return value is None or number(value) or (isinstance(value, dict) and all(number(q) for q in value.values()))


class ScoreMethod(Method):
    Config = ScoreConfig

    def scores(self, stages: Stages, model: torch.nn.Module, alive: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def label(self, stages: Optional[Stages] = None) -> str:
        notes = self.variant_notes() + (self.experiment_notes(stages) if stages is not None else [])
        return f"{self.name} ({', '.join(notes)})" if notes else self.name

    def experiment_notes(self, stages: Stages) -> list[str]:
        """Variant notes from facts outside the method's config (the model's init for SNIP)."""
        return []

    def variant_notes(self) -> list[str]:
        """What sets this variant apart from the method's defaults, so that variants never share a table row."""
        default, cfg = type(self.cfg)(), self.cfg
        notes = [cfg.scope] if cfg.scope != default.scope and not cfg.layer_density else []
        notes += ["per-layer targets"] if cfg.layer_density else []
        notes += [f"{cfg.rounds} rounds"] if cfg.rounds != default.rounds else []
        if cfg.when != default.when:
            notes.append("at init" if cfg.when == "init" else "after training")
        if cfg.prune_from != default.prune_from and cfg.when == "after_training":
            notes.append(f"prune {cfg.prune_from}")
        notes += [cfg.pattern] if cfg.pattern != default.pattern else []
        return notes

    def sets_own_sparsity(self) -> bool:
        # q·σ thresholds and per-layer targets decide the overall sparsity; `method.sparsity` is then not what is hit
        return self.cfg.scope == "layerwise_std" or bool(self.cfg.layer_density)

    def validate(self, stages: Stages) -> None:
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

    def mask_spec(self) -> dict:
        """Everything in the config that changes which weights are removed (hashed into the prune stage; which
        weights of the source are pruned, ``prune_from``, is hashed by the stage itself)."""
        return {
            k: v
            for k, v in nondefault(self.cfg).items()
            if k not in ("name", "sparsity", "recovery", "rounds", "prune_from")
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
        scope = "layerwise" if self.cfg.layer_density else self.cfg.scope
        return select(
            scores,
            alive,
            scope=scope,
            layer_targets=layers,
            global_target=overall,
            weights=weights,
            quality=self.cfg.quality,
        )

    def retrains_dense_schedule(self) -> bool:
        return self.cfg.when == "init"  # pruned at initialization, then trained for the dense schedule

    def start(self, stages: Stages) -> tuple[StageRef, Optional[StageRef]]:
        """(stage to prune, dense stage or None)."""
        if self.cfg.when == "init":
            return stages.init_stage(), None
        dense = stages.dense_stage()
        return dense, dense

    def recovery_stage(self, stages: Stages, round_index: int, pruned: StageRef, source: StageRef) -> StageRef:
        if self.cfg.when == "init":  # pruning at initialization: train the sparse network normally
            return stages.train_stage(f"train{round_index}", pruned, stages.train_config)
        return stages.train_stage(
            f"recover{round_index}", pruned, recovery_config(self.cfg.recovery, stages.train_config)
        )

    def chain(self, stages: Stages) -> ExperimentRecord:
        state, dense = self.start(stages)
        pruned, rounds = None, []
        for index, (overall, layers) in enumerate(self.round_targets(self.names(stages)), start=1):

            def select_round(model, alive, overall=overall, layers=layers):
                weights = {n: p.detach().cpu() for n, p in model.named_parameters() if n in alive}
                scores = self.scores(stages, model, alive)
                masks = self.choose({n: scores[n].cpu() for n in alive}, alive, overall, layers, weights)
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
            )
            rounds.append(
                {
                    "round": index,
                    "density": overall,
                    **pruned.result.get("info", {}),
                    "test_acc_after_pruning": pruned.result["after_pruning"]["test_acc"],
                }
            )
            state = self.recovery_stage(stages, index, pruned, state)
        return stages.finish(state, pruned=pruned, dense=dense, rounds=rounds)

    def names(self, stages: Stages) -> list[str]:
        return stages.prunable(stages.base_model())

    def round_info(self, stages: Stages, model: torch.nn.Module, alive: dict, masks: dict, scores: dict) -> dict:
        """Numbers about one pruning round for the record's ``rounds`` (OBD: predicted vs measured loss increase)."""
        return {}
