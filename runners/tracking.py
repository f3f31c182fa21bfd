"""Weights & Biases mirror of the local store. The store is the source of truth: any W&B error is logged once and
W&B is switched off for the rest of the run, never failing the experiment.

One experiment is one W&B run, whose id is the experiment's store hash: a re-run of the same experiment never makes
a second run (``runners.train`` opens none when the store notes the experiment as already logged to this project,
and ``resume="allow"`` makes a retried failed experiment continue its own run). Each stage's curves live under
``<stage>/`` with their own x axis ``<stage>/iteration``; a stage reused from the store is logged from its stored
rows, flagged ``<stage>/reused``, so every run shows its whole history.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from foundations.errors import UserError
from foundations.store import science
from foundations.wandb_mode import effective_mode

log = logging.getLogger(__name__)

# The fields ``logger.run_name`` may use.
NAME_FIELDS = ("label", "method", "kind", "model", "dataset", "experiment", "sparsity", "seed")


def sparsity_bucket(sparsity: float) -> str:
    """Sparsity to two decimals: 0.8987 achieved of a 0.9 target is the same tag, 0.95 and 0.98 are not."""
    return f"{sparsity:.2f}"


@dataclass(frozen=True)
class RunIdentity:
    """How an experiment appears in W&B. ``fields`` holds the ``NAME_FIELDS`` values (from the run config)."""

    id: str  # the experiment hash
    name: str
    group: str  # the experiment (sweep) name
    job_type: str  # the method
    tags: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, name_format: str, experiment_hash: str, fields: Mapping[str, Any]) -> RunIdentity:
        return cls(
            id=experiment_hash,
            name=run_name(name_format, fields),
            group=str(fields["experiment"]),
            job_type=str(fields["method"]),
            tags=run_tags(fields),
        )


def run_name(name_format: str, fields: Mapping[str, Any]) -> str:
    try:
        return name_format.format(**{k: fields[k] for k in NAME_FIELDS})
    except (KeyError, IndexError, ValueError) as err:
        raise UserError(
            f"logger.run_name: {name_format!r} cannot be formatted ({type(err).__name__}: {err}); "
            f"use the fields {', '.join('{' + f + '}' for f in NAME_FIELDS)}"
        ) from None


def run_tags(fields: Mapping[str, Any]) -> list[str]:
    tags = [
        str(fields["method"]),
        f"kind:{fields['kind']}",
        f"model:{fields['model']}",
        f"dataset:{fields['dataset']}",
        f"target:{sparsity_bucket(fields['sparsity'])}",
        f"seed:{fields['seed']}",
    ]
    if fields["label"] != fields["method"]:
        tags.insert(1, str(fields["label"]))
    return tags


def achieved_tag(record: Mapping[str, Any]) -> list[str]:
    """The achieved weight sparsity of a finished record (``1 - density``), as a tag; none for a failed one."""
    density = record.get("density")
    return [f"achieved:{sparsity_bucket(1 - density)}"] if isinstance(density, (int, float)) else []


def table_of(rows: list[Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Record rows (lottery levels, pruning rounds) as table columns and cells; nested values as JSON text."""
    columns = list(dict.fromkeys(k for row in rows for k in row))

    def cell(value: Any) -> Any:
        return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value

    return columns, [[cell(row.get(c)) for c in columns] for row in rows]


def artifact_name(*parts: str) -> str:
    """W&B artifact names allow letters, digits, ``-``, ``_`` and ``.``: ``scratch-B (slimming)`` → ``scratch-B_slimming``."""
    return "-".join(re.sub(r"[^A-Za-z0-9._-]+", "_", str(p)).strip("_") for p in parts)


class Tracker:
    """The no-op tracker (``logger=none``, or an experiment already recorded): W&B is not even imported."""

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def log_stage(self, stage: str, rows: Iterable[Mapping[str, Any]], *, reused: bool = False) -> None:
        """Evaluation rows of one stage (``metrics.jsonl`` rows: ``iteration``, ``val_acc``...) under ``<stage>/``,
        plotted against ``<stage>/iteration``; ``reused``: rows read back from the store, flagged ``<stage>/reused``."""

    def summary(self, record: dict) -> None:
        pass

    def add_tags(self, tags: list[str]) -> None:
        pass

    def table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        pass

    def artifact(self, name: str, files: list[Path], *, alias: str, metadata: Optional[dict] = None) -> None:
        """The files of one stage as a ``model`` artifact whose alias is the stage hash."""

    def where(self) -> Optional[dict]:
        """``{"project", "entity", "id"}`` of the W&B run this tracker logs to, while it does; else None."""
        return None

    def close(self, exit_code: int = 0) -> None:
        pass

    def discard(self) -> None:
        """Bad input stopped the job before any work: leave no run behind."""


