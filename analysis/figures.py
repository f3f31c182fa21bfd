"""Paper-column figures (≈3.4 × 2.6 in, 7–8 pt): accuracy against compression, remaining parameters, theoretical
speedup and (structured methods) latency measured on the device each job ran on. One fixed colour + marker per
method label, so a method looks the same in every figure. Uses matplotlib's object API (no pyplot), so no global backend is touched."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from analysis.collapse import collapse_cells
from analysis.settings import ROW
from analysis.speed import kernel_name, kernel_order, machine, speedups
from analysis.tables import (
    LATENCY_COLUMN,
    ONE_SEED,
    Stat,
    baselines_for,
    by_seed,
    dense_baselines,
    dense_latencies,
    numeric,
    safe_name,
    seed_key,
)

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

WIDTH_IN, HEIGHT_IN = 3.4, 2.6
DPI = 200
RC: dict[RcKeyType, Any] = {
    "font.size": 7.5,
    "axes.titlesize": 8,
    "axes.labelsize": 7.5,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "axes.linewidth": 0.6,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.minor.width": 0.4,
    "ytick.minor.width": 0.4,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.35,
    "lines.linewidth": 1.0,
    "lines.markersize": 3.8,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "legend.frameon": False,
    "legend.handlelength": 1.8,
    "legend.columnspacing": 1.0,
    "legend.borderaxespad": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.dpi": DPI,
}
DENSE_COLOR = "0.35"
DENSE_LINESTYLES = ["--", ":", "-."]  # several dense settings in one figure: one line each

# Colour-blind-aware first picks (Okabe–Ito, then Tol's muted set); grey is reserved for the dense reference.
PALETTE = [
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#000000",
    "#882255",
    "#999933",
    "#44AA99",
    "#332288",
    "#661100",
    "#AA4499",
    "#6699CC",
]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "d", "8", "*"]


@dataclass(frozen=True)
class Style:
    color: str
    marker: str
    linestyle: str = "-"


# The methods prunelab implements always get the same style, in every figure and every report; the last palette
# entries are left for labels not listed here.
KNOWN_STYLES = {
    "magnitude": Style(PALETTE[0], "o"),
    "obd": Style(PALETTE[1], "s"),
    "snip": Style(PALETTE[2], "^"),
    "lottery": Style(PALETTE[3], "D"),
    "random": Style(PALETTE[4], "v"),
    "synflow": Style(PALETTE[10], "*"),
    "grasp": Style(PALETTE[11], "8"),
    "gmp": Style(PALETTE[0], "o", "--"),  # magnitude's colour, dashed: magnitude pruned gradually
    "gmp (global)": Style(PALETTE[0], "s", "--"),  # the survey's arm
    "random_channel": Style(PALETTE[4], "v", "--"),
    "slimming": Style(PALETTE[5], "P"),
    "thinet": Style(PALETTE[6], "X"),
    "l1_filter": Style(PALETTE[7], "<"),
    "scratch-E (slimming)": Style(PALETTE[8], ">"),
    "scratch-B (slimming)": Style(PALETTE[9], "p"),
    "scratch-E (thinet)": Style(PALETTE[8], "h", "--"),
    "scratch-B (thinet)": Style(PALETTE[9], "d", "--"),
}
KIND_ORDER = {"unstructured": 0, "structured": 1}


def known_base(label: str) -> str:
    """The known label a row label extends: without its notes ("scratch-B (slimming, cap 2×)"), its setting names
    ("magnitude [train.epochs=1]") and the other sources of a shared row ("scratch-E (slimming = thinet)")."""
    base = re.sub(r" \[[^\[\]]*\]$", "", label)
    base = re.sub(r" = [^,()\[\]]+", "", base)
    return re.sub(r", [^()]*\)$", ")", base)


def style_map(labels) -> dict[str, Style]:
    """Known labels keep their fixed style; the others take the unused (colour, marker) pairs in sorted order,
    so one report uses one style per label in all its figures."""
    labels = set(labels)
    order = sorted(labels, key=lambda s: (s.casefold(), s))
    # a known label with extra notes ("scratch-B (slimming, cap 2×)", "magnitude [train.epochs=1]") keeps its style
    # unless the plain one is here too, or another label of the same method took it first
    styles: dict[str, Style] = {}
    for label in order:
        base = known_base(label)
        if base in KNOWN_STYLES and (base == label or base not in labels) and KNOWN_STYLES[base] not in styles.values():
            styles[label] = KNOWN_STYLES[base]
    used = set(styles.values())
    pool = [
        Style(PALETTE[i], MARKERS[(i + j) % len(MARKERS)], ("-", "--", "-.", ":")[j % 4])
        for j in range(4)
        for i in range(len(PALETTE))
    ]
    used_colors = {s.color for s in used}
    used_markers = {s.marker for s in used}
    known_colors = {s.color for s in KNOWN_STYLES.values()}
    # Prefer solid lines, a colour no label of this report has, a colour no known method owns, a free marker.
    pool.sort(
        key=lambda s: (s.linestyle != "-", s.color in used_colors, s.color in known_colors, s.marker in used_markers)
    )
    free = [s for s in pool if s not in set(KNOWN_STYLES.values())]
    for i, label in enumerate(sorted(set(labels) - set(styles), key=lambda s: (s.casefold(), s))):
        styles[label] = free[i % len(free)]
    return styles


def curve(group: pd.DataFrame, x: pd.Series) -> pd.DataFrame:
    """Per (row, sparsity): mean x and test accuracy (%) mean/std/n over seeds (one value per seed), sorted by x."""
    data = group.assign(x=x)
    data = data[np.isfinite(data["x"]) & (data["x"] > 0) & data["acc"].notna()]
    rows = []
    for (label, kind, _, _), cell in data.groupby([ROW, "kind", "sparsity", "sparsity_marked"], sort=True):
        accs = np.array(list(by_seed(cell).values()), dtype=float) * 100
        rows.append(
            {
                "label": label,
                "kind": kind,
                "x": float(cell["x"].mean()),
                "mean": float(accs.mean()),
                "std": float(accs.std(ddof=1)) if len(accs) > 1 else 0.0,
                "n": len(accs),
            }
        )
    if not rows:
        return pd.DataFrame(columns=["label", "kind", "x", "mean", "std", "n"])
    return pd.DataFrame(rows).sort_values(["label", "x"], kind="stable").reset_index(drop=True)


def spread_note(points: pd.DataFrame, dense: list[tuple[str, Stat]]) -> str:
    """What the bands are: the figure's counterpart of a table caption's seed note."""
    counts = [int(n) for n in points["n"]] + [d.n for _, d in dense]
    low, high = min(counts, default=0), max(counts, default=0)
    if high <= 1:
        return ONE_SEED
    seeds = f"{high}" if low == high else f"{low}–{high}"
    return f"mean ± 1 sample std over {seeds} seeds"


def _log_axis(ax, values: np.ndarray) -> None:
    ax.set_xscale("log")
    lo, hi = float(np.min(values)), float(np.max(values))
    subs = (1.0, 2.0, 5.0) if hi / max(lo, 1e-12) > 4 else tuple(float(s) for s in range(1, 10))
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_minor_locator(LogLocator(base=10, subs=tuple(float(s) for s in range(1, 10))))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def accuracy_figure(
    points: pd.DataFrame,
    styles: dict[str, Style],
    *,
    title: str,
    xlabel: str,
    stem: Path,
    dense: list[tuple[str, Stat]],
    dense_x: Optional[dict[str, float]] = None,
    log_x: bool = True,
    invert_x: bool = False,
) -> list[Path]:
    """Mean line + ±1 std band per method, each dense baseline as a dashed line (and a star at its ``dense_x``); the
    title's second line says what the bands are (or that one seed has none)."""
    kinds: dict[str, str] = dict(zip(points["label"], points["kind"])) if "kind" in points.columns else {}
    labels = sorted(
        dict.fromkeys(points["label"]), key=lambda s: (KIND_ORDER.get(kinds.get(s, ""), 2), s.casefold(), s)
    )
    dense_x = dense_x or {}
    n_entries = len(labels) + len(dense) + sum(label in dense_x for label, _ in dense)
    outside = n_entries > 4
    longest = max([len(label) for label in [*labels, *(d for d, _ in dense)]] + [5])
    ncols = 3 if longest <= 12 else 2 if longest <= 28 else 1
    legend_rows = math.ceil(n_entries / ncols) if outside else 0
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN + 0.16 * legend_rows), layout="constrained")
        ax = fig.add_subplot()
        handles = []
        for label in labels:
            style = styles[label]
            pts = points[points["label"] == label]
            x, mean, std = pts["x"].to_numpy(float), pts["mean"].to_numpy(float), pts["std"].to_numpy(float)
            ax.fill_between(x, mean - std, mean + std, color=style.color, alpha=0.15, linewidth=0, zorder=1)
            (line,) = ax.plot(
                x,
                mean,
                color=style.color,
                marker=style.marker,
                linestyle=style.linestyle,
                markeredgecolor="white",
                markeredgewidth=0.4,
                label=label,
                zorder=3,
            )
            if len(x) == 1 and std[0] > 0:  # a band needs two points: show the spread as an error bar
                ax.errorbar(x, mean, yerr=std, fmt="none", ecolor=style.color, elinewidth=0.7, capsize=1.5, zorder=2)
            handles.append(line)
        for (dense_label, baseline), linestyle in zip(dense, DENSE_LINESTYLES * len(dense)):
            d_mean = 100 * baseline.mean
            d_std = 100 * baseline.std if math.isfinite(baseline.std) else 0.0
            if d_std > 0:
                ax.axhspan(d_mean - d_std, d_mean + d_std, color=DENSE_COLOR, alpha=0.12, linewidth=0, zorder=0)
            handles.append(
                ax.axhline(d_mean, color=DENSE_COLOR, linestyle=linestyle, linewidth=0.9, zorder=2, label=dense_label)
            )
        for dense_label, baseline in dense:
            if dense_label in dense_x:
                (star,) = ax.plot(
                    [dense_x[dense_label]],
                    [100 * baseline.mean],
                    linestyle="none",
                    marker="*",
                    markersize=8,
                    color="black",
                    markeredgecolor="white",
                    markeredgewidth=0.4,
                    zorder=4,
                    label=f"{dense_label} (latency)",
                )
                handles.append(star)
        xs = np.concatenate([points["x"].to_numpy(float), list(dense_x.values())])
        if log_x and len(xs):
            _log_axis(ax, xs)
        if invert_x:
            ax.invert_xaxis()
        ax.set_xlabel(xlabel)
        ax.set_ylabel("Test accuracy (%)")
        ax.set_title(f"{title}\n{spread_note(points, dense)}", fontsize=RC["axes.titlesize"], linespacing=1.3)
        ax.grid(True, which="major")
        if outside:
            fig.legend(handles=handles, loc="outside lower center", ncols=ncols)
        else:
            ax.legend(handles=handles, loc="best")
        stem.parent.mkdir(parents=True, exist_ok=True)
        paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
        fig.savefig(paths[0], dpi=DPI)
        fig.savefig(paths[1])
    return paths


