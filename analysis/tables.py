"""Accuracy tables: method × sparsity (one per pruning kind, since the columns of structured and unstructured
methods mean different things) and a per-(dataset, model) table keyed by achieved compression.

Cells are test accuracy in percent, mean ± *sample* standard deviation (ddof=1, the pandas default) over seeds, one
value per seed; a table whose cells have one seed says so and shows no error bars. Rows are method labels, one per
setting (analysis/settings.py: records of different settings are never averaged; rows that are one training are one
row). A column's best is bold only where the seeds tell it apart (:func:`clearly_better`, ``BOLD_RULE``).

Columns are the target sparsity (``method.sparsity``) where the method hits it exactly. A method that sets its own
sparsity (record field ``sparsity_set_by_method``: Han's q·σ thresholds, per-layer targets, multi-pass slimming) is
tabled at its achieved sparsity rounded to two decimals and marked with ``*`` (e.g. "87%*").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pandas as pd

from analysis.claims import CONFIDENCE, paired_stats
from analysis.settings import DENSE_KEY, DENSE_ROW, ROW, assign_rows, notes
from analysis.speed import BATCH, KERNEL, SPEEDUP, headline, machine

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
    df = usable.reset_index(drop=True)
    for column in ("setting", "setting_hash", "final_stage"):  # a frame built without the loaders (tests, scripts)
        if column not in df.columns:
            df[column] = pd.Series(None, index=df.index, dtype=object)
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
    df[[SPEEDUP, KERNEL, BATCH]] = headline(df)
    return assign_rows(df)


def seed_key(seed) -> str:
    """A seed as one key whatever its type in the frame (0, 0.0, "0")."""
    try:
        f = float(seed)
    except (TypeError, ValueError):
        return "?" if seed is None else str(seed)
    return "?" if math.isnan(f) else str(int(f)) if f.is_integer() else str(seed)


def by_seed(cell: pd.DataFrame, column: str = "acc") -> dict[str, float]:
    """One value per seed: records of one cell and one seed are one computation (the same setting under another
    sweep name, or one training under two labels), so they count once, as their mean."""
    values = pd.DataFrame({"seed": cell["seed"].map(seed_key), "value": numeric(cell, column)}).dropna()
    return {str(k): float(v) for k, v in values.groupby("seed", sort=True)["value"].mean().items()}


# ---------------------------------------------------------------- the bold rule

BOLD_RULE = (
    "Bold: a column's best, only where it beats every other method of the column by more than its seeds explain: "
    f"over two or more common seeds, the {100 * CONFIDENCE:g} % Student-t interval of the mean paired difference "
    "excludes 0; otherwise (unpaired, two or more seeds each) the difference of the means exceeds both standard "
    "deviations. A cell of one seed is never bold."
)
ONE_SEED = "one seed: no error bars"


def clearly_better(a: dict[str, float], b: dict[str, float]) -> bool:
    """Whether ``a`` (per seed) beats ``b`` by more than the seeds can explain (``BOLD_RULE``)."""
    common = sorted(set(a) & set(b))
    if len(common) >= 2:  # paired: one seed is one dense model and data order for both
        return paired_stats([a[s] - b[s] for s in common], CONFIDENCE).low > 0
    if len(a) >= 2 and len(b) >= 2:
        sa, sb = stat(a.values()), stat(b.values())
        return sa.mean - sb.mean > max(sa.std, sb.std)
    return False


def seed_note(counts: list[int]) -> str:
    """What a table's or figure's numbers are, by the seeds its cells have."""
    top = max(counts, default=0)
    if top <= 1:
        return f"test accuracy (%), {ONE_SEED}; nothing is bold (one seed cannot tell a best from noise)"
    return "test accuracy (%), mean ± sample std (ddof=1) over seeds (one value per seed)" + (
        f"; (n=k): fewer seeds than the table's maximum ({top})" if min(counts) < top else ""
    )


# The record's training budget from initialization (foundations.training.budget), flattened by analysis.records
EPOCHS_COLUMN = "training_budget.total.epochs"
LR_INTEGRAL_COLUMN = "training_budget.total.lr_integral"
BUDGET_HEADER = "epochs · Σlr"
BUDGET_NOTE = (
    "epochs · Σlr: the training the result carries from initialization, summed over its stages (dense training, "
    "retraining, every lottery level), and the integrated learning rate Σ lr over those steps; a range where the "
    "row's sparsities differ."
)


def has_budget(group: pd.DataFrame) -> bool:
    return EPOCHS_COLUMN in group.columns and numeric(group, EPOCHS_COLUMN).notna().any()


def budget_text(cell: pd.DataFrame) -> str:
    """``9 · 0.21``: epochs and Σlr from initialization of a cell's records (``lo–hi`` where they differ, e.g. the
    lottery's levels per sparsity); "—" for records written before the budget was recorded."""
    epochs, lrs = numeric(cell, EPOCHS_COLUMN).dropna(), numeric(cell, LR_INTEGRAL_COLUMN).dropna()
    if epochs.empty or lrs.empty:
        return "—"

    def span(values: pd.Series) -> str:
        lo, hi = float(values.min()), float(values.max())
        return f"{lo:.3g}" if math.isclose(lo, hi, rel_tol=1e-9) else f"{lo:.3g}–{hi:.3g}"

    return f"{span(epochs)} · {span(lrs)}"


