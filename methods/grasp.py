"""GraSP — Wang, Zhang & Grosse, "Picking Winning Tickets Before Training by Preserving Gradient Flow", ICLR 2020.

At initialization, score every weight by S(−θ) = −θ ⊙ Hg (eq. 8: the first-order change of the gradient norm when
the weight is removed; g the gradient, H the Hessian of the loss on logits / T, T = 200,
``methods.pipeline.scores.grasp``) and remove the weights with the *largest* S: their removal reduces the gradient
flow least, or increases it. Then train the sparse network for the dense schedule (``when=init``). Global top-κ
over every Conv/Linear weight, classifier included (``method.prunable``).

Defaults follow the official ``pruner/GraSP.py``:
- data: ``samples_per_class`` images of every class (10 on CIFAR-10), the first ones of each class in the shuffled
  training split (``seeds.prune``); ordered by class and split into two halves; g sums the halves' gradients
  (first pass, no graph), Hg sums each half's double backward of g · ∇L_half;
- a *copy* of the model scores: every ``nn.Linear`` weight of the copy is redrawn Xavier-normal (``reinit_linear``;
  from ``seeds.prune``, pruned entries kept at 0) and the copy runs in train mode (``bn_mode=train``: BN uses each
  half's batch statistics). The mask applies to the real model, whose weights and BN running statistics are
  untouched. On an MLP every layer is a Linear, so the official scores are those of a Xavier-initialized copy.
- the official code divides the scores by |Σ scores| + 1e-10 (order-preserving, left out) and keeps
  ``score <= the k-th largest`` (k = int(N · sparsity): one weight more, and ties); prunelab removes exactly
  round(sparsity · N), ties broken by position.

Options:
- ``variant``: ``official`` keeps the lowest −θ⊙Hg (Wang et al.; the same mask as Synaptic-Flow's θ⊙Hg with the
  smallest removed, and as Lubana & Dick's ``grasp``: θ·Hg, smallest removed); ``abs`` keeps the largest |θ⊙Hg|,
  i.e. removes the weights whose removal changes the gradient norm least — Lubana & Dick (ICLR 2021, "A
  gradient flow framework for analyzing network pruning": increasing the gradient norm, as GraSP does, "can produce
  poorly performing models"; their ``grad_preserve``) and Frankle et al. (ICLR 2021, "Pruning neural networks at
  initialization: why are we missing the mark?": GraSP inverted does as well or better, and they propose pruning
  the lowest |GraSP| score). The inverted GraSP itself is ``invert=true`` (every at-init method has it).
- ``bn_mode=eval``, ``reinit_linear=false``: Synaptic-Flow's reimplementation (eval-mode BN, no re-init).
- ``temperature`` (T), ``samples_per_class``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from foundations.checks import check
from foundations.errors import UserError
from foundations.seeds import generator
from methods.pipeline.api import Stages
from methods.pipeline.scores.grasp import hessian_gradient
from methods.pipeline.unstructured import AtInitConfig, AtInitMethod

VARIANTS = ("official", "abs")
BN_MODES = ("train", "eval")
_BN = nn.modules.batchnorm._BatchNorm
FETCH_BATCH = 256  # how the shuffled split is read while collecting the samples (the order depends on the seed only)


@dataclass
class GraspConfig(AtInitConfig):
    name: str = "grasp"
    sparsity: float = 0.9
    samples_per_class: int = 10
    temperature: float = 200.0
    variant: str = "official"  # official: keep the lowest −θ⊙Hg | abs: keep the largest |θ⊙Hg|
    bn_mode: str = "train"  # train (official) | eval (Synaptic-Flow)
    reinit_linear: bool = True  # official: Xavier-normal Linear weights in the scoring copy

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.samples_per_class >= 1, "method.samples_per_class", f"must be >= 1 (got {self.samples_per_class})")
        check(self.temperature > 0, "method.temperature", f"must be > 0 (got {self.temperature})")
        check(self.variant in VARIANTS, "method.variant", f"must be one of {VARIANTS} (got {self.variant!r})")
        check(self.bn_mode in BN_MODES, "method.bn_mode", f"must be one of {BN_MODES} (got {self.bn_mode!r})")


def class_balanced(split, per_class: int, num_classes: int, seed: int) -> tuple[Tensor, Tensor]:
    """The first ``per_class`` examples of every class in the split's shuffled order (``seed``), ordered by class
    (the official ``GraSP_fetch_data``)."""
    found: list[list[Tensor]] = [[] for _ in range(num_classes)]
    for x, y in split.batches(FETCH_BATCH, shuffle=True, seed=seed):
        for image, label in zip(x, y.tolist()):
            if len(found[label]) < per_class:
                found[label].append(image)
        if all(len(f) == per_class for f in found):
            break
    short = [c for c, f in enumerate(found) if len(f) < per_class]
    if short:
        raise UserError(
            f"method.samples_per_class: class {short[0]} has only {len(found[short[0]])} training examples "
            f"(asked {per_class} of every class); lower method.samples_per_class"
        )
    x = torch.stack([image for images in found for image in images])
    y = torch.arange(num_classes).repeat_interleave(per_class)
    return x, y


class Grasp(AtInitMethod):
    name = "grasp"
    Config = GraspConfig

    def variant_notes(self) -> list[str]:
        cfg, default = self.cfg, GraspConfig()
        notes = super().variant_notes()
        notes += [f"{cfg.variant}"] if cfg.variant != default.variant else []
        notes += [f"{cfg.bn_mode}-mode BN"] if cfg.bn_mode != default.bn_mode else []
        notes += ["no re-init"] if not cfg.reinit_linear else []
        notes += [f"T={cfg.temperature:g}"] if cfg.temperature != default.temperature else []
        return notes + (
            [f"{cfg.samples_per_class}/class"] if cfg.samples_per_class != default.samples_per_class else []
        )

    def scoring_copy(self, stages: Stages, model: nn.Module, alive: dict) -> nn.Module:
        """The network GraSP scores: a copy (its BN statistics are discarded), Linear weights redrawn Xavier-normal
        under ``reinit_linear`` (pruned entries kept 0), in the configured BN mode."""
        scored = copy.deepcopy(model).to(stages.device)
        if self.cfg.reinit_linear:
            gen = generator(stages.seed("prune"))
            with torch.no_grad():
                for name, module in scored.named_modules():
                    if isinstance(module, nn.Linear):
                        drawn = nn.init.xavier_normal_(torch.empty(module.weight.shape), generator=gen)
                        mask = alive.get(f"{name}.weight")
                        module.weight.copy_(drawn if mask is None else drawn * mask)
        return scored.train(self.cfg.bn_mode == "train")

    def scores(self, stages: Stages, model, alive):
        scored = self.scoring_copy(stages, model, alive)
        x, y = class_balanced(
            stages.data.train, self.cfg.samples_per_class, stages.data.num_classes, stages.seed("prune")
        )
        x, y = x.to(stages.device), y.to(stages.device)
        half = len(x) // 2
        if half < 2 and scored.training and any(isinstance(m, _BN) for m in scored.modules()):
            raise UserError(
                f"method.samples_per_class: train-mode BN needs 2 examples per half (got {len(x)} in all); "
                f"raise method.samples_per_class or set method.bn_mode=eval"
            )
        hg = hessian_gradient(scored, list(alive), [(x[:half], y[:half]), (x[half:], y[half:])], self.cfg.temperature)
        params = dict(scored.named_parameters())
        # official: remove the largest −θ⊙Hg, i.e. keep the largest θ⊙Hg (θ: the scoring copy's weights)
        kept = {n: (params[n].detach() * hg[n]).cpu() for n in alive}
        return {n: s.abs() for n, s in kept.items()} if self.cfg.variant == "abs" else kept


METHOD = Grasp
