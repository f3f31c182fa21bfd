"""Typed configuration: dataclass schemas behind the YAML groups, and one-line validation.

Hydra composes plain YAML; `validate()` then merges every group into its dataclass schema so that a type or range
error (``train.lr=abc``, ``train.epochs=-1``) stops the run before any work with one line naming the field.
The schemas are also registered in Hydra's ConfigStore (group ``schema``) so tools can inspect them.
"""

from __future__ import annotations

import re
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from runners.errors import UserError

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "multistep", "cosine", "inv")


def check(ok: bool, key: str, message: str) -> None:
    """Raise the one-line UserError the entry point prints when ``ok`` is false."""
    if not ok:
        raise UserError(f"{key}: {message}")


@dataclass
class TrainConfig:
    """One training run (dense training, fine-tuning, retraining all use it).

    ``milestones`` are fractions of the total iterations, so a longer (Scratch-B) or shorter budget rescales them
    automatically, as the Rethinking code does.
    """

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "constant"
    milestones: list[float] = field(default_factory=list)
    gamma: float = 0.1
    inv_gamma: float = 1e-4  # Caffe "inv": lr * (1 + inv_gamma * it) ** -inv_power
    inv_power: float = 0.75
    warmup_iterations: int = 0
    epochs: int = 10
    iterations: Optional[int] = None  # overrides epochs when set
    batch_size: int = 128
    eval_every: int = 0  # iterations between evaluations; 0 = once per epoch
    selection: str = "val_acc"  # which checkpoint the record reports: best val_acc, min val_loss, or last

    def __post_init__(self) -> None:
        check(self.optimizer in OPTIMIZERS, "train.optimizer", f"must be one of {OPTIMIZERS} (got {self.optimizer!r})")
        check(self.schedule in SCHEDULES, "train.schedule", f"must be one of {SCHEDULES} (got {self.schedule!r})")
        check(self.lr > 0, "train.lr", f"must be > 0 (got {self.lr})")
        check(self.epochs >= 1, "train.epochs", f"must be >= 1 (got {self.epochs})")
        check(self.iterations is None or self.iterations >= 1, "train.iterations", f"must be >= 1 (got {self.iterations})")
        check(self.batch_size >= 1, "train.batch_size", f"must be >= 1 (got {self.batch_size})")
        check(self.weight_decay >= 0, "train.weight_decay", f"must be >= 0 (got {self.weight_decay})")
        check(0 <= self.momentum < 1, "train.momentum", f"must be in [0, 1) (got {self.momentum})")
        check(all(0 < m < 1 for m in self.milestones), "train.milestones",
              f"are fractions of training in (0, 1), e.g. [0.5, 0.75] (got {list(self.milestones)})")
        check(self.eval_every >= 0, "train.eval_every", f"must be >= 0 (got {self.eval_every})")
        check(self.warmup_iterations >= 0, "train.warmup_iterations", f"must be >= 0 (got {self.warmup_iterations})")
        check(self.selection in ("val_acc", "val_loss", "last"), "train.selection",
              f"must be val_acc, val_loss or last (got {self.selection!r})")


@dataclass
class LoggerConfig:
    name: str = "wandb"  # wandb | none
    project: str = "prunelab"
    entity: Optional[str] = None
    mode: str = "offline"  # offline | online | disabled

    def __post_init__(self) -> None:
        check(self.name in ("wandb", "none"), "logger.name", f"must be wandb or none (got {self.name!r})")
        check(self.mode in ("offline", "online", "disabled"), "logger.mode",
              f"must be offline, online or disabled (got {self.mode!r})")


@dataclass
class Seeds:
    """Separate, recorded seeds; ``None`` means "derive from the top-level ``seed``"."""

    init: Optional[int] = None
    data: Optional[int] = None
    prune: Optional[int] = None


@dataclass
class Paths:
    results: str = "results"