def build_figures(df: pd.DataFrame, fig_dir: Path, styles: Optional[dict[str, Style]] = None) -> list[Path]:
    """All figures for a prepared frame (:func:`analysis.tables.prepare`) of usable records."""
    if styles is None:
        styles = style_map(df.loc[df["kind"] != "dense", ROW].unique())
    paths: list[Path] = []
    for (dataset, model), group in df.groupby(["dataset", "model"], sort=True):
        pruned = group[group["kind"] != "dense"]
        if pruned.empty:
            continue
        dense = dense_baselines(group)
        title = f"{dataset} / {model}"
        base = fig_dir / safe_name(dataset, model)
        compression = numeric(pruned, "compression")
        views = [
            ("acc_vs_compression", compression, "Compression ratio (total / nonzero params, ×)", False),
            ("acc_vs_density", 100 / compression, "Remaining parameters (% of total)", True),
            (
                "acc_vs_speedup",
                numeric(pruned, "speedup_theoretical"),
                "Theoretical speedup (dense / effective FLOPs, ×)",
                False,
            ),
        ]
        for name, x, xlabel, invert in views:
            points = curve(pruned, x)
            if not points.empty:
                paths += accuracy_figure(
                    points,
                    styles,
                    title=title,
                    xlabel=xlabel,
                    dense=baselines_for(dense, pruned),
                    stem=base.parent / f"{base.name}_{name}",
                    invert_x=invert,
                )
        structured = pruned[pruned["kind"] == "structured"]
        points = curve(structured, numeric(structured, LATENCY_COLUMN))
        if not points.empty:
            devices = ", ".join(sorted({str(d) for d in structured["latency_device"].dropna()})) or "cpu"
            paths += accuracy_figure(
                points,
                styles,
                title=title,
                xlabel=f"Measured latency on {devices}, batch of 256 (ms)",
                dense=baselines_for(dense, structured),
                dense_x=dense_latencies(structured),
                stem=base.parent / f"{base.name}_acc_vs_latency",
                log_x=False,
            )
        points = speedup_points(pruned)
        if not points.empty:
            figure = speedup_figure(points, styles, title=title, machine_text=machine(pruned))
            paths += save(figure, base.parent / f"{base.name}_speedup_measured_vs_theoretical")
        cells = collapse_cells(pruned)
        if not cells.empty:
            paths += save(collapse_figure(cells, styles, title=title), base.parent / f"{base.name}_layer_collapse")
    return paths


