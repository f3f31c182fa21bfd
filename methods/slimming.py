"""Network slimming — Liu, Li, Shen, Huang, Yan & Zhang, "Learning Efficient Convolutional Networks through
Network Slimming", ICCV 2017.

Objective (§3, Eq. 1): ``L = Σ_(x,y) l(f(x, W), y) + λ Σ_(γ∈Γ) g(γ)`` with ``g(s) = |s|``, where Γ are the BatchNorm
scale factors, one per channel. It is optimized by subgradient descent: λ·sign(γ) is added to the gradient of every
BN scale after ``backward()`` and before the optimizer step (``sparsity_hook``). λ is relative to the *mean*
mini-batch loss (the loop's cross-entropy is a mean); β is not penalized; weight decay still applies to γ as in the
official code.

Pipeline (``passes = 1``)::

    init (γ = bn_weight_init = 0.5) → sparsity training (dense schedule + λ·sign(γ))
        → prune: one global threshold over all |γ| (select_channels(scope="global")) → compact → fine-tune

Reference code and its quirks (our implementation is written from the paper, not copied):

- Torch original github.com/liuzhuang13/slimming: ``gradientBN`` adds ``S*torch.sign(weight)`` to the BN weight
  gradient; ``BNInit`` fills γ with 0.5 (``models/vgg.lua``); ``prune/prune.lua`` sorts all |γ| and keeps γ > thre.
- PyTorch re-implementation Eric-mingjie/network-slimming (``main.py``, ``updateBN``):
  ``m.weight.grad.data.add_(s*torch.sign(m.weight.data))`` on ``nn.BatchNorm2d`` only; ``vggprune.py`` takes
  ``thre = y[int(total*percent)]`` of the sorted concatenated |γ| and keeps γ > thre strictly, so it can empty a
  layer (rethinking-network-pruning#50, network-slimming#56/#80) and ties at the threshold are all kept. It uses
  plain momentum SGD, no Nesterov.

Our choices where they differ:

- The penalty goes on every ``_BatchNorm`` with affine parameters (BatchNorm1d too: the paper's MNIST MLP treats
  each neuron as a 1×1 channel with BatchNorm1d after its Linear).
- γ init: the sparsity-training model is the plain dense init (same seed, same conv/linear weights) with every
  γ set to ``bn_weight_init`` (0.5, §4.3 "all γ initialized to 0.5"). ``bn_weight_init: null`` keeps the model's
  ``model.bn_weight_init``. From a trained checkpoint (``model.checkpoint``) the sparsity training starts from the
  checkpoint's own γ: resetting trained scales to 0.5 would discard what the threshold reads (with ``train.epochs=0``
  the checkpoint's γ are pruned as they are). The init is its own stage (``extra`` names the γ value), and the sparsity training is
  its own train stage (``extra`` names λ), so neither collides with the plain dense stages other methods share.
- Pruning removes exactly ``round(sparsity · total)`` channels, lowest |γ| first (ties broken by layer order, then
  index), with a per-layer floor (``min_keep_fraction``, and always ≥ 1 channel) that moves the deficit of a
  floored layer onto the others instead of crashing like the reference code on an emptied layer.
- A residual group (coupled layers, one BN each) is scored by the **max** of its members' |γ|: the coupled channel
  is removable only if it is unimportant after every member, and unlike a sum the max does not inflate the scores
  of groups with many members against single-layer groups under the global threshold. A group with no BN at all
  cannot be scored, so ``validate`` refuses such a model before any stage is written.
- The pruned model is the sparsity stage's validation-selected weights (``train.selection``), as every other
  after-training method in this repo (the official PyTorch scripts also keep a best-accuracy ``model_best.pth.tar``,
  selected on the *test* set; ours selects on validation).

Fine-tuning (``fine_tune``):

- ``paper`` (default): "same optimization setting as in training" (§4.3; ``train_fine_tune.lua``; the
  Eric-mingjie README ``--refine … --epochs 160``): the full dense ``train`` config, LR × 1. It is the default
  because it is the protocol behind the paper's numbers.
- ``rethinking``: the Rethinking repo's ``cifar/network-slimming/main_finetune.py`` default, 40 epochs at a
  constant LR 1e-3 (its weight decay 1e-4 is not imposed: ``train.weight_decay`` is kept) — a different protocol
  from the paper's, behind the Rethinking repo's "Fine-tuned" baselines; label results with ``fine_tune`` (it is in
  the record).

``recovery`` fields set explicitly (different from the ``Recovery()`` defaults) override the preset, e.g.
``fine_tune=rethinking method.recovery.epochs=5``.

Multi-pass (``passes > 1``, §5 / Table 4a): pass 1 is the pipeline above up to the prune; every later pass
sparsity-trains the previously pruned (compacted) model with the fine-tune schedule plus λ·sign(γ) (fine-tuning
and the next sparsity training in one run), then prunes it again; after the last pass the model is fine-tuned
without the penalty. ``sparsity`` is the fraction of the *remaining* channels removed in each pass (the paper's
per-iteration percentile, 50% for VGG, combined with "at most 50% per layer" = ``min_keep_fraction=0.5``), so the
overall channel sparsity is ``1 − (1 − sparsity)^passes`` (recorded as ``channel_sparsity``). A later pass's plan
indexes the compacted model's channels; it is composed with the earlier ones (kept index i of pass k maps to
``keep_{k−1}[i]``: ``methods.pipeline.channels.plan.compose``) into one plan over the base architecture, which is what
the experiment rebuilds from the stage.

Record (``Outputs``, besides the common fields): ``dense_test_acc`` is the plain dense model's (``stages.dense_stage()``, shared across a sweep, so all methods
compare against the same "before"); ``sparsity_trained_test_acc`` is the sparsity-trained model's (the paper's
"after sparsity training" row; the reference point for ``test_acc_before_recovery``);
``sparsity_trained_gamma_abs`` its |γ| per BN layer, the weights the threshold is taken over (Fig. 4's histograms).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from foundations.checks import check, moved_default, nondefault
from foundations.errors import RefusedModel
from foundations.training import Hooks
from methods.pipeline.api import StageRef, Stages
from methods.pipeline.channels import prunable_channel_groups
from methods.pipeline.recover import Recovery, recovery_config
from methods.pipeline.results import PlanResult, TrainResult
from methods.pipeline.scores.filters import BN_MODELS, bn_scale_scores
from methods.pipeline.structured import ChannelConfig, ChannelFacts, ChannelMethod, ScoredPlan

_BN = nn.modules.batchnorm._BatchNorm
FINE_TUNE = ("paper", "rethinking")


@dataclass
class SlimmingConfig(ChannelConfig):
    # Slimming's hashes were taken against its own defaults, before MethodConfig.HASH_DEFAULTS measured every method's
    # name and sparsity against dense's: declared so that they stay. (At all its defaults, slimming's experiment spec
    # is therefore dense's; README › Results store.)
    name: str = moved_default("slimming", hashed_as="slimming")
    sparsity: float = moved_default(0.5, hashed_as=0.5)  # fraction of the remaining channels removed in each pass
    scope: str = "global"  # the paper's one percentile over all |γ|
    lam: float = 1e-4  # λ of Eq. 1 (§4.3: 1e-4 for VGGNet, 1e-5 for ResNet/DenseNet)
    bn_weight_init: Optional[float] = 0.5  # γ at the start of sparsity training; None = model.bn_weight_init
    fine_tune: str = "paper"  # paper (full dense schedule, LR × 1) | rethinking (40 epochs, constant LR 1e-3)
    passes: int = 1
    recovery: Recovery = field(default_factory=Recovery)  # explicit fields override the fine_tune preset

    def __post_init__(self) -> None:
        super().__post_init__()
        check(math.isfinite(self.lam) and self.lam >= 0, "method.lam", f"must be a finite number >= 0 (got {self.lam})")
        check(
            self.bn_weight_init is None or math.isfinite(self.bn_weight_init),
            "method.bn_weight_init",
            f"must be a finite number or null (got {self.bn_weight_init})",
        )
        check(
            self.fine_tune in FINE_TUNE,
            "method.fine_tune",
            f"must be one of {', '.join(FINE_TUNE)} (got {self.fine_tune!r})",
        )
        check(self.passes >= 1, "method.passes", f"must be >= 1 (got {self.passes})")


@dataclass(frozen=True)
class PassFacts(ChannelFacts):
    """A pass's plan stage: the plan so far over the base architecture, and this pass's own fraction."""

    pass_channel_sparsity: float  # of the channels the pass found (the compacted model's)

    @classmethod
    def of(cls, total: float, step: float) -> PassFacts:
        return cls(total, step)


@dataclass
class SlimmingOutputs:
    channel_sparsity_per_pass: list[float]  # each pass's fraction of the channels it found
    sparsity_trained_test_acc: float  # after the λ-regularized training (the reference of test_acc_before_recovery)
    sparsity_trained_gamma_abs: dict[str, list[float]]  # |γ| per BN layer of the same weights (Fig. 4's histograms)
    fine_tune: str  # "paper" | "rethinking"


def sparsity_hook(lam: float):
    """The subgradient of λ Σ|γ| (Eq. 1): adds λ·sign(γ) to the gradient of every affine BN scale."""

    @torch.no_grad()
    def hook(model: nn.Module) -> None:
        for module in model.modules():
            if isinstance(module, _BN) and module.weight is not None and module.weight.grad is not None:
                module.weight.grad.add_(torch.sign(module.weight), alpha=lam)

    return hook


def set_bn_weight(value: float):
    @torch.no_grad()
    def prepare(model: nn.Module) -> None:
        for module in model.modules():
            if isinstance(module, _BN) and module.weight is not None:
                module.weight.fill_(value)

    return prepare


def gamma_abs(model: nn.Module, weights: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """|γ| of every affine BN layer of ``model``'s architecture in ``weights`` (Fig. 4's histograms)."""
    return {
        name: weights[f"{name}.weight"].abs().tolist()
        for name, module in model.named_modules()
        if isinstance(module, _BN) and module.weight is not None
    }


@dataclass(frozen=True)
class Passes:
    """Slimming's pruner: pass 1 prunes the sparsity-trained model; every later pass sparsity-trains the previous
    pass's compacted model with the fine-tune schedule plus λ·sign(γ), then prunes it again (§5, Table 4a)."""

    method: Slimming

    def prune(self, stages: Stages, start: StageRef) -> list[StageRef[PlanResult[Any]]]:
        slimming = self.method
        source, plans = start, list[StageRef[PlanResult[Any]]]()
        for k in range(1, slimming.cfg.passes + 1):
            if plans:  # pass k > 1 starts from pass k − 1's compacted model
                schedule = slimming.fine_tune_config(stages)
                source = slimming.sparsity_training(stages, f"sparsity_{k}", plans[-1], schedule)
            one_pass = ScoredPlan(
                lambda model, groups: bn_scale_scores(model, groups),
                slimming.cfg.sparsity,
                slimming.cfg.scope,
                slimming.cfg.min_keep_fraction,
                list(slimming.cfg.prunable.exclude),
                {**slimming.plan_spec(), "pass": k, "prune_seed": stages.seed("prune")},
                name="prune" if k == 1 else f"prune_{k}",
                facts=PassFacts,
            )
            plans.append(one_pass.stage(stages, source))
        return plans


