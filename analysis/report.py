"""Tables and figures from the experiment records: ``python -m analysis.report``.

Reads every ``<results>/runs/experiment/*/result.json`` (or the W&B run summaries, ``--source wandb``) and writes
into ``--out`` (default ``<results>/report``)::

    summary.md                      what was made, failed runs and unreadable records, all tables inline
    runs.csv                        every record, one row each (nested fields flattened: latency_ms.pruned.256)
    tables/<dataset>_<model>_<kind>.{md,tex,csv}    method × target sparsity, per pruning kind
    tables/<dataset>_<model>_compression.{md,tex,csv}  every kind, sorted by achieved compression, with the
                                    measured speed-up at the throughput batch beside the theoretical one
    tables/<dataset>_<model>_layer_collapse.{md,tex,csv}  pruning at init: smallest layer density, collapse,
                                    critical compression (only where the records have at-init methods)
    figures/<dataset>_<model>_acc_vs_{compression,density,speedup,latency}.{png,pdf}
    figures/<dataset>_<model>_speedup_measured_vs_theoretical.{png,pdf}   per kernel, batch 1 and throughput
    figures/<dataset>_<model>_layer_collapse.{png,pdf}

Failed records (``status != "ok"``) stay in ``runs.csv`` but are left out of tables and figures and listed.
Reused by the Hydra multirun callback through :func:`generate_report`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Optional

import pandas as pd
from tabulate import tabulate

from analysis.collapse import collapse_tables
from analysis.figures import build_figures, style_map
from analysis.records import ATTR_SOURCE, ATTR_UNREADABLE, filter_experiments, load_local, load_wandb, split_usable
from analysis.settings import ROW, notes
from analysis.speed import BATCH, machine
from analysis.tables import (
    BUDGET_HEADER,
    BUDGET_NOTE,
    Table,
    budget_text,
    build_tables,
    by_seed,
    dense_baselines,
    dense_budget,
    fmt_pct,
    fmt_sparsity,
    measured_speedup,
    prepare,
    seed_note,
    speedup_text,
    stat,
    throughput_batch,
    to_latex,
    to_markdown,
)
from foundations.errors import UserError
from foundations.files import atomic_write_text
from foundations.store import store_of
from foundations.wandb_mode import effective_mode

__all__ = ["load_local", "load_wandb", "generate_report", "main", "filter_experiments", "log_to_wandb"]

log = logging.getLogger("analysis.report")
FIGURE_NOTE = (
    "mean ± 1 sample std over the seeds (one value per seed), or, where every point has one seed, "
    '"one seed: no error bars". Dashed grey lines: the dense baselines.'
)
MANIFEST = ".report-manifest.json"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path


def _fmt_seed(seed: Any) -> str:
    try:
        f = float(seed)
    except (TypeError, ValueError):
        return "?" if seed is None else str(seed)
    return "?" if math.isnan(f) else str(int(f)) if f.is_integer() else str(seed)


def _fmt_opt_sparsity(s: Any) -> str:
    try:
        f = float(s)
    except (TypeError, ValueError):
        return "?"
    return "?" if math.isnan(f) else fmt_sparsity(f)


def failed_lines(excluded: pd.DataFrame) -> list[str]:
    def text(value: Any) -> str:
        return value if isinstance(value, str) and value else "?"

    lines = []
    for _, row in excluded.iterrows():
        label = row["label"] if isinstance(row["label"], str) and row["label"] else text(row["method"])
        lines.append(
            f"{label} @ {_fmt_opt_sparsity(row['target_sparsity'])}, seed {_fmt_seed(row['seed'])}"
            f" ({text(row['dataset'])} / {text(row['model'])}, experiment {text(row['experiment'])}): "
            f"{row['reason']}"
        )
    return lines


def duplicate_lines(prepared: pd.DataFrame) -> list[str]:
    """Records of one cell and seed that are not one computation (different or unknown final stages: old records,
    whose grouping cannot see every setting) count as one seed, their mean; say so."""
    if prepared.empty:
        return []
    keys = ["dataset", "model", "kind", ROW, "sparsity", "seed"]
    lines = []
    for _, group in prepared.groupby(keys, sort=True, dropna=False):
        stages = set(group["final_stage"]) if "final_stage" in group.columns else {None}
        if len(group) < 2 or (len(stages) == 1 and all(isinstance(f, str) and f for f in stages)):
            continue
        row = group.iloc[0]
        experiments = ", ".join(sorted({str(e) for e in group["experiment"]}))
        lines.append(
            f"{row[ROW]} @ {fmt_sparsity(row['sparsity'])}, seed {_fmt_seed(row['seed'])} "
            f"({row['dataset']} / {row['model']}): {len(group)} records (experiments: {experiments})"
        )
    return lines


def compact_summary(prepared: pd.DataFrame) -> str:
    """One line per (dataset/model, kind, row): seeds, sparsity range, accuracy, the training budget from
    initialization (epochs · Σlr, ``analysis.tables.budget_text``) and measured speed-up (the throughput
    batch's: ``analysis.speed.headline``) at its highest sparsity; then what the numbers are (one seed: no error
    bars), where the speed was measured, and the notes of the tables (settings named, shared rows)."""
    rows = []
    counts: list[int] = []
    speed: list[dict] = []
    for (dataset, model), group in prepared.groupby(["dataset", "model"], sort=True):
        for label, dense in dense_baselines(group):
            counts.append(dense.n)
            rows.append(
                [
                    f"{dataset} / {model}",
                    "dense",
                    label,
                    str(dense.n),
                    "0%",
                    _stat_str(dense.mean, dense.std),
                    dense_budget(group, label),
                    "1.00 (dense)",
                ]
            )
        pruned = group[group["kind"] != "dense"]
        for (kind, label), cell in pruned.groupby(["kind", ROW], sort=True):
            top = cell["sparsity"].max()
            at_top = stat(by_seed(cell[cell["sparsity"] == top]).values())
            speed_cell = measured_speedup(cell[cell["sparsity"] == top])
            speed.append(speed_cell)
            counts.append(at_top.n)
            levels = sorted(cell["sparsity"].dropna().unique())
            span = (
                (
                    fmt_sparsity(levels[0])
                    if len(levels) == 1
                    else f"{fmt_sparsity(levels[0])}–{fmt_sparsity(levels[-1])} ({len(levels)})"
                )
                if levels
                else "?"
            )
            rows.append(
                [
                    f"{dataset} / {model}",
                    kind,
                    label,
                    str(at_top.n),
                    span,
                    _stat_str(at_top.mean, at_top.std) + f" @ {fmt_sparsity(top)}",
                    budget_text(cell[cell["sparsity"] == top]),
                    speedup_text(pd.Series(speed_cell)).plain(),
                ]
            )
    if not rows:
        return "(no usable records)"
    batch = throughput_batch(pd.DataFrame(speed, columns=[BATCH])) if speed else ""
    table = tabulate(
        rows,
        headers=[
            "dataset / model",
            "kind",
            "method",
            "seeds",
            "sparsities",
            "test acc % (at highest sparsity)",
            f"{BUDGET_HEADER} (from init)",
            " ".join(["speed-up ×", *([batch] if batch else []), "(kernel)"]),
        ],
        tablefmt="simple",
        disable_numparse=True,
    )
    measured = (
        f"speed-up: measured at the highest sparsity, dense ms / pruned ms at the throughput batch (the largest "
        f"timed{f': {batch[1:]}' if batch.startswith('b') else ''}), through the kernel named (csr, bsr, coo: "
        f"torch.sparse; compacted: the channel-pruned network), timed on {machine(prepared)}; —: not timed."
    )
    return "\n".join([table, "", seed_note(counts) + ".", BUDGET_NOTE, measured, *notes(prepared)])


def _stat_str(mean: float, std: float) -> str:
    return fmt_pct(mean) if not math.isfinite(std) else f"{fmt_pct(mean)} ± {fmt_pct(std)}"


def _remove_stale(out_dir: Path, written: list[Path]) -> None:
    """Delete files an earlier report wrote that this one did not (e.g. a method filtered out), and only those."""
    manifest = out_dir / MANIFEST
    try:
        previous = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = []
    keep = {p.resolve() for p in written}
    for name in previous if isinstance(previous, list) else []:
        path = (out_dir / str(name)).resolve()
        if path not in keep and out_dir.resolve() in path.parents and path.is_file():
            path.unlink()
    _write(manifest, json.dumps(sorted(str(p.relative_to(out_dir)) for p in written), indent=1))


def generate_report(df: pd.DataFrame, out_dir: str | Path) -> dict[str, list[Path]]:
    """Write tables, figures, ``runs.csv`` and ``summary.md`` for the records in ``df`` (from :func:`load_local`
    or :func:`load_wandb`) into ``out_dir``; returns the written files by group."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    usable, excluded = split_usable(df)
    prepared = prepare(usable)
    tables = build_tables(usable) + collapse_tables(prepared)
    outputs: dict[str, list[Path]] = {"tables": [], "figures": [], "data": [], "summary": []}

    for table in tables:
        stem = out_dir / "tables" / table.name
        outputs["tables"] += [
            _write(stem.with_suffix(".md"), to_markdown(table, heading="##")),
            _write(stem.with_suffix(".tex"), to_latex(table)),
        ]
        stem.parent.mkdir(parents=True, exist_ok=True)
        table.long.to_csv(stem.with_suffix(".csv"), index=False)
        outputs["tables"].append(stem.with_suffix(".csv"))

    styles = style_map(prepared.loc[prepared["kind"] != "dense", ROW].unique())
    outputs["figures"] = build_figures(prepared, out_dir / "figures", styles)

    runs_csv = out_dir / "runs.csv"
    df.to_csv(runs_csv, index=False)
    outputs["data"].append(runs_csv)

    summary = render_summary(df, tables, outputs, excluded, prepared, out_dir)
    outputs["summary"].append(_write(out_dir / "summary.md", summary))
    _remove_stale(out_dir, [p for group in outputs.values() for p in group])
    return outputs


