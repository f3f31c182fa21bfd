"""Layer collapse of pruning at initialization, from the records (Tanaka, Kunin, Yamins & Ganguli, NeurIPS 2020).

A mask *collapses a layer* when a Conv/Linear weight tensor keeps none of its weights (``methods/pipeline/collapse.py``);
score-based methods record it as ``layer_collapse``, and at init with ``method.measure_collapse=true`` the method's
*critical compression* on its init, ``critical_compression`` (the largest 10^{k/4} reached before a layer
collapses). Every record also holds ``per_layer_density`` (kept fraction per prunable tensor), whose smallest entry
shows how close a method came to collapse: 0 is a collapsed layer.

The report's rows are the at-init records (``method_config.when == "init"``: snip, grasp, synflow, random,
``magnitude method.when=init``; or a record with a critical compression), one per (row, sparsity) over seeds.
Every record field is read through ``analysis.records.record_field`` (flat or under ``outputs``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np
import pandas as pd

from analysis.records import record_field
from analysis.settings import ROW, notes
from analysis.tables import ACHIEVED_NOTE, Table, Text, fmt_sparsity, safe_name, seed_key

COLUMNS = [
    "label",
    "kind",
    "target_sparsity",
    "sparsity_marked",
    "compression_mean",
    "smallest_density_mean",
    "smallest_density_std",
    "smallest_layer",
    "n",
    "collapsed",
    "collapse_recorded",
    "critical_compression_mean",
    "critical_compression_std",
    "critical_compression_n",
]


def at_init(df: pd.DataFrame) -> pd.Series:
    """Which rows are pruning at initialization: ``method_config.when == "init"``, or a critical compression (only
    measured at init)."""
    when = record_field(df, "method_config.when")
    critical = pd.to_numeric(record_field(df, "critical_compression"), errors="coerce")
    return (when.map(lambda w: w == "init") | critical.notna()).astype(bool)


def smallest_layer(per_layer: Optional[Mapping[str, Any]]) -> tuple[Optional[str], float]:
    """The prunable tensor with the smallest kept fraction and that fraction (biases left out: a bias is no layer;
    ties broken by name), or (None, NaN) without densities."""
    densities = {}
    for name, value in (per_layer or {}).items():
        try:
            density = float(value)
        except (TypeError, ValueError):
            continue
        if not name.endswith(".bias") and math.isfinite(density):
            densities[name] = density
    if not densities:
        return None, math.nan
    name = min(densities, key=lambda n: (densities[n], n))
    return name, densities[name]


def _flag(value: Any) -> Optional[bool]:
    """A record's ``layer_collapse`` as a bool (None where not recorded)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):  # a CSV / W&B round trip
        return value.lower() == "true"
    return None


def _mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=float)
    if not len(array):
        return math.nan, math.nan
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else math.nan