class Slimming(ChannelMethod):
    name = "slimming"
    Config = SlimmingConfig
    Outputs = SlimmingOutputs

    def label(self, stages: Optional[Stages] = None) -> str:
        return self.name if self.cfg.passes == 1 else f"{self.name} ({self.cfg.passes} passes)"

    def sets_own_sparsity(self) -> bool:
        return self.cfg.passes > 1  # `sparsity` is each pass's fraction; the overall is 1 − (1 − s)^passes, floored

    def validate(self, stages: Stages) -> None:
        model = stages.base_model()
        if not any(isinstance(m, _BN) and m.weight is not None for m in model.modules()):
            raise RefusedModel(
                f"method=slimming: model {stages.model_name} has no BatchNorm scales γ to regularize and "
                f"prune; use a model with BN (built in: {BN_MODELS}, not model.batchnorm=false)"
            )
        bn_scale_scores(
            model, prunable_channel_groups(model, stages.example_input, self.cfg.prunable.exclude)
        )  # every group needs a BN

    def recovery(self) -> Recovery:
        preset = Recovery() if self.cfg.fine_tune == "paper" else Recovery(epochs=40, lr=1e-3, schedule="constant")
        return Recovery(**{**vars(preset), **nondefault(self.cfg.recovery)})

    def fine_tune_config(self, stages: Stages):
        return recovery_config(self.recovery(), stages.train_config)

    def plan_spec(self) -> dict:
        return {k: v for k, v in super().plan_spec().items() if k not in ("fine_tune", "passes")}

    def sparsity_training(self, stages: Stages, name: str, start: StageRef, schedule) -> StageRef[TrainResult]:
        return stages.train_stage(
            name,
            start,
            schedule,
            hooks=Hooks(before_step=[sparsity_hook(self.cfg.lam)]),
            extra={"slimming_l1_bn": self.cfg.lam},
        )

    def pruning_start(self, stages: Stages, dense: StageRef[TrainResult]) -> StageRef[TrainResult]:
        """Pass 1's sparsity-regularized training from the γ-initialized dense init."""
        gamma = self.cfg.bn_weight_init
        if gamma is None or stages.from_checkpoint:  # a trained start keeps its own γ (see the module docstring)
            init = stages.init_stage()
        else:
            init = stages.init_stage("slimming_init", prepare=set_bn_weight(gamma), extra={"bn_weight_init": gamma})
        return self.sparsity_training(stages, "sparsity", init, stages.train_config)

    def pruner(self, stages: Stages) -> Passes:
        return Passes(self)

    def outputs(
        self, stages: Stages, start: StageRef[TrainResult], plans: list[StageRef[PlanResult[Any]]]
    ) -> SlimmingOutputs:
        return SlimmingOutputs(
            channel_sparsity_per_pass=[plan.result.facts.pass_channel_sparsity for plan in plans],
            sparsity_trained_test_acc=start.result.selected.test_acc,
            sparsity_trained_gamma_abs=gamma_abs(stages.base_model().eval(), start.weights()),
            fine_tune=self.cfg.fine_tune,
        )


METHOD = Slimming
