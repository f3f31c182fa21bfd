"""REPRODUCTION.md: every claim of ``conf/claims/`` judged on the store's records (:mod:`analysis.claims`), with its
numbers, verdict, the paper's number beside ours and the figures of ``results/report/reproduction/``.

``write_report`` is what ``python -m runners.reproduce`` calls after its sweeps (and alone with ``--report-only``);
everything in the file is computed from the records, sorted, and free of absolute paths, so two runs of the same
tier give the same file up to the header's date, commit and timings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from analysis.claims import (
    CONFIDENCE,
    CONFIRMED,
    INCONCLUSIVE,
    MIN_SEEDS,
    MIXED,
    NO_VERDICT,
    REFUTED,
    Claim,
    ClaimResult,
    Part,
    Side,
    arm_records,
    evaluate,
    format_for,
    format_value,
    matches,
    metric_name,
    record_value,
    side_values,
)
from analysis.figures import DENSE_COLOR, DPI, HEIGHT_IN, WIDTH_IN, style_map
from analysis.figures import RC as _RC
from foundations.files import atomic_write_text
from foundations.hashing import canonical

RC: Any = dict(_RC)  # the survey figures' style (Any: matplotlib types rc keys as literals)
VERDICT_MARK = {
    CONFIRMED: "✅ confirmed",
    REFUTED: "❌ refuted",
    INCONCLUSIVE: "➖ inconclusive",
    MIXED: "◐ mixed",
    NO_VERDICT: "⚠️ no verdict",
}


@dataclass
class Context:
    """What the report needs besides the records."""

    experiment: str  # the records' experiment name (reproduce_<tier>)
    tier: str
    seeds: list[int]
    knobs: dict = field(default_factory=dict)
    header: dict = field(default_factory=dict)  # command, date, commit, wall time, stages computed
    not_run: dict = field(default_factory=dict)  # variant name -> why it did not run (e.g. MNIST files absent)


# ------------------------------------------------------------------------------------------------ text
def _fmt_at(claim: Claim, at: Any) -> str:
    if at is None:
        return ""
    if isinstance(at, str):
        return at
    return f"{at * 100:g} %" if claim.at_key in ("target_sparsity", "density") else f"{at:g}"


def _diff(part: Part) -> str:
    if part.stats is None:
        return "—"
    s, fmt = part.stats, part.format
    unit = " pp" if fmt == "percent" else ""
    return (
        f"{format_value(s.mean, fmt, signed=True)}{unit} "
        f"[{format_value(s.low, fmt, signed=True)}, {format_value(s.high, fmt, signed=True)}]"
    )


def _mean_std(values, fmt: str) -> str:
    summary = values.summary
    if summary is None:
        return "—"
    std = format_value(summary[1], fmt).replace(" %", "")
    return f"{format_value(summary[0], fmt)} ± {std}"


def why(result: ClaimResult) -> str:
    """Where the claim holds and where it breaks, from the parts (numbers, not adjectives)."""
    claim = result.claim
    groups: dict[str, list[Part]] = {}
    for part in result.parts:
        groups.setdefault(part.verdict, []).append(part)

    def where(parts: list[Part], numbers: bool) -> str:
        by_text: dict[str, list[str]] = {}
        for p in parts:
            at = _fmt_at(claim, p.at)
            number = f"A − B = {_diff(p)}" if numbers else ""
            by_text.setdefault(p.text, []).append(f"{at} ({number})" if at and number else at or number)
        return "; ".join(
            text
            + (
                f" at {', '.join(items)}"
                if any(_fmt_at(claim, p.at) for p in parts)
                else (f" ({', '.join(items)})" if numbers else "")
            )
            for text, items in by_text.items()
        )

    sentences = []
    if groups.get(CONFIRMED):
        sentences.append(f"Holds: {where(groups[CONFIRMED], False)}.")
    if groups.get(REFUTED):
        sentences.append(f"Breaks: {where(groups[REFUTED], True)}.")
    if groups.get(INCONCLUSIVE):
        sentences.append(f"Undecided (the interval straddles the bound): {where(groups[INCONCLUSIVE], True)}.")
    if result.reasons:
        sentences.append(
            "No verdict: "
            + "; ".join(result.reasons[:6])
            + (f" (+{len(result.reasons) - 6} more)" if len(result.reasons) > 6 else "")
            + "."
        )
    return " ".join(sentences)


def _arm_rows(result: ClaimResult) -> list[str]:
    claim = result.claim
    fmt = format_for(claim.metric)
    axis = [claim.at_key] if claim.at_key else []
    lines = [_row(["arm", *axis, "n", f"{metric_name(claim.metric)} (mean ± std)"]), _row(["---"] * (3 + len(axis)))]
    for row in result.arm_table:
        if row["mean"] is None:
            value = "—"
        else:
            value = f"{format_value(row['mean'], fmt)} ± {format_value(row['std'], fmt).replace(' %', '')}"
        at = [_fmt_at(claim, row["at"])] if axis else []
        lines.append(_row([row["arm"], *at, str(row["n"]), value]))
    return lines


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _part_rows(result: ClaimResult) -> list[str]:
    claim = result.claim
    axis = [claim.at_key] if claim.at_key else []
    lines = [
        _row(["comparison", *axis, "A", "B", f"A − B [{CONFIDENCE * 100:g} % CI]", "n", "verdict"]),
        _row(["---"] * (6 + len(axis))),
    ]
    for p in result.parts:
        at = [_fmt_at(claim, p.at)] if axis else []
        lines.append(
            _row(
                [
                    p.text,
                    *at,
                    _mean_std(p.a, p.format),
                    _mean_std(p.b, p.format),
                    _diff(p),
                    str(p.stats.n) if p.stats else "—",
                    VERDICT_MARK[p.verdict],
                ]
            )
        )
    return lines


def _published(result: ClaimResult) -> str:
    pub = result.published
    if not pub:
        return "no published number for this claim."
    text = pub["text"]
    if pub.get("value") is not None and "ours" in pub:
        fmt = pub.get("format", "number")
        ours = pub["ours"]
        mine = (
            "not run"
            if ours is None
            else f"{format_value(ours[0], fmt)} ± {format_value(ours[1], fmt).replace(' %', '')} (n = {ours[2]})"
        )
        text += f" **Paper {format_value(pub['value'], fmt)} · ours {mine}.**"
    return text


def claim_section(
    result: ClaimResult, context: Context, figures: list[Path], out_dir: Path, variant_sections: list[str]
) -> str:
    claim = result.claim
    lines = [f"## {claim.number}. {claim.id}", "", f"**Claim** ({claim.paper}; {claim.source}): {claim.sentence}", ""]
    lines += [f"**Setting**: {claim.setting}", ""] if claim.setting else []
    lines += _judged(result, context)
    for path in figures:
        lines += [f"![{path.stem}]({os.path.relpath(path, out_dir)})", ""]
    lines += variant_sections
    return "\n".join(lines) + "\n"


def run_line(line: str, context: Context) -> str:
    """The command a claim's line runs as (``runners.reproduce`` adds the tier to the reproduce_* configs)."""
    tier = f" reproduce.tier={context.tier}" if "+experiment=reproduce_" in line else ""
    return f"python -m runners.train -m {line}{tier} name={context.experiment} seed={','.join(map(str, context.seeds))}"


