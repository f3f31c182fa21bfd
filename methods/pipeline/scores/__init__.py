"""Importance scores: pure functions of (model, tensors, data) → {name: score tensor}, higher = keep.

Weight level: ``weights`` (|w|, random, shuffled masks), ``sensitivity`` (SNIP, Lee et al. 2019), ``hessian`` (OBD
diagonal-Hessian estimators and saliency, LeCun et al. 1990). Channel level: ``filters`` (L1 norm, BN |γ|, random).
Scores are computed on a plain model whose pruned weights are exactly 0.
"""

from methods.pipeline.scores.filters import bn_scale_scores, l1_filter_scores, random_filter_scores
from methods.pipeline.scores.hessian import ESTIMATORS, hessian_diagonal, obd_saliency, predicted_loss_increase
from methods.pipeline.scores.sensitivity import snip_scores
from methods.pipeline.scores.weights import magnitude_scores, random_scores, shuffled

__all__ = [
    "ESTIMATORS",
    "bn_scale_scores",
    "hessian_diagonal",
    "l1_filter_scores",
    "magnitude_scores",
    "obd_saliency",
    "predicted_loss_increase",
    "random_filter_scores",
    "random_scores",
    "shuffled",
    "snip_scores",
]
