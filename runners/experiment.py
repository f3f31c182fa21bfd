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
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import OmegaConf
from torch import nn

from datasets import build_dataset
from foundations.checks import nondefault, typed
from foundations.errors import UserError
from foundations.record import ExperimentRecord
from foundations.seeds import generator
from foundations.store import EXPERIMENT, Stage, StageFiles, Store
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
    folded_state,
    full_masks,
    layer_density,
    masked_training,
    prunable_names,
)
from methods.pipeline.results import (
    Accuracy,
    Evaluation,
    F,
    InitResult,
    MaskResult,
    ModelInput,
    NoFacts,
    PlanResult,
    PruneResult,
    StageResult,
    TrainResult,
    decode,
)
from models import build_model, display_name, load_checkpoint
from models.config import NATIVE
from models.init import initialize
from runners import metrics as measure
from runners.config import ExperimentConfig
from runners.identity import Identity
from runners.jobs import method_defaults
from runners.recording import Accuracies, Provenance, build_record, failure_record, measure_latency, measure_size
from runners.tracking import Tracker

progress_log = logging.getLogger("prunelab.progress")  # the job's log file (hydra.job_logging in conf/config.yaml)


def measured(source: StageRef, weights: Weights) -> Optional[Accuracy]:
    """The source stage's own evaluation of the weights a prune stage starts from, without another pass: a training
    stage evaluated its selected checkpoint and (its last row) its last iterate; an init stage or a snapshot was
    never evaluated (None)."""
    result = source.result
    if not isinstance(result, TrainResult) or not isinstance(weights, str):
        return None
    return result.selected if weights == "selected" else result.final


def stored_model(
    stage: Stage,
    base: nn.Module,
    example_input: torch.Tensor,
    weights: Weights = "selected",
    masks: Optional[Masks] = None,
) -> nn.Module:
    """The model ``stage`` stores, rebuilt on ``base`` (a model of the experiment's architecture): compacted by the
    stage's channel plan, its weights loaded, masked by its masks (or ``masks``)."""
    device = next(base.parameters()).device
    plan = ChannelPlan.from_json(stage.plan_json()) if stage.has_plan() else None
    model = compact(base, plan, example_input.to(device)) if plan is not None else base
    model.load_state_dict(stage.weights(weights))
    if masks is None and stage.has_masks():
        masks = stage.masks()
    if masks is not None:
        apply_masks(model, masks)
    return model


