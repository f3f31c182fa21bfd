"""Optimal Brain Damage — LeCun, Denker & Solla, NIPS 1989 (1990).

Saliency s_k = ½ h_kk u_k² (§2, with the diagonal, extremal and quadratic approximations), h_kk the diagonal of the
Hessian of the training loss at the trained weights, averaged over ``samples`` training examples. The Recipe
(§3): train, compute h_kk and s_k, delete the lowest-saliency weights (set to 0 and frozen), retrain, iterate
(``rounds``). Default estimator ``ggn_exact``: the exact Gauss–Newton diagonal, equal to the Hessian diagonal for
ReLU/max-pool nets without BN (their output is piecewise linear in each single weight, so ∂²z/∂w_k² = 0 almost
everywhere); ``lecun`` is the paper's backpropagated Levenberg–Marquardt recursion; ``mc_fisher``, ``hutchinson``;
``empirical_fisher`` is an ablation (Fisher pruning, not OBD).
Each round records the predicted loss increase Σ s_k of the deleted weights and the measured increase before
retraining, on the same samples (the paper's Fig. 1b). The measured increase is that of the network the prune stage
stores: with ``recalibrate_bn`` its BatchNorm statistics are re-estimated first (the quadratic model, computed with
the dense network's statistics, does not know about that step); without, the dense network's statistics are kept.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from foundations.checks import check, moved_default
from methods.pipeline.api import Stages
from methods.pipeline.recover import FINE_TUNE, Recovery
from methods.pipeline.scores import hessian_diagonal, obd_saliency, predicted_loss_increase
from methods.pipeline.scores.hessian import ESTIMATORS
from methods.pipeline.unstructured import ScoreConfig, ScoreMethod


@dataclass
class ObdConfig(ScoreConfig):
    estimator: str = "ggn_exact"
    samples: int = 10_000
    probes: int = 100
    name: str = "obd"
    sparsity: float = 0.9
    recovery: Recovery = moved_default(FINE_TUNE, hashed_as=Recovery(lr_scale=0.1))

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.estimator in ESTIMATORS, "method.estimator", f"must be one of {ESTIMATORS} (got {self.estimator!r})")
        check(self.samples >= 1, "method.samples", f"must be >= 1 (got {self.samples})")


class OptimalBrainDamage(ScoreMethod):
    name = "obd"
    Config = ObdConfig

    def variant_notes(self) -> list[str]:
        return ([self.cfg.estimator] if self.cfg.estimator != "ggn_exact" else []) + super().variant_notes()

    def _samples(self, stages: Stages):
        return stages.data.train.subset(self.cfg.samples, stages.seed("prune"))

    def scores(self, stages: Stages, model, alive):
        model = model.to(stages.device)
        params = {n: p for n, p in model.named_parameters() if n in alive}
        hdiag = hessian_diagonal(
            model,
            params,
            self._samples(stages).batches(512, device=stages.device),
            self.cfg.estimator,
            n_samples=self.cfg.samples,
            probes=self.cfg.probes,
            generator=torch.Generator().manual_seed(stages.seed("prune")),
            progress=stages.progress,
        )
        return obd_saliency({n: p.detach().cpu() for n, p in params.items()}, hdiag)

    def round_info(self, stages: Stages, model, alive, masks, scores) -> dict:
        removed = {n: alive[n] & ~masks[n] for n in masks}
        before = self._loss(stages, model)
        calibrate = self.calibrator(stages)
        with torch.no_grad():
            # re-estimating statistics changes buffers too: work on a copy then; else mask in place and restore
            pruned = copy.deepcopy(model) if calibrate is not None else model
            params = dict(pruned.named_parameters())
            saved = {n: params[n].detach().clone() for n in masks}
            for n, m in masks.items():
                params[n].mul_(m.to(params[n].device))
            if calibrate is not None:
                calibrate(pruned)
            after = self._loss(stages, pruned)
            for n, value in saved.items():
                params[n].copy_(value)
        return {
            "predicted_loss_increase": predicted_loss_increase(scores, removed),
            "measured_loss_increase": after - before,
        }

    @torch.no_grad()
    def _loss(self, stages: Stages, model) -> float:
        model.eval()
        total, count = 0.0, 0
        for x, y in self._samples(stages).batches(1000, device=stages.device):
            total += F.cross_entropy(model(x), y, reduction="sum").item()
            count += len(y)
        return total / count


METHOD = OptimalBrainDamage
