"""Hydra entry point: ``python -m runners.train [overrides]`` (add ``-m`` for a sweep).

Bad input stops before any work with one line and exit code 2 (a full disk too: what is finished stays in the
store, a re-run resumes). A diverged training run is recorded as failed and exits 1 with one line. In a sweep, a
failed job is recorded as failed and the sweep goes on.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import importlib
import logging
import os
import sys
from dataclasses import fields
from pathlib import Path
from typing import Optional, cast

import hydra
import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from foundations.checks import typed
from foundations.errors import UserError
from foundations.files import atomic_write_json
from foundations.training import Diverged
from methods import get_method
from models import display_name
from runners.config import CONF, GROUPS, ExperimentConfig, group_schema, register_schemas, schemas, validate
from runners.experiment import experiment_hash, record_failure, recorded, run_experiment
from runners.store import Store
from runners.tracking import RunIdentity, Tracker, achieved_tag, artifact_name, make_tracker, table_of

log = logging.getLogger("prunelab")
GRAMMAR = "()[]{}$*"  # Hydra's sweep functions, lists, dicts, interpolations, globs: values left to Hydra as written


def is_plain_value(value: str, *, commas: bool = False) -> bool:
    """A literal override value (``commas``: a comma list counts as plain, e.g. the choices of a group sweep)."""
    return not any(c in value for c in GRAMMAR + ("" if commas else ","))


def closest(name: str, options: list[str]) -> str:
    """`` (did you mean X?)`` for the nearest option, or nothing when none is near."""
    near = difflib.get_close_matches(name, options, n=1)
    return f" (did you mean {near[0]}?)" if near else ""


def check_group_choices(argv: list[str]) -> None:
    """Hydra's own message for ``model=nosuch`` spans a screen; say it in one line instead."""
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if not sep or key not in GROUPS or not is_plain_value(value, commas=True):
            continue
        for choice in value.split(","):
            if choice and not (CONF / key / f"{choice}.yaml").exists():
                options = sorted(p.stem for p in (CONF / key).glob("*.yaml"))
                raise UserError(
                    f"{key}={choice}: no such option{closest(choice, options)}; choose one of {', '.join(options)}"
                )


def _yaml(path: Path) -> dict:
    node = yaml.safe_load(path.read_text()) or {}
    return node if isinstance(node, dict) else {}


def _top_level_keys(path: Path) -> set[str]:
    return {k for k in _yaml(path) if k != "defaults"}


def check_top_level_keys(argv: list[str]) -> None:
    """``modle=lenet5`` (a misspelled group or top-level key) is a six-line Hydra error with exit 1; one line with the
    closest valid name instead. Known: the groups, the keys of conf/config.yaml and of the experiment configs the
    command selects (``+experiment=survey_mlp`` adds ``level``, ``survey``). ``+key=value`` adds a key on purpose."""
    known = set(GROUPS) | _top_level_keys(CONF / "config.yaml") | {"hydra"}
    for arg in argv:
        key, sep, value = arg.lstrip("~").partition("=")
        group = key.lstrip("+")
        if sep and group in ("experiment", "experiment/arm") and is_plain_value(value, commas=True):
            for choice in value.split(","):
                if (CONF / group / f"{choice}.yaml").exists():  # its keys and the groups its defaults add
                    path = CONF / group / f"{choice}.yaml"
                    known |= _top_level_keys(path) | {g.split("@")[0] for g in _defaults_choices(path)}
    for arg in argv:
        if arg.startswith(("+", "-")) or "=" not in arg:
            continue
        key = arg.lstrip("~").partition("=")[0]
        head = key.replace("/", ".").split(".")[0]
        if head not in known:
            raise UserError(
                f"{key}: no such config group or key{closest(head, sorted(known))}; groups: {', '.join(GROUPS)}"
            )


def _defaults_choices(path: Path) -> dict[str, str]:
    """``{group: option}`` chosen by a config's defaults list (``- model: lenet300``, ``- override /model: vgg``)."""
    out = {}
    for entry in _yaml(path).get("defaults") or []:
        if isinstance(entry, dict):
            for key, value in entry.items():
                out[key.replace("override", "").strip().strip("/")] = str(value)
    return out


