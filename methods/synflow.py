"""SynFlow — Tanaka, Kunin, Yamins & Ganguli, "Pruning neural networks without any data by iteratively conserving
synaptic flow", NeurIPS 2020.

Algorithm 1: at initialization, with no data, for k = 1…n: score every surviving weight by the synaptic flow
S = |∂R/∂θ ⊙ θ|, R = 1ᵀ(∏_l |θ^[l]|)1 (eq. 2 and §5; ``methods.pipeline.scores.synflow``: the absolute value of the
whole state dict — weights, biases, BN statistics — in eval mode, on one all-ones input, as the released code), and
keep the top (global, ``scope``) ρ^{−k/n} of all prunable weights: the exponential schedule, density d^{k/n} after
iteration k, so iteration n lands on the target d exactly. n = 100 (``iterations``; the paper's baselines are
single-shot, n = 1). Then the sparse network trains for the dense schedule (``when=init``).

Where paper and released code differ, and what is default:
- ``precision``: float64 (default; the released code has ``model.double()`` commented out) or float32 (the released
  code). R is a product over every layer; float32 underflows on deep nets (ganguli-lab/Synaptic-Flow#11).
- Selection: exactly ``round(d^{k/n} · N)`` survivors per iteration, ties broken by position
  (``methods.pipeline.select``). The released code prunes ``score <= kthvalue``, which removes every weight tied at
  the threshold (zero scores of disconnected weights) and stops with "ERROR: N prunable parameters remaining"
  (ganguli-lab/Synaptic-Flow#12); its count is ``N − int((1 − d)N)`` rather than the rounded ``d · N``.
- Pruned weights score 0 (no path through a zero weight) and only survivors are ranked, so they stay pruned.
- Which tensors: ``method.prunable`` (Conv/Linear weights, classifier included, as the released code's default).

Exact conservation (tests): with zero biases (prunelab's initializers) and BN at its initial statistics, every
layer's scores sum to R and each hidden neuron's incoming scores sum to its outgoing ones; nonzero biases or trained
BN statistics add paths and break it, in the released code too.
"""

from __future__ import annotations

from dataclasses import dataclass

from foundations.checks import check
from methods.pipeline.api import Stages
from methods.pipeline.scores.synflow import DTYPES, iterative_synflow, synflow_scores
from methods.pipeline.unstructured import AtInitConfig, AtInitMethod


@dataclass
class SynflowConfig(AtInitConfig):
    name: str = "synflow"
    sparsity: float = 0.9
    iterations: int = 100
    precision: str = "float64"  # float64 | float32 (the released code)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.iterations >= 1, "method.iterations", f"must be >= 1 (got {self.iterations})")
        check(
            self.precision in DTYPES,
            "method.precision",
            f"must be one of {tuple(DTYPES)} (got {self.precision!r})",
        )


class SynFlow(AtInitMethod):
    name = "synflow"
    Config = SynflowConfig

    def variant_notes(self) -> list[str]:
        notes = super().variant_notes()
        notes += [f"{self.cfg.iterations} iterations"] if self.cfg.iterations != 100 else []
        return notes + ([self.cfg.precision] if self.cfg.precision != "float64" else [])

    def scores(self, stages: Stages, model, alive):
        """One pass (the scores of iteration 1)."""
        shape = tuple(stages.example_input.shape[1:])
        return synflow_scores(model.to(stages.device), list(alive), shape, DTYPES[self.cfg.precision])

    def selector(self, stages: Stages, model, alive, weights):
        n, shape = self.cfg.iterations, tuple(stages.example_input.shape[1:])
        model = model.to(stages.device)

        def keep(overall: float, layers: dict[str, float]) -> dict:
            def step(scores, survivors, k):
                exponent = k / n
                return self.choose(
                    self.ranked(scores),
                    survivors,
                    overall**exponent if k < n else overall,
                    {name: d**exponent if k < n else d for name, d in layers.items()},
                    weights,
                )

            return iterative_synflow(model, alive, step, n, shape, DTYPES[self.cfg.precision])

        return keep, {}


METHOD = SynFlow