# ---------------------------------------------------------------- does it get faster?

# One marker per kernel, filled in the method's colour (hollow: the masked network, dense kernels with a mask).
KERNEL_MARKERS = {"masked": "o", "csr": "s", "bsr": "D", "coo": "^", "semi_structured": "v", "compacted": "P"}
SPEEDUP_COLUMNS = ["label", "kind", "sparsity", "kernel", "batch", "x", "x_std", "y", "y_std", "n"]
FASTER_COLOR = "#009E73"


def speedup_points(group: pd.DataFrame) -> pd.DataFrame:
    """The speed-up figure's points of a prepared group: per (row, kind, sparsity, kernel, batch), the theoretical
    (``x``) and measured (``y``) speed-up (``analysis.speed.speedups``), each the mean over seeds of one value per
    seed, with its sample std (0 for one seed) and ``n``."""
    measured = speedups(group)
    if measured.empty:
        return pd.DataFrame(columns=SPEEDUP_COLUMNS)
    records = group.loc[measured["index"]]
    measured = measured.assign(
        label=records[ROW].to_numpy(),
        kind=records["kind"].to_numpy(),
        sparsity=records["sparsity"].to_numpy(),
        marked=records["sparsity_marked"].to_numpy(),
        seed=records["seed"].map(seed_key).to_numpy(),
    )
    rows = []
    keys = ["label", "kind", "sparsity", "marked", "kernel", "batch"]
    for (label, kind, sparsity, _, kernel, batch), cell in measured.groupby(keys, sort=True):
        per_seed = cell.groupby("seed")[["theoretical", "speedup"]].mean()
        x, y = per_seed["theoretical"].to_numpy(float), per_seed["speedup"].to_numpy(float)
        n = len(per_seed)
        rows.append(
            {
                "label": label,
                "kind": kind,
                "sparsity": float(sparsity),
                "kernel": kernel,
                "batch": int(batch),
                "x": float(x.mean()),
                "x_std": float(x.std(ddof=1)) if n > 1 else 0.0,
                "y": float(y.mean()),
                "y_std": float(y.std(ddof=1)) if n > 1 else 0.0,
                "n": n,
            }
        )
    return pd.DataFrame(rows, columns=SPEEDUP_COLUMNS)