def _judged(result: ClaimResult, context: Context) -> list[str]:
    claim = result.claim
    lines = ["**Experiments**:", ""] + [f"    {run_line(line, context)}" for line in claim.experiments] + [""]
    lines += [f"**Verdict: {VERDICT_MARK[result.verdict]}.** {why(result)}", ""]
    lines += _arm_rows(result) + [""] + _part_rows(result) + [""]
    if result.evidence:
        lines += ["**Measured**: " + " ".join(result.evidence), ""]
    lines += [f"**Paper**: {_published(result)}", ""]
    if claim.notes:
        lines += [f"*Note*: {claim.notes}", ""]
    return lines


def variant_section(claim: Claim, context: Context, result: Optional[ClaimResult], reason: Optional[str]) -> list[str]:
    title = f"### {str(claim.variant).upper() if claim.variant == 'mnist' else claim.variant} variant"
    if result is None:
        return [title, "", f"not run: {reason}", ""]
    lines = [title, "", f"**Setting**: {claim.setting}", ""]
    return lines + _judged(result, context)


def summary_table(results: list[ClaimResult], variants: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| # | claim | source | verdict | MNIST variant |", "|---|---|---|---|---|"]
    for r in results:
        c = r.claim
        anchor = f"#{c.number}-{c.id}"
        counts = {v: sum(p.verdict == v for p in r.parts) for v in (CONFIRMED, REFUTED, INCONCLUSIVE, NO_VERDICT)}
        detail = (
            ", ".join(f"{n} {v}" for v, n in counts.items() if n) if sum(bool(n) for n in counts.values()) > 1 else ""
        )
        mnist = variants.get(c.id, {}).get("mnist")
        mnist_text = (
            "—"
            if mnist is None
            else (VERDICT_MARK[mnist.verdict] if isinstance(mnist, ClaimResult) else f"not run: {mnist}")
        )
        lines.append(
            f"| {c.number} | [{c.id}]({anchor}) | {c.source} | "
            f"{VERDICT_MARK[r.verdict]}{f' ({detail} parts)' if detail else ''} | {mnist_text} |"
        )
    return lines


def header(context: Context) -> list[str]:
    h = context.header
    knobs = ", ".join(f"{k} {v}" for k, v in context.knobs.items() if k != "seeds")
    lines = [
        "# Reproduction report",
        "",
        "Every claim of `conf/claims/` judged on this repository's own runs (README › Reproduction). "
        "Regenerated by the command below; do not edit by hand.",
        "",
        f"- **Command**: `{h.get('command', '?')}`",
        f"- **Date**: {h.get('date', '?')} · **commit** `{h.get('commit', '?')}`",
        f"- **Wall time**: {h.get('wall_time', '?')}"
        + (f" (claims run: {h['claims_run']})" if h.get("claims_run") else ""),
        f"- **Tier** `{context.tier}`: seeds {', '.join(map(str, context.seeds))}; {knobs}",
        f"- **Records**: experiment `{context.experiment}` in the store; Fashion-MNIST has no published "
        f"tables in any of the papers, so only relative claims are judged on it.",
        f"- **Verdicts**: paired differences A − B over seeds (the same seed gives the same dense model and "
        f"data order), {CONFIDENCE * 100:g} % Student-t interval of their mean. Confirmed: the interval lies on the "
        f"claimed side of the bound (inside ± tolerance for ≈); refuted: it lies on the other side; "
        f"inconclusive: it straddles the bound; mixed: some parts confirmed, some refuted. A claim with "
        f"missing or failed runs, or fewer than {MIN_SEEDS} seeds, gets no verdict.",
        "",
    ]
    return lines


# ------------------------------------------------------------------------------------------------ figures
def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    return path


def _axis_values(claim: Claim, records: list[dict], arm: str, metric: Any, context: Context):
    xs, means, stds = [], [], []
    for at in claim.at_values:
        values = side_values(claim, records, Side(arm, metric), at, context.seeds, context.experiment)
        summary = values.summary
        if summary is not None:
            xs.append(at)
            means.append(summary[0])
            stds.append(summary[1])
    return np.array(xs, float), np.array(means, float), np.array(stds, float)


def curve_figure(claim: Claim, spec: dict, records: list[dict], context: Context, out: Path) -> Optional[Path]:
    """Each arm's metric (mean ± std over seeds) along the claim's axis; ``metrics`` draws several metrics of
    one arm instead."""
    series = []
    if spec.get("metrics"):
        arm = spec["arms"][0]
        series = [(label, arm, metric) for label, metric in spec["metrics"].items()]
    else:
        series = [(arm, arm, spec.get("metric", claim.metric)) for arm in spec["arms"]]
    styles = style_map([label for label, _, _ in series])
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), layout="constrained")
        ax = fig.add_subplot()
        drawn = 0
        for label, arm, metric in series:
            x, mean, std = _axis_values(claim, records, arm, metric, context)
            if not len(x):
                continue
            style = styles[label]
            ax.errorbar(
                x,
                mean,
                yerr=std,
                color=style.color,
                marker=style.marker,
                linestyle=style.linestyle,
                capsize=1.5,
                label=label,
            )
            drawn += 1
        if not drawn:
            return None
        if spec.get("log_y"):
            ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_xlabel(spec.get("xlabel", claim.at_key or ""))
        ax.set_ylabel(spec.get("ylabel", metric_name(claim.metric)))
        ax.set_title(f"claim {claim.number}: {claim.id}")
        ax.grid(True)
        ax.legend(loc="best")
        return _save(fig, out / f"{spec['name']}.png")


