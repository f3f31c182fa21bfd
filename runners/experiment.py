"""One experiment = one method applied to one (model, dataset, seed): a chain of store stages, then a record.

Stage folders are self-describing: a folder holding ``plan.json`` stores weights of the compacted architecture,
one holding ``masks.safetensors`` stores masked weights. ``model_from(stage)`` rebuilds exactly that model, so every
stage can start from any other: fine-tune starts from a mask stage, rewinding starts from the dense stage's
``snapshot_<k>.safetensors`` with another stage's masks, Scratch-E/B start from a fresh init of a plan.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from datasets import build_dataset
from methods import get_method
from methods.base import Recovery
from methods.masks import Masks, apply_masks, current_masks, folded, keep_masked, layer_density, prunable_names
from models import build_model
from models.init import initialize
from runners import metrics as measure
from foundations.checks import nondefault
from foundations.training import TrainConfig
from runners.config import RunConfig
from foundations.training import Hooks, evaluate, resolve_device, train
from foundations.files import atomic_write_json, save_tensors
from foundations.hashing import stage_hash
from runners.store import Stage, Store
from runners.tracking import Tracker

_NOT_DATA_IDENTITY = {"data_dir", "download", "num_workers"}
MASKS, PLAN, WEIGHTS = "masks.safetensors", "plan.json", "model.safetensors"


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


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


class Experiment:
    def __init__(self, run: RunConfig, store: Store, tracker: Optional[Tracker] = None):
        self.run = run
        self.store = store
        self.tracker = tracker or Tracker()
        self.device = resolve_device(run.device)
        self.data = build_dataset(run.dataset)
        self.method = get_method(run.method.name)(run.method)
        spec = experiment_spec(run)
        self.identity = {"model": spec["model"], "dataset": spec["dataset"]}
        self.stage_hashes: dict[str, str] = {}
        self.wall_time: dict[str, float] = {}
        self.reused: dict[str, bool] = {}
        self._step = 0

    # ----------------------------------------------------------------------------------------------- models
    @property
    def example_input(self) -> torch.Tensor:
        return torch.zeros(1, *self.data.input_shape)

    def base_model(self, seed: Optional[int] = None) -> nn.Module:
        seed = self.run.seed_for("init") if seed is None else seed
        return build_model(self.run.model, self.data.input_shape, self.data.num_classes, generator=generator(seed))

    def model_from(self, stage: Stage, file: str = WEIGHTS, masks: Optional[Masks] = None) -> nn.Module:
        """The model a stage stores (compacted by its plan, masked by its masks), on the experiment's device."""
        model = self.base_model()
        if stage.path(PLAN).exists():
            from methods.channels.apply import compact
            from methods.channels.plan import ChannelPlan

            model = compact(model, ChannelPlan.from_json(stage.path(PLAN).read_text()), self.example_input)
        model.load_state_dict(stage.tensors(file))
        model.to(self.device)
        if masks is None and stage.path(MASKS).exists():
            masks = stage.tensors(MASKS)
        if masks is not None:
            apply_masks(model, masks)
        return model

    def prunable(self, model: nn.Module) -> list[str]:
        return prunable_names(model, self.method.cfg.prunable)

    # ----------------------------------------------------------------------------------------------- stages
    def _stage(self, name: str, kind: str, spec: dict, parents: dict, compute: Callable[[Path], dict]) -> Stage:
        stage = self.store.run(kind, {**self.identity, **spec}, {k: v for k, v in parents.items() if v}, compute)
        self.stage_hashes[name] = stage.hash
        self.reused[name] = stage.reused
        self.wall_time[name] = 0.0 if stage.reused else stage.result["wall_time_s"]
        return stage

    def init_stage(self, name: str = "init", *, seed: Optional[int] = None, plan: Optional[Stage] = None,
                   prepare: Optional[Callable[[nn.Module], None]] = None, extra: Optional[dict] = None) -> Stage:
        """Freshly initialized weights (of the plan's architecture when ``plan`` is given: Scratch-E/B)."""
        seed = self.run.seed_for("init") if seed is None else seed

        def compute(folder: Path) -> dict:
            model = self.base_model(seed)
            if plan is not None:
                from methods.channels.apply import compact
                from methods.channels.plan import ChannelPlan

                model = compact(model, ChannelPlan.from_json(plan.path(PLAN).read_text()), self.example_input)
                initialize(model, self.run.model.init, generator(seed))
                shutil.copy(plan.path(PLAN), folder / PLAN)
            if prepare is not None:
                prepare(model)
            save_tensors(folder / WEIGHTS, model.state_dict())
            return {"init_seed": seed}

        return self._stage(name, "init", {"init_seed": seed, "extra": extra}, {"plan": plan and plan.hash}, compute)

    def train_stage(self, name: str, start: Stage, train_cfg: TrainConfig, *, file: str = WEIGHTS,
                    masks: Optional[Stage] = None, hooks: Optional[Hooks] = None, extra: Optional[dict] = None,
                    start_iteration: int = 0, snapshots: tuple[int, ...] = ()) -> Stage:
        """Train from a stage's weights (``file``), with ``masks`` (default: the start stage's own) kept fixed.

        ``extra`` must describe anything in ``hooks`` that changes the result (it is hashed).
        """
        data_seed = self.run.seed_for("data")

        def compute(folder: Path) -> dict:
            mask_tensors = masks.tensors(MASKS) if masks is not None else None
            model = self.model_from(start, file, masks=mask_tensors)
            stage_hooks = copy.copy(hooks) if hooks else Hooks()
            attached = current_masks(model)
            if attached:
                stage_hooks = Hooks(list(stage_hooks.before_step), [*stage_hooks.after_step, keep_masked])
            lines = []

            def on_eval(row: dict) -> None:
                lines.append(row)
                self._step += 1
                self.tracker.log({f"{name}/{k}": v for k, v in row.items()}, step=self._step)

            outcome = train(model, self.data, train_cfg, data_seed=data_seed, device=self.device, hooks=stage_hooks,
                            start_iteration=start_iteration, snapshots=snapshots, checkpoint=folder / "checkpoint.pt",
                            on_eval=on_eval, progress=self.run.progress, desc=f"{self.method.name}:{name}")
            save_tensors(folder / WEIGHTS, fold_state(outcome.selected_state))
            save_tensors(folder / "last.safetensors", fold_state(model.state_dict()))
            for iteration, state in outcome.snapshots.items():
                save_tensors(folder / f"snapshot_{iteration}.safetensors", fold_state(state))
            if attached:
                save_tensors(folder / MASKS, attached)
            if start.path(PLAN).exists():
                shutil.copy(start.path(PLAN), folder / PLAN)
            (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in outcome.metrics))
            return {"selected": outcome.selected, "final": outcome.final, "iterations": outcome.iterations,
                    "early_stop_iteration": outcome.early_stop_iteration, "train": asdict(train_cfg)}

        spec = {"train": nondefault(train_cfg), "data_seed": data_seed, "file": file, "extra": extra,
                "start_iteration": start_iteration, "snapshots": list(snapshots)}
        return self._stage(name, "train", spec, {"start": start.hash, "masks": masks and masks.hash}, compute)

    def mask_stage(self, name: str, source: Stage, spec: dict,
                   select: Callable[[nn.Module, Masks], tuple[Masks, dict]], *, file: str = WEIGHTS) -> Stage:
        """Score and select: ``select(plain_model, alive_masks) -> (new masks, info)``; the stage stores the masks,
        the masked weights (a fine-tune can start here), ``info`` and the accuracy right after pruning."""

        def compute(folder: Path) -> dict:
            model = self.model_from(source, file)
            alive = current_masks(model)
            plain = folded(model)
            names = self.prunable(plain)
            alive = {n: alive.get(n, torch.ones_like(dict(plain.named_parameters())[n], dtype=torch.bool).cpu())
                     for n in names}
            new_masks, info = select(plain, alive)
            pruned = apply_masks(plain, new_masks)
            save_tensors(folder / MASKS, new_masks)
            save_tensors(folder / WEIGHTS, fold_state(pruned.state_dict()))
            return {"info": info, "after_pruning": self.accuracy(pruned), "layer_density": layer_density(new_masks)}

        return self._stage(name, "prune", {"method": self.method.name, **spec}, {"source": source.hash}, compute)

    def plan_stage(self, name: str, source: Stage, spec: dict,
                   build: Callable[[nn.Module], tuple[object, nn.Module, dict]], *, file: str = WEIGHTS) -> Stage:
        """Structured pruning: ``build(model) -> (plan over the base architecture, compacted model, info)``."""

        def compute(folder: Path) -> dict:
            plan, compacted, info = build(self.model_from(source, file))
            (folder / PLAN).write_text(plan.to_json())
            save_tensors(folder / WEIGHTS, compacted.state_dict())
            return {**info, "after_pruning": self.accuracy(compacted)}

        return self._stage(name, "prune", {"method": self.method.name, **spec}, {"source": source.hash}, compute)

    def accuracy(self, model: nn.Module) -> dict:
        model.to(self.device)
        val_loss, val_acc = evaluate(model, self.data.val, self.device)
        test_loss, test_acc = evaluate(model, self.data.test, self.device)
        return {"val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc}

    # ----------------------------------------------------------------------------------------------- helpers
    def recovery_config(self, recovery: Recovery, base: Optional[TrainConfig] = None) -> TrainConfig:
        base = base or self.run.train
        changes = {"lr": (recovery.lr if recovery.lr is not None else base.lr) * recovery.lr_scale}
        if recovery.epochs is not None:
            changes.update(epochs=recovery.epochs, iterations=None)
        if recovery.schedule is not None:
            changes["schedule"] = recovery.schedule
        if recovery.milestones is not None:
            changes["milestones"] = list(recovery.milestones)
        return replace(base, **changes)

    def stage_at(self, ref: str) -> Stage:
        """A stage named ``kind/hash`` (as records store them)."""
        kind, digest = ref.split("/")
        folder = self.store.stage_dir(kind, digest)
        return Stage(kind, digest, folder, json.loads((folder / "result.json").read_text()), True)

    def source_experiment(self, overrides: dict, *, build: bool = True) -> dict:
        """The record of another method's experiment on the same model/data/seed, referenced by its config
        (``{name: slimming, sparsity: 0.5}``) and resolved through the store; computed (and shared) if missing."""
        from foundations.errors import UserError

        name = overrides.get("name")
        source_run = source_run_config(self.run, overrides)
        found = self.store.find("experiment", experiment_spec(source_run))
        if found is not None and found.result.get("status") == "ok":
            return found.result
        if not build:
            raise UserError(f"method.source: no finished {name} experiment with {dict(overrides)} on "
                            f"{self.run.model.name}/{self.run.dataset.name} seed {self.run.seed} in {self.store.root}; "
                            f"run it first or set method.build_source=true")
        return run_experiment(source_run, self.store)

    def dense_stage(self) -> Stage:
        """The plain dense model every after-training method starts from (shared across methods in a sweep)."""
        return self.train_stage("dense", self.init_stage(), self.run.train)

    # ----------------------------------------------------------------------------------------------- record
    def finish(self, final: Stage, *, pruned: Optional[Stage] = None, dense: Optional[Stage] = None,
               **extra) -> dict:
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
        record = {
            "status": "ok", "error": None, "experiment": self.run.experiment, "method": self.method.name,
            "label": self.method.label(), "kind": self.method.kind, "model": self.run.model.name,
            "dataset": self.run.dataset.name, "seed": self.run.seed,
            "seeds": {p: self.run.seed_for(p) for p in ("init", "data", "prune")},
            "target_sparsity": self.run.method.sparsity,
            "density": prunable_nonzero / max(prunable_total, 1),
            "sparsity_all_params": 1 - params_nonzero / params_dense,
            "compression": params_dense / max(params_nonzero, 1),
            "params_total": params_dense, "params_nonzero": params_nonzero,
            "flops_dense": flops_dense, "flops_effective": flops_effective,
            "speedup_theoretical": flops_dense / max(flops_effective, 1),
            "val_acc": selected["val_acc"], "test_acc": selected["test_acc"],
            "selected_iteration": selected["iteration"], "early_stop_iteration": final.result["early_stop_iteration"],
            "test_acc_before_recovery": pruned.result["after_pruning"]["test_acc"] if pruned else None,
            "dense_test_acc": dense.result["selected"]["test_acc"] if dense else None,
            "dense_stage": dense.hash if dense else None,  # whatever the method named it (lottery: level0)
            "final_stage": f"train/{final.hash}" if final.kind == "train" else f"{final.kind}/{final.hash}",
            "stage_hashes": dict(self.stage_hashes), "wall_time_s": dict(self.wall_time),
            "stages_reused": dict(self.reused),
            "prunable": {**asdict(self.method.cfg.prunable), "tensors": dense_names},
            "per_layer_density": {n: (int((final_params[n] != 0).sum()) / dense_params[n].numel()) if n in final_params
                                  else 0.0 for n in dense_names},
            "latency_ms": None,
            **extra,
        }
        if masks:
            record["per_layer_density"].update(layer_density(masks))
        if final.path(PLAN).exists():
            record["latency_ms"] = {"dense": measure.measure_latency_ms(base, self.data.input_shape),
                                    "pruned": measure.measure_latency_ms(plain, self.data.input_shape)}
        return record


def source_run_config(run: RunConfig, overrides: dict) -> RunConfig:
    """``run`` with its method replaced by ``conf/method/<overrides.name>.yaml`` updated with ``overrides``."""
    from omegaconf import OmegaConf

    from foundations.checks import typed
    from foundations.errors import UserError

    name = overrides.get("name")
    path = Path(__file__).resolve().parent.parent / "conf" / "method" / f"{name}.yaml"
    if not path.exists():
        raise UserError(f"method.source.name: no method config {name!r} (conf/method/{name}.yaml)")
    defaults = OmegaConf.load(path)
    defaults.pop("defaults", None)  # the schema link; ``typed`` below applies the schema
    node = OmegaConf.merge(defaults, overrides)
    return replace(run, method=typed(get_method(name).Config, node, "method.source"))


def experiment_spec(run: RunConfig) -> dict:
    """What identifies an experiment's record (its folder under ``runs/experiment/``)."""
    return {"model": nondefault(run.model),
            "dataset": {k: v for k, v in nondefault(run.dataset).items() if k not in _NOT_DATA_IDENTITY},
            "method": nondefault(run.method), "train": nondefault(run.train), "seed": run.seed,
            "seeds": nondefault(run.seeds), "experiment": run.experiment}


def run_experiment(run: RunConfig, store: Store, tracker: Optional[Tracker] = None) -> dict:
    """Run (or reuse) one experiment; its record is ``runs/experiment/<hash>/result.json``."""
    spec = experiment_spec(run)
    existing = store.find("experiment", spec)
    if existing is not None and existing.result.get("status") == "ok":
        return existing.result
    exp = Experiment(run, store, tracker)
    exp.method.validate(exp)
    start = time.perf_counter()
    (store.stage_dir("experiment", stage_hash("experiment", spec, {})) / "result.json").unlink(missing_ok=True)

    def compute(folder: Path) -> dict:
        record = exp.method.run(exp)
        record["wall_time_s"]["total"] = time.perf_counter() - start
        return record

    return store.run("experiment", spec, {}, compute).result


def record_failure(run: RunConfig, store: Store, error: BaseException) -> dict:
    """A failed experiment is recorded as failed (and retried by the next sweep); the sweep goes on."""
    record = {"status": "failed", "error": f"{type(error).__name__}: {error}", "experiment": run.experiment,
              "method": run.method.name, "label": run.method.name, "model": run.model.name,
              "dataset": run.dataset.name, "seed": run.seed, "target_sparsity": run.method.sparsity}
    folder = store.stage_dir("experiment", stage_hash("experiment", experiment_spec(run), {}))
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "result.json", record)
    return record
