"""Magnitude pruning — Han, Pool, Tran & Dally, "Learning both Weights and Connections", NeurIPS 2015.

§3: train the dense network (L2 regularization), prune connections with small |w|, retrain the survivors from
their trained values with LR × 0.1 (LeNets), optionally iterating prune/retrain. The paper's threshold is
``quality × σ`` per layer (``scope=layerwise_std``); the per-layer keep fractions of Tables 2–3 are given with
``layer_density`` (the ``han_lenet`` experiment). Default here: ``scope=global`` (one threshold over all layers, the
ablation ShrinkBench and the LTH papers use), because a single sweep axis (``method.sparsity``) needs a scope that
hits a target exactly. Biases are not pruned.
"""

from __future__ import annotations

from dataclasses import dataclass

from foundations.checks import moved_default
from methods.pipeline.api import Stages
from methods.pipeline.recover import FINE_TUNE, Recovery
from methods.pipeline.scores import magnitude_scores
from methods.pipeline.unstructured import ScoreConfig, ScoreMethod


@dataclass
class MagnitudeConfig(ScoreConfig):
    name: str = "magnitude"
    sparsity: float = 0.9
    recovery: Recovery = moved_default(FINE_TUNE, hashed_as=Recovery(lr_scale=0.1))


class Magnitude(ScoreMethod):
    name = "magnitude"
    Config = MagnitudeConfig

    def scores(self, stages: Stages, model, alive):
        return magnitude_scores(model, alive)


METHOD = Magnitude
