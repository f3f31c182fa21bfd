"""Hydra entry point: ``python -m runners.train [overrides]`` (add ``-m`` for a sweep).

Bad input stops before any work with one line and exit code 2. In a sweep, a failed job is recorded as failed in
the store and the sweep goes on.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from runners.config import RunConfig, register_schemas, validate
from foundations.errors import UserError
from runners.experiment import record_failure, run_experiment
from foundations.files import atomic_write_json
from runners.store import Store
from runners.tracking import make_tracker

CONF = Path(__file__).resolve().parent.parent / "conf"
GROUPS = ("model", "dataset", "method", "train", "logger", "experiment")
log = logging.getLogger("prunelab")
GRAMMAR = "()[]{}$*"  # Hydra's sweep functions, lists, dicts, interpolations, globs: values left to Hydra as written


def is_plain_value(value: str, *, commas: bool = False) -> bool:
    """A literal override value (``commas``: a comma list counts as plain, e.g. the choices of a group sweep)."""
    return not any(c in value for c in GRAMMAR + ("" if commas else ","))


def check_group_choices(argv: list[str]) -> None:
    """Hydra's own message for ``model=nosuch`` spans a screen; say it in one line instead."""
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if not sep or key not in GROUPS or not is_plain_value(value, commas=True):
            continue
        for choice in value.split(","):
            if choice and not (CONF / key / f"{choice}.yaml").exists():
                options = ", ".join(sorted(p.stem for p in (CONF / key).glob("*.yaml")))
                raise UserError(f"{key}={choice}: no such option; choose one of {options}")


def check_override_types(argv: list[str]) -> None:
    """Type-check ``group.field=value`` overrides against the schemas before Hydra does it in a screenful."""
    from methods import get_method
    from runners.config import _schemas, typed

    schemas = _schemas()
    method = next((a.split("=", 1)[1] for a in argv if a.startswith("method=")), "dense")
    if "," not in method:
        schemas["method"] = get_method(method).Config
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        group, _, rest = key.partition(".")
        if not sep or not rest or group not in schemas or not is_plain_value(value):
            continue
        typed(schemas[group], OmegaConf.from_dotlist([f"{rest}={value}"]), group)


def spread_method_fields(argv: list[str]) -> list[str]:
    """``-m method=a,b method.field=v``: Hydra composes the sweep's own config with the default method (dense) and
    refuses ``method.field`` there. Every swept method must have the field (else one line says which lacks it); the
    override then becomes the one-value sweep ``choice(v)``, which Hydra applies per job only."""
    from dataclasses import fields

    from methods import get_method

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
                raise UserError(f"{key}: {', '.join(lacking)} has no field {field!r}; sweep methods that share it, "
                                f"or give each method its own settings in an experiment config (conf/experiment/arm/)")
            arg = f"{key}=choice({value})"
        out.append(arg)
    return out


def configure_process(run: RunConfig) -> None:
    launcher = str(OmegaConf.select(HydraConfig.get(), "launcher._target_", default=""))
    if "joblib" in launcher.lower():
        # Parallel jobs on a few cores: one torch thread each, and no DataLoader worker processes inside workers.
        run.threads = run.threads or 1
        run.dataset.num_workers = 0
        run.progress = False
    configure_torch(run.threads, run.device)


def configure_torch(threads: int | None, device: str) -> None:
    """Threads and determinism of this process (the benchmarks call it too, to measure what jobs run)."""
    if threads:
        torch.set_num_threads(threads)
    if device in ("cpu", "auto") and not torch.cuda.is_available():
        torch.use_deterministic_algorithms(True)
        # Deterministic mode also fills every new tensor with NaN, a guard against kernels that read memory they
        # never wrote; ours do not (results are bitwise identical without it) and the fill costs 6-11 % per step.
        torch.utils.deterministic.fill_uninitialized_memory = False


def summarize(record: dict) -> str:
    keys = ["method", "label", "model", "dataset", "seed", "target_sparsity", "density", "compression",
            "speedup_theoretical", "dense_test_acc", "test_acc_before_recovery", "val_acc", "test_acc"]
    lines = [f"  {k:<26} {record.get(k)}" for k in keys if k in record]
    walls = record.get("wall_time_s") or {}
    lines.append("  wall time (s)              " + ", ".join(f"{k}={v:.1f}" for k, v in walls.items()))
    if record.get("latency_ms"):
        lines.append(f"  latency_ms                 {record['latency_ms']}")
    return "\n".join(lines)


def run_job(cfg: DictConfig) -> dict | None:
    hydra_cfg = HydraConfig.get()
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    output_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        run = validate(cfg)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        if sweeping:
            atomic_write_json(output_dir / "result.json", {"status": "failed", "error": str(err)})
            return None
        sys.exit(2)
    configure_process(run)
    store = Store(run.paths.results)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    tracker = make_tracker(run.logger, run_dir=output_dir, group=run.experiment, job_type=run.method.name,
                           tags=[run.method.name, run.model.name, run.dataset.name], config=resolved)
    with tracker:
        try:
            record = run_experiment(run, store, tracker)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            if sweeping:
                atomic_write_json(output_dir / "result.json", {"status": "failed", "error": str(err)})
                return None
            sys.exit(2)
        except Exception as err:  # noqa: BLE001 - recorded as failed; in a sweep the next job runs
            record = record_failure(run, store, err)
            atomic_write_json(output_dir / "result.json", record)
            log.exception("experiment failed")
            if not sweeping:
                raise
            return record
        tracker.summary(record)  # the whole record: `analysis.report --source wandb` rebuilds the table from it
        tracker.table("per_layer_density_table", ["tensor", "density"],
                      [[k, v] for k, v in (record.get("per_layer_density") or {}).items()])
    atomic_write_json(output_dir / "result.json", record)
    print(f"\n{record['label']} on {record['model']}/{record['dataset']}: test_acc={record['test_acc']:.4f}\n"
          f"{summarize(record)}\n  record: {output_dir / 'result.json'}")
    return record


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    record = run_job(cfg)
    return None if record is None else record.get("test_acc")


def cli() -> None:
    register_schemas()
    try:
        check_group_choices(sys.argv[1:])
        check_override_types(sys.argv[1:])
        sys.argv[1:] = spread_method_fields(sys.argv[1:])
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    main()


if __name__ == "__main__":
    cli()
