"""Accuracy tables: method × sparsity (one per pruning kind, since the columns of structured and unstructured
methods mean different things) and a per-(dataset, model) table keyed by achieved compression.

Cells are test accuracy in percent, mean ± *sample* standard deviation (ddof=1, the pandas default) over seeds.

Columns are the target sparsity (``method.sparsity``) where the method hits it exactly. A method that sets its own
sparsity (record field ``sparsity_set_by_method``: Han's q·σ thresholds, per-layer targets, multi-pass slimming) is
tabled at its achieved sparsity rounded to two decimals and marked with ``*`` (e.g. "87%*").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd

LATENCY_COLUMN = "latency_ms.pruned.256"
DENSE_LATENCY_COLUMN = "latency_ms.dense.256"
KIND_COLUMN_MEANING = {
    "unstructured": "target sparsity = fraction of prunable weights removed",
    "structured": "target sparsity = fraction of channels/neurons removed",
}
ACHIEVED_MARK = "*"
ACHIEVED_NOTE = (
    "*: achieved sparsity (rounded to 2 decimals) of methods that set their own (q·σ thresholds, "
    "per-layer targets, multi-pass slimming); unmarked columns are targets, hit exactly."
)


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float  # NaN when n < 2
    n: int


def stat(values) -> Stat:
    values = np.asarray([float(v) for v in values], dtype=float)
    n = len(values)
    return Stat(float(values.mean()) if n else math.nan, float(values.std(ddof=1)) if n > 1 else math.nan, n)


def numeric(df: pd.DataFrame, column: str) -> pd.Series:
    if column not in df.columns:
        return pd.Series(np.nan, index=df.index, dtype=float)
    return pd.to_numeric(df[column], errors="coerce").astype(float)


def prepare(usable: pd.DataFrame) -> pd.DataFrame:
    """Fill the grouping columns: label falls back to method, a missing target sparsity to 1 − density."""
    df = usable.copy()
    label = df["label"].where(df["label"].map(lambda v: isinstance(v, str) and v != ""), df["method"])
    df["label"] = label.map(lambda v: v if isinstance(v, str) and v else "?").astype(object)
    df["kind"] = df["kind"].map(lambda v: v if isinstance(v, str) and v else "other").astype(object)
    for column in ("dataset", "model"):
        df[column] = df[column].map(lambda v: str(v) if v is not None and v == v else "?").astype(object)
    target = numeric(df, "target_sparsity").fillna(1 - numeric(df, "density"))
    achieved = numeric(df, "achieved_sparsity")
    own = (
        df["sparsity_set_by_method"].map(lambda v: v is True)
        if "sparsity_set_by_method" in df.columns
        else pd.Series(False, index=df.index)
    ) & achieved.notna()
    df["sparsity"] = target.where(~own, achieved.round(2)).round(6)
    df["sparsity_marked"] = own.astype(bool)
    df["acc"] = numeric(df, "test_acc")
    return df


def dense_baseline(group: pd.DataFrame) -> Optional[Stat]:
    """Dense accuracy over distinct dense models: records of kind "dense" and the ``dense_test_acc`` of pruned
    records, deduplicated by the dense stage hash (or by seed and value when there is none), since every method of
    one seed usually shares one dense model."""
    values: dict[tuple, float] = {}
    hashes = pd.Series(None, index=group.index, dtype=object)
    for column in ("stage_hashes.dense", "dense_stage"):  # records before `dense_stage` only have the former
        if column in group.columns:
            hashes = group[column].where(group[column].notna(), hashes)
    dense_acc = numeric(group, "dense_test_acc")
    for idx, row in group.iterrows():
        acc = row["acc"] if row["kind"] == "dense" else dense_acc[idx]
        if acc is None or not math.isfinite(acc):
            continue
        digest = hashes[idx]
        key = ("hash", digest) if isinstance(digest, str) and digest else ("seed", str(row["seed"]), round(acc, 12))
        values.setdefault(key, float(acc))
    return stat(list(values.values())) if values else None


def dense_latency(group: pd.DataFrame) -> Optional[float]:
    values = numeric(group, DENSE_LATENCY_COLUMN).dropna()
    return float(values.mean()) if len(values) else None


def cell_stats(group: pd.DataFrame) -> pd.DataFrame:
    """One row per (kind, label, sparsity) of the pruned records: accuracy stats and mean achieved metrics."""
    pruned = group[group["kind"] != "dense"]
    if "sparsity_marked" not in pruned.columns:
        pruned = pruned.assign(sparsity_marked=False)
    rows = []
    for (kind, label, sparsity, marked), cell in pruned.groupby(
        ["kind", "label", "sparsity", "sparsity_marked"], sort=True, dropna=True
    ):
        s = stat(cell["acc"])
        rows.append(
            {
                "kind": kind,
                "label": label,
                "target_sparsity": float(sparsity),
                "sparsity_marked": bool(marked),
                "test_acc_mean": s.mean,
                "test_acc_std": s.std,
                "n": s.n,
                "seeds": ",".join(sorted({str(v) for v in cell["seed"]}, key=_seed_order)),
                "compression_mean": numeric(cell, "compression").mean(),
                "params_remaining_pct_mean": (100 / numeric(cell, "compression")).mean(),
                "speedup_theoretical_mean": numeric(cell, "speedup_theoretical").mean(),
                "latency_ms_256_mean": numeric(cell, LATENCY_COLUMN).mean(),
            }
        )
    columns = [
        "kind",
        "label",
        "target_sparsity",
        "sparsity_marked",
        "test_acc_mean",
        "test_acc_std",
        "n",
        "seeds",
        "compression_mean",
        "params_remaining_pct_mean",
        "speedup_theoretical_mean",
        "latency_ms_256_mean",
    ]
    return pd.DataFrame(rows, columns=columns)


def _seed_order(s: str):
    try:
        return (0, float(s), s)
    except ValueError:
        return (1, 0.0, s)


# ---------------------------------------------------------------- formatting


def fmt_sparsity(s: float, marked: bool = False) -> str:
    return f"{100 * s:.4g}%" + (ACHIEVED_MARK if marked else "")


def fmt_pct(x: float) -> str:
    return f"{100 * x:.2f}"


@dataclass
class Text:
    """One table cell: ``main`` may be bold; ``note`` (e.g. "(n=2)") never is."""

    main: str
    note: str = ""
    bold: bool = False

    def plain(self) -> str:
        return f"{self.main} {self.note}".strip()


def stat_text(s: Optional[Stat], show_n: bool) -> Text:
    if s is None or s.n == 0:
        return Text("—")
    main = fmt_pct(s.mean) if s.n < 2 or not math.isfinite(s.std) else f"{fmt_pct(s.mean)} ± {fmt_pct(s.std)}"
    return Text(main, f"(n={s.n})" if show_n else "")


@dataclass
class Table:
    name: str  # file stem
    title: str
    caption: str
    header: list[str]
    align: str  # one of l/r/c per column
    rows: list[list[Text]]
    footer: list[list[Text]] = field(default_factory=list)  # after a rule: the dense baseline
    span_footer: bool = False  # LaTeX: the footer's cells after the first are one value spanning all columns
    long: pd.DataFrame = field(default_factory=pd.DataFrame)  # raw numbers for the CSV


def safe_name(*parts: str) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9_.+-]+", "-", str(p)).strip("-") or "x" for p in parts)


def sparsity_table(group: pd.DataFrame, dataset: str, model: str, kind: str, dense: Optional[Stat]) -> Optional[Table]:
    """Rows = method labels, columns = target sparsities, best mean per column in bold."""
    stats = cell_stats(group[group["kind"] == kind])
    if stats.empty:
        return None
    # a column is (sparsity, marked): an achieved 0.87* never shares a column with a target of 0.87
    levels = sorted({(r.target_sparsity, r.sparsity_marked) for r in stats.itertuples()})
    labels = sorted(stats["label"].unique(), key=lambda s: (s.casefold(), s))
    cells = {
        (r.label, (r.target_sparsity, r.sparsity_marked)): Stat(r.test_acc_mean, r.test_acc_std, int(r.n))
        for r in stats.itertuples()
    }
    max_n = max([s.n for s in cells.values()] + ([dense.n] if dense else []))
    best: set[tuple[str, tuple[float, bool]]] = set()
    for level in levels:
        column = {label: round(100 * cells[(label, level)].mean, 2) for label in labels if (label, level) in cells}
        if len(column) >= 2:
            top = max(column.values())
            best |= {(label, level) for label, value in column.items() if value == top}
    rows = []
    for label in labels:
        row = [Text(label)]
        for level in levels:
            s = cells.get((label, level))
            text = stat_text(s, show_n=s is not None and s.n < max_n)
            text.bold = (label, level) in best
            row.append(text)
        rows.append(row)
    footer = []
    if dense is not None:
        dense_text = stat_text(dense, show_n=dense.n < max_n)
        footer.append([Text("dense")] + [Text(dense_text.main, dense_text.note) for _ in levels])
    meaning = KIND_COLUMN_MEANING.get(kind, "target sparsity")
    caption = (
        f"{dataset} / {model}, {kind} pruning: test accuracy (%), mean ± sample std (ddof=1) over seeds; "
        f"columns: {meaning}. Bold: best mean per column. (n=k): fewer seeds than the table's maximum "
        f"({max_n}). Dense: the unpruned baselines."
        + (f" {ACHIEVED_NOTE}" if any(marked for _, marked in levels) else "")
    )
    long = stats.assign(
        dataset=dataset,
        model=model,
        best=[(r.label, (r.target_sparsity, r.sparsity_marked)) in best for r in stats.itertuples()],
    )
    if dense is not None:
        dense_row = {
            "dataset": dataset,
            "model": model,
            "kind": "dense",
            "label": "dense",
            "target_sparsity": 0.0,
            "sparsity_marked": False,
            "test_acc_mean": dense.mean,
            "test_acc_std": dense.std,
            "n": dense.n,
            "best": False,
            "compression_mean": 1.0,
            "params_remaining_pct_mean": 100.0,
            "speedup_theoretical_mean": 1.0,
        }
        long = pd.concat([long, pd.DataFrame([dense_row])], ignore_index=True)
    long = long[
        [
            "dataset",
            "model",
            "kind",
            "label",
            "target_sparsity",
            "sparsity_marked",
            "test_acc_mean",
            "test_acc_std",
            "n",
            "best",
            "seeds",
            "compression_mean",
            "params_remaining_pct_mean",
            "speedup_theoretical_mean",
            "latency_ms_256_mean",
        ]
    ]
    return Table(
        name=safe_name(dataset, model, kind),
        title=f"{dataset} / {model} — {kind}",
        caption=caption,
        header=["Method", *[fmt_sparsity(*level) for level in levels]],
        align="l" + "r" * len(levels),
        rows=rows,
        footer=footer,
        span_footer=True,
        long=long.reset_index(drop=True),
    )


def compression_table(
    group: pd.DataFrame, dataset: str, model: str, dense: Optional[Stat], latency_dense: Optional[float]
) -> Optional[Table]:
    """Every (method, sparsity) cell of every kind, sorted by achieved compression: the cross-kind comparison."""
    stats = cell_stats(group)
    if stats.empty:
        return None
    stats = stats.sort_values(["compression_mean", "label"], kind="stable", na_position="last")
    with_latency = stats["latency_ms_256_mean"].notna().any()
    max_n = max([int(n) for n in stats["n"]] + ([dense.n] if dense else []))

    def number(x: float, fmt: str) -> str:
        return "—" if x is None or not math.isfinite(x) else format(x, fmt)

    def row(label, kind, sparsity, compression, remaining, speedup, latency, s):
        cells = [
            Text(label),
            Text(kind),
            Text(sparsity),
            Text(number(compression, ".2f")),
            Text(number(remaining, ".3g")),
            Text(number(speedup, ".2f")),
        ]
        if with_latency:
            cells.append(Text(number(latency, ".3g")))
        cells.append(stat_text(s, show_n=s is not None and s.n < max_n))
        return cells

    rows = [
        row(
            r.label,
            r.kind,
            fmt_sparsity(r.target_sparsity, r.sparsity_marked),
            r.compression_mean,
            r.params_remaining_pct_mean,
            r.speedup_theoretical_mean,
            r.latency_ms_256_mean,
            Stat(r.test_acc_mean, r.test_acc_std, int(r.n)),
        )
        for r in stats.itertuples()
    ]
    if dense is not None:  # compression 1×: first in a table sorted by compression
        rows.insert(
            0,
            row(
                "dense", "dense", "0%", 1.0, 100.0, 1.0, latency_dense if latency_dense is not None else math.nan, dense
            ),
        )
    header = ["Method", "Kind", "Target", "Compression (×)", "Params left (%)", "Speedup (×)"]
    if with_latency:
        header.append("Latency b256 (ms)")
    header.append("Test acc. (%)")
    caption = (
        f"{dataset} / {model}, all methods by achieved compression (total / nonzero parameters). Speedup: "
        f"theoretical (dense / effective FLOPs). Latency: measured time per batch of 256 on the job's device "
        f"(runs.csv: latency_device, latency_threads). Test accuracy "
        f"(%), mean ± sample std (ddof=1) over seeds; (n=k): fewer seeds than the table's maximum ({max_n})."
        + (f" {ACHIEVED_NOTE}" if stats["sparsity_marked"].any() else "")
    )
    long = stats.assign(dataset=dataset, model=model)
    if dense is not None:
        dense_row = {
            "dataset": dataset,
            "model": model,
            "kind": "dense",
            "label": "dense",
            "target_sparsity": 0.0,
            "sparsity_marked": False,
            "test_acc_mean": dense.mean,
            "test_acc_std": dense.std,
            "n": dense.n,
            "compression_mean": 1.0,
            "params_remaining_pct_mean": 100.0,
            "speedup_theoretical_mean": 1.0,
            "latency_ms_256_mean": latency_dense if latency_dense is not None else math.nan,
        }
        long = pd.concat([pd.DataFrame([dense_row]), long], ignore_index=True)
    long = long[
        [
            "dataset",
            "model",
            "kind",
            "label",
            "target_sparsity",
            "sparsity_marked",
            "compression_mean",
            "params_remaining_pct_mean",
            "speedup_theoretical_mean",
            "latency_ms_256_mean",
            "test_acc_mean",
            "test_acc_std",
            "n",
            "seeds",
        ]
    ]
    return Table(
        name=safe_name(dataset, model, "compression"),
        title=f"{dataset} / {model} — by compression",
        caption=caption,
        header=header,
        align="lll" + "r" * (len(header) - 3),
        rows=rows,
        long=long.reset_index(drop=True),
    )


def build_tables(usable: pd.DataFrame) -> list[Table]:
    """All tables, per (dataset, model): one per pruning kind, then the compression table."""
    df = prepare(usable)
    tables = []
    for (dataset, model), group in df.groupby(["dataset", "model"], sort=True):
        dense = dense_baseline(group)
        kinds = sorted(
            (k for k in group["kind"].unique() if k != "dense"),
            key=lambda k: ({"unstructured": 0, "structured": 1}.get(k, 2), k),
        )
        for kind in kinds:
            table = sparsity_table(group, dataset, model, kind, dense)
            if table is not None:
                tables.append(table)
        table = compression_table(group, dataset, model, dense, dense_latency(group))
        if table is not None:
            tables.append(table)
    return tables


# ---------------------------------------------------------------- rendering


def to_markdown(table: Table, heading: str = "###") -> str:
    def md(text: Text) -> str:
        main = text.main.replace("|", "\\|")
        main = f"**{main}**" if text.bold else main
        return f"{main} {text.note}".strip()

    body = [table.header, *([md(t) for t in row] for row in (*table.rows, *table.footer))]
    body[0] = [h.replace("|", "\\|") for h in body[0]]
    widths = [max(len(r[i]) for r in body) for i in range(len(table.header))]
    rule = [
        (":" if a in "lc" else "") + "-" * max(w - 1, 2) + (":" if a in "rc" else "")
        for a, w in zip(table.align, widths)
    ]

    def line(cells):
        return (
            "| "
            + " | ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, table.align))
            + " |"
        )

    lines = [
        f"{heading} {table.title}",
        "",
        line(body[0]),
        "| " + " | ".join(r.ljust(w) for r, w in zip(rule, widths)) + " |",
    ]
    lines += [line(r) for r in body[1:]]
    lines += ["", table.caption, ""]
    return "\n".join(lines)


_TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def tex_escape(s: str) -> str:
    s = "".join(_TEX_ESCAPES.get(ch, ch) for ch in s)
    return s.replace("±", r"$\pm$").replace("×", r"$\times$").replace("—", "---")


def to_latex(table: Table) -> str:
    def tex(text: Text) -> str:
        main = tex_escape(text.main)
        main = rf"\textbf{{{main}}}" if text.bold else main
        if text.note:
            main += r"\,{\scriptsize " + tex_escape(text.note) + "}"
        return main

    ncols = len(table.header)
    lines = [
        r"% generated by python -m analysis.report; needs \usepackage{booktabs}",
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{tex_escape(table.caption)}}}",
        rf"\label{{tab:{table.name}}}",
        rf"\begin{{tabular}}{{{table.align}}}",
        r"\toprule",
        " & ".join(tex_escape(h) for h in table.header) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(tex(t) for t in row) + r" \\" for row in table.rows]
    if table.footer:
        lines.append(r"\midrule")
        for row in table.footer:
            if table.span_footer and ncols > 2:
                lines.append(f"{tex(row[0])} & \\multicolumn{{{ncols - 1}}}{{c}}{{{tex(row[1])}}} \\\\")
            else:
                lines.append(" & ".join(tex(t) for t in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)