def render_summary(
    df: pd.DataFrame,
    tables: list[Table],
    outputs: dict[str, list[Path]],
    excluded: pd.DataFrame,
    prepared: pd.DataFrame,
    out_dir: Path,
) -> str:
    unreadable = df.attrs.get(ATTR_UNREADABLE) or []
    experiments = sorted({str(e) for e in df["experiment"].dropna()})
    lines = [
        "# prunelab report",
        "",
        f"Source: {df.attrs.get(ATTR_SOURCE, 'records')}; experiments: {', '.join(experiments) or '—'}.",
        "",
        f"Records: {len(df)} ({len(prepared)} used, {len(excluded)} excluded"
        f"{f', {len(unreadable)} unreadable record file(s) skipped' if unreadable else ''}). "
        "Accuracy is test accuracy in %, mean ± sample standard deviation (ddof=1) over seeds, one value per seed "
        "(each table and figure says when its cells have one seed: then no error bars and nothing bold); (n=k) "
        "marks cells with fewer seeds than the table's maximum. Records of different settings (the experiment's "
        "config without its seed) are never averaged.",
        "",
    ]

    def rel(p: Path) -> str:
        return p.relative_to(out_dir).as_posix()

    lines += ["## Files", ""]
    for table in tables:
        lines.append(
            f"- [{table.title}](tables/{table.name}.md) (also `tables/{table.name}.tex`, `tables/{table.name}.csv`)"
        )
    pngs = [p for p in outputs["figures"] if p.suffix == ".png"]
    for png in pngs:
        lines.append(f"- [{png.stem}]({rel(png)}) (also `{rel(png.with_suffix('.pdf'))}`)")
    lines += ["- `runs.csv`: every record, one row each", ""]

    if len(excluded):
        lines += [f"## {len(excluded)} failed run{'s' if len(excluded) != 1 else ''} excluded", ""]
        lines += [f"- {line}" for line in failed_lines(excluded)] + [""]
    if unreadable:
        lines += [f"## {len(unreadable)} unreadable record file{'s' if len(unreadable) != 1 else ''} skipped", ""]
        lines += [f"- `{path}`: {reason}" for path, reason in unreadable] + [""]
    duplicates = duplicate_lines(prepared)
    if duplicates:
        lines += [
            "## Repeated (method, sparsity, seed) records of different runs, counted as one seed (their mean)",
            "",
        ]
        lines += [f"- {line}" for line in duplicates] + [""]

    for table in tables:
        lines.append(to_markdown(table, heading="##"))
    if pngs:
        lines += ["## Figures", ""]
        lines += [f"Each figure's title says what its bands are: {FIGURE_NOTE}", ""]
        figure_notes = notes(prepared)
        lines += [*figure_notes, ""] if figure_notes else []
    for png in pngs:
        lines += [f"![{png.stem}]({rel(png)})", ""]
        lines += [caption, ""] if (caption := figure_caption(png.stem, prepared)) else []
    return "\n".join(lines)