def collapse_cells(prepared: pd.DataFrame) -> pd.DataFrame:
    """Per (row, sparsity) of the at-init records of a prepared group (``analysis.tables.prepare``): mean compression,
    the smallest per-layer density (mean and sample std over seeds, one value per seed) and the layer that has it most
    often, ``collapsed`` (seeds whose record says a layer collapsed) of ``collapse_recorded`` (seeds whose record says
    either way), and the critical compression (mean, std, seeds) where measured."""
    records = prepared[at_init(prepared) & (prepared["kind"] != "dense")].copy()
    if records.empty:
        return pd.DataFrame(columns=COLUMNS)
    smallest = record_field(records, "per_layer_density").map(smallest_layer)
    records["_layer"] = smallest.map(lambda item: item[0])
    records["_density"] = smallest.map(lambda item: item[1]).astype(float)
    records["_collapse"] = record_field(records, "layer_collapse").map(_flag)
    records["_critical"] = pd.to_numeric(record_field(records, "critical_compression"), errors="coerce")
    records["_compression"] = pd.to_numeric(record_field(records, "compression"), errors="coerce")
    records["_seed"] = records["seed"].map(seed_key)
    rows = []
    for (label, kind, sparsity, marked), cell in records.groupby(
        [ROW, "kind", "sparsity", "sparsity_marked"], sort=True, dropna=False
    ):
        per_seed = cell.groupby("_seed", sort=True)
        density = per_seed["_density"].mean().dropna()
        critical = per_seed["_critical"].mean().dropna()
        flags = {s: [f for f in part["_collapse"] if f is not None] for s, part in per_seed}
        recorded = {s: any(f) for s, f in flags.items() if f}
        layers = cell["_layer"].dropna()
        rows.append(
            {
                "label": label,
                "kind": kind,
                "target_sparsity": float(sparsity),
                "sparsity_marked": bool(marked),
                "compression_mean": float(per_seed["_compression"].mean().mean()),
                "smallest_density_mean": _mean_std(list(density))[0],
                "smallest_density_std": _mean_std(list(density))[1],
                "smallest_layer": layers.mode().sort_values().iloc[0] if len(layers) else None,
                "n": int(cell["_seed"].nunique()),
                "collapsed": sum(recorded.values()),
                "collapse_recorded": len(recorded),
                "critical_compression_mean": _mean_std(list(critical))[0],
                "critical_compression_std": _mean_std(list(critical))[1],
                "critical_compression_n": len(critical),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


# ------------------------------------------------------------------------------------------------ the table
CAPTION = (
    "Pruning at initialization: per method and sparsity, the smallest kept fraction of any prunable weight tensor "
    "(biases left out) and the tensor that has it (the one most seeds name), whether a layer collapsed (some "
    "Conv/Linear weight tensor kept no weight, Tanaka et al. 2020: seeds collapsed / seeds whose record says; —: not "
    "recorded) and the critical compression: the largest 10^(k/4) the method reaches on its init before a layer "
    "collapses (method.measure_collapse=true; —: not measured)."
)


def _number(mean: float, std: float, n: int, fmt: str) -> str:
    if not math.isfinite(mean):
        return "—"

    def text(x: float) -> str:  # 56,234 rather than 5.62e+04
        return f"{x:,.0f}" if abs(x) >= 1000 else format(x, fmt)

    return text(mean) + (f" ± {text(std)}" if n > 1 and math.isfinite(std) else "")


def collapsed_text(collapsed: int, recorded: int, n: int) -> str:
    """``yes`` / ``no`` for every seed alike, ``yes (1/3 seeds)`` where they differ, "—" where no record says."""
    if recorded == 0:
        return "—"
    word = "yes" if collapsed else "no"
    if 0 < collapsed < recorded:
        return f"yes ({collapsed}/{recorded} seeds)"
    return word + (f" ({recorded}/{n} seeds recorded)" if recorded < n else "")


def collapse_table(group: pd.DataFrame, dataset: str, model: str) -> Optional[Table]:
    """The at-init records of one (dataset, model) prepared group (``collapse_cells``), one row per (method,
    sparsity); None without at-init records."""
    cells = collapse_cells(group)
    if cells.empty:
        return None
    cells = cells.assign(_order=cells["label"].str.casefold()).sort_values(["_order", "label", "target_sparsity"])
    several = int(cells["n"].max()) > 1
    rows = []
    for r in cells.itertuples():
        rows.append(
            [
                Text(r.label),
                Text(fmt_sparsity(r.target_sparsity, r.sparsity_marked)),
                Text(_number(r.compression_mean, math.nan, 1, ".3g")),
                Text(_number(100 * r.smallest_density_mean, 100 * r.smallest_density_std, r.n, ".3g")),
                Text(r.smallest_layer or "—"),
                Text(collapsed_text(r.collapsed, r.collapse_recorded, r.n), bold=r.collapsed > 0),
                Text(
                    _number(
                        r.critical_compression_mean,
                        r.critical_compression_std,
                        r.critical_compression_n,
                        ".3g",
                    )
                ),
            ]
        )
    spread = " Numbers of several seeds: mean ± sample std over seeds." if several else " One seed: no error bars."
    marked = bool(cells["sparsity_marked"].any())
    at_init_records = group[at_init(group) & (group["kind"] != "dense")]
    caption = (
        f"{dataset} / {model}. {CAPTION}{spread} Collapsed cells are bold."
        + "".join(f" {n}" for n in notes(at_init_records))
        + (f" {ACHIEVED_NOTE}" if marked else "")
    )
    return Table(
        name=safe_name(dataset, model, "layer_collapse"),
        title=f"{dataset} / {model} — layer collapse at initialization",
        caption=caption,
        header=[
            "Method",
            "Target",
            "Compression (×)",
            "Smallest layer density (%)",
            "Layer",
            "Layer collapse",
            "Critical compression (×)",
        ],
        align="lrrrllr",
        rows=rows,
        long=cells.assign(dataset=dataset, model=model)[["dataset", "model", *COLUMNS]].reset_index(drop=True),
    )


def collapse_tables(prepared: pd.DataFrame) -> list[Table]:
    """One collapse table per (dataset, model) with at-init records."""
    tables = []
    for (dataset, model), group in prepared.groupby(["dataset", "model"], sort=True):
        table = collapse_table(group, str(dataset), str(model))
        if table is not None:
            tables.append(table)
    return tables