def chosen_option(argv: list[str], group: str) -> Optional[str]:
    """The option of ``group`` a command composes: ``group=X`` on the command line, else the last selected
    experiment/arm config's ``override /group: X``, else conf/config.yaml's default; None for a sweep over options."""
    choice = _defaults_choices(CONF / "config.yaml").get(group)
    explicit = None
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if (
            sep
            and key in ("experiment", "experiment/arm")
            and is_plain_value(value)
            and (CONF / key / f"{value}.yaml").exists()
        ):
            choice = _defaults_choices(CONF / key / f"{value}.yaml").get(group, choice)
        elif sep and key == group:
            explicit = value
    choice = explicit if explicit is not None else choice
    return None if choice is None or not is_plain_value(choice) else choice


def check_override_types(argv: list[str]) -> None:
    """Type-check ``group.field=value`` overrides against the schemas before Hydra does it in a screenful, on the
    option the command really composes (``model=vgg model.depth=11``: depth is checked as VGG's)."""
    groups = schemas()
    for group in ("method", "model", "dataset"):
        option = chosen_option(argv, group)  # None: a sweep over options (each job is validated)
        if option is None or option == "target" or not (CONF / group / f"{option}.yaml").exists():
            groups.pop(group, None)  # target: its keys are the callable's, checked when it is built
            continue
        name = str(_yaml(CONF / group / f"{option}.yaml").get("name", option))
        groups[group] = get_method(name).Config if group == "method" else group_schema(group, option)
    nodes: dict[str, DictConfig] = {}
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        group, _, rest = key.partition(".")
        if not sep or not rest or group not in groups or not is_plain_value(value):
            continue
        # the value as Hydra reads it: YAML would read method.pattern=2:4 as the base-60 number 124
        parsed = OverridesParser.create().parse_override(f"{key}={value}").value()
        OmegaConf.update(nodes.setdefault(group, OmegaConf.create()), rest, parsed, force_add=True)
    for group, node in nodes.items():
        # a group's overrides together, so that a check across fields sees them all (method.pattern=2:4 with
        # method.sparsity=0.5; method.output_rate with method.scope=layerwise). model/dataset: keys and types
        # only; their cross-field checks (depth per architecture) need the whole node
        typed(groups[group], node, group, instantiate=group not in ("model", "dataset"))


def spread_method_fields(argv: list[str]) -> list[str]:
    """``-m method=a,b method.field=v``: Hydra composes the sweep's own config with the default method (dense) and
    refuses ``method.field`` there. Every swept method must have the field (else one line says which lacks it); the
    override then becomes the one-value sweep ``choice(v)``, which Hydra applies per job only."""
    sweep = next((a.split("=", 1)[1] for a in argv if a.startswith("method=") and "," in a), None)
    if sweep is None or not ({"-m", "--multirun"} & set(argv)):
        return argv
    methods = [m.strip() for m in sweep.split(",")]
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if key.startswith("method.") and sep and is_plain_value(value):
            field = key.split(".")[1]
            lacking = [m for m in methods if field not in {f.name for f in fields(get_method(m).Config)}]
            if lacking:
                raise UserError(
                    f"{key}: {', '.join(lacking)} has no field {field!r}; sweep methods that share it, "
                    f"or give each method its own settings in an experiment config (conf/experiment/arm/)"
                )
            arg = f"{key}=choice({value})"
        out.append(arg)
    return out


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


_NO_ROOM = (errno.ENOSPC, errno.EDQUOT)
_NO_WRITE = (errno.EROFS, errno.EACCES, errno.EPERM)


def storage_error(err: BaseException, root: str) -> Optional[UserError]:
    """A full disk (or results folder turned read-only) while writing a stage, as one line. The store stays
    consistent by construction: result.json is written last, so the stage in progress is incomplete and resumes."""
    if not isinstance(err, OSError):
        return None
    inside = err.filename is not None and Path(str(err.filename)).resolve().is_relative_to(Path(root).resolve())
    if err.errno in _NO_ROOM or (err.errno in _NO_WRITE and inside):
        where = f" writing {err.filename}" if err.filename else ""
        return UserError(
            f"paths.results: {(err.strerror or str(err)).lower()}{where}; free space or point "
            f"paths.results at another disk (finished stages are kept; the same command resumes from them)"
        )
    return None


def configure_process(config: ExperimentConfig) -> None:
    hydra_node = cast(DictConfig, HydraConfig.get())  # typed as the HydraConf schema; at run time a DictConfig
    launcher = str(OmegaConf.select(hydra_node, "launcher._target_", default=""))
    if "joblib" in launcher.lower():  # parallel jobs on a few cores: no DataLoader worker processes inside workers
        config.dataset.num_workers = 0
        config.progress = False
    configure_torch(config.cpu_threads(), config.device)