class Experiment:
    """One experiment's stages (``methods.pipeline.api.Stages``) over a store; its record is ``runners.recording``'s."""

    def __init__(
        self,
        config: ExperimentConfig,
        store: Store,
        tracker: Optional[Tracker] = None,
        identity: Optional[Identity] = None,
    ):
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
        self.identity = identity or Identity.of(config)
        spec = copy.deepcopy(self.identity.spec)
        # The checkpoint's sha256 is hashed where it is loaded (the init stage, so every stage after it); a stage
        # that does not descend from it (a re-initialization) does not depend on it.
        self.checkpoint_id: Optional[str] = spec["model"].pop("checkpoint", None)
        self.from_checkpoint = self.checkpoint_id is not None
        # what every stage's hash starts with: the data, the model, the process (experiment_spec's thread count)
        self.stage_identity = {key: spec[key] for key in ("model", "dataset", "threads") if key in spec}
        self.provenance = Provenance()

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
        return stored_model(stage.stored, self.base_model().to(self.device), self.example_input, weights, masks)

    def prunable(self, model: nn.Module) -> list[str]:
        return prunable_names(model, self.method.cfg.prunable)

    @cached_property
    def model_input(self) -> ModelInput:
        """What rebuilds a stage's model without the data (export), stored with every stage: not hashed."""
        norm = self.data.train.norm
        return ModelInput(
            input_shape=list(self.data.input_shape),
            num_classes=self.data.num_classes,
            mean=[b / (255 * a) for a, b in zip(norm.scale, norm.shift)],
            std=[1 / (255 * a) for a in norm.scale],
        )

    # ----------------------------------------------------------------------------------------------- stages
    def _stage(
        self,
        name: str,
        kind: str,
        spec: dict,
        parents: dict,
        compute: Callable[[StageFiles], StageResult],
        facts: type = NoFacts,
    ) -> StageRef[Any]:
        """Reuse or compute one stage; its typed result is read back from what the store keeps, so a method sees
        the same thing whether the stage was computed now or long ago."""

        def stored(files: StageFiles) -> dict:
            return replace(compute(files), model_input=self.model_input).to_json()

        found = self.store.get_or_compute(
            kind, {**self.stage_identity, **spec}, {k: v for k, v in parents.items() if v}, stored
        )
        self.provenance.add(
            name,
            found.hash,
            found.reused,
            0.0 if found.reused else found.wall_time_s,
            tuple(v for v in parents.values() if v),
        )
        how = "reused from the store" if found.reused else f"computed in {found.wall_time_s:.1f} s"
        progress_log.info("stage %s (%s): %s", name, found.ref, how)
        return StageRef(found, decode(kind, found.result_json, has_plan=found.has_plan(), facts=facts))

    def init_stage(
        self,
        name: str = "init",
        *,
        seed: Optional[int] = None,
        architecture: Optional[ChannelPlan] = None,
        prepare: Optional[Callable[[nn.Module], None]] = None,
        extra: Optional[dict] = None,
    ) -> StageRef[InitResult]:
        """Freshly initialized weights, of the architecture a channel plan leaves when one is given (Scratch-E/B).

        The architecture is the plan's widths (``ChannelPlan.architecture``), not its kept channels: the stage is
        hashed by the widths, so sources whose plans leave the same widths share it and whatever trains from it.

        With ``model.checkpoint``, the experiment's own init (no other seed, no architecture) is the checkpoint's
        weights: whatever starts from "the init" (the dense stage, pruning at init, lottery rewinding) starts from it.
        """
        loads = self.from_checkpoint and seed is None and architecture is None
        seed = self.seed("init") if seed is None else seed
        widths = architecture.architecture() if architecture is not None else None

        def compute(files: StageFiles) -> InitResult:
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
                files.plan(widths.to_json())
            if prepare is not None:
                prepare(model)
            files.weights(model.state_dict())
            return InitResult(checkpoint=self.checkpoint_id) if loads else InitResult(init_seed=seed)

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
        data_seed: Optional[int] = None,
    ) -> StageRef[TrainResult]:
        """Train from a stage's ``weights``, with ``masks`` (default: the start stage's own) kept fixed, or changed
        by ``mask_schedule`` (pruning during training: every prunable tensor gets a mask, full where the start has
        none; the stage stores the masks it ends with, and its selected checkpoint is one evaluated after the
        schedule's last update). ``data_seed``: the data order's seed, ``seeds.data`` unless a method derives its
        own (``foundations.seeds``).

        ``extra`` must describe anything in ``hooks`` or ``mask_schedule`` that changes the result (it is hashed).
        """
        if mask_schedule is not None and not extra:
            raise ValueError("train_stage: a mask_schedule changes the result; describe it in `extra` (hashed)")
        data_seed = self.seed("data") if data_seed is None else data_seed
        # the layout train() will pick for the model it trains, resolved here so that the hash says it (conv nets)
        layout = channels_last(train_cfg.channels_last, self.trained_convs(start, weights), self.device)
        train_cfg = replace(train_cfg, channels_last=layout)

        def compute(files: StageFiles) -> TrainResult:
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
            files.weights(folded_state(outcome.selected_state))
            files.weights(folded_state(model.state_dict()), "last")
            for iteration, state in outcome.snapshots.items():
                files.weights(folded_state(state), iteration)
            final_masks = current_masks(model)  # the start's, or the last a mask schedule set
            if final_masks:
                files.masks(final_masks)
            if start.has_plan():
                files.plan(start.plan().to_json())
            files.metrics(outcome.metrics)
            return TrainResult(
                selected=Evaluation.from_json(outcome.selected),
                final=Evaluation.from_json(outcome.final),
                iterations=outcome.iterations,
                early_stop_iteration=outcome.early_stop_iteration,
                train=train_cfg,
            )

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
            end=stage.result.iterations,
            forward_macs=forward,
            stage=name,
        )
        self.provenance.spent(spent, stage.hash, stage.reused)
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
    ) -> StageRef[MaskResult]:
        """Score and select: ``select(plain_model, alive_masks) -> (new masks, info)``; the stage stores the masks,
        the masked weights (a fine-tune can start here), ``info`` and the accuracy right after pruning, after
        ``calibrate(masked_model)`` if given (BatchNorm re-estimation: ``spec`` must say it)."""

        def compute(files: StageFiles) -> MaskResult:
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
            files.weights(folded_state(pruned.state_dict()))
            return MaskResult(
                info=info,
                before_pruning=measured(source, weights),
                after_pruning=self.accuracy(pruned),
                layer_density=layer_density(new_masks),
            )

        return self._stage(name, "prune", self._prune_spec(spec, weights), {"source": source.hash}, compute)

    def plan_stage(
        self,
        name: str,
        source: StageRef,
        spec: dict,
        build: BuildFn[F],
        facts: type[F],
        *,
        weights: Weights = "selected",
    ) -> StageRef[PlanResult[F]]:
        """Structured pruning: ``build(model) -> PlanStep`` (the plan over the base architecture, the compacted
        model, the method's ``facts`` about the step, state a later step continues from)."""

        def compute(files: StageFiles) -> PlanResult[F]:
            step = build(self.model_from(source, weights))
            files.plan(step.plan.to_json())
            files.weights(step.model.state_dict())
            if step.state:
                files.state(step.state)
            return PlanResult(
                facts=step.facts, before_pruning=measured(source, weights), after_pruning=self.accuracy(step.model)
            )

        return self._stage(
            name, "prune", self._prune_spec(spec, weights), {"source": source.hash}, compute, facts=facts
        )

    def _prune_spec(self, spec: dict, weights: Weights) -> dict:
        # Which weights of the source are pruned changes the result; "selected" (the original behaviour) is implied.
        return {"method": self.method.name, **spec, **({} if weights == "selected" else {"weights": weights})}

    def accuracy(self, model: nn.Module) -> Accuracy:
        model.to(self.device)
        val_loss, val_acc = evaluate(model, self.data.val, self.device)
        test_loss, test_acc = evaluate(model, self.data.test, self.device)
        return Accuracy(val_loss=val_loss, val_acc=val_acc, test_loss=test_loss, test_acc=test_acc)

    def stage_at(self, ref: str) -> StageRef[StageResult]:
        found = self.store.at(ref)
        return StageRef(found, decode(found.kind, found.result_json, has_plan=found.has_plan()))

    def source_experiment(self, overrides: dict, *, build: bool = True) -> ExperimentRecord:
        """The record of another method's experiment on the same model/data/seed, referenced by its config
        (``{name: slimming, sparsity: 0.5}``) and resolved through the store; computed (and shared) if missing."""
        source_config = source_experiment_config(self.config, overrides)
        found = recorded(source_config, self.store)
        if found is not None:
            return found
        if not build:
            raise UserError(
                f"method.source: no finished {overrides.get('name')} experiment with {dict(overrides)} on "
                f"{self.model_name}/{self.config.dataset.name} seed {self.config.seed} in "
                f"{self.store.root}; run it first or set method.build_source=true"
            )
        return ExperimentRecord.from_dict(run_experiment(source_config, self.store))

    def dense_stage(self) -> StageRef[TrainResult]:
        """The plain dense model every after-training method starts from (shared across methods in a sweep)."""
        return self.train_stage("dense", self.init_stage(), self.train_config)

    # ----------------------------------------------------------------------------------------------- record
    def finish(
        self,
        final: StageRef[TrainResult],
        *,
        pruned: Optional[StageRef[PruneResult]] = None,
        dense: Optional[StageRef[TrainResult]] = None,
        outputs: Any = None,
        before_pruning: Optional[Accuracy] = None,
    ) -> ExperimentRecord:
        """The experiment's record (``runners.recording``) of the final stage's validation-selected weights."""
        model = self.model_from(final)
        base = self.base_model().eval()
        return build_record(
            config=self.config,
            identity=self.identity,
            method=self.method,
            label=self.method.label(self),
            size=measure_size(
                base, model, self.prunable(base), self.data.input_shape, final.plan() if final.has_plan() else None
            ),
            latency=measure_latency(
                base,
                model,
                structured=final.has_plan(),
                device=self.device,
                input_shape=self.data.input_shape,
                timing=self.config.latency,
            ),
            accuracies=Accuracies.of(
                final.result,
                pruned.result if pruned is not None else None,
                dense.result if dense is not None else None,
                before_pruning,
            ),
            provenance=self.provenance,
            final_ref=final.ref,
            final_hash=final.hash,
            dense_hash=dense.hash if dense is not None else None,
            outputs=self.method.Outputs() if outputs is None else outputs,
        )