def speedup_panels(points: pd.DataFrame) -> list[int]:
    """The batch sizes the figure shows: batch 1 and the throughput batch (the largest timed), or the one timed."""
    batches = sorted({int(b) for b in points["batch"]})
    return sorted({batches[0], batches[-1]}) if batches else []


def faster_counts(points: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """Per kernel: (points faster than dense, points) of one panel."""
    return {
        kernel: (int((part["y"] > 1).sum()), len(part))
        for kernel, part in sorted(points.groupby("kernel"), key=lambda item: kernel_order(str(item[0])))
    }


def _log_axes(ax, xs: np.ndarray, ys: np.ndarray) -> tuple[float, float, float, float]:
    """Log x and y around the data, 1 (dense speed) and the diagonal's overlap; returns the limits."""
    x_lo, x_hi = min(float(xs.min()), 1.0) / 1.25, max(float(xs.max()), 1.0) * 1.25
    y_lo, y_hi = min(float(ys.min()), 1.0) / 1.4, max(float(ys.max()), 1.0) * 1.4
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis, (lo, hi) in ((ax.xaxis, (x_lo, x_hi)), (ax.yaxis, (y_lo, y_hi))):
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if hi / lo > 4 else tuple(range(1, 10))))
        axis.set_minor_locator(LogLocator(base=10, subs=tuple(float(s) for s in range(1, 10))))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    return x_lo, x_hi, y_lo, y_hi


