"""Random pruning baselines.

Variants: ``layerwise`` — every layer keeps the same fraction, chosen uniformly at random (as ShrinkBench);
``global`` — i.i.d. random scores under one global threshold (SynFlow's ``Rand``); ``shuffle`` — another
experiment's mask shuffled within each layer, keeping its per-layer densities (open_lth ``randomly_prune
--strategy layerwise``; Frankle et al. 2021). ``when=init`` prunes before training (the baseline of SNIP and the
LTH's "randomly sampled sparse networks"); ``when=after_training`` prunes the trained model and fine-tunes (Mittal
et al.; OBD's random deletion). All randomness comes from ``seeds.prune``.

``shuffle`` applies once (``rounds`` must be 1) and needs an unstructured source (a weight mask; a channel plan has
no per-weight positions to shuffle). Its prune stage hashes the source experiment's final stage, so a source trained
differently never lends its mask to the wrong shuffle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from foundations.checks import check, moved_default
from foundations.errors import ConfigError
from methods import get_method, registry
from methods.pipeline.api import StageRef, Stages
from methods.pipeline.masks import Masks
from methods.pipeline.recover import FINE_TUNE, Recovery
from methods.pipeline.scores import random_scores, shuffled
from methods.pipeline.select import nm_pattern
from methods.pipeline.unstructured import Keep, ScoreConfig, ScoreMethod

VARIANTS = ("layerwise", "global", "shuffle")


@dataclass
class RandomConfig(ScoreConfig):
    name: str = "random"
    sparsity: float = 0.9
    recovery: Recovery = moved_default(FINE_TUNE, hashed_as=Recovery())
    variant: str = "layerwise"
    when: str = "init"
    source: dict = field(
        default_factory=dict
    )  # shuffle: the experiment whose mask is shuffled, e.g. {name: snip, sparsity: 0.9}
    build_source: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.variant in VARIANTS, "method.variant", f"must be one of {VARIANTS} (got {self.variant!r})")
        check(
            self.variant != "shuffle" or bool(self.source.get("name")),
            "method.source",
            "variant=shuffle needs the experiment to shuffle, e.g. method.source={name: snip, sparsity: 0.9}",
        )
        for flag in ("invert", "measure_collapse"):
            check(
                self.variant != "shuffle" or not getattr(self, flag),
                f"method.{flag}",
                "variant=shuffle takes another experiment's mask as it is: no scores to rank at a target",
            )
        check(
            self.variant != "shuffle" or nm_pattern(self.pattern) is None,
            "method.pattern",
            "variant=shuffle permutes another experiment's mask within each layer, which breaks N:M groups; "
            "use variant=layerwise for a random N:M mask",
        )
        check(
            self.variant != "shuffle" or self.rounds == 1,
            "method.rounds",
            f"variant=shuffle permutes another experiment's mask once (got rounds={self.rounds}); set method.rounds=1",
        )


class RandomPruning(ScoreMethod):
    name = "random"
    Config = RandomConfig
    # build_source: where the source comes from, not what it is; scope/quality: the variant decides the selection
    result_neutral: ClassVar[frozenset[str]] = frozenset({"build_source", "scope", "quality"})
    ignored = {"scope": "method.variant decides the selection", "quality": "method.variant decides the selection"}

    def ignored_fields(self) -> dict[str, str]:
        own = (
            {}
            if self.cfg.variant == "shuffle"
            else dict.fromkeys(("source", "build_source"), "only variant=shuffle reads a source")
        )
        return {**super().ignored_fields(), **own}

    def variant_notes(self) -> list[str]:
        if self.cfg.variant == "shuffle":
            return [f"shuffled {self.cfg.source.get('name')}"]
        return ([self.cfg.variant] if self.cfg.variant != "layerwise" else []) + super().variant_notes()

    def validate(self, stages: Stages) -> None:
        super().validate(stages)
        if self.cfg.variant == "shuffle":
            name = self.cfg.source.get("name")
            if name in registry() and get_method(name).kind != "unstructured":
                raise ConfigError(
                    f"method.source: {name} prunes channels (a channel plan, no weight mask); shuffle "
                    f"needs a weight-level source such as snip, magnitude or lottery"
                )
            self._source_stage(stages)

    def _source_stage(self, stages: Stages) -> StageRef:
        record = stages.source_experiment(dict(self.cfg.source), build=self.cfg.build_source)
        stage = stages.stage_at(record.final_ref())
        if not stage.has_masks():
            raise ConfigError(
                f"method.source: the {record.method} experiment left no weight mask ({stage.ref}); "
                f"shuffle needs a weight-level source such as snip, magnitude or lottery"
            )
        return stage

    def scope(self) -> str:
        return "global" if self.cfg.variant == "global" else "layerwise"

    def round_spec(self, stages: Stages) -> dict:
        # the scope its variant implies, as the prune stage always hashed it; a shuffled mask depends on the source's
        # result, not only on its config
        own = {"scope": self.scope()}
        return {**own, "source_stage": self._source_stage(stages).ref} if self.cfg.variant == "shuffle" else own

    def selector(self, stages: Stages, model, alive: Masks, weights: dict) -> tuple[Keep, dict]:
        """Random scores, ranked as the variant says; ``shuffle``: the source's mask permuted within each layer,
        kept as it is at any target."""
        if self.cfg.variant != "shuffle":
            return super().selector(stages, model, alive, weights)
        source = self._source_stage(stages).masks()
        permuted = shuffled({n: source[n] for n in alive}, stages.seed("prune"))

        def keep(overall: float, layers: dict[str, float]) -> Masks:
            return {n: permuted[n].bool() & alive[n] for n in permuted}

        return keep, permuted

    def scores(self, stages: Stages, model, alive):
        return random_scores({n: alive[n].shape for n in alive}, stages.seed("prune"))


METHOD = RandomPruning
