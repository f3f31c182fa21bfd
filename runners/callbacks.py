"""Hydra callbacks (``hydra.callbacks`` in conf/config.yaml): a progress line after each job of a sweep, and the
report of the sweep, regenerated when it ends.

``ReportOnMultirunEnd.on_multirun_end`` reads every experiment record of the sweep's name (config key ``name``,
record field ``experiment``) from the store (``paths.results``), writes tables and figures with
:func:`analysis.report.generate_report` into ``<paths.results>/report/<experiment>/`` and prints a one-screen
summary: jobs ok / failed (from the job folders of this sweep), the budget rule of a survey (``survey.budget``) in
one line, the compact accuracy table (by the report's rules: one row per setting of a method, seeds counted once
each, "one seed: no error bars" where so, one row for one training under two labels) with each row's epochs and
integrated LR from initialization and its measured speed-up at its highest sparsity (the throughput batch, the
largest the records timed: 256 by default; the sparse kernel or the compacted network, named; "—" where not timed),
where the files are. It
never raises: the sweep's results are in the store whatever happens to the report, and
``python -m analysis.report --experiment <name>`` redoes it. Single runs (no ``-m``) never call it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from runners.jobs import sweep_jobs

log = logging.getLogger("prunelab.sweep")
SWEEP_SIZE = ".sweep_size"  # in the sweep folder: the number of jobs, written at the start (its mtime = the start)


def _select(config: DictConfig, key: str) -> Optional[str]:
    """A value of the sweep config, resolved; None when it cannot be (e.g. HydraConfig not set in this process)."""
    try:
        value = OmegaConf.select(config, key, throw_on_missing=False)
        return None if value is None else str(value)
    except Exception:
        return None


def results_root(config: DictConfig) -> Path:
    root = _select(config, "paths.results")
    if root is None:  # `${hydra:runtime.cwd}/results` outside a job: make HydraConfig resolvable and retry
        try:
            from hydra.core.hydra_config import HydraConfig

            HydraConfig.instance().set_config(config)
            root = _select(config, "paths.results")
        except Exception:
            root = None
    return Path(root) if root is not None else Path(os.getcwd()) / "results"


def job_outcomes(sweep_dir: Optional[Path]) -> dict[str, list[str]]:
    """Status of each job of this sweep from its ``<sweep dir>/<job>/result.json`` (written by runners.train even
    when the job fails); a job folder without one crashed outside the entry point (or is still running)."""
    outcome: dict[str, list[str]] = {"ok": [], "failed": [], "no record": []}
    if sweep_dir is None or not sweep_dir.is_dir():
        return outcome
    for job in sorted(
        (p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir()), key=lambda p: (len(p.name), p.name)
    ):
        record = job / "result.json"
        if not record.exists():
            outcome["no record"].append(job.name)
            continue
        try:
            status = json.loads(record.read_text()).get("status")
        except (OSError, ValueError):
            status = None
        outcome["ok" if status == "ok" else "failed"].append(job.name)
    return outcome


def budget_rule_line(rule: Optional[str]) -> Optional[str]:
    """The sweep's budget rule (``survey.budget``, ``runners.config.BUDGET_RULES``) in one line; None for a sweep
    without one."""
    if rule == "matched":
        return (
            "budget rule: matched — every arm trains survey.dense_epochs + survey.recovery_epochs from initialization "
            "(magnitude/obd: dense, then LR rewinding, Renda et al. 2020; at-init arms and Scratch-E: that many "
            "epochs; Scratch-B: by multiply-adds); the lottery's levels (and ThiNet's per-layer fine-tunes, not "
            "counted in its budget) spend more by design. Each row's epochs · Σlr are below."
        )
    if rule == "paper":
        return (
            "budget rule: paper — each paper's own schedule (at-init arms: the dense epochs; magnitude/obd: Han's "
            "fine-tune at LR × lr_scale); the arms' budgets differ: compare their epochs · Σlr below."
        )
    return None


def sweep_report(experiment: str, results: Path, sweep_dir: Optional[Path] = None, rule: Optional[str] = None) -> str:
    """Generate the report of one experiment name and return the one-screen summary text (raises on failure);
    ``rule``: the sweep's budget rule, said in one line."""
    from analysis.records import filter_experiments, load_local, split_usable
    from analysis.report import compact_summary, failed_lines, generate_report
    from analysis.tables import prepare

    for chatty in ("fontTools", "matplotlib"):  # Hydra's root logger is at INFO: PDF font subsetting floods it
        logging.getLogger(chatty).setLevel(logging.WARNING)
    outcome = job_outcomes(sweep_dir)
    lines = [f"== sweep '{experiment}' finished =="]
    if sweep_dir is not None:
        counts = ", ".join(f"{len(v)} {k}" for k, v in outcome.items() if v or k != "no record")
        lines.append(f"jobs: {counts}   (job folders: {sweep_dir})")
        for job in outcome["failed"]:
            try:
                error = json.loads((sweep_dir / job / "result.json").read_text()).get("error")
            except (OSError, ValueError):
                error = None
            lines.append(f"  failed job {job}: {str(error or '?').splitlines()[0][:160]}")
    df = filter_experiments(load_local(results), [experiment])
    if df.empty:
        lines.append(f"no experiment records named {experiment!r} in {results / 'runs' / 'experiment'}: no report")
        return "\n".join(lines)
    out_dir = results / "report" / experiment
    outputs = generate_report(df, out_dir)
    usable, excluded = split_usable(df)
    said = budget_rule_line(rule)
    lines += ["", *([said] if said else []), compact_summary(prepare(usable)), ""]
    lines.append(f"records of '{experiment}' in the store: {len(usable)} ok, {len(excluded)} failed")
    lines += [f"  {line}" for line in failed_lines(excluded)[:10]] if len(excluded) else []
    tables = sorted({str(p.parent) for p in outputs.get("tables", [])})
    figures = sorted({str(p.parent) for p in outputs.get("figures", [])})
    lines.append(f"report:  {out_dir / 'summary.md'}")
    lines.append(f"tables:  {', '.join(tables) or '(none)'}  ({len(outputs.get('tables', []))} files: md/tex/csv)")
    lines.append(f"figures: {', '.join(figures) or '(none)'}  ({len(outputs.get('figures', []))} files: png/pdf)")
    return "\n".join(lines)


