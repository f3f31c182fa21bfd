"""Random pruning baselines.

Variants: ``layerwise`` — every layer keeps the same fraction, chosen uniformly at random (as ShrinkBench);
``global`` — i.i.d. random scores under one global threshold (SynFlow's ``Rand``); ``shuffle`` — another
experiment's mask shuffled within each layer, keeping its per-layer densities (open_lth ``randomly_prune
--strategy layerwise``; Frankle et al. 2021). ``when=init`` prunes before training (the baseline of SNIP and the
LTH's "randomly sampled sparse networks"); ``when=after_training`` prunes the trained model and fine-tunes (Mittal
et al.; OBD's random deletion). All randomness comes from ``seeds.prune``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from foundations.checks import check
from foundations.record import ExperimentRecord
from methods.pipeline.api import Stages
from methods.pipeline.scores import random_scores, shuffled
from methods.pipeline.select import select
from methods.pipeline.unstructured import ScoreConfig, ScoreMethod

VARIANTS = ("layerwise", "global", "shuffle")


@dataclass
class RandomConfig(ScoreConfig):
    variant: str = "layerwise"
    when: str = "init"
    source: dict = field(default_factory=dict)  # shuffle: the experiment whose mask is shuffled, e.g. {name: snip, sparsity: 0.9}
    build_source: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.variant in VARIANTS, "method.variant", f"must be one of {VARIANTS} (got {self.variant!r})")
        check(self.variant != "shuffle" or bool(self.source.get("name")), "method.source",
              "variant=shuffle needs the experiment to shuffle, e.g. method.source={name: snip, sparsity: 0.9}")


class RandomPruning(ScoreMethod):
    name = "random"
    Config = RandomConfig

    def variant_notes(self) -> list[str]:
        if self.cfg.variant == "shuffle":
            return [f"shuffled {self.cfg.source.get('name')}"]
        ignored = {self.cfg.scope}  # the variant, not `scope`, decides how random scores are selected
        return ([self.cfg.variant] if self.cfg.variant != "layerwise" else []) + [
            n for n in super().variant_notes() if n not in ignored]

    def validate(self, stages: Stages) -> None:
        if self.cfg.variant == "shuffle":
            self._source_masks(stages)

    def _source_masks(self, stages: Stages) -> dict:
        record = stages.source_experiment(dict(self.cfg.source), build=self.cfg.build_source)
        return stages.stage_at(record.final_ref()).masks()

    def mask_spec(self) -> dict:
        spec = super().mask_spec()
        spec["scope"] = "global" if self.cfg.variant == "global" else "layerwise"
        return spec

    def choose(self, scores, alive, overall, layers, weights):
        if self.cfg.variant == "shuffle":
            return {n: scores[n].bool() & alive[n] for n in scores}  # the shuffled source mask itself
        scope = "global" if self.cfg.variant == "global" else "layerwise"
        return select(scores, alive, scope=scope, layer_targets=layers, global_target=overall)

    def scores(self, stages: Stages, model, alive):
        seed = stages.seed("prune")
        if self.cfg.variant == "shuffle":
            source = self._source_masks(stages)
            return shuffled({n: source[n] for n in alive}, seed)
        return random_scores({n: alive[n].shape for n in alive}, seed)

    def chain(self, stages: Stages) -> ExperimentRecord:
        if self.cfg.variant == "shuffle":
            self.cfg.rounds = 1
        return super().chain(stages)


METHOD = RandomPruning
