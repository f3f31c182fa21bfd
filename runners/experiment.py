"""One experiment = one method applied to one (model, dataset, seed): a chain of store stages, then a record.

``Experiment`` implements ``methods.pipeline.api.Stages``, the API methods are written against. Stage folders are
self-describing (a stage with a channel plan stores weights of the compacted architecture, one with masks stores
masked weights), so ``model_from(stage)`` rebuilds exactly that model and every stage can start from any other:
fine-tune starts from a mask stage, rewinding starts from the dense stage's snapshot at iteration k with another
stage's masks, Scratch-E/B start from a fresh init of a plan.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import OmegaConf
from torch import nn

from datasets import build_dataset
from datasets import identity as data_identity
from foundations.checks import nondefault, typed
from foundations.errors import UserError
from foundations.files import atomic_write_json
from foundations.hashing import stage_hash
from foundations.record import ExperimentRecord
from foundations.seeds import generator
from foundations.training import (
    ConvGeometry,
    Hooks,
    TrainConfig,
    budget,
    channels_last,
    conv_geometries,
    evaluate,
    resolve_device,
    train,
    with_shapes,
)
from methods import get_method
from methods.pipeline.api import BuildFn, CalibrateFn, SelectFn, StageRef, Weights
from methods.pipeline.channels import ChannelPlan, compact
from methods.pipeline.masks import (
    Masks,
    MaskSchedule,
    apply_masks,
    current_masks,
    folded,
    full_masks,
    layer_density,
    masked_training,
    prunable_names,
)
from models import build_model, display_name, load_checkpoint
from models import identity as model_identity
from models.config import NATIVE
from models.init import initialize
from runners import metrics as measure
from runners.config import ExperimentConfig
from runners.jobs import method_defaults
from runners.sparse import measure_sparse_latency
from runners.store import Stage, StageFiles, Store
from runners.tracking import Tracker

progress_log = logging.getLogger("prunelab.progress")  # the job's log file (hydra.job_logging in conf/config.yaml)


def measured(source: StageRef, weights: Weights) -> Optional[dict]:
    """The source stage's own evaluation of the weights a prune stage starts from, without another pass: a training
    stage evaluated its selected checkpoint and (its last row) its last iterate; an init stage or a snapshot was
    never evaluated (None)."""
    row = source.result.get({"selected": "selected", "last": "final"}[weights]) if isinstance(weights, str) else None
    return {k: row[k] for k in ("val_loss", "val_acc", "test_loss", "test_acc")} if row else None


def fold_state(state: dict) -> dict:
    """A pruned model's state dict (``w_orig``, ``w_mask``) as a plain one with the masks multiplied in."""
    out = {}
    for key, value in state.items():
        if key.endswith("_mask"):
            continue
        if key.endswith("_orig"):
            base = key[: -len("_orig")]
            out[base] = value * state[f"{base}_mask"]
        else:
            out[key] = value
    return out


def stored_model(
    stage: StageRef,
    base: nn.Module,
    example_input: torch.Tensor,
    weights: Weights = "selected",
    masks: Optional[Masks] = None,
) -> nn.Module:
    """The model ``stage`` stores, rebuilt on ``base`` (a model of the experiment's architecture): compacted by the
    stage's channel plan, its weights loaded, masked by its masks (or ``masks``)."""
    model = compact(base, stage.plan(), example_input.to(next(base.parameters()).device)) if stage.has_plan() else base
    model.load_state_dict(stage.weights(weights))
    if masks is None and stage.has_masks():
        masks = stage.masks()
    if masks is not None:
        apply_masks(model, masks)
    return model


