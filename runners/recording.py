"""The experiment record, built in one place from typed facts.

``build_record`` assembles ``foundations.record.ExperimentRecord`` from: who the experiment is (``Identity``, the
config, the method's label and family), the size and cost of the final model against the dense architecture
(``measure_size``: parameters, multiply-adds, density, channel sparsity), its measured latency
(``measure_latency``), the accuracies the stages report (``Accuracies.of``), where the stages came from
(``Provenance``) and the method's own ``Outputs``. ``failure_record`` is the record of an experiment that failed.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from foundations.record import ExperimentRecord
from foundations.training import budget
from methods import get_method
from methods.pipeline.api import Method, outputs_json
from methods.pipeline.channels import ChannelPlan, channel_sparsity
from methods.pipeline.masks import current_masks, folded, layer_density
from methods.pipeline.results import Accuracy, PruneResult, TrainResult
from models import display_name
from runners import metrics as measure
from runners.config import ExperimentConfig, LatencyConfig
from runners.identity import Identity
from runners.sparse import measure_sparse_latency


@dataclass
class Provenance:
    """Which stages an experiment went through: name → hash, seconds computed here (0 = reused), reused or not."""

    stage_hashes: dict[str, str] = field(default_factory=dict)
    wall_time_s: dict[str, float] = field(default_factory=dict)
    stages_reused: dict[str, bool] = field(default_factory=dict)
    # hash -> parent hashes, and each train stage's budget: the record's training_budget (foundations.training.budget)
    parents: dict[str, list[str]] = field(default_factory=dict)
    budgets: list[dict[str, Any]] = field(default_factory=list)

    def add(self, name: str, digest: str, reused: bool, seconds: float, parents: tuple[str, ...] = ()) -> None:
        self.stage_hashes[name] = digest
        self.stages_reused[name] = reused
        self.wall_time_s[name] = 0.0 if reused else seconds
        self.parents[digest] = list(parents)

    def spent(self, stage_budget: dict[str, Any], digest: str, reused: bool) -> None:
        """One train stage's budget (``budget.stage_budget``), computed now or reused."""
        self.budgets.append({**stage_budget, "hash": digest, "reused": reused})

    def training_budget(self, final_hash: str) -> dict[str, Any]:
        """The train stages behind the stage ``final_hash`` and their total (``budget.result_budget``)."""
        return budget.result_budget(final_hash, self.parents, self.budgets)


@dataclass(frozen=True)
class Size:
    """The final model against the dense architecture (``runners.metrics``: multiply-adds of one example)."""

    density: float  # nonzero fraction of the dense architecture's prunable tensors
    params_dense: int
    params_nonzero: int
    flops_dense: int
    flops_effective: int
    per_layer_density: dict[str, float]
    prunable_tensors: list[str]
    channel_sparsity: Optional[float]  # of the final model's channel plan; None without one


def measure_size(
    base: nn.Module, model: nn.Module, names: list[str], input_shape: tuple[int, ...], plan: Optional[ChannelPlan]
) -> Size:
    """``model`` as the final stage stores it (masked, or compacted by ``plan``) against ``base``, a dense model of
    the experiment's architecture; ``names``: the prunable tensors of ``base``."""
    masks = current_masks(model)
    plain = folded(model).cpu().eval()
    dense_params = dict(base.named_parameters())
    final_params = dict(plain.named_parameters())
    total = sum(dense_params[n].numel() for n in names)
    nonzero = sum(int((final_params[n] != 0).sum()) for n in names if n in final_params)
    per_layer = {
        n: (int((final_params[n] != 0).sum()) / dense_params[n].numel()) if n in final_params else 0.0 for n in names
    }
    per_layer.update(layer_density(masks) if masks else {})
    return Size(
        density=nonzero / max(total, 1),
        params_dense=measure.count_params(base)["params_total"],
        params_nonzero=measure.count_params(plain)["params_nonzero"],
        flops_dense=measure.count_flops(base, input_shape)["flops_dense"],
        flops_effective=measure.count_flops(plain, input_shape)["flops_effective"],
        per_layer_density=per_layer,
        prunable_tensors=names,
        channel_sparsity=channel_sparsity(plan, base) if plan is not None else None,
    )


@dataclass(frozen=True)
class Latency:
    """ms per forward by batch size of the networks a record compares, and what ran them (README › Results store)."""

    ms: Optional[dict[str, Any]] = None
    kernels: Optional[dict[str, str]] = None
    device: Optional[str] = None
    processor: Optional[str] = None  # what the device is: the CPU's model name, or the GPU's
    threads: Optional[int] = None


def measure_latency(
    base: nn.Module,
    model: nn.Module,
    *,
    structured: bool,
    device: torch.device,
    input_shape: tuple[int, ...],
    timing: LatencyConfig,
) -> Latency:
    """A channel-pruned model against the dense one; a weight-level one as stored (masked) and through sparse
    kernels against the dense one; nothing for the dense method itself. Timed on the job's own device."""
    if structured:
        dense_on = copy.deepcopy(base).to(device)
        plain_on = folded(model).eval().to(device)
        ms = measure.measure_latency_ms(
            {"dense": dense_on, "pruned": plain_on}, input_shape, timing.batch_sizes, timing.per_network(2)
        )
        setting = measure.latency_setting(plain_on)
        return Latency(ms=ms, **setting)
    if current_masks(model) and timing.sparse_kernel != "none":  # weight-level: do the zeros turn into time?
        sparse = measure_sparse_latency(
            model,
            copy.deepcopy(base).to(device),
            input_shape,
            kernel=timing.sparse_kernel,
            batch_sizes=timing.batch_sizes,
            min_run_time=timing.per_network(3),
        )
        setting = measure.latency_setting(model)
        return Latency(ms=sparse.latency_ms, kernels=sparse.kernels, **setting)
    return Latency()


