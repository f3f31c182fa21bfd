"""Typed configuration: dataclass schemas behind the YAML groups, and one-line validation.

Hydra composes plain YAML; `validate()` then merges every group into its dataclass schema so that a type or range
error (``train.lr=abc``, ``train.epochs=-1``) stops the run before any work with one line naming the field.
The schemas are also registered in Hydra's ConfigStore (group ``schema``) so tools can inspect them.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from datasets import config as dataset_schemas
from datasets import input_shape
from datasets.config import dataset_config
from foundations.checks import check, typed
from foundations.errors import UserError
from foundations.training import TrainConfig, resolve_device
from methods import get_method, registry
from models import build_model
from models.config import ModelConfig, TorchvisionConfig, model_config
from models.config import schema_for as model_schema
from runners.sparse import KERNELS
from runners.tracking import NAME_FIELDS, run_name


@dataclass
class LoggerConfig:
    name: str = "wandb"  # wandb | none
    project: str = "prunelab"
    entity: Optional[str] = None
    mode: str = "offline"  # offline | online | disabled
    run_name: str = "{label} @ {sparsity:g} s{seed}"  # fields: runners.tracking.NAME_FIELDS
    artifacts: bool = True  # final weights, masks or channel plan of each experiment as a W&B `model` artifact
    copy_artifacts: bool = False  # copy the files into W&B instead of referencing the store (file://)

    def __post_init__(self) -> None:
        check(self.name in ("wandb", "none"), "logger.name", f"must be wandb or none (got {self.name!r})")
        check(
            self.mode in ("offline", "online", "disabled"),
            "logger.mode",
            f"must be offline, online or disabled (got {self.mode!r})",
        )
        run_name(
            self.run_name, {**{f: "x" for f in NAME_FIELDS}, "sparsity": 0.5, "seed": 0}
        )  # fails here, not mid-run


@dataclass
class Seeds:
    """Separate, recorded seeds; ``None`` means "derive from the top-level ``seed``"."""

    init: Optional[int] = None
    data: Optional[int] = None
    prune: Optional[int] = None

    def __post_init__(self) -> None:
        for purpose in ("init", "data", "prune"):
            value = getattr(self, purpose)
            check(
                value is None or value >= 0,
                f"seeds.{purpose}",
                f"must be a non-negative integer or null to derive it from `seed` (got {value})",
            )


@dataclass
class Paths:
    results: str = "results"


@dataclass
class LatencyConfig:
    """How a record times its networks (``runners.metrics.measure_latency_ms``). It changes no result, so it is in
    no hash: a record already in the store keeps the latency it was measured with."""

    # weight-level records: the kernel of the sparse network (runners/sparse.py) timed beside the dense and the
    # masked network: csr | bsr | coo | semi_structured, or none (not timed)
    sparse_kernel: str = "csr"
    batch_sizes: list[int] = field(default_factory=lambda: [1, 256])
    # seconds of timing per batch size, shared by the networks compared (structured: dense, pruned; weight-level:
    # dense, masked, sparse), each at least 3 blocks of ~10 ms: a record costs the same whatever it compares
    run_time: float = 0.2

    def per_network(self, networks: int) -> float:
        """``min_run_time`` of ``runners.metrics.measure_latency_ms`` for ``networks`` networks."""
        return self.run_time / networks

    def __post_init__(self) -> None:
        check(
            self.sparse_kernel in (*KERNELS, "none"),
            "latency.sparse_kernel",
            f"must be one of {', '.join(KERNELS)} or none (got {self.sparse_kernel!r})",
        )
        check(
            bool(self.batch_sizes) and all(b >= 1 for b in self.batch_sizes),
            "latency.batch_sizes",
            f"must be a non-empty list of batch sizes >= 1 (got {self.batch_sizes})",
        )
        check(self.run_time > 0, "latency.run_time", f"must be > 0 seconds (got {self.run_time})")


def schemas() -> dict[str, type]:
    """The groups with one schema each; ``model`` and ``dataset`` pick theirs by name (``group_schema``)."""
    return {"train": TrainConfig, "logger": LoggerConfig, "seeds": Seeds, "paths": Paths, "latency": LatencyConfig}


# The schemas the model and dataset YAMLs extend (``/schema/<group>/<name>@_here_``); the ``target`` YAMLs extend
# none, as their keys are the callable's arguments.
GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "model": {"builtin": ModelConfig, "torchvision": TorchvisionConfig},
    "dataset": {
        "base": dataset_schemas.DatasetConfig,
        "files": dataset_schemas.FilesConfig,
        "synthetic": dataset_schemas.SyntheticConfig,
        "folder": dataset_schemas.FolderConfig,
    },
}


def group_schema(group: str, option: str) -> type:
    """The schema of ``group=option`` (model or dataset; the option is the YAML's ``name``)."""
    return model_schema(option) if group == "model" else dataset_schemas.schema_for(option)


def _pick(sequence: Any, index: Any) -> Any:
    """``${pick:${survey.levels.unstructured},${level}}``: element ``index`` of a list (sweep level -> sparsity)."""
    items = list(sequence)
    i = int(index)
    if not 0 <= i < len(items):
        raise UserError(f"level: {index} is out of range; this sweep has levels 0..{len(items) - 1}")
    return items[i]


def _sum(*terms: Any) -> Any:
    """``${sum:${survey.dense_epochs},${survey.recovery_epochs}}``: an arm's budget as the sum of the survey's knobs
    (GMP trains as many epochs as dense training and the fine-tune together)."""
    return sum(terms)


# The budget rules of a comparison (``survey.budget``; README "Fair comparisons"). ``matched``: every arm trains the
# same epochs counted from initialization — an after-training arm dense_epochs + recovery_epochs (its recovery an LR
# rewinding, Renda et al. 2020), an at-init arm and Scratch-E that many from its init, Scratch-B that many times the
# FLOP ratio; ``paper``: each paper's own schedule (at init and Scratch-E: the dense epochs; Han's fine-tune).
# Iterative arms (lottery levels, ThiNet's per-layer fine-tunes) spend more by design under both (a record's
# training_budget shows both: ThiNet's per-layer fine-tunes are train stages, fine_tune<k>).
BUDGET_RULES = ("matched", "paper")


def _budget(what: str, *, _root_: Any) -> Any:
    """``${budget:<what>}``: what the sweep's budget rule (``survey.budget``, ``paper`` where a sweep names none)
    gives an arm: ``train_epochs`` (the sweep's ``train.epochs``: ``from_init_epochs`` for an arm that says
    ``survey.trains_from_init`` — the at-init arms, composed before the sweep file so that they cannot set
    ``train.epochs`` themselves —, else the dense epochs), ``scratch_epochs`` (Scratch's ``method.epochs``; None: the
    dense epochs) or ``recovery_protocol`` (an after-training arm's)."""
    survey = _root_.survey
    rule = survey.get("budget", "paper")
    if rule not in BUDGET_RULES:
        raise UserError(f"survey.budget: must be one of {', '.join(BUDGET_RULES)} (got {rule!r})")
    matched = rule == "matched"
    total = survey.dense_epochs + survey.recovery_epochs
    from_init = total if matched else survey.dense_epochs
    table = {
        "from_init_epochs": from_init,
        "train_epochs": from_init if survey.get("trains_from_init", False) else survey.dense_epochs,
        "scratch_epochs": total if matched else None,
        "recovery_protocol": "lr_rewind" if matched else "fine_tune",
    }
    if what not in table:
        raise UserError(f"${{budget:{what}}}: unknown; one of {', '.join(table)}")
    return table[what]


CONF = Path(__file__).resolve().parent.parent / "conf"
# The config groups a training run selects from (experiment/arm below experiment); conf/ also holds data that is not
# a group of this entry point (claims, reproduction tiers), and the schemas are groups to Hydra that nobody selects.
GROUPS = ("model", "dataset", "method", "train", "logger", "experiment")


def selectable_groups() -> str:
    """One line per selectable config group (``group: option, ...``), read from ``conf/`` (``--help``)."""
    lines = []
    for folder in sorted(p for p in CONF.rglob("*") if p.is_dir()):
        group = folder.relative_to(CONF).as_posix()
        options = sorted(p.stem for p in folder.glob("*.yaml"))
        if options and group.split("/")[0] in GROUPS:
            lines.append(f"{group}: {', '.join(options)}")
    return "\n".join(lines)


# Registered at import so that joblib/submitit workers, which unpickle runners.train, resolve sweep configs too.
if not OmegaConf.has_resolver("pick"):
    OmegaConf.register_new_resolver("pick", _pick)
if not OmegaConf.has_resolver("sum"):
    OmegaConf.register_new_resolver("sum", _sum)
if not OmegaConf.has_resolver("budget"):
    OmegaConf.register_new_resolver("budget", _budget)
if not OmegaConf.has_resolver("prunelab_groups"):
    OmegaConf.register_new_resolver("prunelab_groups", selectable_groups)


def register_schemas() -> None:
    """Every group YAML extends its schema (``defaults: [/schema/<group>@_here_]``); methods register their own."""
    store = ConfigStore.instance()
    for group, schema in schemas().items():
        store.store(group="schema", name=group, node=schema)
    for group, options in GROUP_SCHEMAS.items():
        for name, schema in options.items():
            store.store(group=f"schema/{group}", name=name, node=schema)
    for name, method in registry().items():
        store.store(group="schema/method", name=name, node=method.Config)


@dataclass
class ExperimentConfig:
    """The validated, typed view of one composed Hydra config: one experiment."""

    model: Any
    dataset: Any
    train: TrainConfig
    method: Any
    logger: LoggerConfig
    seed: int
    seeds: Seeds
    paths: Paths
    latency: LatencyConfig
    device: str
    sweep: str  # config key `name`: the sweep this experiment belongs to (records' `experiment` field)
    threads: Optional[int]
    progress: bool

    def cpu_threads(self) -> Optional[int]:
        """Torch threads of a job on the CPU: ``threads``, else 1; None on a GPU (torch's own default there).

        The count changes the numbers (parallel reductions sum in another order: dense mlp_bn, seed 0, test accuracy
        0.8965 on 2 threads and 0.8930 on 1), so a count other than 1 is in every stage's hash. One is the default:
        with a competing process it lost at most 1.15x (2 threads: 1.67x on conv_bn), for the MLPs it is faster than
        2 threads even on an idle machine (mlp_bn 6.3 vs 8.5 ms per step; conv_bn 27.7 vs 23.0), and a run gives
        the same numbers whatever the launcher or the machine's core count (benchmarks/speed.py --threads).
        """
        if resolve_device(self.device).type != "cpu":
            return None
        return self.threads or 1

    def seed_for(self, purpose: str) -> int:
        explicit = getattr(self.seeds, purpose)
        return self.seed if explicit is None else explicit


def check_device(device: str) -> None:
    """``device=cuda`` on a machine without CUDA fails deep inside torch with a screenful; say it before any work."""
    check(
        device in ("auto", "cpu", "cuda") or device.startswith("cuda:"),
        "device",
        f"must be auto, cpu or cuda[:N] (got {device!r})",
    )
    if not device.startswith("cuda"):
        return
    check(
        torch.cuda.is_available(),
        "device",
        f"{device} requested but torch finds no CUDA device on this machine; use device=auto (CUDA when present, "
        f"else CPU) or device=cpu",
    )
    index = int(device.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    check(
        index < count,
        "device",
        f"{device} requested but this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})",
    )


def check_model_fits(model: Any, dataset: Any) -> None:
    """Build the model for the dataset's input and run it once on zeros, before any data is read or stage written:
    lenet5 on 8x8 digits, vgg on 28x28, conv_bn on 8x8 stop here with one line. A dataset whose shape only its
    files tell (folder, target) is checked when it is loaded."""
    shape = input_shape(dataset)
    if shape is None:
        return
    try:
        # On the CPU without prunelab's initialization (the modules' own is cheaper): VGG-19 in 0.4 s. Not on the meta
        # device: its kernels are Python references that import torch._dynamo and sympy (2-4 s, paid before the
        # first job of a sweep). build_model refuses inputs smaller than its pooling allows (one line); the head's
        # width cannot matter.
        with torch.no_grad():
            build_model(model, shape, 2, initialized=False).eval()(torch.zeros(1, *shape))
    except RuntimeError as err:
        raise UserError(
            f"model={model.name}: cannot take the {dataset.name} input {'x'.join(map(str, shape))} "
            f"({str(err).splitlines()[0]}); choose another model or dataset"
        ) from None


def check_validation_split(dataset: Any, train: TrainConfig) -> None:
    # val_size null (folder, target): the data's own validation split, else 10% of train; never none at all
    check(
        dataset.val_size is None or dataset.val_size > 0 or train.selection == "last",
        "dataset.val_size",
        f"0 leaves no validation split, so train.selection={train.selection} would pick the first evaluation; "
        f"set dataset.val_size > 0, or train.selection=last to report the last checkpoint",
    )


def check_results_folder(root: str) -> None:
    """``paths.results`` must be (or be creatable as) a writable folder: a file or a read-only folder would otherwise
    surface as a traceback from the first stage that is written."""
    path = Path(root).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise UserError(
            f"paths.results: {existing} is a file, not a folder; point paths.results at a folder (created if missing)"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(
            f"paths.results: {existing} is not writable (read-only folder or file system); point "
            f"paths.results at a writable folder"
        )


def check_importable(target: str, key: str) -> None:
    """The package of a ``_target_`` must be on the Python path. ``python -m`` puts the current folder there, the
    console scripts (prunelab-train) do not: a module next to you imports under one and not the other."""
    package = target.split(".")[0]
    if importlib.util.find_spec(package) is None:
        raise UserError(
            f"{key}: cannot import {target}: no module {package!r} on the Python path; the callable's package must "
            f"be importable: install it, or add its folder to PYTHONPATH (prunelab-train does not search the "
            f"current folder: PYTHONPATH=. prunelab-train ...)"
        )


def _resolved(cfg: DictConfig, name: str) -> Any:
    """A section of the composed config with its interpolations resolved (``${pick:...}``), errors in one line."""
    node = cfg.get(name)
    try:
        return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    except OmegaConfBaseException as err:
        where = f"{name}.{err.full_key}" if getattr(err, "full_key", None) else name
        raise UserError(f"{where}: {str(err).splitlines()[0]}") from None


def validate(cfg: DictConfig, memo: Optional[dict] = None) -> ExperimentConfig:
    """The typed experiment of a composed config, or a one-line UserError.

    ``memo`` (a dict kept across calls) reuses the typed sections and checks of equal inputs: the pre-launch check
    (runners/jobs.py) validates every job of a sweep, and most of their sections are the same."""
    memo = {} if memo is None else memo

    def once(key: tuple, make: Callable[..., Any], *args: Any) -> Any:
        key = ("validate", *key)
        if key not in memo:
            memo[key] = make(*args)
        return memo[key]

    nodes = {name: _resolved(cfg, name) for name in (*schemas(), "model", "dataset", "method")}
    sections = {
        name: once((name, repr(nodes[name])), typed, schema, nodes[name], name) for name, schema in schemas().items()
    }
    sections["model"] = once(("model", repr(nodes["model"])), model_config, nodes["model"] or {})
    sections["dataset"] = once(("dataset", repr(nodes["dataset"])), dataset_config, nodes["dataset"] or {})
    for name in ("model", "dataset"):
        target = getattr(sections[name], "target", None)
        if isinstance(target, str):
            once((name, "importable", target), check_importable, target, f"{name}._target_")
    check(
        not sections["train"].empty or sections["model"].checkpoint is not None,
        "train.epochs",
        "0 trains nothing; it only makes sense from model.checkpoint (the dense stage is then the checkpoint, "
        "loaded and evaluated); set train.epochs >= 1 or give model.checkpoint",
    )
    method = get_method(str((nodes["method"] or {}).get("name")))
    sections["method"] = once(("method", repr(nodes["method"])), typed, method.Config, nodes["method"], "method")
    check_device(str(cfg.get("device", "auto")))
    check_validation_split(sections["dataset"], sections["train"])
    once(
        ("fits", repr(sections["model"]), repr(sections["dataset"])),
        check_model_fits,
        *(sections[k] for k in ("model", "dataset")),
    )
    seed = cfg.get("seed", 0)
    check(isinstance(seed, int) and seed >= 0, "seed", f"must be a non-negative integer (got {seed!r})")
    threads = cfg.get("threads")
    check(threads is None or (isinstance(threads, int) and threads >= 1), "threads", f"must be >= 1 (got {threads!r})")
    return ExperimentConfig(
        seed=seed,
        device=str(cfg.get("device", "auto")),
        sweep=str(cfg.get("name", "default")),
        threads=threads,
        progress=bool(cfg.get("progress", True)),
        **sections,
    )