class WandbTracker(Tracker):
    def __init__(
        self,
        *,
        project: str,
        entity: Optional[str],
        mode: str,
        run_dir: Path,
        identity: RunIdentity,
        config: dict,
        reference_artifacts: bool = True,
        artifacts: bool = True,
    ):
        self.wandb_run: Any = None  # a wandb Run; W&B is imported only here, so it is not typed
        self._where = {"project": project, "entity": entity, "id": identity.id}
        self.reference_artifacts = reference_artifacts
        self.artifacts = artifacts
        self._stages: set[str] = set()
        mode = effective_mode(mode)
        try:
            import wandb

            run_dir.mkdir(parents=True, exist_ok=True)
            # resume="allow": the same experiment (a failed one retried) continues its run instead of adding one.
            init: dict[str, Any] = dict(
                project=project,
                entity=entity,
                mode=mode,
                dir=str(run_dir),
                id=identity.id,
                resume="allow",
                name=identity.name,
                group=identity.group,
                job_type=identity.job_type,
                tags=identity.tags,
                config=config,
                reinit="finish_previous",
            )
            self.wandb_run = wandb.init(**init, settings=wandb.Settings(silent=True, console="off"))
        except Exception as err:  # any W&B failure must leave the experiment running
            self._disable(err)

    def _disable(self, err: BaseException) -> None:
        log.warning("W&B disabled for this run (%s: %s); results are in the local store", type(err).__name__, err)
        self.wandb_run = None

    def _call(self, fn, *args, **kwargs) -> None:
        if self.wandb_run is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as err:
            self._disable(err)

    def log_stage(self, stage: str, rows: Iterable[Mapping[str, Any]], *, reused: bool = False) -> None:
        rows = list(rows)
        if not rows:  # init and prune stages have no curves
            return

        def log_rows():
            run = self.wandb_run
            if stage not in self._stages:
                self._stages.add(stage)
                run.define_metric(f"{stage}/iteration", hidden=True)
                run.define_metric(f"{stage}/*", step_metric=f"{stage}/iteration")
                run.define_metric(f"{stage}/reused", step_metric=f"{stage}/iteration", hidden=True)
            for row in rows:
                run.log({**{f"{stage}/{k}": v for k, v in row.items()}, f"{stage}/reused": int(reused)})

        self._call(log_rows)

    def summary(self, record: dict) -> None:
        self._call(lambda: self.wandb_run.summary.update(science(record)))

    def add_tags(self, tags: list[str]) -> None:
        def update():
            self.wandb_run.tags = tuple(dict.fromkeys([*self.wandb_run.tags, *tags]))

        self._call(update)

    def table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        def log_table():
            import wandb

            header: list[Any] = list(columns)
            self.wandb_run.log({name: wandb.Table(columns=header, data=rows)})

        self._call(log_table)

    def artifact(self, name: str, files: list[Path], *, alias: str, metadata: Optional[dict] = None) -> None:
        if not self.artifacts:
            return

        def log_artifact():
            import wandb

            art = wandb.Artifact(name, type="model", metadata=metadata or {})
            for path in files:
                # A reference records the store file's checksum and path: the store is kept (and may be shared by
                # a cluster's jobs), so copying every model into W&B's staging folder would only double the disk.
                if self.reference_artifacts:
                    art.add_reference(f"file://{path.resolve()}", name=path.name)
                else:
                    art.add_file(str(path), name=path.name)
            self.wandb_run.log_artifact(art, aliases=[alias])

        self._call(log_artifact)

    def where(self) -> Optional[dict]:
        return dict(self._where) if self.wandb_run is not None else None

    def close(self, exit_code: int = 0) -> None:
        run, self.wandb_run = self.wandb_run, None
        if run is not None:
            try:
                run.finish(exit_code=exit_code)
            except Exception as err:
                log.warning("W&B finish failed (%s); results are in the local store", err)

    def discard(self) -> None:
        run = self.wandb_run
        offline = run is not None and run.offline
        folder = Path(run.dir).parent if offline else None  # <dir>/wandb/offline-run-*/files
        self.close(exit_code=2)
        if folder is not None and folder.name.startswith("offline-run-"):
            shutil.rmtree(folder, ignore_errors=True)


def make_tracker(logger_cfg, *, run_dir: Path, identity: RunIdentity, config: dict) -> Tracker:
    if logger_cfg.name == "none" or logger_cfg.mode == "disabled":
        return Tracker()
    return WandbTracker(
        project=logger_cfg.project,
        entity=logger_cfg.entity,
        mode=logger_cfg.mode,
        run_dir=run_dir,
        identity=identity,
        config=config,
        artifacts=logger_cfg.artifacts,
        reference_artifacts=not logger_cfg.copy_artifacts,
    )
