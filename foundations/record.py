"""The experiment record: one definition, used by the experiment, the failure path, the W&B mirror and the analysis.

A record is written as ``runs/experiment/<hash>/result.json`` (flat JSON: one key per field). ``ExperimentRecord``
names every field with its type and meaning; ``STORE_FIELDS`` are the store's own bookkeeping that ``Store`` adds
to every ``result.json`` (never science: not in a W&B summary, not in a table).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

from foundations.errors import UserError

# What the store adds to every result.json (``runners.store``); never science, never in a W&B summary.
STORE_FIELDS = ("stage_kind", "hash", "parents", "files")
# A job folder's copy of a record (``runners.train``) also names the store holding its stages: an absolute path.
STORE_KEY = "store"


def store_of(path: Path, record: Mapping[str, Any]) -> Optional[Path]:
    """The store whose stages the record file ``path`` names: the one its job-folder copy names (``STORE_KEY``), or
    the one it lies in (``<root>/runs/experiment/<hash>/result.json``); None for neither."""
    if record.get(STORE_KEY):
        return Path(str(record[STORE_KEY]))
    where = path.resolve().parents
    inside = len(where) > 3 and where[1].name == "experiment" and where[2].name == "runs"
    return where[3] if inside else None


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
    # ---- method-specific (None where a method has no such thing)
    rounds: Optional[list[dict[str, Any]]] = None  # weight-level methods: per pruning round (OBD: loss increases)
    levels: Optional[list[dict[str, Any]]] = None  # lottery: per level density, early stop, test accuracy
    # gmp: the cubic schedule as run: {total_steps, start_step, end_step, frequency, updates: [{step, sparsity}]}
    pruning_schedule: Optional[dict[str, Any]] = None
    # weight-level: some Conv/Linear weight tensor of the final mask kept no weight (Tanaka et al. 2020's collapse)
    layer_collapse: Optional[bool] = None
    # at init with method.measure_collapse: the largest compression 10^{k/4} the method reaches on this init before
    # a layer collapses (methods.pipeline.collapse)
    critical_compression: Optional[float] = None
    channel_sparsity: Optional[float] = None  # structured: fraction of prunable channels removed overall
    channel_sparsity_per_pass: Optional[list[float]] = None  # multi-pass slimming
    sparsity_trained_test_acc: Optional[float] = None  # slimming: after the λ-regularized training
    sparsity_trained_gamma_abs: Optional[dict[str, list[float]]] = None  # slimming: |γ| per BN layer, same weights
    fine_tune: Optional[str] = None  # slimming: "paper" | "rethinking"
    thinet_selection_seconds: Optional[dict[str, float]] = None
    thinet_reconstruction: Optional[dict[str, Any]] = None  # per layer: relative reconstruction error
    source: Optional[dict[str, Any]] = None  # scratch: the source experiment's method config
    source_test_acc: Optional[float] = None
    source_stage: Optional[str] = None
    budget: Optional[str] = None  # scratch: "E" | "B"
    scratch_epochs: Optional[int] = None
    scratch_iterations: Optional[int] = None
    scratch_flops: Optional[dict[str, Any]] = None  # Scratch-B: {"count": rethinking|conv_linear, "dense", "pruned"}

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
    def from_dict(cls, data: dict[str, Any]) -> ExperimentRecord:
        """A record read back from ``result.json`` (store bookkeeping and unknown keys of old records dropped)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


RECORD_FIELDS = tuple(f.name for f in fields(ExperimentRecord))


def _is_scalar(annotation: Any) -> bool:
    options = get_args(annotation) if get_origin(annotation) is Union else (annotation,)
    return not any(get_origin(a) in (dict, list) for a in options)


# The fields that are one table cell each (nested ones are flattened into `field.key` columns by the analysis).
SCALAR_FIELDS = tuple(n for n, t in get_type_hints(ExperimentRecord).items() if _is_scalar(t))