def dense_budget(group: pd.DataFrame, label: str) -> str:
    """The budget of the dense records of one dense setting (``DENSE_ROW`` = ``label``)."""
    dense = group[group["kind"].eq("dense") & group[DENSE_ROW].eq(label)] if DENSE_ROW in group.columns else group[:0]
    return budget_text(dense)


def dense_baselines(group: pd.DataFrame) -> list[tuple[str, Stat]]:
    """(label, accuracy) of each dense setting of a prepared group (``dense_row``: "dense", or "dense [...]" naming
    the fields in which the dense settings differ)."""
    out = []
    for _, part in group.groupby(DENSE_KEY, sort=False):
        s = dense_baseline(part)
        if s is not None:
            out.append((str(part[DENSE_ROW].iloc[0]), s))
    return sorted(out, key=lambda item: item[0])


def baselines_for(dense: list[tuple[str, Stat]], records: pd.DataFrame) -> list[tuple[str, Stat]]:
    """The dense baselines of the settings ``records`` come from (all of them when none matches: every accuracy
    table and figure shows a dense baseline)."""
    mine = [d for d in dense if d[0] in set(records[DENSE_ROW])]
    return mine or dense


def dense_baseline(group: pd.DataFrame) -> Optional[Stat]:
    """Dense accuracy of one dense setting over seeds: records of kind "dense" and the ``dense_test_acc`` of pruned
    records, deduplicated by the dense stage hash (or by seed and value when there is none), since every method of
    one seed usually shares one dense model; then one value per seed (old records, whose dense setting is unknown,
    may hold several dense models of one seed: their mean)."""
    values: dict[tuple, tuple[str, float]] = {}
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
        values.setdefault(key, (seed_key(row["seed"]), float(acc)))
    per_seed: dict[str, list[float]] = {}
    for seed, acc in values.values():
        per_seed.setdefault(seed, []).append(acc)
    return stat([float(np.mean(v)) for v in per_seed.values()]) if per_seed else None


def dense_latency(group: pd.DataFrame) -> Optional[float]:
    values = numeric(group, DENSE_LATENCY_COLUMN).dropna()
    return float(values.mean()) if len(values) else None