SPEEDUP_CAPTION = (
    "Measured against theoretical speed-up (log-log), per method (colour) and kernel (marker), at batch 1 and at the "
    "throughput batch (the largest timed): measured = dense ms / pruned ms timed in turns within each record; "
    "theoretical = dense / effective multiply-adds. On the dotted diagonal a kernel turns every multiply-add saved "
    "into time; above the dashed line (shaded) it runs faster than the dense network; each panel counts the points "
    "of each kernel that do. Masked: the stored network (dense kernels, mask multiplied in); csr/bsr/coo: the same "
    "weights through torch.sparse; compacted: the channel-pruned network. Records timed with "
    "latency.sparse_kernel=none have no point."
)
COLLAPSE_CAPTION = (
    "Pruning at initialization: the smallest kept fraction of any prunable weight tensor against compression "
    "(log-log); a ring marks a cell where a layer collapsed (a seed's record says so), points on the dashed line "
    "have a layer at 0; a tick at the top is the method's critical compression where measured "
    "(method.measure_collapse=true); dotted: 1 / compression, a layer at the overall density."
)


def figure_caption(stem: str, prepared: pd.DataFrame) -> str:
    """The summary's caption under a figure that needs more than its title."""
    if stem.endswith("_speedup_measured_vs_theoretical"):
        return f"{SPEEDUP_CAPTION} Timed on {machine(prepared)}."
    if stem.endswith("_layer_collapse"):
        return COLLAPSE_CAPTION
    return ""


