"""The pipeline every score-based weight-pruning method shares (ShrinkBench's "method in ten lines").

    train dense (or take the init) → for each round: score survivors → select (scope) → mask → recover

A method only says how to score: ``scores(stages, model, alive) -> {name: tensor}`` (higher = keep).
Iterative schedules remove the same fraction of the remaining weights each round, so round ``rounds`` lands exactly
on the target; each round is its own pair of stages in the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from foundations.checks import check, nondefault
from foundations.record import ExperimentRecord
from methods.pipeline.api import Method, MethodConfig, StageRef, Stages
from methods.pipeline.recover import Recovery, recovery_config
from methods.pipeline.select import SCOPES, ladder, select


@dataclass
class ScoreConfig(MethodConfig):
    scope: str = "global"  # global | layerwise | layerwise_std
    rounds: int = 1  # iterative pruning: each round removes the same fraction of the remaining weights
    layer_density: dict[str, float] = field(default_factory=dict)  # explicit final keep fraction per tensor
    quality: Optional[float] = None  # layerwise_std: prune |w| < quality · σ(layer)
    when: str = "after_training"  # after_training (then recover) | init (then train)
    recovery: Recovery = field(default_factory=Recovery)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.scope in SCOPES, "method.scope", f"must be one of {SCOPES} (got {self.scope!r})")
        check(self.rounds >= 1, "method.rounds", f"iterative pruning needs at least 1 round (got {self.rounds})")
        check(self.when in ("after_training", "init"), "method.when", f"must be after_training or init (got {self.when!r})")
        check(all(0 < d <= 1 for d in self.layer_density.values()), "method.layer_density",
              "keep fractions must be in (0, 1]")


class ScoreMethod(Method):
    Config = ScoreConfig

    def scores(self, stages: Stages, model: torch.nn.Module, alive: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def label(self) -> str:
        notes = self.variant_notes()
        return f"{self.name} ({', '.join(notes)})" if notes else self.name

    def variant_notes(self) -> list[str]:
        """What sets this variant apart from the method's defaults, so that variants never share a table row."""
        default, cfg = type(self.cfg)(), self.cfg
        notes = [cfg.scope] if cfg.scope != default.scope and not cfg.layer_density else []
        notes += ["per-layer targets"] if cfg.layer_density else []
        notes += [f"{cfg.rounds} rounds"] if cfg.rounds != default.rounds else []
        if cfg.when != default.when:
            notes.append("at init" if cfg.when == "init" else "after training")
        return notes

    def mask_spec(self) -> dict:
        """Everything in the config that changes which weights are removed (hashed into the prune stage)."""
        return {k: v for k, v in nondefault(self.cfg).items() if k not in ("name", "sparsity", "recovery", "rounds")}

    def round_targets(self, names: list[str]) -> list[tuple[float, dict[str, float]]]:
        final = 1.0 - self.cfg.sparsity
        steps = ladder(self.cfg.rounds, final, names=names)
        if self.cfg.layer_density:  # Han Tables 2-3: per-layer targets, reached geometrically over the rounds
            k = self.cfg.rounds
            steps = [(overall, {n: self.cfg.layer_density.get(n, final) ** (r / k) for n in names})
                     for r, (overall, _) in enumerate(steps, start=1)]
        return steps

    def choose(self, scores: dict, alive: dict, overall: float, layers: dict, weights: dict) -> dict:
        scope = "layerwise" if self.cfg.layer_density else self.cfg.scope
        return select(scores, alive, scope=scope, layer_targets=layers, global_target=overall, weights=weights,
                      quality=self.cfg.quality)

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
        return stages.train_stage(f"recover{round_index}", pruned, recovery_config(self.cfg.recovery, stages.train_config))

    def chain(self, stages: Stages) -> ExperimentRecord:
        state, dense = self.start(stages)
        pruned, rounds = None, []
        for index, (overall, layers) in enumerate(self.round_targets(self.names(stages)), start=1):
            def select_round(model, alive, overall=overall, layers=layers):
                weights = {n: p.detach().cpu() for n, p in model.named_parameters() if n in alive}
                scores = self.scores(stages, model, alive)
                masks = self.choose({n: scores[n].cpu() for n in alive}, alive, overall, layers, weights)
                return masks, self.round_info(stages, model, alive, masks, scores)

            pruned = stages.mask_stage(f"prune{index}", state,
                                    {**self.mask_spec(), "round": index, "keep": overall, "layers": layers,
                                     "prune_seed": stages.seed("prune")}, select_round)
            rounds.append({"round": index, "density": overall, **pruned.result.get("info", {}),
                           "test_acc_after_pruning": pruned.result["after_pruning"]["test_acc"]})
            state = self.recovery_stage(stages, index, pruned, state)
        return stages.finish(state, pruned=pruned, dense=dense, rounds=rounds)

    def names(self, stages: Stages) -> list[str]:
        return stages.prunable(stages.base_model())

    def round_info(self, stages: Stages, model: torch.nn.Module, alive: dict, masks: dict, scores: dict) -> dict:
        """Numbers about one pruning round for the record's ``rounds`` (OBD: predicted vs measured loss increase)."""
        return {}