def _ladder_setting(record: dict) -> str:
    """A lottery record's setting without its target sparsity (the targets of one ladder share their levels);
    records written before ``setting`` existed count as one."""
    setting = record.get("setting")
    if not isinstance(setting, dict):
        return ""
    method = {k: v for k, v in (setting.get("method") or {}).items() if k != "sparsity"}
    return canonical({**setting, "method": method})


def lth_ladder_figure(claim: Claim, spec: dict, records: list[dict], context: Context, out: Path) -> Optional[Path]:
    """Test accuracy of every lottery level (from the records' ``levels``) against the density, the controls
    (reinit, shuffle) at their density and the dense accuracy."""
    ticket_filter = {
        k: v for k, v in claim.arms[spec["ticket"]].items() if k != claim.at_key and k != "target_sparsity"
    }
    where = {k: v for k, v in claim.where.items() if k != "target_sparsity"}
    lottery = [
        r
        for r in records
        if r.get("experiment") == context.experiment
        and r.get("status") == "ok"
        and matches(r, where)
        and matches(r, ticket_filter)
        and r.get("seed") in context.seeds
    ]
    if len({_ladder_setting(r) for r in lottery}) > 1:
        return None  # two lottery configurations under one experiment name: their ladders must not be mixed
    ladder: dict[float, dict[int, float]] = {}
    for r in lottery:
        for level in r.get("levels") or []:
            ladder.setdefault(round(float(level["density"]), 6), {})[r["seed"]] = float(level["test_acc"])
    if not ladder:
        return None
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), layout="constrained")
        ax = fig.add_subplot()
        xs = sorted(ladder, reverse=True)
        mean = np.array([100 * np.mean(list(ladder[x].values())) for x in xs], float)
        std = np.array(
            [100 * np.std(list(ladder[x].values()), ddof=1) if len(ladder[x]) > 1 else 0.0 for x in xs], float
        )
        styles = style_map(["lottery", *spec.get("controls", {})])
        ax.errorbar(
            [100 * x for x in xs],
            mean,
            yerr=std,
            color=styles["lottery"].color,
            marker="D",
            capsize=1.5,
            label="ticket (reset to init)",
        )
        for label, arm in spec.get("controls", {}).items():
            found = arm_records(claim, records, arm, None, context.experiment)
            points = [
                (100 * r["density"], 100 * r["test_acc"])
                for r in found
                if r.get("status") == "ok" and r.get("seed") in context.seeds
            ]
            if points:
                px, py = np.array(points).T
                ax.errorbar(
                    [px.mean()],
                    [py.mean()],
                    yerr=[py.std(ddof=1) if len(py) > 1 else 0.0],
                    color=styles[label].color,
                    marker=styles[label].marker,
                    linestyle="none",
                    capsize=1.5,
                    label=label,
                )
        # one value per dense model: every target of a seed repeats its seed's dense accuracy
        dense = {
            r.get("dense_stage") or r["seed"]: float(r["dense_test_acc"])
            for r in lottery
            if r.get("dense_test_acc") is not None
        }
        if dense:
            ax.axhline(100 * float(np.mean(list(dense.values()))), color=DENSE_COLOR, linestyle="--", label="dense")
        ax.set_xscale("log")
        ticks = [100 * x for x in xs]
        ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.invert_xaxis()
        ax.set_xlabel("weights remaining (%)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"claim {claim.number}: lottery ladder")
        ax.grid(True)
        ax.legend(loc="best")
        return _save(fig, out / f"{spec['name']}.png")


def gamma_histogram_figure(
    claim: Claim, spec: dict, records: list[dict], context: Context, out: Path
) -> Optional[Path]:
    """|γ| after sparsity training (record ``sparsity_trained_gamma_abs``), one histogram per arm, one seed."""
    seed = spec.get("seed", context.seeds[0] if context.seeds else 0)
    series = {}
    for label, arm in spec["arms"].items():
        found = [
            r
            for r in arm_records(claim, records, arm, None, context.experiment)
            if r.get("status") == "ok" and r.get("seed") == seed
        ]
        gammas = record_value(found[0], "sparsity_trained_gamma_abs") if len(found) == 1 else None
        if isinstance(gammas, dict):
            series[label] = np.abs(np.array([g for layer in gammas.values() for g in layer], float))
    if not series:
        return None
    top = max(float(v.max()) for v in series.values()) or 1.0
    bins = [float(b) for b in np.linspace(0.0, top, 41)]
    styles = style_map(list(series))
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), layout="constrained")
        ax = fig.add_subplot()
        for label, values in series.items():
            ax.hist(values, bins=bins, alpha=0.55, color=styles[label].color, label=f"{label} ({len(values)} γ)")
        ax.set_xlabel("|γ| after sparsity training")
        ax.set_ylabel("channels")
        ax.set_title(f"claim {claim.number}: BN scales, seed {seed}")
        ax.legend(loc="best")
        return _save(fig, out / f"{spec['name']}.png")