def configure_torch(threads: int | None, device: str) -> None:
    """Threads and determinism of this process (the benchmarks call it too, to measure what jobs run)."""
    if threads:
        torch.set_num_threads(threads)
    if device in ("cpu", "auto") and not torch.cuda.is_available():
        torch.use_deterministic_algorithms(True)
        # Deterministic mode also fills every new tensor with NaN, a guard against kernels that read memory they
        # never wrote; ours do not (results are bitwise identical without it) and the fill costs 6-11 % per step.
        # Looked up by name: `python -m runners.train` runs this module as __main__, so joblib (cloudpickle) pickles its
        # functions by value with every torch submodule their code names, and this one (a module subclass with a
        # property) does not pickle: a `torch.utils.deterministic` attribute chain here broke every joblib sweep.
        deterministic = sys.modules.get("torch.utils.deterministic") or importlib.import_module(
            "torch.utils.deterministic"
        )
        deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]  # a module property


def summarize(record: dict) -> str:
    keys = [
        "method",
        "label",
        "model",
        "dataset",
        "seed",
        "target_sparsity",
        "density",
        "compression",
        "speedup_theoretical",
        "dense_test_acc",
        "test_acc_before_recovery",
        "val_acc",
        "test_acc",
    ]
    lines = [f"  {k:<26} {record.get(k)}" for k in keys if k in record]
    walls = record.get("wall_time_s") or {}
    lines.append("  wall time (s)              " + ", ".join(f"{k}={v:.1f}" for k, v in walls.items()))
    if record.get("latency_ms"):
        lines.append(f"  latency_ms                 {record['latency_ms']}")
    return "\n".join(lines)


def run_fields(config: ExperimentConfig) -> dict:
    """What names and tags the experiment's W&B run (``runners.tracking.NAME_FIELDS``)."""
    method = get_method(config.method.name)(config.method)
    return {
        "label": method.label(),
        "method": config.method.name,
        "kind": method.kind,
        "model": display_name(config.model),
        "dataset": config.dataset.name,
        "experiment": config.sweep,
        "sparsity": 0.0 if method.kind == "dense" else config.method.sparsity,  # a sweep may set it for dense too
        "seed": config.seed,
    }


def open_tracker(config: ExperimentConfig, store: Store, cfg: DictConfig, output_dir: Path) -> Tracker:
    """The experiment's W&B run, with the experiment hash as its id; none when the store already holds the record
    and notes it as logged to this W&B project (a second run of the same record would count as another seed)."""
    digest = experiment_hash(config)
    existing = recorded(config, store)
    mirror = existing.mirror() if existing is not None else None
    if mirror is not None and (mirror.get("project"), mirror.get("entity")) == (
        config.logger.project,
        config.logger.entity,
    ):
        if config.logger.name != "none":
            log.info("experiment %s is already in the store and in W&B: no new W&B run (run id %s)", digest, digest)
        return Tracker()
    resolved = {
        **dict(OmegaConf.to_container(cfg, resolve=True)),  # type: ignore[arg-type]
        "experiment_hash": digest,
        "hydra_overrides": list(HydraConfig.get().overrides.task),
    }
    identity = RunIdentity.of(config.logger.run_name, digest, run_fields(config))
    return make_tracker(config.logger, run_dir=output_dir, identity=identity, config=resolved)


def stage_rows(store: Store, digest: str) -> list[dict]:
    """The stored evaluation rows of a stage: a training stage has them, init and prune stages have none."""
    stage = store.get(f"train/{digest}")
    return stage.metrics() if stage is not None else []