def speedup_figure(points: pd.DataFrame, styles: dict[str, Style], *, title: str, machine_text: str) -> Figure:
    """Measured against theoretical speed-up, one panel per batch size (``speedup_panels``), log-log: one marker per
    kernel in the method's colour, error bars over seeds where n > 1, the diagonal (measured = theoretical), dense
    speed (1×) with the region above it shaded, and per panel how many points of each kernel beat dense."""
    panels = speedup_panels(points)
    labels = sorted(dict.fromkeys(points["label"]), key=lambda s: (s.casefold(), s))
    kernels = sorted(dict.fromkeys(points["kernel"]), key=kernel_order)
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(2 * WIDTH_IN + 1.6, 3.4 + 0.06 * max(len(labels) - 8, 0)), layout="constrained")
        axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
        xs, ys = points["x"].to_numpy(float), points["y"].to_numpy(float)
        for ax, batch in zip(axes, panels):
            x_lo, x_hi, y_lo, y_hi = _log_axes(ax, xs, ys)
            ax.axhspan(1.0, y_hi, color=FASTER_COLOR, alpha=0.07, linewidth=0, zorder=0)
            ax.axhline(1.0, color=DENSE_COLOR, linestyle="--", linewidth=0.9, zorder=1)
            lo, hi = max(x_lo, y_lo), min(x_hi, y_hi)
            if lo < hi:
                ax.plot([lo, hi], [lo, hi], color="black", linestyle=":", linewidth=0.9, zorder=1)
            panel = points[points["batch"] == batch]
            for (label, kernel), series in panel.groupby(["label", "kernel"], sort=True):
                style = styles[str(label)]
                series = series.sort_values("x")
                hollow = kernel == "masked"
                ax.plot(series["x"], series["y"], color=style.color, linewidth=0.5, alpha=0.45, zorder=2)
                ax.errorbar(
                    series["x"],
                    series["y"],
                    xerr=series["x_std"].where(series["n"] > 1, 0.0),
                    yerr=series["y_std"].where(series["n"] > 1, 0.0),
                    fmt=KERNEL_MARKERS.get(str(kernel), "X"),
                    color=style.color,
                    markerfacecolor="white" if hollow else style.color,
                    markeredgecolor=style.color if hollow else "white",
                    markeredgewidth=0.8 if hollow else 0.4,
                    markersize=4.5,
                    elinewidth=0.6,
                    capsize=1.2,
                    linestyle="none",
                    zorder=3,
                )
            counts = faster_counts(panel)
            ax.text(
                0.02,
                0.98,
                "faster than dense:\n" + "\n".join(f"{kernel_name(k)} {a}/{n}" for k, (a, n) in counts.items()),
                transform=ax.transAxes,
                va="top",
                ha="left",
                fontsize=6.5,
                linespacing=1.25,
                bbox={"boxstyle": "round,pad=0.25", "facecolor": "white", "edgecolor": "0.8", "linewidth": 0.5},
                zorder=5,
            )
            ax.set_title(f"batch {batch}" + (" (throughput)" if batch == panels[-1] and len(panels) > 1 else ""))
            ax.set_xlabel("Theoretical speed-up (dense / effective multiply-adds, ×)")
            ax.grid(True, which="major")
        axes[0].set_ylabel("Measured speed-up (dense ms / pruned ms, ×)")
        kernel_handles = [
            Line2D(
                [],
                [],
                linestyle="none",
                marker=KERNEL_MARKERS.get(k, "X"),
                color="0.2",
                markerfacecolor="white" if k == "masked" else "0.2",
                markersize=5,
                label=kernel_name(k),
            )
            for k in kernels
        ]
        kernel_handles += [
            Line2D([], [], color="black", linestyle=":", linewidth=0.9, label="measured = theoretical"),
            Line2D([], [], color=DENSE_COLOR, linestyle="--", linewidth=0.9, label="dense speed (1×)"),
        ]
        method_handles = [Line2D([], [], color=styles[label].color, linewidth=2.5, label=label) for label in labels]
        fig.legend(handles=kernel_handles, loc="outside right upper", title="kernel (marker)", alignment="left")
        fig.legend(handles=method_handles, loc="outside right lower", title="method (colour)", alignment="left")
        fig.suptitle(f"{title}: does it get faster?\nTimed on {machine_text}; {spread_speedup(points)}")
    return fig