FIGURES = {"curve": curve_figure, "lth_ladder": lth_ladder_figure, "gamma_histogram": gamma_histogram_figure}


def claim_figures(claim: Claim, records: list[dict], context: Context, out: Path) -> list[Path]:
    paths = []
    for spec in claim.figures:
        kind = spec.get("kind")
        if kind not in FIGURES:
            raise ValueError(f"claim {claim.id}: unknown figure kind {kind!r}; choose one of {', '.join(FIGURES)}")
        path = FIGURES[kind](claim, spec, records, context, out)
        if path is not None:
            paths.append(path)
    return paths


# ------------------------------------------------------------------------------------------------ the report
def has_records(claim: Claim, records: list[dict], experiment: str) -> bool:
    return any(r.get("experiment") == experiment and matches(r, claim.where) for r in records)


def write_report(
    claims: list[Claim], records: list[dict], context: Context, out: Path, figures_dir: Path
) -> tuple[Path, list[ClaimResult]]:
    """Evaluate ``claims`` on ``records`` and write the report to ``out``; figures land in ``figures_dir``."""
    out = Path(out)
    results: list[ClaimResult] = []
    variants: dict[str, dict[str, Any]] = {}
    sections: list[str] = []
    for claim in claims:
        result = evaluate(claim, records, experiment=context.experiment, seeds=context.seeds)
        results.append(result)
        figures = claim_figures(claim, records, context, Path(figures_dir))
        variant_lines = []
        for name, variant in claim.variants.items():
            reason = context.not_run.get(variant.requires or name)
            if reason is not None and not has_records(variant, records, context.experiment):
                variants.setdefault(claim.id, {})[name] = reason
                variant_lines += variant_section(variant, context, None, reason)
                continue
            v_result = evaluate(variant, records, experiment=context.experiment, seeds=context.seeds)
            variants.setdefault(claim.id, {})[name] = v_result
            variant_lines += variant_section(variant, context, v_result, None)
        sections.append(claim_section(result, context, figures, out.parent, variant_lines))
    text = "\n".join(header(context) + ["## Summary", ""] + summary_table(results, variants) + [""]) + "\n"
    text += "\n".join(sections)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text)
    return out, results


def verdict_lines(results: list[ClaimResult]) -> list[str]:
    """One line per claim for the terminal."""
    return [f"  {r.claim.number:>2}. {r.claim.id:<32} {r.verdict}" for r in results]


def duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s"
