"""Hydra entry point: ``python -m runners.train [overrides]`` (add ``-m`` for a sweep).

Bad input stops before any work with one line and exit code 2 (a full disk too: what is finished stays in the
store, a re-run resumes). A diverged training run is recorded as failed and exits 1 with one line. In a sweep, a
failed job is recorded as failed and the sweep goes on.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Optional, cast

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from foundations.errors import UserError
from foundations.files import atomic_write_json
from foundations.record import ExperimentRecord
from foundations.store import EXPERIMENT, STORE_KEY, Store
from foundations.training import Diverged
from methods import get_method
from models import display_name
from runners.config import CONF, ExperimentConfig, check_results_folder, register_schemas, validate
from runners.experiment import record_failure, recorded_stage, run_experiment
from runners.identity import Identity
from runners.jobs import check_command, composition_errors
from runners.tracking import RunIdentity, Tracker, achieved_tag, artifact_name, make_tracker, table_of

log = logging.getLogger("prunelab")


def _first_of(argv: list[str], kinds: set[str]) -> None:
    error = next((e for e in composition_errors(argv) if e.kind in kinds), None)
    if error is not None:
        raise error


def check_group_choices(argv: list[str]) -> None:
    """An option of a config group that does not exist (``model=lenet55``): one line with the nearest."""
    _first_of(argv, {"choice"})


def check_top_level_keys(argv: list[str]) -> None:
    """A key nobody has (``modle=lenet5``, ``train.epoch=3``): one line with the nearest that exists there."""
    _first_of(argv, {"key"})


def check_override_types(argv: list[str]) -> None:
    """A value of the wrong type for the option the command really composes (``model=vgg model.depth=eleven``)."""
    _first_of(argv, {"key", "value"})


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


def open_tracker(
    config: ExperimentConfig, store: Store, cfg: DictConfig, output_dir: Path, identity: Identity
) -> Tracker:
    """The experiment's W&B run, with the experiment hash as its id; none when the store already holds the record
    and notes it as logged to this W&B project (a second run of the same record would count as another seed)."""
    digest = identity.hash
    existing = recorded_stage(config, store, identity)
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
    run = RunIdentity.of(config.logger.run_name, digest, run_fields(config))
    return make_tracker(config.logger, run_dir=output_dir, identity=run, config=resolved)


def stage_rows(store: Store, digest: str) -> list[dict]:
    """The stored evaluation rows of a stage: a training stage has them, init and prune stages have none."""
    stage = store.get(f"train/{digest}")
    return stage.metrics() if stage is not None else []


def log_record(tracker: Tracker, stored: dict, store: Store, *, reused: bool) -> None:
    """What the run shows beyond the live curves: the curves of the stages reused from the store (all of them when
    the whole record was: ``reused``), the record as the summary (what `analysis.report --source wandb` reads), the
    achieved-sparsity tag, tables (stages, the method's row outputs such as lottery levels or pruning rounds,
    per-layer density) and the final stage's model files as a `model` artifact. The store then notes where the run
    is, so a re-run opens none."""
    record = ExperimentRecord.from_dict(stored)
    for name, digest in record.stage_hashes.items():
        if reused or record.stages_reused.get(name):
            tracker.log_stage(name, stage_rows(store, digest), reused=True)
    tracker.summary(stored)
    tracker.add_tags(achieved_tag(stored))
    # table names never collide with record fields: a table logged under `outputs` would replace the summary's
    tracker.table(
        "stages_table",
        ["stage", "hash", "reused", "wall_time_s"],
        [
            [name, digest, reused or record.stages_reused.get(name), record.wall_time_s.get(name)]
            for name, digest in record.stage_hashes.items()
        ],
    )
    for key, rows in record.outputs.items():  # an output that is a list of rows (levels, rounds) is a table too
        if isinstance(rows, list) and rows and all(isinstance(row, dict) for row in rows):
            tracker.table(f"{key}_table", *table_of(rows))
    tracker.table(
        "per_layer_density_table",
        ["tensor", "density"],
        [[k, v] for k, v in record.per_layer_density.items()],
    )
    final = store.at(record.final_ref())
    metadata = {
        "experiment": record.experiment,
        "label": record.label,
        "model": record.model,
        "dataset": record.dataset,
        "seed": record.seed,
        "target_sparsity": record.target_sparsity,
        "density": record.density,
        "test_acc": record.test_acc,
        "final_stage": record.final_stage,
    }
    tracker.artifact(
        artifact_name(record.label, record.model, record.dataset),
        final.model_files(),
        alias=final.hash,
        metadata=metadata,
    )
    where = tracker.where()
    if where is not None:
        store.at(f"{EXPERIMENT}/{where['id']}").note_mirror(where)


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
        identity = Identity.of(config)  # reads a folder dataset's tree (its content digest): its errors too
    except UserError as err:
        stop(str(err), output_dir, sweeping)
        return None
    configure_process(config)
    store = Store(config.paths.results)
    with open_tracker(config, store, cfg, output_dir, identity) as tracker:
        try:
            existing = recorded_stage(config, store, identity)
            record = run_experiment(config, store, tracker, identity)
            # not when its lost final stage was remade
            reused = existing is not None and record == existing.result_json
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
            atomic_write_json(output_dir / "result.json", run_folder_copy(record, store))
            tracker.summary(record)
            tracker.close(exit_code=1)
            log.exception("experiment failed")
            if not sweeping:
                raise
            return record
        log_record(tracker, record, store, reused=reused)
    atomic_write_json(output_dir / "result.json", run_folder_copy(record, store))
    done = ExperimentRecord.from_dict(record)
    final = store.get(done.final_ref())
    curves = f"\n  metrics: {final.metrics_file}" if final is not None and final.metrics_file is not None else ""
    print(
        f"\n{done.label} on {done.model}/{done.dataset}: test_acc={done.test_acc:.4f}\n"
        f"{summarize(record)}\n  record: {output_dir / 'result.json'}\n  store:  {store.root.resolve()}{curves}"
    )
    return record


def run_folder_copy(record: dict, store: Store) -> dict:
    """The record as the job's folder keeps it: naming its store (``store``, absolute), so that prunelab-export and
    prunelab-report given this file find the stages whatever ``paths.results`` was."""
    return {**record, STORE_KEY: str(store.root.resolve())}


# An absolute path: the console script imports this module by name, where "../conf" would be read as a package.
@hydra.main(version_base="1.3", config_path=str(CONF), config_name="config")
def main(cfg: DictConfig) -> float | None:
    record = job(cfg)
    return None if record is None else record.get("test_acc")


def cli() -> None:
    register_schemas()
    try:
        # every job composed and validated before the first starts; argv as @hydra.main must get it (runners/jobs.py)
        sys.argv[1:] = check_command(sys.argv[1:])
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    main()


if __name__ == "__main__":
    cli()
