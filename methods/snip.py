"""SNIP — Lee, Ajanthan & Torr, "Single-shot Network Pruning based on Connection Sensitivity", ICLR 2019.

At initialization, on one mini-batch (|D_b| = 100 for MNIST-likes), score every weight by the connection
sensitivity s_j = |∂L(c ⊙ w)/∂c_j| at c = 1 = |g_j w_j| (eq. 6), normalized by Σ_k |g_k|, keep the global top-κ
(eq. 7), then train the sparse network normally. BN runs in eval mode while scoring. The paper's init is variance
scaling (§5, the official code's ``tf.variance_scaling_initializer``): ``model.init=variance_scaling``, as the survey's
SNIP arm sets it; a run with any other ``model.init`` says so in its label ("snip (kaiming_normal init)"), so it never
shares a table row with the paper's setting. Pruning is one-shot (``rounds > 1`` is refused). Options: several batches
(``batches``), and
``fresh_init=true`` to train a separately drawn initialization with the mask, as the official code does
(``weights_ap`` vs ``weights_bp``; mil-ad/snip#3). Default ``fresh_init=false``: the paper's wording, training the
scored network. ``fresh_init`` is the re-initialization ablation every pruning-at-init method has, with ``shuffle``
and ``invert`` (Frankle et al. 2021; ``methods.pipeline.unstructured``). The official code also masks biases (all
pruned, since they start at 0): ``method.prunable.biases=true``.
"""

from __future__ import annotations

from dataclasses import dataclass

from foundations.checks import check
from methods.pipeline.api import Stages
from methods.pipeline.scores import snip_scores
from methods.pipeline.unstructured import AtInitConfig, AtInitMethod


@dataclass
class SnipConfig(AtInitConfig):
    name: str = "snip"
    sparsity: float = 0.9
    batch_size: int = 100
    batches: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            self.batch_size >= 1,
            "method.batch_size",
            f"SNIP needs a mini-batch of at least 1 example (got {self.batch_size})",
        )
        check(self.batches >= 1, "method.batches", f"must be >= 1 (got {self.batches})")


PAPER_INIT = "variance_scaling"


class Snip(AtInitMethod):
    name = "snip"
    Config = SnipConfig

    def experiment_notes(self, stages: Stages) -> list[str]:
        return [] if stages.model_init == PAPER_INIT else [f"{stages.model_init} init"]

    def scores(self, stages: Stages, model, alive):
        params = {n: p for n, p in model.named_parameters() if n in alive}
        stream = stages.data.train.batches(self.cfg.batch_size, shuffle=True, seed=stages.seed("prune"))
        batches = [batch for batch, _ in zip(stream, range(self.cfg.batches))]
        return snip_scores(model.to(stages.device), params, batches)

    def variant_notes(self) -> list[str]:
        notes = super().variant_notes()
        return notes + ([f"{self.cfg.batches} batches"] if self.cfg.batches != 1 else [])


METHOD = Snip
