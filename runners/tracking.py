"""Weights & Biases mirror of the local store. The store is the source of truth: any W&B error is logged once and
W&B is switched off for the rest of the run, never failing the experiment."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from foundations.wandb_mode import effective_mode

if TYPE_CHECKING:
    from wandb import Run

log = logging.getLogger(__name__)


class Tracker:
    """The no-op tracker (``logger=none``): W&B is not even imported."""

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def log(self, metrics: dict, step: Optional[int] = None) -> None:
        pass

    def summary(self, record: dict) -> None:
        pass

    def table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        pass

    def close(self) -> None:
        pass



class WandbTracker(Tracker):
    def __init__(self, *, project: str, entity: Optional[str], mode: str, run_dir: Path, group: str, job_type: str,
                 tags: list[str], config: dict, name: Optional[str] = None):
        self.run: Optional[Run] = None
        mode = effective_mode(mode)
        try:
            import wandb

            run_dir.mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(project=project, entity=entity, mode=mode, dir=str(run_dir), group=group,
                                  job_type=job_type, tags=tags, config=config, name=name, reinit="finish_previous",
                                  settings=wandb.Settings(silent=True, console="off"))
        except Exception as err:
            self._disable(err)

    def _disable(self, err: BaseException) -> None:
        log.warning("W&B disabled for this run (%s: %s); results are in the local store", type(err).__name__, err)
        self.run = None

    def _call(self, fn: Callable[[Run], object]) -> None:
        if self.run is None:
            return
        try:
            fn(self.run)
        except Exception as err:
            self._disable(err)

    def log(self, metrics: dict, step: Optional[int] = None) -> None:
        self._call(lambda run: run.log(metrics, step=step))

    def summary(self, record: dict) -> None:
        self._call(lambda run: run.summary.update(record))

    def table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        def log_table(run: Run) -> None:
            import wandb

            header: list[str | int] = list(columns)  # wandb's list is invariant; our names are str
            run.log({name: wandb.Table(columns=header, data=rows)})

        self._call(log_table)

    def close(self) -> None:
        run, self.run = self.run, None
        if run is not None:
            try:
                run.finish()
            except Exception as err:
                log.warning("W&B finish failed (%s); results are in the local store", err)


def make_tracker(logger_cfg, *, run_dir: Path, group: str, job_type: str, tags: list[str], config: dict) -> Tracker:
    if logger_cfg.name == "none" or logger_cfg.mode == "disabled":
        return Tracker()
    return WandbTracker(project=logger_cfg.project, entity=logger_cfg.entity, mode=logger_cfg.mode, run_dir=run_dir,
                        group=group, job_type=job_type, tags=tags, config=config)