# ---------------------------------------------------------------- W&B


def report_inputs(df: pd.DataFrame, args: argparse.Namespace, out_dir: Path) -> dict:
    """What a report was made of, as its W&B run's config: where the records came from and which ones."""
    return {
        "source": args.source,
        "results": str(Path(args.results).resolve()) if args.source == "local" else None,
        "wandb_project": f"{args.entity}/{args.project}" if args.entity else args.project,
        "experiment_filter": args.experiment,
        "experiments": sorted({str(e) for e in df["experiment"].dropna()}),
        "records": int(len(df)),
        "record_sources": [str(s) for s in df["source"]],
        "out": str(out_dir.resolve()),
    }


def report_group(df: pd.DataFrame) -> Optional[str]:
    """The sweep's W&B group (its experiment name) when the report covers exactly one sweep."""
    names = {str(e) for e in df["experiment"].dropna()}
    return names.pop() if len(names) == 1 else None


def log_to_wandb(
    outputs: dict[str, list[Path]],
    out_dir: Path,
    *,
    entity: Optional[str] = None,
    project: str = "prunelab",
    group: Optional[str] = None,
    config: Optional[dict] = None,
) -> bool:
    """Log the CSV tables (as ``wandb.Table``) and PNG figures to a W&B run of job type "report", in the sweep's
    ``group`` next to its experiments, with the report's inputs as its ``config``. Mode: ``WANDB_MODE`` (default
    offline); the offline run lands in ``<out_dir>/wandb/``. Any failure is a warning: the report on disk is what
    counts."""
    mode = effective_mode(os.environ.get("WANDB_MODE", "offline"))
    run = None
    try:
        import wandb

        run = wandb.init(
            project=project,
            entity=entity,
            mode=mode,
            dir=str(out_dir),
            job_type="report",
            group=group,
            name=f"report {group}" if group else "report",
            config=config or {},
            reinit="finish_previous",
            settings=wandb.Settings(silent=True, console="off"),
        )
        for path in outputs.get("tables", []):
            if path.suffix == ".csv":
                run.log({f"tables/{path.stem}": wandb.Table(dataframe=pd.read_csv(path))})
        for path in outputs.get("figures", []):
            if path.suffix == ".png":
                run.log({f"figures/{path.stem}": wandb.Image(str(path))})
        for path in outputs.get("summary", []):
            run.summary["report_summary"] = path.read_text(encoding="utf-8")
        run.finish()
        return True
    except Exception as err:
        log.warning("W&B logging failed (%s: %s); the report is in %s", type(err).__name__, err, out_dir)
        if run is not None:
            with contextlib.suppress(Exception):
                run.finish(exit_code=1)
        return False