class Experiment:
    """One experiment's stages (``methods.pipeline.api.Stages``) over a store, and its record."""

    def __init__(self, config: ExperimentConfig, store: Store, tracker: Optional[Tracker] = None):
        self.config = config
        self.store = store
        self.tracker = tracker or Tracker()
        self.device = resolve_device(config.device)
        self.data = build_dataset(config.dataset, decoded_cache=Path(config.paths.results) / "cache")
        self.method = get_method(config.method.name)(config.method)
        self.train_config: TrainConfig = config.train
        self.progress = config.progress
        self.model_name = display_name(config.model)
        self.model_init = config.model.init
        spec = experiment_spec(config)
        self.setting = setting_spec(spec)
        # The checkpoint's sha256 is hashed where it is loaded (the init stage, so every stage after it); a stage
        # that does not descend from it (a re-initialization) does not depend on it.
        self.checkpoint_id: Optional[str] = spec["model"].pop("checkpoint", None)
        self.from_checkpoint = self.checkpoint_id is not None
        self.identity = {"model": spec["model"], "dataset": spec["dataset"], **compute_identity(config)}
        self.stage_hashes: dict[str, str] = {}
        self.wall_time: dict[str, float] = {}
        self.reused: dict[str, bool] = {}
        # hash -> parent hashes, and each train stage's budget: the record's training_budget (foundations.training.budget)
        self.parents: dict[str, list[str]] = {}
        self.budgets: list[dict] = []

    def seed(self, purpose: str) -> int:
        return self.config.seed_for(purpose)

    # ----------------------------------------------------------------------------------------------- models
    @property
    def example_input(self) -> torch.Tensor:
        return torch.zeros(1, *self.data.input_shape)

    def base_model(self, seed: Optional[int] = None) -> nn.Module:
        seed = self.seed("init") if seed is None else seed
        return build_model(self.config.model, self.data.input_shape, self.data.num_classes, generator=generator(seed))

    @cached_property
    def base_convs(self) -> dict[str, ConvGeometry]:
        return conv_geometries(self.base_model())

    def trained_convs(self, start: StageRef, weights: Weights = "selected") -> dict[str, ConvGeometry]:
        """The Conv2d geometry of the model a stage starting from ``start`` trains, known before that stage is
        hashed and without building it: the base model's kernels, strides and dilations with the channels of the
        start stage's stored weights (a channel plan's compacted network, a Scratch init of the pruned widths)."""
        if not self.base_convs:
            return {}
        found = with_shapes(self.base_convs, start.shapes(weights))
        return found if found is not None else conv_geometries(self.model_from(start, weights))

    def model_from(self, stage: StageRef, weights: Weights = "selected", masks: Optional[Masks] = None) -> nn.Module:
        """The model a stage stores (compacted by its plan, masked by its masks), on the experiment's device."""
        return stored_model(stage, self.base_model().to(self.device), self.example_input, weights, masks)

    def prunable(self, model: nn.Module) -> list[str]:
        return prunable_names(model, self.method.cfg.prunable)

    # ----------------------------------------------------------------------------------------------- stages
    def _stage(self, name: str, kind: str, spec: dict, parents: dict, compute: Callable[[StageFiles], dict]) -> Stage:
        def described(files: StageFiles) -> dict:
            # What rebuilds the stage's model without the data (export): not hashed, the identity decides it.
            norm = self.data.train.norm
            shape = {
                "input_shape": list(self.data.input_shape),
                "num_classes": self.data.num_classes,
                "normalization": {
                    "mean": [b / (255 * a) for a, b in zip(norm.scale, norm.shift)],
                    "std": [1 / (255 * a) for a in norm.scale],
                },
            }
            return {**compute(files), "model_input": shape}

        stage = self.store.get_or_compute(
            kind, {**self.identity, **spec}, {k: v for k, v in parents.items() if v}, described
        )
        self.stage_hashes[name] = stage.hash
        self.parents[stage.hash] = [v for v in parents.values() if v]
        self.reused[name] = stage.reused
        self.wall_time[name] = 0.0 if stage.reused else stage.result["wall_time_s"]
        how = "reused from the store" if stage.reused else f"computed in {stage.result['wall_time_s']:.1f} s"
        progress_log.info("stage %s (%s): %s", name, stage.ref, how)
        return stage

    def init_stage(
        self,
        name: str = "init",
        *,
        seed: Optional[int] = None,
        architecture: Optional[ChannelPlan] = None,
        prepare: Optional[Callable[[nn.Module], None]] = None,
        extra: Optional[dict] = None,
    ) -> Stage:
        """Freshly initialized weights, of the architecture a channel plan leaves when one is given (Scratch-E/B).

        The architecture is the plan's widths (``ChannelPlan.architecture``), not its kept channels: the stage is
        hashed by the widths, so sources whose plans leave the same widths share it and whatever trains from it.

        With ``model.checkpoint``, the experiment's own init (no other seed, no architecture) is the checkpoint's
        weights: whatever starts from "the init" (the dense stage, pruning at init, lottery rewinding) starts from it.
        """
        loads = self.from_checkpoint and seed is None and architecture is None
        seed = self.seed("init") if seed is None else seed
        widths = architecture.architecture() if architecture is not None else None

        def compute(files: StageFiles) -> dict:
            model = self.base_model(seed)
            if loads:
                load_checkpoint(model, self.config.model.checkpoint)
            if widths is not None:
                model = compact(model, widths, self.example_input)
                if self.config.model.init != NATIVE:  # the architecture drawn afresh with its own fans
                    initialize(model, self.config.model.init, generator(seed))
                # native (torchvision, a callable): a constructor's own scheme cannot be re-run on the narrower
                # network; the fresh draw of the full model under this seed, cut to its first channels, is that
                # scheme's weights (their scale follows the unpruned fans)
                files.plan(widths)
            if prepare is not None:
                prepare(model)
            files.weights(model.state_dict())
            return {"checkpoint": self.checkpoint_id} if loads else {"init_seed": seed}

        spec: dict[str, Any] = {"checkpoint": self.checkpoint_id} if loads else {"init_seed": seed}
        if widths is not None:
            spec["widths"] = widths.widths()
        return self._stage(name, "init", {**spec, "extra": extra}, {}, compute)

    def train_stage(
        self,
        name: str,
        start: StageRef,
        train_cfg: TrainConfig,
        *,
        weights: Weights = "selected",
        masks: Optional[StageRef] = None,
        hooks: Optional[Hooks] = None,
        extra: Optional[dict] = None,
        start_iteration: int = 0,
        snapshots: tuple[int, ...] = (),
        mask_schedule: Optional[MaskSchedule] = None,
    ) -> Stage:
        """Train from a stage's ``weights``, with ``masks`` (default: the start stage's own) kept fixed, or changed
        by ``mask_schedule`` (pruning during training: every prunable tensor gets a mask, full where the start has
        none; the stage stores the masks it ends with, and its selected checkpoint is one evaluated after the
        schedule's last update).

        ``extra`` must describe anything in ``hooks`` or ``mask_schedule`` that changes the result (it is hashed).
        """
        if mask_schedule is not None and not extra:
            raise ValueError("train_stage: a mask_schedule changes the result; describe it in `extra` (hashed)")
        data_seed = self.seed("data")
        # the layout train() will pick for the model it trains, resolved here so that the hash says it (conv nets)
        layout = channels_last(train_cfg.channels_last, self.trained_convs(start, weights), self.device)
        train_cfg = replace(train_cfg, channels_last=layout)

        def compute(files: StageFiles) -> dict:
            model = self.model_from(start, weights, masks=masks.masks() if masks is not None else None)
            if mask_schedule is not None:  # MaskedTraining.update changes only tensors masked when it begins
                attached = current_masks(model)
                apply_masks(model, full_masks(model, [n for n in self.prunable(model) if n not in attached]))

            def on_eval(row: dict) -> None:
                self.tracker.log_stage(name, [row])  # live; a reused stage's stored rows are logged by runners.train

            with masked_training(model) as masking:
                stage_hooks = Hooks(
                    [*(hooks.before_step if hooks else []), *masking.before_step],
                    [*(hooks.after_step if hooks else []), *masking.after_step],
                    [
                        *(hooks.at_iteration if hooks else []),
                        *([masking.following(mask_schedule)] if mask_schedule is not None else []),
                    ],
                )
                outcome = train(
                    model,
                    self.data,
                    train_cfg,
                    data_seed=data_seed,
                    device=self.device,
                    hooks=stage_hooks,
                    start_iteration=start_iteration,
                    snapshots=snapshots,
                    checkpoint=files.checkpoint,
                    on_eval=on_eval,
                    progress=self.progress,
                    desc=f"{self.method.name}:{name}",
                    select_from=mask_schedule.last if mask_schedule is not None else 0,
                )
            files.weights(fold_state(outcome.selected_state))
            files.weights(fold_state(model.state_dict()), "last")
            for iteration, state in outcome.snapshots.items():
                files.weights(fold_state(state), iteration)
            final_masks = current_masks(model)  # the start's, or the last a mask schedule set
            if final_masks:
                files.masks(final_masks)
            if start.has_plan():
                files.plan(start.plan())
            files.metrics(outcome.metrics)
            return {
                "selected": outcome.selected,
                "final": outcome.final,
                "iterations": outcome.iterations,
                "early_stop_iteration": outcome.early_stop_iteration,
                "train": asdict(train_cfg),
            }

        spec = {
            "train": nondefault(train_cfg),
            "data_seed": data_seed,
            "file": Store.weights_id(weights),
            "extra": extra,
            "start_iteration": start_iteration,
            "snapshots": list(snapshots),
        }
        stage = self._stage(name, "train", spec, {"start": start.hash, "masks": masks and masks.hash}, compute)
        trained = self.model_from(start, weights, masks=masks.masks() if masks is not None else None)
        forward = measure.count_flops(trained, self.data.input_shape)["flops_effective"]
        spent = budget.stage_budget(
            train_cfg,
            n_examples=len(self.data.train),
            start=start_iteration,
            end=stage.result["iterations"],
            forward_macs=forward,
            stage=name,
        )
        self.budgets.append({**spent, "hash": stage.hash, "reused": stage.reused})
        return stage

    def mask_stage(
        self,
        name: str,
        source: StageRef,
        spec: dict,
        select: SelectFn,
        *,
        weights: Weights = "selected",
        calibrate: Optional[CalibrateFn] = None,
    ) -> Stage:
        """Score and select: ``select(plain_model, alive_masks) -> (new masks, info)``; the stage stores the masks,
        the masked weights (a fine-tune can start here), ``info`` and the accuracy right after pruning, after
        ``calibrate(masked_model)`` if given (BatchNorm re-estimation: ``spec`` must say it)."""

        def compute(files: StageFiles) -> dict:
            model = self.model_from(source, weights)
            alive = current_masks(model)
            plain = folded(model)
            params = dict(plain.named_parameters())
            alive = {n: alive.get(n, torch.ones_like(params[n], dtype=torch.bool).cpu()) for n in self.prunable(plain)}
            new_masks, info = select(plain, alive)
            pruned = apply_masks(plain, new_masks)
            if calibrate is not None:
                calibrate(pruned)
            files.masks(new_masks)
            files.weights(fold_state(pruned.state_dict()))
            return {
                "info": info,
                "before_pruning": measured(source, weights),
                "after_pruning": self.accuracy(pruned),
                "layer_density": layer_density(new_masks),
            }

        return self._stage(name, "prune", self._prune_spec(spec, weights), {"source": source.hash}, compute)

    def plan_stage(
        self, name: str, source: StageRef, spec: dict, build: BuildFn, *, weights: Weights = "selected"
    ) -> Stage:
        """Structured pruning: ``build(model) -> (plan over the base architecture, compacted model, info)``."""

        def compute(files: StageFiles) -> dict:
            plan, compacted, info = build(self.model_from(source, weights))
            files.plan(plan)
            files.weights(compacted.state_dict())
            return {**info, "before_pruning": measured(source, weights), "after_pruning": self.accuracy(compacted)}

        return self._stage(name, "prune", self._prune_spec(spec, weights), {"source": source.hash}, compute)

    def _prune_spec(self, spec: dict, weights: Weights) -> dict:
        # Which weights of the source are pruned changes the result; "selected" (the original behaviour) is implied.
        return {"method": self.method.name, **spec, **({} if weights == "selected" else {"weights": weights})}

    def accuracy(self, model: nn.Module) -> dict:
        model.to(self.device)
        val_loss, val_acc = evaluate(model, self.data.val, self.device)
        test_loss, test_acc = evaluate(model, self.data.test, self.device)
        return {"val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc}

    def stage_at(self, ref: str) -> Stage:
        return self.store.at(ref)

    def source_experiment(self, overrides: dict, *, build: bool = True) -> ExperimentRecord:
        """The record of another method's experiment on the same model/data/seed, referenced by its config
        (``{name: slimming, sparsity: 0.5}``) and resolved through the store; computed (and shared) if missing."""
        source_config = source_experiment_config(self.config, overrides)
        found = self.store.find("experiment", experiment_spec(source_config))
        if found is not None and found.result.get("status") == "ok":
            return ExperimentRecord.from_dict(found.result)
        if not build:
            raise UserError(
                f"method.source: no finished {overrides.get('name')} experiment with {dict(overrides)} on "
                f"{self.model_name}/{self.config.dataset.name} seed {self.config.seed} in "
                f"{self.store.root}; run it first or set method.build_source=true"
            )
        return ExperimentRecord.from_dict(run_experiment(source_config, self.store))

    def dense_stage(self) -> Stage:
        """The plain dense model every after-training method starts from (shared across methods in a sweep)."""
        return self.train_stage("dense", self.init_stage(), self.train_config)

    # ----------------------------------------------------------------------------------------------- record
    def finish(
        self, final: StageRef, *, pruned: Optional[StageRef] = None, dense: Optional[StageRef] = None, **extra: Any
    ) -> ExperimentRecord:
        """Build the experiment record from the final stage (validation-selected weights)."""
        model = self.model_from(final)
        masks = current_masks(model)
        plain = folded(model).cpu().eval()
        base = self.base_model().eval()
        dense_names = self.prunable(base)
        dense_params = dict(base.named_parameters())
        final_params = dict(plain.named_parameters())
        prunable_total = sum(dense_params[n].numel() for n in dense_names)
        prunable_nonzero = sum(int((final_params[n] != 0).sum()) for n in dense_names if n in final_params)
        params_dense = measure.count_params(base)["params_total"]
        params_nonzero = measure.count_params(plain)["params_nonzero"]
        flops_dense = measure.count_flops(base, self.data.input_shape)["flops_dense"]
        flops_effective = measure.count_flops(plain, self.data.input_shape)["flops_effective"]
        selected = final.result["selected"]
        per_layer = {
            n: (int((final_params[n] != 0).sum()) / dense_params[n].numel()) if n in final_params else 0.0
            for n in dense_names
        }
        per_layer.update(layer_density(masks) if masks else {})
        density = prunable_nonzero / max(prunable_total, 1)
        # structured methods are tabled by the fraction of channels removed, the others by weights removed
        channels = extra.get("channel_sparsity")
        achieved = channels if self.method.kind == "structured" and channels is not None else 1 - density
        latency, kernels, setting = None, None, {"device": None, "processor": None, "threads": None}
        timing = self.config.latency
        if final.has_plan():  # timed on the job's own device: a CUDA job's latency is a CUDA latency
            base_on, plain_on = copy.deepcopy(base).to(self.device), copy.deepcopy(plain).to(self.device)
            latency = measure.measure_latency_ms(
                {"dense": base_on, "pruned": plain_on}, self.data.input_shape, timing.batch_sizes, timing.per_network(2)
            )
            setting = measure.latency_setting(plain_on)
        elif masks and timing.sparse_kernel != "none":  # weight-level: does any kernel turn the zeros into time?
            sparse = measure_sparse_latency(
                model,
                copy.deepcopy(base).to(self.device),
                self.data.input_shape,
                kernel=timing.sparse_kernel,
                batch_sizes=timing.batch_sizes,
                min_run_time=timing.per_network(3),
            )
            latency, kernels, setting = sparse.latency_ms, sparse.kernels, measure.latency_setting(model)
        return ExperimentRecord(
            experiment=self.config.sweep,
            method=self.method.name,
            label=self.method.label(self),
            kind=self.method.kind,
            model=self.model_name,
            dataset=self.config.dataset.name,
            seed=self.config.seed,
            seeds={p: self.seed(p) for p in ("init", "data", "prune")},
            setting_hash=hash_setting(self.setting),
            setting=self.setting,
            target_sparsity=self.config.method.sparsity,
            achieved_sparsity=achieved,
            sparsity_set_by_method=self.method.sets_own_sparsity(),
            density=density,
            sparsity_all_params=1 - params_nonzero / params_dense,
            compression=params_dense / max(params_nonzero, 1),
            params_total=params_dense,
            params_nonzero=params_nonzero,
            flops_dense=flops_dense,
            flops_effective=flops_effective,
            speedup_theoretical=flops_dense / max(flops_effective, 1),
            latency_ms=latency,
            latency_kernels=kernels,
            latency_device=setting["device"],
            latency_processor=setting["processor"],
            latency_threads=setting["threads"],
            val_acc=selected["val_acc"],
            test_acc=selected["test_acc"],
            selected_iteration=selected["iteration"],
            early_stop_iteration=final.result["early_stop_iteration"],
            test_acc_before_recovery=pruned.result["after_pruning"]["test_acc"] if pruned else None,
            test_loss_before_recovery=pruned.result["after_pruning"]["test_loss"] if pruned else None,
            test_loss_before_pruning=(pruned.result.get("before_pruning") or {}).get("test_loss") if pruned else None,
            dense_test_acc=dense.result["selected"]["test_acc"] if dense else None,
            dense_test_loss=dense.result["selected"]["test_loss"] if dense else None,
            dense_stage=dense.hash if dense else None,
            final_stage=final.ref,
            stage_hashes=dict(self.stage_hashes),
            wall_time_s=dict(self.wall_time),
            stages_reused=dict(self.reused),
            prunable={**asdict(self.method.cfg.prunable), "tensors": dense_names},
            per_layer_density=per_layer,
            method_config=asdict(self.config.method),
            training_budget=budget.result_budget(final.hash, self.parents, self.budgets),
            **extra,
        )


def source_experiment_config(config: ExperimentConfig, overrides: dict) -> ExperimentConfig:
    """``config`` with its method replaced by ``method=<overrides.name>`` (composed by Hydra, as a job choosing that
    method composes it) updated with ``overrides``."""
    name = overrides.get("name")
    if not isinstance(name, str):
        raise UserError(f"method.source.name: must name the source method, e.g. slimming (got {name!r})")
    node = OmegaConf.merge(method_defaults(name, "method.source.name"), overrides)
    return replace(config, method=typed(get_method(name).Config, node, "method.source"))


def compute_identity(config: ExperimentConfig) -> dict:
    """What of the process changes every stage's numbers: the CPU thread count, where it is not the default 1."""
    threads = config.cpu_threads()
    return {"threads": threads} if threads not in (None, 1) else {}


def experiment_spec(config: ExperimentConfig) -> dict:
    """What identifies an experiment's record (its folder under ``runs/experiment/``)."""
    return {
        "model": model_identity(config.model),
        "dataset": data_identity(config.dataset),
        "method": nondefault(config.method),
        "train": nondefault(config.train),
        "seed": config.seed,
        "seeds": nondefault(config.seeds),
        "experiment": config.sweep,
        **compute_identity(config),
    }


# What "the same setting, another seed" means: two experiments whose specs differ only in these keys. The top-level
# `seed` is what a seed sweep varies; the sweep's name (`experiment`) changes no number. Explicit `seeds.*` overrides
# stay in the setting: `seed=0,1,2 seeds.init=7` varies only the data order and the pruning draws around one fixed
# initialization, a different setting (and a different spread) from `seed=0,1,2`.
NOT_SETTING = ("seed", "experiment")


def setting_spec(spec: dict) -> dict:
    """An experiment's spec (:func:`experiment_spec`) without ``NOT_SETTING``: what the records of the seeds of one
    setting share (record field ``setting``; the report never averages records of different settings)."""
    return copy.deepcopy({k: v for k, v in spec.items() if k not in NOT_SETTING})


def hash_setting(setting: dict) -> str:
    """The record's ``setting_hash``: equal for the seeds of one setting, different for anything else."""
    return stage_hash("setting", setting, {})


def experiment_hash(config: ExperimentConfig) -> str:
    """The experiment's folder name under ``runs/experiment/`` (and its W&B run id)."""
    return stage_hash("experiment", experiment_spec(config), {})


def recorded(config: ExperimentConfig, store: Store) -> Optional[Stage]:
    """The experiment's finished record in the store, if any (a failed one is retried, so it does not count)."""
    existing = store.find("experiment", experiment_spec(config))
    return existing if existing is not None and existing.result.get("status") == "ok" else None


def run_experiment(config: ExperimentConfig, store: Store, tracker: Optional[Tracker] = None) -> dict:
    """Run (or reuse) one experiment; its record is ``runs/experiment/<hash>/result.json``."""
    spec = experiment_spec(config)
    existing = recorded(config, store)
    final = existing.result.get("final_stage") if existing is not None else None
    if existing is not None and (final is None or store.get(final) is not None):
        progress_log.info("record %s: in the store (final stage %s); nothing to compute", existing.ref, final)
        return existing.result
    if existing is not None:  # the model the record describes is gone (moved aside as corrupt): make it again
        progress_log.info("record %s: its final stage %s is missing; computing the record again", existing.ref, final)
    threads = config.cpu_threads()
    if threads:  # what the hash says computes, however run_experiment is called
        torch.set_num_threads(threads)
    exp = Experiment(config, store, tracker)
    exp.method.check_schedule(exp)  # first: a method's own checks may measure the (empty) schedule
    exp.method.validate(exp)
    start = time.perf_counter()
    (store.stage_dir("experiment", experiment_hash(config)) / "result.json").unlink(missing_ok=True)

    def compute(files: StageFiles) -> dict:
        record = exp.method.chain(exp)
        record.wall_time_s["total"] = time.perf_counter() - start
        return record.to_dict()

    stage = store.get_or_compute("experiment", spec, {}, compute)
    progress_log.info("record %s: %s", stage.ref, "reused from the store" if stage.reused else "written")
    return stage.result


def record_failure(config: ExperimentConfig, store: Store, error: BaseException) -> dict:
    """A failed experiment is recorded as failed (and retried by the next sweep); the sweep goes on. It carries the
    variant's label and the method config, so a table row or a claim's arm shows it as failed, not missing."""
    try:
        label = get_method(config.method.name)(config.method).label()
    except Exception:
        label = config.method.name
    setting = setting_spec(experiment_spec(config))
    record = ExperimentRecord(
        status="failed",
        error=f"{type(error).__name__}: {error}",
        experiment=config.sweep,
        method=config.method.name,
        label=label,
        model=display_name(config.model),
        dataset=config.dataset.name,
        seed=config.seed,
        setting_hash=hash_setting(setting),
        setting=setting,
        target_sparsity=config.method.sparsity,
        method_config=asdict(config.method),
    ).to_dict()
    folder = store.stage_dir("experiment", experiment_hash(config))
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "result.json", record)
    return record