def _schemas() -> dict[str, type]:
    # Imported lazily: the datasets/models packages import runners.errors, not this module.
    from datasets.config import DatasetConfig
    from models.config import ModelConfig

    return {"train": TrainConfig, "logger": LoggerConfig, "dataset": DatasetConfig, "model": ModelConfig,
            "seeds": Seeds, "paths": Paths}


def _pick(sequence: Any, index: Any) -> Any:
    """``${pick:${survey.levels.unstructured},${level}}``: element ``index`` of a list (sweep level -> sparsity)."""
    items = list(sequence)
    i = int(index)
    if not 0 <= i < len(items):
        raise UserError(f"level: {index} is out of range; this sweep has levels 0..{len(items) - 1}")
    return items[i]


# Registered at import so that joblib/submitit workers, which unpickle runners.train, resolve sweep configs too.
if not OmegaConf.has_resolver("pick"):
    OmegaConf.register_new_resolver("pick", _pick)


def register_schemas() -> None:
    """Every group YAML extends its schema (``defaults: [/schema/<group>@_here_]``); methods register their own."""
    from methods import registry

    store = ConfigStore.instance()
    for group, schema in _schemas().items():
        store.store(group="schema", name=group, node=schema)
    for name, method in registry().items():
        store.store(group="schema/method", name=name, node=method.Config)


_FULL_KEY = re.compile(r"full_key:\s*(\S+)")


def typed(schema: type, node: Any, prefix: str):
    """Merge a config node into ``schema`` and instantiate it; errors become one line naming the field."""
    try:
        if isinstance(node, DictConfig):  # resolve in the full config first: `${survey.dense_epochs}` points outside
            node = OmegaConf.to_container(node, resolve=True)
        merged = OmegaConf.merge(OmegaConf.structured(schema), node if node is not None else {})
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        message = str(err).splitlines()[0]
        key = _FULL_KEY.search(str(err))
        name = f"{prefix}.{key.group(1)}" if key else prefix
        raise UserError(f"{name}: {message}") from None


@dataclass
class RunConfig:
    """The validated, typed view of one composed Hydra config."""

    model: Any
    dataset: Any
    train: TrainConfig
    method: Any
    logger: LoggerConfig
    seed: int
    seeds: Seeds
    paths: Paths
    device: str
    experiment: str
    threads: Optional[int]
    progress: bool

    def seed_for(self, purpose: str) -> int:
        explicit = getattr(self.seeds, purpose)
        return self.seed if explicit is None else explicit


def validate(cfg: DictConfig) -> RunConfig:
    from methods import get_method

    schemas = _schemas()
    sections = {name: typed(schema, cfg.get(name), name) for name, schema in schemas.items()}
    method_name = OmegaConf.select(cfg, "method.name")
    method_cls = get_method(method_name)
    sections["method"] = typed(method_cls.Config, cfg.method, "method")
    check(cfg.get("device", "auto") in ("auto", "cpu", "cuda") or str(cfg.device).startswith("cuda:"), "device",
          f"must be auto, cpu or cuda[:N] (got {cfg.get('device')!r})")
    seed = cfg.get("seed", 0)
    check(isinstance(seed, int) and seed >= 0, "seed", f"must be a non-negative integer (got {seed!r})")
    threads = cfg.get("threads")
    check(threads is None or (isinstance(threads, int) and threads >= 1), "threads", f"must be >= 1 (got {threads!r})")
    return RunConfig(seed=seed, device=str(cfg.get("device", "auto")), experiment=str(cfg.get("name", "default")),
                     threads=threads, progress=bool(cfg.get("progress", True)), **sections)


def _default(f):
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING  # a required field: never equal to its value, so always hashed


def nondefault(obj: Any) -> Any:
    """The fields of a (nested) dataclass that differ from their defaults — what a stage hash covers.

    As in OpenLTH, a field added later with a default leaves every existing hash unchanged.
    """
    if is_dataclass(obj):
        return {f.name: nondefault(getattr(obj, f.name)) for f in fields(obj) if getattr(obj, f.name) != _default(f)}
    if isinstance(obj, dict):
        return {k: nondefault(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nondefault(v) for v in obj]
    return obj