def cell_stats(group: pd.DataFrame) -> pd.DataFrame:
    """One row per (kind, row, sparsity) of the pruned records of a prepared group: accuracy over seeds (one value
    per seed, ``by_seed`` kept for the bold rule), the settings, mean achieved metrics."""
    pruned = group[group["kind"] != "dense"]
    rows = []
    for (kind, label, sparsity, marked), cell in pruned.groupby(
        ["kind", ROW, "sparsity", "sparsity_marked"], sort=True, dropna=True
    ):
        samples = by_seed(cell)
        s = stat(samples.values())
        hashes = sorted({h for h in cell["setting_hash"] if isinstance(h, str) and h})
        rows.append(
            {
                "kind": kind,
                "label": label,
                "target_sparsity": float(sparsity),
                "sparsity_marked": bool(marked),
                "test_acc_mean": s.mean,
                "test_acc_std": s.std,
                "n": s.n,
                "seeds": ",".join(sorted(samples, key=_seed_order)),
                "setting_hash": " ".join(hashes),
                "by_seed": samples,
                "compression_mean": numeric(cell, "compression").mean(),
                "params_remaining_pct_mean": (100 / numeric(cell, "compression")).mean(),
                "speedup_theoretical_mean": numeric(cell, "speedup_theoretical").mean(),
                "latency_ms_256_mean": numeric(cell, LATENCY_COLUMN).mean(),
                **measured_speedup(cell),
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
        "setting_hash",
        "by_seed",
        "compression_mean",
        "params_remaining_pct_mean",
        "speedup_theoretical_mean",
        "latency_ms_256_mean",
        *MEASURED_COLUMNS,
    ]
    return pd.DataFrame(rows, columns=columns)


MEASURED_COLUMNS = ["speedup_measured_mean", "speedup_measured_std", "speedup_measured_n", KERNEL, BATCH]


def measured_speedup(cell: pd.DataFrame) -> dict:
    """A cell's measured speed-up (``analysis.speed.headline``: the sparse kernel's or the compacted network's at the
    throughput batch) over seeds, one value per seed; the kernels and batch sizes it was measured with, "+"-joined
    where the seeds differ (NaN / None where no record of the cell was timed)."""
    s = stat(by_seed(cell, SPEEDUP).values())
    timed = cell[numeric(cell, SPEEDUP).notna()]
    kernels = sorted({str(k) for k in timed[KERNEL]})
    batches = sorted({int(b) for b in timed[BATCH]})
    return {
        "speedup_measured_mean": s.mean,
        "speedup_measured_std": s.std,
        "speedup_measured_n": s.n,
        KERNEL: "+".join(kernels) if kernels else None,
        BATCH: "+".join(map(str, batches)) if batches else None,
    }


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


LONG_COLUMNS = [
    "dataset",
    "model",
    "kind",
    "label",
    "target_sparsity",
    "sparsity_marked",
    "test_acc_mean",
    "test_acc_std",
    "n",
    "seeds",
    "setting_hash",
    "compression_mean",
    "params_remaining_pct_mean",
    "speedup_theoretical_mean",
    "latency_ms_256_mean",
    *MEASURED_COLUMNS,
]


def dense_long(dataset: str, model: str, label: str, dense: Stat, latency: Optional[float] = None) -> dict:
    """A dense baseline as a row of a table's CSV."""
    return {
        "dataset": dataset,
        "model": model,
        "kind": "dense",
        "label": label,
        "target_sparsity": 0.0,
        "sparsity_marked": False,
        "test_acc_mean": dense.mean,
        "test_acc_std": dense.std,
        "n": dense.n,
        "compression_mean": 1.0,
        "params_remaining_pct_mean": 100.0,
        "speedup_theoretical_mean": 1.0,
        "latency_ms_256_mean": latency if latency is not None else math.nan,
    }


def caption_notes(group: pd.DataFrame, marked: bool) -> str:
    """The notes every accuracy caption of a group ends with: settings named, shared rows, old records, marks."""
    parts = notes(group) + ([ACHIEVED_NOTE] if marked else [])
    return "".join(f" {p}" for p in parts)


def best_cells(cells: dict[tuple[str, tuple[float, bool]], dict[str, float]]) -> set[tuple[str, tuple[float, bool]]]:
    """Per column, the best mean's cell where it clearly beats every other cell of the column (``BOLD_RULE``)."""
    best = set()
    for level in {level for _, level in cells}:
        column = {label: samples for (label, lv), samples in cells.items() if lv == level and samples}
        if len(column) < 2:
            continue
        top = max(column, key=lambda label: (stat(column[label].values()).mean, label))
        if all(clearly_better(column[top], column[other]) for other in column if other != top):
            best.add((top, level))
    return best


def sparsity_table(
    group: pd.DataFrame, dataset: str, model: str, kind: str, dense: list[tuple[str, Stat]]
) -> Optional[Table]:
    """Rows = method labels (one per setting), columns = target sparsities; a column's best in bold where the seeds
    tell it apart from every other row (``BOLD_RULE``)."""
    of_kind = group[group["kind"] == kind]
    stats = cell_stats(of_kind)
    if stats.empty:
        return None
    dense = baselines_for(dense, of_kind)
    # a column is (sparsity, marked): an achieved 0.87* never shares a column with a target of 0.87
    levels = sorted({(r.target_sparsity, r.sparsity_marked) for r in stats.itertuples()})
    labels = sorted(stats["label"].unique(), key=lambda s: (s.casefold(), s))
    cells = {
        (r.label, (r.target_sparsity, r.sparsity_marked)): Stat(r.test_acc_mean, r.test_acc_std, int(r.n))
        for r in stats.itertuples()
    }
    samples = {(r.label, (r.target_sparsity, r.sparsity_marked)): r.by_seed for r in stats.itertuples()}
    counts = [s.n for s in cells.values()] + [d.n for _, d in dense]
    max_n = max(counts)
    best = best_cells(samples)
    budget = has_budget(group)  # records before the training budget have no such column
    rows = []
    for label in labels:
        row = [Text(label)]
        for level in levels:
            s = cells.get((label, level))
            text = stat_text(s, show_n=s is not None and s.n < max_n)
            text.bold = (label, level) in best
            row.append(text)
        rows.append(row + ([Text(budget_text(of_kind[of_kind[ROW] == label]))] if budget else []))
    footer = []
    for label, baseline in dense:
        dense_text = stat_text(baseline, show_n=baseline.n < max_n)
        footer.append(
            [Text(label)]
            + [Text(dense_text.main, dense_text.note) for _ in levels]
            + ([Text(dense_budget(group, label))] if budget else [])
        )
    meaning = KIND_COLUMN_MEANING.get(kind, "target sparsity")
    caption = (
        f"{dataset} / {model}, {kind} pruning: {seed_note(counts)}; columns: {meaning}."
        + (f" {BOLD_RULE}" if max_n > 1 else "")
        + (" Dense: the unpruned baselines." if dense else "")
        + (f" {BUDGET_NOTE}" if budget else "")
        + caption_notes(
            group[(group["kind"] == kind) | (group["kind"].eq("dense") & group[DENSE_ROW].isin([d[0] for d in dense]))],
            any(marked for _, marked in levels),
        )
    )
    long = stats.assign(
        dataset=dataset,
        model=model,
        best=[(r.label, (r.target_sparsity, r.sparsity_marked)) in best for r in stats.itertuples()],
    )
    if dense:
        long = pd.concat([long, pd.DataFrame([{**dense_long(dataset, model, *d), "best": False} for d in dense])])
    columns = [*LONG_COLUMNS[:9], "best", *LONG_COLUMNS[9:]]
    return Table(
        name=safe_name(dataset, model, kind),
        title=f"{dataset} / {model} — {kind}",
        caption=caption,
        header=["Method", *[fmt_sparsity(*level) for level in levels], *([BUDGET_HEADER] if budget else [])],
        align="l" + "r" * len(levels) + ("r" if budget else ""),
        rows=rows,
        footer=footer,
        span_footer=not budget,  # LaTeX spans the dense accuracy over the columns unless a budget follows it
        long=long[columns].reset_index(drop=True),
    )


def compression_table(
    group: pd.DataFrame, dataset: str, model: str, dense: list[tuple[str, Stat]], latency: dict[str, float]
) -> Optional[Table]:
    """Every (method, sparsity) cell of every kind, sorted by achieved compression: the cross-kind comparison."""
    stats = cell_stats(group)
    if stats.empty:
        return None
    stats = stats.sort_values(["compression_mean", "label"], kind="stable", na_position="last")
    with_latency = stats["latency_ms_256_mean"].notna().any()
    counts = [int(n) for n in stats["n"]] + [d.n for _, d in dense]
    max_n = max(counts)

    def number(x: Optional[float], fmt: str) -> str:
        return "—" if x is None or not math.isfinite(x) else format(x, fmt)

    def row(label, kind, sparsity, compression, remaining, speedup, measured, latency_ms, s):
        cells = [
            Text(label),
            Text(kind),
            Text(sparsity),
            Text(number(compression, ".2f")),
            Text(number(remaining, ".3g")),
            Text(number(speedup, ".2f")),
            measured,
        ]
        if with_latency:
            cells.append(Text(number(latency_ms, ".3g")))
        cells.append(stat_text(s, show_n=s is not None and s.n < max_n))
        return cells

    rows = [  # the dense baselines first (compression 1×) in a table sorted by compression
        row(label, "dense", "0%", 1.0, 100.0, 1.0, Text("1.00", "(dense)"), latency.get(label, math.nan), s)
        for label, s in dense
    ]
    rows += [
        row(
            r.label,
            r.kind,
            fmt_sparsity(r.target_sparsity, r.sparsity_marked),
            r.compression_mean,
            r.params_remaining_pct_mean,
            r.speedup_theoretical_mean,
            speedup_text(r),
            r.latency_ms_256_mean,
            Stat(r.test_acc_mean, r.test_acc_std, int(r.n)),
        )
        for r in stats.itertuples()
    ]
    batch = throughput_batch(stats)
    header = ["Method", "Kind", "Target", "Compression (×)", "Params left (%)", "Theoretical speed-up (×)"]
    header.append(" ".join(["Measured speed-up", *([batch] if batch else []), "(kernel)"]))
    if with_latency:
        header.append("Latency b256 (ms)")
    header.append("Test acc. (%)")
    caption = (
        f"{dataset} / {model}, all methods by achieved compression (total / nonzero parameters). Theoretical "
        f"speed-up: dense / effective multiply-adds. {measured_note(stats, group)} Latency: "
        f"measured time per batch of 256 of the compacted network. Accuracy: {seed_note(counts)}."
        + caption_notes(group, bool(stats["sparsity_marked"].any()))
    )
    long = stats.assign(dataset=dataset, model=model)
    if dense:
        baselines = [dense_long(dataset, model, label, s, latency.get(label)) for label, s in dense]
        long = pd.concat([pd.DataFrame(baselines), long])
    columns = [*LONG_COLUMNS[:6], *LONG_COLUMNS[11:], *LONG_COLUMNS[6:11]]
    return Table(
        name=safe_name(dataset, model, "compression"),
        title=f"{dataset} / {model} — by compression",
        caption=caption,
        header=header,
        align="lll" + "r" * (len(header) - 3),
        rows=rows,
        long=long[columns].reset_index(drop=True),
    )


MEASURED_NOTE = (
    "Measured speed-up: dense ms / pruned ms, timed in turns within each record at its throughput batch (the "
    "largest it timed), for the kernel named: csr, bsr, coo = the masked weights through that torch.sparse kernel "
    "(runners/sparse.py), compacted = the channel-pruned network; —: not timed (latency.sparse_kernel=none, or no "
    "layer ran a sparse kernel)."
)


def measured_note(stats: pd.DataFrame, group: pd.DataFrame) -> str:
    """``MEASURED_NOTE``, what the spread is where cells have several seeds, and the machine."""
    several = bool((pd.to_numeric(stats["speedup_measured_n"], errors="coerce") > 1).any())
    return (
        MEASURED_NOTE
        + (
            " Measured speed-ups of several seeds: mean ± sample std over seeds (one value per seed)."
            if several
            else ""
        )
        + f" Timed on: {machine(group)}."
    )


def throughput_batch(stats: pd.DataFrame) -> str:
    """How a header names the cells' throughput batch: ``b256`` when every timed cell used one batch size, "largest
    batch" when they differ, "" when none was timed."""
    batches = {str(b) for b in stats[BATCH].dropna()}
    if not batches:
        return ""
    only = batches.pop() if len(batches) == 1 else "+"
    return f"b{only}" if "+" not in only else "largest batch"


def speedup_text(r: Any) -> Text:
    """A cell's measured speed-up as the table shows it: ``0.53 ± 0.04 (csr)``, or "—" where nothing was timed."""
    if not math.isfinite(r.speedup_measured_mean):
        return Text("—")
    s = Stat(r.speedup_measured_mean, r.speedup_measured_std, int(r.speedup_measured_n))
    spread = f" ± {s.std:.2f}" if s.n > 1 and math.isfinite(s.std) else ""
    return Text(f"{s.mean:.2f}{spread}", f"({r.speedup_kernel})")


def dense_latencies(group: pd.DataFrame) -> dict[str, float]:
    """Measured dense latency per dense baseline label (structured records time the dense network too)."""
    out = {}
    for _, part in group.groupby(DENSE_KEY, sort=False):
        value = dense_latency(part)
        if value is not None:
            out[str(part[DENSE_ROW].iloc[0])] = value
    return out


def build_tables(usable: pd.DataFrame) -> list[Table]:
    """All tables, per (dataset, model): one per pruning kind, then the compression table."""
    df = prepare(usable)
    tables = []
    for (dataset, model), group in df.groupby(["dataset", "model"], sort=True):
        dense = dense_baselines(group)
        kinds = sorted(
            (k for k in group["kind"].unique() if k != "dense"),
            key=lambda k: ({"unstructured": 0, "structured": 1}.get(k, 2), k),
        )
        for kind in kinds:
            table = sparsity_table(group, dataset, model, kind, dense)
            if table is not None:
                tables.append(table)
        table = compression_table(group, dataset, model, dense, dense_latencies(group))
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