@dataclass(frozen=True)
class Accuracies:
    """What the stages report: the final stage's selected checkpoint, the pruning step's before and after, the
    dense baseline."""

    final: TrainResult
    after_pruning: Optional[Accuracy]
    before_pruning: Optional[Accuracy]
    dense: Optional[TrainResult]

    @classmethod
    def of(
        cls,
        final: TrainResult,
        pruned: Optional[PruneResult],
        dense: Optional[TrainResult],
        before_pruning: Optional[Accuracy] = None,
    ) -> Accuracies:
        """``before_pruning``: what the pruning started from, where that is not the last prune stage's source (a
        layer-by-layer method started from the dense model)."""
        before = before_pruning if before_pruning is not None else (pruned.before_pruning if pruned else None)
        return cls(final, pruned.after_pruning if pruned else None, before, dense)


def identity_fields(config: ExperimentConfig, identity: Identity, label: str) -> dict[str, Any]:
    """The fields a record has whether the experiment ran or failed."""
    return {
        "experiment": config.sweep,
        "method": config.method.name,
        "label": label,
        "model": display_name(config.model),
        "dataset": config.dataset.name,
        "seed": config.seed,
        "setting_hash": identity.setting_hash,
        "setting": copy.deepcopy(identity.setting),
        "target_sparsity": config.method.sparsity,
        "method_config": asdict(config.method),
    }


def build_record(
    *,
    config: ExperimentConfig,
    identity: Identity,
    method: Method,
    label: str,
    size: Size,
    latency: Latency,
    accuracies: Accuracies,
    provenance: Provenance,
    final_ref: str,
    final_hash: str,
    dense_hash: Optional[str],
    outputs: Any,
) -> ExperimentRecord:
    """The record of a finished experiment. ``outputs``: an instance of the method's ``Outputs``."""
    if not isinstance(outputs, method.Outputs):
        raise TypeError(
            f"{method.name}: finish(outputs=...) takes a {method.Outputs.__name__} (the method's Outputs), "
            f"not {type(outputs).__name__}"
        )
    # structured methods are tabled by the fraction of channels removed, the others by weights removed
    channels = size.channel_sparsity
    achieved = channels if method.kind == "structured" and channels is not None else 1 - size.density
    selected = accuracies.final.selected
    after, before, dense = accuracies.after_pruning, accuracies.before_pruning, accuracies.dense
    return ExperimentRecord(
        **identity_fields(config, identity, label),
        kind=method.kind,
        seeds={p: config.seed_for(p) for p in ("init", "data", "prune")},
        achieved_sparsity=achieved,
        sparsity_set_by_method=method.sets_own_sparsity(),
        density=size.density,
        sparsity_all_params=1 - size.params_nonzero / size.params_dense,
        compression=size.params_dense / max(size.params_nonzero, 1),
        params_total=size.params_dense,
        params_nonzero=size.params_nonzero,
        flops_dense=size.flops_dense,
        flops_effective=size.flops_effective,
        speedup_theoretical=size.flops_dense / max(size.flops_effective, 1),
        latency_ms=latency.ms,
        latency_kernels=latency.kernels,
        latency_device=latency.device,
        latency_processor=latency.processor,
        latency_threads=latency.threads,
        val_acc=selected.val_acc,
        test_acc=selected.test_acc,
        selected_iteration=selected.iteration,
        early_stop_iteration=accuracies.final.early_stop_iteration,
        test_acc_before_recovery=after.test_acc if after is not None else None,
        test_loss_before_recovery=after.test_loss if after is not None else None,
        test_loss_before_pruning=before.test_loss if before is not None else None,
        dense_test_acc=dense.selected.test_acc if dense is not None else None,
        dense_test_loss=dense.selected.test_loss if dense is not None else None,
        dense_stage=dense_hash,
        final_stage=final_ref,
        stage_hashes=dict(provenance.stage_hashes),
        wall_time_s=dict(provenance.wall_time_s),
        stages_reused=dict(provenance.stages_reused),
        training_budget=provenance.training_budget(final_hash),
        prunable={**asdict(config.method.prunable), "tensors": size.prunable_tensors},
        per_layer_density=size.per_layer_density,
        channel_sparsity=channels,
        outputs=outputs_json(outputs),
    )


def failure_record(config: ExperimentConfig, identity: Identity, error: BaseException) -> ExperimentRecord:
    """A failed experiment's record: it carries the variant's label and the method config, so a table row or a
    claim's arm shows it as failed, not missing."""
    try:
        label = get_method(config.method.name)(config.method).label()
    except Exception:
        label = config.method.name
    return ExperimentRecord(
        status="failed", error=f"{type(error).__name__}: {error}", **identity_fields(config, identity, label)
    )