def sweep_dir_of(config: DictConfig) -> Optional[Path]:
    sweep = _select(config, "hydra.sweep.dir")
    if not sweep:
        return None
    path = Path(sweep)
    return path if path.is_absolute() else Path(_select(config, "hydra.runtime.cwd") or os.getcwd()) / path


def sweep_size(config: DictConfig) -> Optional[int]:
    """How many jobs the basic sweeper makes of this sweep (its own expansion of the config's and the command line's
    sweep overrides), or None when it cannot tell."""
    try:
        params = [f"{k}={v}" for k, v in (OmegaConf.select(config, "hydra.sweeper.params") or {}).items()]
        return len(sweep_jobs(params, list(config.hydra.overrides.task)))
    except Exception:
        return None


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def progress_line(sweep_dir: Path) -> str:
    """``sweep: 13/60 jobs done (12 ok, 1 failed), 4m10s, ~15m left`` from the job folders, so that it is right
    whichever process runs the job (basic, joblib, SLURM)."""
    outcome = job_outcomes(sweep_dir)
    ok, failed = len(outcome["ok"]), len(outcome["failed"])
    done = ok + failed
    marker = sweep_dir / SWEEP_SIZE
    total = int(marker.read_text()) if marker.exists() else None
    elapsed = time.time() - marker.stat().st_mtime if marker.exists() else None
    line = f"sweep: {done}/{total if total else '?'} jobs done ({ok} ok, {failed} failed)"
    if elapsed is not None:
        line += f", {_duration(elapsed)}"
        if total and 0 < done < total:
            line += f", ~{_duration(elapsed / done * (total - done))} left"
    return line


class SweepProgress(Callback):
    """One line after every job of a sweep: jobs done of the total, ok / failed, elapsed and estimated time left."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir, size = sweep_dir_of(config), sweep_size(config)
        if sweep_dir is not None and size:
            sweep_dir.mkdir(parents=True, exist_ok=True)
            (sweep_dir / SWEEP_SIZE).write_text(str(size))

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if not str(_select(config, "hydra.mode")).endswith("MULTIRUN"):  # RunMode.MULTIRUN
            return
        sweep_dir = sweep_dir_of(config)
        if sweep_dir is not None:
            print(progress_line(sweep_dir), flush=True)


class ReportOnMultirunEnd(Callback):
    """Runs the report for the sweep just finished; a report failure is logged, never raised."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled:
            return
        try:
            experiment = _select(config, "name") or "default"
            text = sweep_report(
                experiment, results_root(config), sweep_dir_of(config), _select(config, "survey.budget")
            )
            print("\n" + text, flush=True)
        except Exception:
            log.exception(
                "the sweep finished but its report failed; redo it with `python -m analysis.report --experiment <name>`"
            )
