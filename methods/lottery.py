"""Lottery ticket: iterative magnitude pruning with rewinding.

Frankle & Carbin, ICLR 2019 (§2, Algorithm): train θ₀ → θ_j, prune p% of the *remaining* weights by |θ_j| (output
layer at half rate for LeNet: ``output_rate``), reset survivors to θ₀, repeat. Frankle et al. 2019/2020 (Stabilizing
the LTH; Linear Mode Connectivity): reset to θ_k, the weights at iteration k (``rewind_iteration``), and resume the
data order and LR schedule from k. Each level retrains the full schedule; the record lists every level's
early-stopping iteration (minimum validation loss). Each level is its own store stage, so sweeping target sparsities
shares the common levels; the last level's rate is adjusted so the target is hit exactly.

Controls (Frankle & Carbin §2.2/Fig. 4): ``control=reinit`` trains the ticket's mask from a fresh random init;
``control=shuffle`` trains a random mask with the ticket's per-layer densities from the same init. Both start at the
rewind iteration k with its data order and LR schedule, like the ticket (open_lth's ``randomly_reinitialize`` and
``randomly_prune`` branches train from ``train_start_step``); at k = 0 that is the ordinary full schedule.
Default ``scope=global`` with 20%/round (open_lth's ``sparse_global``); the paper's LeNet configuration is
``scope=layerwise output_rate=0.1`` (the ``lth_lenet300`` experiment).

``pattern=N:M`` (e.g. ``2:4``; ``method.sparsity`` must be 1 − N/M) finds an N:M ticket in one level: the trained
weights' N largest |θ| of every M consecutive along each layer's input (``select.select_nm``), rewound and retrained.
One level, because an N:M mask cannot be reached by pruning ``rate`` of the remaining weights per level (a group
pruned below N at an earlier level could not be restored); ``rate`` then plays no part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from foundations.checks import check, nondefault
from foundations.errors import UserError
from foundations.record import ExperimentRecord
from foundations.seeds import REINIT_OFFSET
from foundations.training import total_iterations
from methods.pipeline.api import Method, MethodConfig, Stages
from methods.pipeline.masks import classifier_name
from methods.pipeline.recover import rewind_start
from methods.pipeline.scores import magnitude_scores, shuffled
from methods.pipeline.select import UNSTRUCTURED, check_nm_shapes, check_pattern, nm_pattern, select, select_nm


@dataclass
class LotteryConfig(MethodConfig):
    name: str = "lottery"
    sparsity: float = 0.8
    rate: float = 0.2
    output_rate: Optional[float] = None  # None: the classifier is pruned at `rate` like every layer
    scope: str = "global"  # global | layerwise
    rewind_iteration: int = 0
    control: str = "none"  # none | reinit | shuffle
    pattern: str = UNSTRUCTURED  # unstructured | "N:M": one level keeping N of every M weights (module docstring)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 < self.rate < 1, "method.rate", f"must be in (0, 1) (got {self.rate})")
        check(self.output_rate is None or 0 <= self.output_rate < 1, "method.output_rate", "must be in [0, 1)")
        check(
            self.scope in ("global", "layerwise"), "method.scope", f"must be global or layerwise (got {self.scope!r})"
        )
        check(
            self.output_rate is None or self.scope == "layerwise",
            "method.output_rate",
            "a separate output-layer rate needs scope=layerwise (as in Frankle & Carbin's LeNet)",
        )
        check(self.rewind_iteration >= 0, "method.rewind_iteration", f"must be >= 0 (got {self.rewind_iteration})")
        check(self.control in ("none", "reinit", "shuffle"), "method.control", "must be none, reinit or shuffle")
        check_pattern(
            self.pattern,
            self.sparsity,
            self.prunable,
            {
                "output_rate": (self.output_rate is not None, "a separate output-layer rate is not N/M"),
                "control": (self.control == "shuffle", "shuffling the ticket's mask within a layer breaks its groups"),
            },
        )


@dataclass
class LotteryOutputs:
    levels: list[dict[str, Any]]  # per level: {level, density, early_stop_iteration, test_acc}


def _density(rates: dict[str, float], sizes: dict[str, int], level: float) -> float:
    return sum(sizes[n] * (1 - rates[n]) ** level for n in sizes) / sum(sizes.values())


def _floor(rates: dict[str, float], sizes: dict[str, int]) -> float:
    """The density that infinitely many levels approach: the tensors pruned at rate 0 never lose a weight."""
    return sum(sizes[n] for n in sizes if rates[n] == 0) / sum(sizes.values())


class Lottery(Method):
    name = "lottery"
    Config = LotteryConfig
    Outputs = LotteryOutputs

    def label(self, stages: Optional[Stages] = None) -> str:
        notes = [n for n, default in ((self.cfg.control, "none"), (self.cfg.pattern, UNSTRUCTURED)) if n != default]
        return f"lottery ({', '.join(notes)})" if notes else "lottery"

    def retrains_dense_schedule(self) -> bool:
        return True  # every level retrains the dense schedule

    def validate(self, stages: Stages) -> None:
        total = total_iterations(stages.train_config, stages.data.train.num_batches(stages.train_config.batch_size))
        if self.cfg.rewind_iteration >= total:
            raise UserError(
                f"method.rewind_iteration: {self.cfg.rewind_iteration} is beyond the training length "
                f"({total} iterations)"
            )
        base = stages.base_model()
        params = dict(base.named_parameters())
        check_nm_shapes(self.cfg.pattern, {n: params[n].shape for n in stages.prunable(base)})
        self.levels({n: params[n].numel() for n in stages.prunable(base)}, classifier_name(base))

    def levels(self, sizes: dict[str, int], head: str) -> list[dict[str, float]]:
        """Per-layer keep fractions of each level; the last level's exponent is solved to hit the target exactly.
        An N:M pattern is one level at N/M."""
        if nm_pattern(self.cfg.pattern) is not None:
            return [{n: 1 - self.cfg.sparsity for n in sizes}]
        rates = {
            n: (
                self.cfg.output_rate if self.cfg.output_rate is not None and n.startswith(head + ".") else self.cfg.rate
            )
            for n in sizes
        }
        target = 1 - self.cfg.sparsity
        floor = _floor(rates, sizes)
        if target <= floor + 1e-12 and self.cfg.sparsity > 0:
            raise UserError(
                f"method.sparsity: {self.cfg.sparsity:g} is unreachable: the tensors pruned at rate 0 "
                f"(method.output_rate=0) keep {floor:.4f} of the prunable weights at every level; ask for "
                f"less than {1 - floor:.4f} or set method.output_rate > 0"
            )
        count = 0
        while _density(rates, sizes, count) > target + 1e-12:
            count += 1
        lo, hi = float(max(count - 1, 0)), float(count)
        for _ in range(100):  # bisection for the fractional last level
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if _density(rates, sizes, mid) > target else (lo, mid)
        return [{n: (1 - rates[n]) ** (level if level < count else hi) for n in sizes} for level in range(1, count + 1)]

    def chain(self, stages: Stages) -> ExperimentRecord:
        base = stages.base_model()
        names = stages.prunable(base)
        params = dict(base.named_parameters())
        sizes = {n: params[n].numel() for n in names}
        k = self.cfg.rewind_iteration
        dense, rewind, weights = rewind_start(stages, k, "level0")
        state, pruned, history = dense, None, []
        nm = nm_pattern(self.cfg.pattern)
        for level, layers in enumerate(self.levels(sizes, classifier_name(base)), start=1):
            overall = sum(sizes[n] * layers[n] for n in names) / sum(sizes.values())

            def magnitude(model, alive, layers=layers, overall=overall):
                scores = magnitude_scores(model, alive)
                if nm is not None:
                    return select_nm(scores, alive, *nm), {}
                return select(scores, alive, scope=self.cfg.scope, layer_targets=layers, global_target=overall), {}

            spec = {
                "rate": self.cfg.rate,
                "output_rate": self.cfg.output_rate,
                "scope": self.cfg.scope,
                "level": level,
                "keep": round(overall, 12),
                "rewind_iteration": k,
                **({"prunable": prunable} if (prunable := nondefault(self.cfg.prunable)) else {}),
                **({"pattern": self.cfg.pattern} if nm is not None else {}),
            }
            pruned = stages.mask_stage(f"prune{level}", state, spec, magnitude, weights="last")
            state = stages.train_stage(
                f"level{level}", rewind, stages.train_config, weights=weights, masks=pruned, start_iteration=k
            )
            history.append(
                {
                    "level": level,
                    "density": overall,
                    "early_stop_iteration": state.result.early_stop_iteration,
                    "test_acc": state.result.selected.test_acc,
                }
            )
        if self.cfg.control == "reinit":
            fresh = stages.init_stage("reinit", seed=stages.seed("init") + REINIT_OFFSET)
            state = stages.train_stage("control", fresh, stages.train_config, masks=pruned, start_iteration=k)
        elif self.cfg.control == "shuffle":
            if pruned is None:
                raise UserError("method.control: shuffle needs a pruned level; set method.sparsity above 0")
            seed = stages.seed("prune")

            def shuffle(model, alive):
                return shuffled(alive, seed), {}

            control = stages.mask_stage("shuffle", pruned, {"shuffle_seed": seed}, shuffle)
            state = stages.train_stage(
                "control", rewind, stages.train_config, weights=weights, masks=control, start_iteration=k
            )
        return stages.finish(state, pruned=pruned, dense=dense, outputs=LotteryOutputs(levels=history))


METHOD = Lottery