def source_experiment_config(config: ExperimentConfig, overrides: dict) -> ExperimentConfig:
    """``config`` with its method replaced by ``method=<overrides.name>`` (composed by Hydra, as a job choosing that
    method composes it) updated with ``overrides``."""
    name = overrides.get("name")
    if not isinstance(name, str):
        raise UserError(f"method.source.name: must name the source method, e.g. slimming (got {name!r})")
    node = OmegaConf.merge(method_defaults(name, "method.source.name"), overrides)
    return replace(config, method=typed(get_method(name).Config, node, "method.source"))


def recorded_stage(config: ExperimentConfig, store: Store, identity: Optional[Identity] = None) -> Optional[Stage]:
    """The store's folder of the experiment's finished record, if any (a failed one is retried, so it does not
    count)."""
    found = store.find(EXPERIMENT, (identity or Identity.of(config)).spec)
    return found if found is not None and ExperimentRecord.from_dict(found.result_json).status == "ok" else None


def recorded(config: ExperimentConfig, store: Store, identity: Optional[Identity] = None) -> Optional[ExperimentRecord]:
    """The experiment's finished record in the store, if any."""
    found = recorded_stage(config, store, identity)
    return ExperimentRecord.from_dict(found.result_json) if found is not None else None


def run_experiment(
    config: ExperimentConfig, store: Store, tracker: Optional[Tracker] = None, identity: Optional[Identity] = None
) -> dict:
    """Run (or reuse) one experiment; its record is ``runs/experiment/<hash>/result.json``, returned as stored."""
    identity = identity or Identity.of(config)
    existing = recorded_stage(config, store, identity)
    final = ExperimentRecord.from_dict(existing.result_json).final_stage if existing is not None else None
    if existing is not None and (final is None or store.get(final) is not None):
        progress_log.info("record %s: in the store (final stage %s); nothing to compute", existing.ref, final)
        return existing.result_json
    if existing is not None:  # the model the record describes is gone (moved aside as corrupt): make it again
        progress_log.info("record %s: its final stage %s is missing; computing the record again", existing.ref, final)
    threads = config.cpu_threads()
    if threads:  # what the hash says computes, however run_experiment is called
        torch.set_num_threads(threads)
    exp = Experiment(config, store, tracker, identity)
    exp.method.check_schedule(exp)  # first: a method's own checks may measure the (empty) schedule
    exp.method.validate(exp)
    start = time.perf_counter()
    store.forget_record(identity.hash)

    def compute(files: StageFiles) -> dict:
        record = exp.method.chain(exp)
        record.wall_time_s["total"] = time.perf_counter() - start
        return record.to_dict()

    stage = store.get_or_compute(EXPERIMENT, identity.spec, {}, compute)
    progress_log.info("record %s: %s", stage.ref, "reused from the store" if stage.reused else "written")
    return stage.result_json


def record_failure(config: ExperimentConfig, store: Store, error: BaseException) -> dict:
    """A failed experiment is recorded as failed (and retried by the next sweep); the sweep goes on."""
    identity = Identity.of(config)
    record = failure_record(config, identity, error).to_dict()
    store.write_record(identity.hash, record)
    return record
