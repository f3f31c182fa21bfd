"""The experiment record: one definition, used by the experiment, the failure path, the W&B mirror and the analysis.

A record is written as ``runs/experiment/<hash>/result.json`` (``foundations.store``). ``ExperimentRecord`` names
every common field with its type and meaning: what every method's record has (identity, size and cost of the final
model, accuracies, provenance). What one method reports beyond them is its ``outputs``: the method's own
``Outputs`` dataclass (``methods/<name>.py``), stored as one mapping, so a method with outputs of its own touches no
file here. Records written before ``outputs`` existed (every method's fields flat at the top) read back with those
fields moved into ``outputs`` (``ExperimentRecord.from_dict``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

from foundations.errors import UserError
from foundations.store import STORE_FIELDS, STORE_KEY


@dataclass
class ExperimentRecord:
    """One experiment: one method applied to one (model, dataset, seed)."""

    # ---- identity
    status: str = "ok"  # "ok" | "failed"
    error: Optional[str] = None  # failed: "ExceptionType: message"
    experiment: str = "default"  # the sweep's name (config key `name`): W&B group and report folder
    method: str = ""  # registry name, e.g. "magnitude"
    label: str = ""  # method + variant as tables show it, e.g. "scratch-B (slimming)"; variants never share a row
    kind: Optional[str] = None  # "dense" | "unstructured" | "structured"
    model: str = ""
    dataset: str = ""
    seed: int = 0  # the top-level seed; seeds below are the derived ones actually used
    seeds: dict[str, int] = field(default_factory=dict)  # {"init", "data", "prune"}
    # The setting: the experiment's identity without its seed (``runners.experiment.setting_spec``: the hashed
    # config — model, dataset, method, train, explicit ``seeds.*`` overrides, thread count — minus the top-level
    # ``seed`` and the sweep name). Records with one setting differ only in ``seed``: the report averages them as
    # seeds and never averages records of different settings. None in records written before these fields.
    setting_hash: Optional[str] = None
    setting: Optional[dict[str, Any]] = None  # what the report compares to name the fields two settings differ in
    target_sparsity: float = 0.0  # method.sparsity as configured (what a sweep's axis sets)
    # what the final model has: fraction of prunable weights removed (1 − density), or of channels removed
    # (channel_sparsity) for structured methods
    achieved_sparsity: Optional[float] = None
    # true when the method decides its own sparsity (Han's q·σ thresholds, per-layer targets, multi-pass slimming):
    # tables then show the achieved sparsity, rounded and marked, instead of the target
    sparsity_set_by_method: bool = False
    # ---- size and cost of the final model
    density: Optional[float] = None  # nonzero fraction of the prunable tensors of the dense architecture
    sparsity_all_params: Optional[float] = None  # 1 − nonzero / dense parameter count, over all parameters
    compression: Optional[float] = None  # dense parameters / nonzero parameters
    params_total: Optional[int] = None  # parameters of the dense architecture
    params_nonzero: Optional[int] = None  # nonzero parameters of the final model
    flops_dense: Optional[int] = None  # multiply-adds per example, dense architecture
    flops_effective: Optional[int] = None  # multiply-adds per example counting only nonzero weights / kept channels
    speedup_theoretical: Optional[float] = None  # flops_dense / flops_effective
    # ms per forward by batch size: structured {"dense"|"pruned": {"1": ms, "256": ms}}; weight-level {"dense"|
    # "masked"|"sparse": {...}} (masked: the stored network, pruning hooks on; sparse: runners/sparse.py)
    latency_ms: Optional[dict[str, Any]] = None
    # weight-level: what each Conv2d/Linear of the sparse network runs ("csr", "csr (im2col)", "dense: not pruned",
    # "dense: not supported (...)")
    latency_kernels: Optional[dict[str, str]] = None
    latency_device: Optional[str] = None  # where latency_ms was timed: the job's device ("cpu", "cuda:0")
    latency_processor: Optional[str] = None  # what that device is: the CPU's model name, or the GPU's
    latency_threads: Optional[int] = None  # torch threads it was timed with (the job's own count)
    # ---- accuracy (model selection on validation; test is only reported)
    val_acc: Optional[float] = None  # of the validation-selected checkpoint of the final stage
    test_acc: Optional[float] = None  # of the same checkpoint
    selected_iteration: Optional[int] = None
    early_stop_iteration: Optional[int] = None  # iteration of minimum validation loss of the final stage
    test_acc_before_recovery: Optional[float] = None  # right after the (last) pruning step, before any retraining
    test_loss_before_recovery: Optional[float] = None  # test cross-entropy at the same point (OBD Fig. 1's y axis)
    # test cross-entropy of the weights that (last) pruning step started from — the dense model's last iterate or
    # selected checkpoint (``prune_from``), or the previous round's retrained weights; None when never evaluated
    # (pruning at initialization)
    test_loss_before_pruning: Optional[float] = None
    dense_test_acc: Optional[float] = None  # the dense baseline the method started from
    dense_test_loss: Optional[float] = None  # its test cross-entropy (of the validation-selected checkpoint)
    # ---- training budget (foundations.training.budget): {"stages": [per train stage behind the final weights:
    # stage, hash, reused, start_iteration, steps, epochs, examples, lr_integral (Σ lr over its steps), forward_macs
    # (per example, mask-aware), train_macs (3 × forward × examples)], "total": the sums from initialization};
    # None in records written before it
    training_budget: Optional[dict[str, Any]] = None
    # ---- provenance
    dense_stage: Optional[str] = None  # hash of the dense model, whatever the method names that stage
    final_stage: Optional[str] = None  # "kind/hash" of the stage whose weights the record reports
    stage_hashes: dict[str, str] = field(default_factory=dict)  # stage name -> hash
    wall_time_s: dict[str, float] = field(default_factory=dict)  # stage name -> seconds computed here (0 = reused)
    stages_reused: dict[str, bool] = field(default_factory=dict)
    prunable: dict[str, Any] = field(default_factory=dict)  # the prunable set: switches and tensor names
    per_layer_density: dict[str, float] = field(default_factory=dict)
    # the method's config as run, every field (defaults too): what selects a variant whose label does not show it
    # (slimming's λ and scope, ThiNet's per-layer fine-tune), e.g. a claim's arm filter `method_config.lam: 0`
    method_config: dict[str, Any] = field(default_factory=dict)
    # structured: fraction of prunable channels removed overall (the final model's channel plan); None otherwise
    channel_sparsity: Optional[float] = None
    # ---- what the method reports beyond the fields above: its `Outputs` dataclass as a mapping (OBD's rounds, the
    # lottery's levels, slimming's |γ|, Scratch's budget...); tables and claims read `outputs.<field>`
    outputs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def final_ref(self) -> str:
        """``final_stage`` of a finished experiment (a failed one has none)."""
        if self.final_stage is None:
            raise UserError(
                f"method.source: the {self.method} experiment has no final stage (status {self.status}); re-run it"
            )
        return self.final_stage

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExperimentRecord:
        """A record read back from ``result.json`` or a W&B summary (``legacy`` read aliases applied; keys that are no
        field dropped: the store's bookkeeping)."""
        data = legacy(data)
        return cls(**{k: v for k, v in data.items() if k in RECORD_FIELDS})


def legacy(data: Mapping[str, Any]) -> dict[str, Any]:
    """A record as this version writes it, from one written by any earlier version: a record without ``outputs`` had
    its method's fields flat at the top, beside the common ones; every key of it that is no common field and holds a
    value moves into ``outputs`` (the None fields of the other methods, which the flat record carried, are dropped).
    The store's bookkeeping is never an output."""
    out = dict(data)
    if "outputs" not in out:
        flat = {k: v for k, v in out.items() if k not in RECORD_FIELDS and k not in _NEVER_OUTPUTS}
        out = {k: v for k, v in out.items() if k not in flat}
        out["outputs"] = {k: v for k, v in flat.items() if v is not None}
    return out


RECORD_FIELDS = tuple(f.name for f in fields(ExperimentRecord))
# Keys beside a record's fields in a result.json that are no method's output: the store's bookkeeping.
_NEVER_OUTPUTS = frozenset({*STORE_FIELDS, STORE_KEY})


def _is_scalar(annotation: Any) -> bool:
    options = get_args(annotation) if get_origin(annotation) is Union else (annotation,)
    return not any(get_origin(a) in (dict, list) for a in options)


# The fields that are one table cell each (nested ones are flattened into `field.key` columns by the analysis).
SCALAR_FIELDS = tuple(n for n, t in get_type_hints(ExperimentRecord).items() if _is_scalar(t))