# ---------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    installed = os.path.basename(sys.argv[0]) == "prunelab-report"  # the console script (pyproject.toml)
    parser = argparse.ArgumentParser(
        prog="prunelab-report" if installed else "python -m analysis.report",
        description=__doc__.replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "record",
        nargs="?",
        help="a record a run printed (`record: .../result.json`): the report of its experiment, from its store",
    )
    parser.add_argument(
        "--results",
        default=None,
        help="results root holding runs/experiment/ (default: the record's store, else results)",
    )
    parser.add_argument(
        "--experiment",
        action="append",
        metavar="GLOB",
        help="only records whose `experiment` matches this glob; repeatable (default: all)",
    )
    parser.add_argument("--out", default=None, help="output folder (default: <results>/report)")
    parser.add_argument(
        "--source",
        choices=["local", "wandb"],
        default="local",
        help="read the local store or the W&B project's run summaries (default: %(default)s)",
    )
    parser.add_argument("--entity", default=None, help="W&B entity (default: your default entity)")
    parser.add_argument("--project", default="prunelab", help="W&B project (default: %(default)s)")
    parser.add_argument(
        "--wandb",
        action="store_true",
        help="also log tables and figures to a W&B 'report' run (mode: $WANDB_MODE, default offline)",
    )
    return parser


def load(args: argparse.Namespace) -> pd.DataFrame:
    if args.source == "wandb":
        try:
            df = load_wandb(args.entity, args.project)
        except Exception as err:
            raise UserError(
                f"--source wandb: could not read runs of {args.entity or '<default entity>'}/"
                f"{args.project} ({type(err).__name__}: {err}); use --source local"
            ) from err
    else:
        df = load_local(args.results)
        if df.empty and not df.attrs.get(ATTR_UNREADABLE):
            raise UserError(
                f"--results: no experiment records under {Path(args.results) / 'runs' / 'experiment'}; "
                "run experiments first (make survey) or point --results at a results folder"
            )
    if args.experiment:
        available = sorted({str(e) for e in df["experiment"].dropna()})
        df = filter_experiments(df, args.experiment)
        if df.empty:
            raise UserError(
                f"--experiment: {', '.join(args.experiment)} matches no record; experiments present: "
                f"{', '.join(available) or 'none'}"
            )
    return df


def from_record(args: argparse.Namespace) -> None:
    """``prunelab-report <record>``: the store the record names (or lies in) and its experiment, unless given."""
    path = Path(args.record).expanduser()
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"record: {path} is not an experiment record ({' '.join(str(err).split())})") from None
    store = store_of(path, record) if isinstance(record, dict) else None
    if store is None or not record.get("experiment"):
        raise UserError(
            f"record: {path} names no store (neither <store>/runs/experiment/<hash>/result.json nor a job folder's "
            f"result.json of this version); give --results <store> --experiment <name>"
        )
    args.results = args.results or str(store)
    args.experiment = args.experiment or [record["experiment"]]


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        # INFO for our own messages only: matplotlib's font subsetting (fontTools) is chatty at INFO.
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
        logging.getLogger("analysis").setLevel(logging.INFO)
    try:
        if args.record:
            from_record(args)
        args.results = args.results or "results"
        df = load(args)
        out_dir = Path(args.out) if args.out else Path(args.results) / "report"
        outputs = generate_report(df, out_dir)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    usable, excluded = split_usable(df)
    print(compact_summary(prepare(usable)))
    print()
    if len(excluded):
        print(f"{len(excluded)} failed run{'s' if len(excluded) != 1 else ''} excluded:")
        for line in failed_lines(excluded):
            print(f"  {line}")
    unreadable = df.attrs.get(ATTR_UNREADABLE) or []
    if unreadable:
        print(
            f"{len(unreadable)} unreadable record file{'s' if len(unreadable) != 1 else ''} skipped "
            f"(listed in summary.md)"
        )
    for group, paths in outputs.items():
        if paths:
            folders = sorted({str(p.parent) for p in paths})
            kinds = "/".join(sorted({p.suffix.lstrip(".") for p in paths}))
            print(f"{group:8s} {len(paths):3d} file{'s' if len(paths) != 1 else ' '} ({kinds}) in {', '.join(folders)}")
    if args.wandb:
        sweep = report_group(df)
        if log_to_wandb(
            outputs,
            out_dir,
            entity=args.entity,
            project=args.project,
            group=sweep,
            config=report_inputs(df, args, out_dir),
        ):
            print(
                f"W&B: logged to a 'report' run of {args.project} (group {sweep or 'none'}, mode "
                f"{os.environ.get('WANDB_MODE', 'offline')}) under {out_dir / 'wandb'}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