def log_record(tracker: Tracker, record: dict, store: Store, *, reused: bool) -> None:
    """What the run shows beyond the live curves: the curves of the stages reused from the store (all of them when
    the whole record was: ``reused``), the record as the summary (what `analysis.report --source wandb` reads), the
    achieved-sparsity tag, tables (stages, lottery levels / pruning rounds, per-layer density) and the final stage's
    model files as a `model` artifact. The store then notes where the run is, so a re-run opens none."""
    for name, digest in record["stage_hashes"].items():
        if reused or record["stages_reused"].get(name):
            tracker.log_stage(name, stage_rows(store, digest), reused=True)
    tracker.summary(record)
    tracker.add_tags(achieved_tag(record))
    # table names never collide with record fields: a table logged under `levels` would replace the summary's levels
    tracker.table(
        "stages_table",
        ["stage", "hash", "reused", "wall_time_s"],
        [
            [name, digest, reused or record["stages_reused"].get(name), record["wall_time_s"].get(name)]
            for name, digest in record["stage_hashes"].items()
        ],
    )
    for key in ("levels", "rounds"):
        if record.get(key):
            tracker.table(f"{key}_table", *table_of(record[key]))
    tracker.table(
        "per_layer_density_table",
        ["tensor", "density"],
        [[k, v] for k, v in (record.get("per_layer_density") or {}).items()],
    )
    final = store.at(record["final_stage"])
    metadata = {
        k: record.get(k)
        for k in (
            "experiment",
            "label",
            "model",
            "dataset",
            "seed",
            "target_sparsity",
            "density",
            "test_acc",
            "final_stage",
        )
    }
    tracker.artifact(
        artifact_name(record["label"], record["model"], record["dataset"]),
        final.model_files(),
        alias=final.hash,
        metadata=metadata,
    )
    where = tracker.where()
    if where is not None:
        store.at(f"experiment/{where['id']}").note_mirror(where)


def stop(message: str, output_dir: Path, sweeping: bool, *, code: int = 2, record: Optional[dict] = None) -> None:
    """One line on stderr; a single run exits with ``code``, a sweep job leaves its failed record and returns."""
    print(f"error: {message}", file=sys.stderr)
    with contextlib.suppress(OSError):  # the job folder may sit on the same full disk; the line above said it
        atomic_write_json(output_dir / "result.json", record or {"status": "failed", "error": message})
    if not sweeping:
        sys.exit(code)


def job(cfg: DictConfig) -> dict | None:
    hydra_cfg = HydraConfig.get()
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    output_dir = Path(hydra_cfg.runtime.output_dir)

    try:
        config = validate(cfg)
        check_results_folder(config.paths.results)
    except UserError as err:
        stop(str(err), output_dir, sweeping)
        return None
    configure_process(config)
    store = Store(config.paths.results)
    with open_tracker(config, store, cfg, output_dir) as tracker:
        try:
            reused = recorded(config, store) is not None
            record = run_experiment(config, store, tracker)
        except UserError as err:
            tracker.discard()
            stop(str(err), output_dir, sweeping)
            return None
        except Diverged as err:  # a result, not a crash: recorded as failed with the reason; the sweep goes on
            failed = record_failure(config, store, err)
            tracker.summary(failed)
            tracker.close(exit_code=1)
            stop(
                f"{err}; recorded as failed; lower the learning rate (train.lr, method.recovery.lr_scale)",
                output_dir,
                sweeping,
                code=1,
                record=failed,
            )
            return None
        except Exception as err:  # recorded as failed; in a sweep the next job runs
            no_room = storage_error(err, config.paths.results)
            if no_room is not None:
                stop(str(no_room), output_dir, sweeping)
                return None
            record = record_failure(config, store, err)
            atomic_write_json(output_dir / "result.json", record)
            tracker.summary(record)
            tracker.close(exit_code=1)
            log.exception("experiment failed")
            if not sweeping:
                raise
            return record
        log_record(tracker, record, store, reused=reused)
    atomic_write_json(output_dir / "result.json", record)
    print(
        f"\n{record['label']} on {record['model']}/{record['dataset']}: test_acc={record['test_acc']:.4f}\n"
        f"{summarize(record)}\n  record: {output_dir / 'result.json'}"
    )
    return record


# An absolute path: the console script imports this module by name, where "../conf" would be read as a package.
@hydra.main(version_base="1.3", config_path=str(CONF), config_name="config")
def main(cfg: DictConfig) -> float | None:
    record = job(cfg)
    return None if record is None else record.get("test_acc")


# Hydra's own modes whose arguments are not overrides (``-sc query=bash`` asks for completions of ``bash``).
_NOT_OVERRIDES = {"-sc", "--shell-completion"}


def cli() -> None:
    register_schemas()
    if _NOT_OVERRIDES & set(sys.argv[1:]):
        main()
        return
    try:
        check_group_choices(sys.argv[1:])
        check_top_level_keys(sys.argv[1:])
        check_override_types(sys.argv[1:])
        sys.argv[1:] = spread_method_fields(sys.argv[1:])
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    main()


if __name__ == "__main__":
    cli()
