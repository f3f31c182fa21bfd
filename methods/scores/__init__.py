"""Importance scores for unstructured pruning: pure functions of (model, tensors, data) → {name: score tensor}.

``hessian``: OBD diagonal-Hessian estimators and saliency (LeCun et al. 1990); ``snip``: SNIP connection
sensitivity (Lee et al. 2019). Scores are computed on a plain model whose pruned weights are exactly 0.
"""

from methods.scores.hessian import ESTIMATORS, hessian_diagonal, obd_saliency, predicted_loss_increase
from methods.scores.snip import snip_scores

__all__ = ["ESTIMATORS", "hessian_diagonal", "obd_saliency", "predicted_loss_increase", "snip_scores"]