def spread_speedup(points: pd.DataFrame) -> str:
    high = int(points["n"].max()) if len(points) else 0
    return ONE_SEED if high <= 1 else f"error bars: ±1 sample std over up to {high} seeds"


def save(fig: Figure, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    with matplotlib.rc_context(RC):
        fig.savefig(paths[0], dpi=DPI)
        fig.savefig(paths[1])
    return paths


# ---------------------------------------------------------------- layer collapse at initialization

COLLAPSED_COLOR = "#D55E00"


def collapse_figure(cells: pd.DataFrame, styles: dict[str, Style], *, title: str) -> Figure:
    """Smallest per-layer density (log) against compression (log) per at-init method (``collapse_cells``): a cell
    where a seed's layer collapsed is ringed, one whose smallest density is 0 sits on the "0" line below the axis'
    data; the critical compression, where measured, is a tick of the method's colour at the top; the dotted line is
    1 / compression, where a layer at the overall density would be."""
    labels = sorted(dict.fromkeys(cells["label"]), key=lambda s: (s.casefold(), s))
    with matplotlib.rc_context(RC):
        rows = math.ceil((len(labels) + 3) / 2)
        fig = Figure(figsize=(WIDTH_IN + 0.6, HEIGHT_IN + 0.3 + 0.16 * rows), layout="constrained")
        ax = fig.add_subplot()
        density = cells["smallest_density_mean"].to_numpy(float)
        positive = density[np.isfinite(density) & (density > 0)]
        floor = (positive.min() if len(positive) else 1e-3) / 4
        critical_all = cells["critical_compression_mean"].dropna().to_numpy(float)
        xs = np.concatenate([cells["compression_mean"].to_numpy(float), critical_all])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.axhline(floor, color=COLLAPSED_COLOR, linestyle="--", linewidth=0.7, zorder=1)
        ax.text(xs.min(), floor, " 0: a layer collapsed", va="bottom", ha="left", fontsize=6.5, color=COLLAPSED_COLOR)
        data_x = cells["compression_mean"].to_numpy(float)  # the dotted line spans the data, not the ticks
        grid = np.geomspace(max(data_x.min() / 1.2, 1.0), data_x.max() * 1.2, 50)
        ax.plot(grid, 1 / grid, color=DENSE_COLOR, linestyle=":", linewidth=0.9, zorder=1)
        handles: list[Any] = []
        ticks: list[tuple[float, str]] = []
        for label in labels:
            style = styles[label]
            part = cells[cells["label"] == label].sort_values("compression_mean")
            y = part["smallest_density_mean"].to_numpy(float)
            y_plot = np.where(y > 0, y, floor)
            std = np.nan_to_num(part["smallest_density_std"].to_numpy(float))
            low = np.minimum(std, y_plot - floor / 2)  # a log axis has no room below 0
            handle = ax.errorbar(
                part["compression_mean"],
                y_plot,
                yerr=[np.maximum(low, 0), std],
                color=style.color,
                marker=style.marker,
                linestyle=style.linestyle,
                markeredgecolor="white",
                markeredgewidth=0.4,
                elinewidth=0.6,
                capsize=1.2,
                zorder=3,
                label=label,
            )
            handles.append(handle)
            collapsed = part["collapsed"].to_numpy(int) > 0
            if collapsed.any():
                ax.plot(
                    part["compression_mean"][collapsed],
                    y_plot[collapsed],
                    linestyle="none",
                    marker="o",
                    markersize=8,
                    markerfacecolor="none",
                    markeredgecolor=COLLAPSED_COLOR,
                    markeredgewidth=1.0,
                    zorder=4,
                )
            critical = part["critical_compression_mean"].dropna()
            for value in sorted(set(critical.round(6))):
                ax.axvline(value, ymin=0.93, ymax=1.0, color=style.color, linewidth=2.0, zorder=4)
                ticks.append((value, style.color))
        handles += [
            Line2D(
                [],
                [],
                linestyle="none",
                marker="o",
                markersize=8,
                markerfacecolor="none",
                markeredgecolor=COLLAPSED_COLOR,
                label="a layer collapsed",
            ),
            Line2D([], [], color="0.2", linewidth=2.0, label="critical compression (tick at top)"),
            Line2D([], [], color=DENSE_COLOR, linestyle=":", label="1 / compression"),
        ]
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(NullFormatter())
        lo, hi = (math.log(v) for v in ax.get_xlim())
        for value, color in ticks:  # the value beside its tick, on the side with room
            right = (math.log(value) - lo) / (hi - lo) > 0.75
            ax.annotate(
                f"{value:,.0f}×",
                (value, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(-3 if right else 3, -2),
                textcoords="offset points",
                ha="right" if right else "left",
                va="top",
                fontsize=6.5,
                color=color,
            )
        ax.set_xlabel("Compression (total / nonzero parameters, ×)")
        ax.set_ylabel("Smallest per-layer density (kept fraction)")
        ax.grid(True, which="major")
        n = int(cells["n"].max())
        note = ONE_SEED if n <= 1 else f"mean ± 1 sample std over up to {n} seeds"
        ax.set_title(f"{title}: layer collapse at initialization\n{note}", linespacing=1.3)
        fig.legend(handles=handles, loc="outside lower center", ncols=2)
    return fig
