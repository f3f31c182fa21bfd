"""REPRODUCTION.md: every claim of ``conf/claims/`` judged on the store's records (:mod:`analysis.claims`), with its
numbers (per seed too), verdict, stability over two halves of the seeds, the paper's number beside ours, the figures
of ``results/report/reproduction/`` and what changed since the previous report.

``write_report`` is what ``python -m runners.reproduce`` calls after its sweeps (and alone with ``--report-only``);
everything in the file is computed from the records, sorted, and free of absolute paths, so two runs of the same
tier give the same file up to the header's date, commit, timings and machine. Beside the figures it writes
``per_seed.csv`` (every arm's value and every part's difference per seed) and ``verdicts.json`` (each claim's verdict
and its parts' numbers: the next report's "What changed" is the difference against it; a report regenerated from
the same numbers keeps the earlier comparison).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from analysis.claims import (
    ALPHA,
    CHANCE_MARGIN,
    CONFIDENCE,
    CONFIRMED,
    INCONCLUSIVE,
    MIN_SEEDS,
    MIXED,
    NO_VERDICT,
    PRECONDITION,
    PRECONDITION_FAILED,
    PRIMARY,
    REFUTED,
    UNINFORMATIVE,
    Claim,
    ClaimResult,
    Part,
    Side,
    Stability,
    arm_records,
    evaluate,
    format_for,
    format_value,
    matches,
    metric_name,
    record_value,
    side_values,
    stability,
)
from analysis.figures import DENSE_COLOR, DPI, HEIGHT_IN, WIDTH_IN, style_map
from analysis.figures import RC as _RC
from foundations.files import atomic_write_json, atomic_write_text
from foundations.hashing import canonical

RC: Any = dict(_RC)  # the survey figures' style (Any: matplotlib types rc keys as literals)
VERDICT_MARK = {
    CONFIRMED: "✅ confirmed",
    REFUTED: "❌ refuted",
    INCONCLUSIVE: "➖ inconclusive",
    UNINFORMATIVE: "⬜ uninformative",
    NO_VERDICT: "⚠️ no verdict",
    PRECONDITION_FAILED: "⚠️ no verdict: precondition",
    MIXED: "◐ mixed",
}
# The verdict rules a verdicts.json was judged under: a change of rules is named beside the verdicts it moved.
RULES = "v2: primary part decides; secondaries Holm-adjusted; preconditions; uninformative at chance"
RULES_V1 = "v1: every part votes, unadjusted 95 % intervals (mixed when parts disagree)"
VERDICTS_JSON = "verdicts.json"
PER_SEED_CSV = "per_seed.csv"


@dataclass
class Context:
    """What the report needs besides the records."""

    experiment: str  # the records' experiment name (reproduce_<tier>)
    tier: str
    seeds: list[int]
    knobs: dict = field(default_factory=dict)
    header: dict = field(default_factory=dict)  # command, date, commit, wall time, stages computed, machine
    not_run: dict = field(default_factory=dict)  # variant name -> why it did not run (e.g. MNIST files absent)
    calibration: list[str] = field(default_factory=list)  # "Calibrated hyperparameters" (analysis.calibration)


# ------------------------------------------------------------------------------------------------ text
def _fmt_at(claim: Claim, at: Any) -> str:
    if at is None:
        return ""
    if isinstance(at, str):
        return at
    return f"{at * 100:g} %" if claim.at_key in ("target_sparsity", "density") else f"{at:g}"


def part_key(claim: Claim, part: Part) -> str:
    """A part's name across reports (verdicts.json, "What changed"): its comparison and axis value as printed."""
    at = _fmt_at(claim, part.at)
    return f"{part.text} @ {at}" if at else part.text


def _interval(mean: float, low: float, high: float, fmt: str) -> str:
    unit = " pp" if fmt == "percent" else ""
    return (
        f"{format_value(mean, fmt, signed=True)}{unit} "
        f"[{format_value(low, fmt, signed=True)}, {format_value(high, fmt, signed=True)}]"
    )


def _diff(part: Part) -> str:
    if part.stats is None:
        return "—"
    return _interval(part.stats.mean, part.stats.low, part.stats.high, part.format)


def _p(p: Optional[float]) -> str:
    if p is None:
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def _mean_std(values, fmt: str) -> str:
    summary = values.summary
    if summary is None:
        return "—"
    std = format_value(summary[1], fmt).replace(" %", "")
    return f"{format_value(summary[0], fmt)} ± {std}"


def _where(claim: Claim, parts: list[Part], numbers: bool) -> str:
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


def _collapsed(claim: Claim, parts: list[Part]) -> str:
    items = []
    for p in parts:
        assert p.collapse is not None
        a, b, chance = p.collapse
        at = _fmt_at(claim, p.at)
        items.append(
            f"{p.text}{f' at {at}' if at else ''} ({a * 100:.1f} % and {b * 100:.1f} %, chance {chance * 100:g} %)"
        )
    return "; ".join(items)


def why(result: ClaimResult) -> str:
    """The primary part, the preconditions and the secondary parts grouped by verdict, with their numbers."""
    claim = result.claim
    primary = result.primary
    at = _fmt_at(claim, primary.at)
    sentences = [
        f"Primary: {primary.text}{f' at {at}' if at else ''}"
        + (
            f", A − B = {_diff(primary)}, p = {_p(primary.p)} (n = {primary.stats.n})"
            if primary.stats and primary.verdict != UNINFORMATIVE
            else ""
        )
        + (
            f": both at or below chance + {CHANCE_MARGIN * 100:g} pp ({_collapsed(claim, [primary])})"
            if primary.collapse
            else ""
        )
        + "."
    ]
    failed = [p for p in result.preconditions if p.verdict != CONFIRMED]
    held = [p for p in result.preconditions if p.verdict == CONFIRMED]
    if held:
        sentences.append(f"Preconditions hold: {_where(claim, held, False)}.")
    if failed:
        sentences.append(f"Precondition not met (no verdict): {_where(claim, failed, True)}.")
    groups: dict[str, list[Part]] = {}
    for part in result.secondary:
        groups.setdefault(part.verdict, []).append(part)
    tested = sum(len(groups.get(v, [])) for v in (CONFIRMED, REFUTED, INCONCLUSIVE))
    if tested:
        sentences.append(f"Secondary (Holm over {tested} parts):")
    if groups.get(CONFIRMED):
        sentences.append(f"holds: {_where(claim, groups[CONFIRMED], False)}.")
    if groups.get(REFUTED):
        sentences.append(f"breaks: {_where(claim, groups[REFUTED], True)}.")
    if groups.get(INCONCLUSIVE):
        sentences.append(f"undecided: {_where(claim, groups[INCONCLUSIVE], True)}.")
    if groups.get(UNINFORMATIVE):
        sentences.append(
            f"Not judged, both networks at or below chance + {CHANCE_MARGIN * 100:g} pp: "
            f"{_collapsed(claim, groups[UNINFORMATIVE])}."
        )
    if result.reasons:
        sentences.append(
            "No verdict: "
            + "; ".join(result.reasons[:6])
            + (f" (+{len(result.reasons) - 6} more)" if len(result.reasons) > 6 else "")
            + "."
        )
    return " ".join(sentences)


def _seed_values(by_seed: dict[int, float], seeds: list[int], fmt: str) -> str:
    def one(value: float) -> str:
        return f"{value * 100:.2f}" if fmt == "percent" else f"{value:.4g}"

    return " ".join(one(by_seed[s]) if s in by_seed else "—" for s in seeds)


def _budget_cell(budget: list[tuple[float, float]]) -> str:
    """``9 · 0.21``: an arm's epochs and integrated LR from initialization (``lo–hi`` where its records differ); "—"
    for records written before the training budget."""
    if not budget:
        return "—"

    def span(values: list[float]) -> str:
        lo, hi = min(values), max(values)
        return f"{lo:.3g}" if math.isclose(lo, hi, rel_tol=1e-9) else f"{lo:.3g}–{hi:.3g}"

    return f"{span([e for e, _ in budget])} · {span([lr for _, lr in budget])}"


def _arm_rows(result: ClaimResult) -> list[str]:
    claim = result.claim
    fmt = format_for(claim.metric)
    axis = [claim.at_key] if claim.at_key else []
    seeds = ", ".join(map(str, result.seeds))
    unit = " (%)" if fmt == "percent" else ""
    lines = [
        _row(
            [
                "arm",
                *axis,
                "n",
                f"{metric_name(claim.metric)} (mean ± std)",
                f"per seed {seeds}{unit}",
                "epochs · Σlr from init",
            ]
        ),
        _row(["---"] * (5 + len(axis))),
    ]
    for row in result.arm_table:
        if row["mean"] is None:
            value = "—"
        else:
            value = f"{format_value(row['mean'], fmt)} ± {format_value(row['std'], fmt).replace(' %', '')}"
        at = [_fmt_at(claim, row["at"])] if axis else []
        per_seed = _seed_values(row["by_seed"], result.seeds, fmt)
        lines.append(_row([row["arm"], *at, str(row["n"]), value, per_seed, _budget_cell(row.get("budget", []))]))
    return lines


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _part_rows(result: ClaimResult) -> list[str]:
    claim = result.claim
    axis = [claim.at_key] if claim.at_key else []
    lines = [
        _row(["role", "comparison", *axis, "A", "B", f"A − B [{CONFIDENCE * 100:g} % CI]", "n", "p", "verdict"]),
        _row(["---"] * (8 + len(axis))),
    ]
    for p in result.parts:
        at = [_fmt_at(claim, p.at)] if axis else []
        role = f"**{p.role}**" if p.role == PRIMARY else p.role
        lines.append(
            _row(
                [
                    role,
                    p.text,
                    *at,
                    _mean_std(p.a, p.format),
                    _mean_std(p.b, p.format),
                    _diff(p),
                    str(p.stats.n) if p.stats else "—",
                    _p(p.p) + (" (Holm)" if p.role not in (PRIMARY, PRECONDITION) and p.p is not None else ""),
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


def _deltas(result: ClaimResult) -> list[str]:
    """The paper's differences against its own baseline beside ours (A − B over the seeds), one row each."""
    deltas = (result.published or {}).get("deltas") or []
    if not deltas:
        return []
    lines = [_row(["the paper's difference", "paper", "ours: A − B", f"ours [{CONFIDENCE * 100:g} % CI]", "n"])]
    lines.append(_row(["---"] * 5))
    for delta in deltas:
        fmt, ours = delta["format"], delta["ours"]
        unit = " pp" if fmt == "percent" else ""
        mine = "not run" if ours is None else _interval(ours.mean, ours.low, ours.high, fmt)
        lines.append(
            _row(
                [
                    delta["label"],
                    f"{format_value(delta['value'], fmt, signed=True)}{unit}",
                    f"{delta['a']} − {delta['b']}",
                    mine,
                    "—" if ours is None else str(ours.n),
                ]
            )
        )
    return lines + [""]


def stability_line(result: ClaimResult, stable: Stability, context: Context) -> str:
    """Whether the two halves of the seeds alone give the claim the same verdict."""
    if stable.same is None and not stable.halves:
        return f"**Stability**: needs two halves of at least {MIN_SEEDS} seeds (this tier has {len(context.seeds)})."
    halves = "; ".join(
        f"seeds {_seed_range(seeds)} alone → {VERDICT_MARK[r.verdict]}"
        + (f" ({_diff(r.primary)})" if r.primary.stats else "")
        for seeds, r in stable.halves
    )
    outcome = {
        True: "the same verdict",
        False: "**different verdicts**",
        None: "not comparable (a half has no verdict)",
    }
    agree, total = stable.secondary_agree
    secondary = f"; secondary parts: {agree} of {total} the same" if total else ""
    return f"**Stability**: {halves}: {outcome[stable.same]}{secondary}."


def _seed_range(seeds: list[int]) -> str:
    return f"{seeds[0]}–{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else ", ".join(map(str, seeds))


def claim_section(
    result: ClaimResult,
    context: Context,
    figures: list[Path],
    out_dir: Path,
    variant_sections: list[str],
    stable: Optional[Stability] = None,
) -> str:
    claim = result.claim
    lines = [f"## {claim.number}. {claim.id}", "", f"**Claim** ({claim.paper}; {claim.source}): {claim.sentence}", ""]
    lines += [f"**Setting**: {claim.setting}", ""] if claim.setting else []
    lines += _judged(result, context, stable)
    for path in figures:
        lines += [f"![{path.stem}]({os.path.relpath(path, out_dir)})", ""]
    lines += variant_sections
    return "\n".join(lines) + "\n"


def run_line(line: str, context: Context) -> str:
    """The command a claim's line runs as (``runners.reproduce`` adds the tier to the reproduce_* configs)."""
    tier = f" reproduce.tier={context.tier}" if "+experiment=reproduce_" in line else ""
    return f"python -m runners.train -m {line}{tier} name={context.experiment} seed={','.join(map(str, context.seeds))}"


def _judged(result: ClaimResult, context: Context, stable: Optional[Stability] = None) -> list[str]:
    claim = result.claim
    lines = ["**Experiments**:", ""] + [f"    {run_line(line, context)}" for line in claim.experiments] + [""]
    n = f", n = {result.primary.stats.n}" if result.primary.stats else ""
    lines += [f"**Verdict: {VERDICT_MARK[result.verdict]}**{n}. {why(result)}", ""]
    if stable is not None:
        lines += [stability_line(result, stable, context), ""]
    lines += _arm_rows(result) + [""] + _part_rows(result) + [""]
    if result.evidence:
        lines += ["**Measured**: " + " ".join(result.evidence), ""]
    lines += [f"**Paper**: {_published(result)}", ""] + _deltas(result)
    if claim.notes:
        lines += [f"*Note*: {claim.notes}", ""]
    return lines


def variant_section(claim: Claim, context: Context, result: Optional[ClaimResult], reason: Optional[str]) -> list[str]:
    title = f"### {str(claim.variant).upper() if claim.variant == 'mnist' else claim.variant} variant"
    if result is None:
        return [title, "", f"not run: {reason}", ""]
    lines = [title, "", f"**Setting**: {claim.setting}", ""]
    return lines + _judged(result, context)


def _secondary_counts(result: ClaimResult) -> str:
    marks = {CONFIRMED: "✅", REFUTED: "❌", INCONCLUSIVE: "➖", UNINFORMATIVE: "⬜", NO_VERDICT: "⚠️"}
    counts = {v: sum(p.verdict == v for p in result.secondary) for v in marks}
    return " ".join(f"{n} {marks[v]}" for v, n in counts.items() if n) or "—"


def summary_table(
    results: list[ClaimResult], variants: dict[str, dict[str, Any]], stable: Optional[dict[str, Stability]] = None
) -> list[str]:
    lines = [
        "| # | claim | source | verdict (primary part) | n | secondary parts (Holm) | same verdict on seeds' halves "
        "| MNIST variant |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        c = r.claim
        anchor = f"#{c.number}-{c.id}"
        mnist = variants.get(c.id, {}).get("mnist")
        mnist_text = (
            "—"
            if mnist is None
            else (VERDICT_MARK[mnist.verdict] if isinstance(mnist, ClaimResult) else f"not run: {mnist}")
        )
        s = (stable or {}).get(c.id)
        same = "—" if s is None or s.same is None else ("yes" if s.same else "**no**")
        n = str(r.primary.stats.n) if r.primary.stats else "—"
        lines.append(
            f"| {c.number} | [{c.id}]({anchor}) | {c.source} | {VERDICT_MARK[r.verdict]} | {n} | "
            f"{_secondary_counts(r)} | {same} | {mnist_text} |"
        )
    return lines


def _machine(h: dict) -> str:
    m = h.get("machine") or {}
    if not m:
        return "not recorded"
    flags = ", ".join(m.get("flags") or []) or "none of AVX/AVX2/AVX-512"
    floor = f"{m['floor_gflops']:.1f} GFLOP/s" if m.get("floor_gflops") is not None else "not measured"
    return (
        f"{m.get('cpu', '?')} ({m.get('cpus', '?')} CPUs; SIMD flags: {flags}; torch CPU capability "
        f"{m.get('capability', '?')}); floor at the start of the run (`benchmarks/speed.py`'s 2048³ sgemm, 2 "
        f"threads, best of 5): **{floor}**"
    )


def header(context: Context) -> list[str]:
    h = context.header
    knobs = ", ".join(f"{k} {v}" for k, v in context.knobs.items() if k != "seeds")
    half = len(context.seeds) // 2
    stability_text = (
        f"each claim is judged again on seeds {_seed_range(context.seeds[:half])} alone and on "
        f"{_seed_range(context.seeds[half:])} alone; the summary says whether both halves give the same verdict"
        if len(context.seeds) >= 2 * MIN_SEEDS
        else f"not measured: {len(context.seeds)} seeds make no two halves of {MIN_SEEDS}"
    )
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
        f"- **Machine**: {_machine(h)}.",
        f"- **Tier** `{context.tier}`: seeds {', '.join(map(str, context.seeds))}; {knobs}",
        f"- **Records**: experiment `{context.experiment}` in the store; Fashion-MNIST has no published "
        f"tables in any of the papers, so only relative claims are judged on it, and a paper's number is set beside "
        f"ours as a difference against its own baseline where its baseline is not ours.",
        f"- **Verdicts** (`analysis/claims.py`): paired differences A − B over seeds (the same seed gives the same "
        f"dense model and data order), {CONFIDENCE * 100:g} % Student-t interval of their mean and the p-value of "
        f"the matching t-test (two one-sided tests against the tolerance for ≈). Each claim names one **primary** "
        f"part, the comparison its sentence makes: the claim's verdict is that part's — confirmed when p < "
        f"{ALPHA:g} on the claimed side (the interval lies there), refuted when p < {ALPHA:g} on the other side, "
        f"inconclusive otherwise. The other parts are **secondary**, shown beside it and judged the same way on "
        f"Holm-adjusted p-values over the claim's secondary parts, so that many parts do not make spurious "
        f"verdicts. **Preconditions** (the achieved density, the channels kept) are self-checks of the setting: one "
        f'not confirmed gives "no verdict: precondition", never a vote. A part whose two networks are both at or '
        f"below chance + {CHANCE_MARGIN * 100:g} pp in accuracy (chance = 1 / classes) is **uninformative** and not "
        f"judged. Missing or failed runs, or fewer than {MIN_SEEDS} seeds: no verdict, and the report says which.",
        f"- **Stability**: {stability_text}; `per_seed.csv` beside the figures holds every value per seed.",
        "- **Reproducible** means here: the same config and seed give bitwise-identical numbers on one CPU type "
        "(deterministic algorithms, one thread per job); on another CPU type (other SIMD kernels, e.g. AVX-512 "
        "against AVX2) the numbers move within the seed spread (claim 10 re-run on another CPU: up to 1.4 pp per "
        "arm), so compare verdicts and intervals across machines, not digits.",
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
        for level in record_value(r, "outputs.levels") or []:
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
            by_target: dict[float, list[tuple[float, float]]] = {}  # one point per target density, over the seeds
            for r in found:
                if r.get("status") == "ok" and r.get("seed") in context.seeds:
                    point = (100 * r["density"], 100 * r["test_acc"])
                    by_target.setdefault(round(float(r["target_sparsity"]), 6), []).append(point)
            if by_target:
                groups = [np.array(by_target[t], float) for t in sorted(by_target)]
                ax.errorbar(
                    [g[:, 0].mean() for g in groups],
                    [g[:, 1].mean() for g in groups],
                    yerr=[g[:, 1].std(ddof=1) if len(g) > 1 else 0.0 for g in groups],
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
        gammas = record_value(found[0], "outputs.sparsity_trained_gamma_abs") if len(found) == 1 else None
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


# ------------------------------------------------------------------------------------------------ per seed, verdicts
def per_seed_rows(results: list[ClaimResult]) -> list[dict[str, Any]]:
    """Every arm's metric and every part's difference A − B, one row per seed (the CSV beside the figures)."""
    rows: list[dict[str, Any]] = []
    for r in results:
        claim = r.claim
        for row in r.arm_table:
            for seed, value in sorted(row["by_seed"].items()):
                rows.append(
                    {
                        "claim": claim.key,
                        "kind": "arm",
                        "name": row["arm"],
                        "at": _fmt_at(claim, row["at"]),
                        "metric": metric_name(claim.metric),
                        "seed": seed,
                        "value": value,
                    }
                )
        for p in r.parts:
            for seed in sorted(set(p.a.by_seed) & set(p.b.by_seed)):
                rows.append(
                    {
                        "claim": claim.key,
                        "kind": f"difference ({p.role})",
                        "name": p.text,
                        "at": _fmt_at(claim, p.at),
                        "metric": metric_name(p.comparison.a.metric),
                        "seed": seed,
                        "value": p.a.by_seed[seed] - p.b.by_seed[seed],
                    }
                )
    return rows


def per_seed_csv(results: list[ClaimResult]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, ["claim", "kind", "name", "at", "metric", "seed", "value"], lineterminator="\n")
    writer.writeheader()
    for row in per_seed_rows(results):
        writer.writerow({**row, "value": repr(float(row["value"]))})
    return buffer.getvalue()


def snapshot(results: list[ClaimResult], context: Context) -> dict[str, Any]:
    """Each claim's verdict and its parts' numbers: what verdicts.json keeps for the next report's diff."""
    claims: dict[str, Any] = {}
    for r in results:
        parts = {}
        for p in r.parts:
            s = p.stats
            parts[part_key(r.claim, p)] = {
                "role": p.role,
                "verdict": p.verdict,
                "n": s.n if s else None,
                "mean": s.mean if s else None,
                "low": s.low if s else None,
                "high": s.high if s else None,
                "p": p.p,
                "format": p.format,
            }
        claims[r.claim.key] = {
            "number": r.claim.number,
            "verdict": r.verdict,
            "primary": part_key(r.claim, r.primary),
            "parts": parts,
        }
    return {
        "rules": RULES,
        "tier": context.tier,
        "seeds": list(context.seeds),
        "date": context.header.get("date"),
        "commit": context.header.get("commit"),
        "claims": claims,
    }


_MARK_TO_VERDICT = {mark: verdict for verdict, mark in VERDICT_MARK.items()}
_NUMBER = r"[+-]?(?:\d+\.?\d*(?:e[+-]?\d+)?|inf|nan)"


def snapshot_from_markdown(text: str) -> Optional[dict[str, Any]]:
    """A REPRODUCTION.md written before verdicts.json existed (rules v1), read back as a snapshot: each claim's
    verdict and its parts' intervals from the parts tables. None when the text is not such a report."""
    tier = re.search(r"- \*\*Tier\*\* `([^`]+)`: seeds ([\d, ]+);", text)
    date = re.search(r"- \*\*Date\*\*: (.+?) · \*\*commit\*\* `([^`]+)`", text)
    sections = re.split(r"^## (\d+)\. (\S+)\n", text, flags=re.M)
    if tier is None or len(sections) < 3:
        return None
    claims: dict[str, Any] = {}
    for number, claim_id, body in zip(sections[1::3], sections[2::3], sections[3::3]):
        main = body.split("\n### ")[0]
        verdict = re.search(r"\*\*Verdict: (.+?)\.?\*\*", main)
        if verdict is None:
            continue
        parts = {}
        for line in main.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) < 6 or cells[-1] not in _MARK_TO_VERDICT or not re.match(r"\d+$", cells[-2]):
                continue
            interval = re.match(rf"({_NUMBER})( pp)? \[({_NUMBER}), ({_NUMBER})\]", cells[-3])
            scale = 100.0 if interval and interval.group(2) else 1.0
            at = cells[1] if len(cells) == 7 else ""
            parts[f"{cells[0]} @ {at}" if at else cells[0]] = {
                "role": None,
                "verdict": _MARK_TO_VERDICT[cells[-1]],
                "n": int(cells[-2]),
                "mean": float(interval.group(1)) / scale if interval else None,
                "low": float(interval.group(3)) / scale if interval else None,
                "high": float(interval.group(4)) / scale if interval else None,
                "p": None,
                "format": "percent" if scale == 100.0 else "number",
            }
        claims[claim_id] = {
            "number": int(number),
            "verdict": _MARK_TO_VERDICT.get(verdict.group(1).strip(), verdict.group(1).strip()),
            "primary": None,
            "parts": parts,
        }
    return {
        "rules": RULES_V1,
        "tier": tier.group(1),
        "seeds": [int(s) for s in tier.group(2).replace(" ", "").split(",") if s],
        "date": date.group(1) if date else None,
        "commit": date.group(2) if date else None,
        "claims": claims,
    }


def baseline(path: Path, report: Path, current: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The snapshot to compare ``current`` with: the last report's (verdicts.json, else the report file itself
    read back), or, when the last report had these very numbers (regenerated from the same records), the one
    before it — so that regenerating a report never empties its "What changed"."""
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8"))
        last, before = stored.get("current"), stored.get("previous")
    else:
        last = snapshot_from_markdown(report.read_text(encoding="utf-8")) if report.exists() else None
        before = None
    if last is not None and _numbers(last) == _numbers(current):
        return before
    return last


def _numbers(snap: dict[str, Any]) -> str:
    return canonical({k: snap.get(k) for k in ("rules", "tier", "seeds", "claims")})


def _part_numbers(part: Optional[dict]) -> str:
    if not part or part.get("mean") is None:
        return "not judged"
    fmt = part.get("format", "number")
    return f"{_interval(part['mean'], part['low'], part['high'], fmt)} (n = {part['n']}, {part['verdict']})"


def changes(current: dict[str, Any], previous: Optional[dict[str, Any]]) -> list[str]:
    """The "What changed since the last report" section: each claim whose verdict moved, with the numbers that
    moved (its primary part now and then, and every other part whose verdict moved)."""
    lines = ["## What changed since the last report", ""]
    if previous is None:
        return lines + ["No earlier report to compare with.", ""]
    lines.append(
        f"Against the report of {previous.get('date') or '?'} (commit `{previous.get('commit') or '?'}`, tier "
        f"`{previous.get('tier')}`, seeds {_seed_range(previous.get('seeds') or [0])})"
        + (
            ""
            if previous.get("rules") == current["rules"]
            else f", judged under the earlier rules ({previous.get('rules')})"
        )
        + "."
    )
    lines.append("")
    moved = 0
    for key, now in current["claims"].items():
        then = previous["claims"].get(key)
        if then is None:
            lines.append(f"- **{now['number']}. {key}**: new, {VERDICT_MARK.get(now['verdict'], now['verdict'])}.")
            moved += 1
            continue
        if then["verdict"] == now["verdict"]:
            continue
        moved += 1
        primary = now["primary"]
        text = (
            f"- **{now['number']}. {key}**: {VERDICT_MARK.get(then['verdict'], then['verdict'])} → "
            f"{VERDICT_MARK.get(now['verdict'], now['verdict'])}. Primary {primary}: now "
            f"{_part_numbers(now['parts'].get(primary))}, then {_part_numbers(then['parts'].get(primary))}."
        )
        others = [
            f"{name}: {_part_numbers(then['parts'].get(name))} → {_part_numbers(part)}"
            for name, part in now["parts"].items()
            if name != primary and (then["parts"].get(name) or {}).get("verdict") != part["verdict"]
        ]
        if others:
            text += (
                " Other parts that moved: "
                + "; ".join(others[:6])
                + (f" (+{len(others) - 6} more)" if len(others) > 6 else "")
                + "."
            )
        lines.append(text)
    for key, then in previous["claims"].items():
        if key not in current["claims"]:
            lines.append(f"- **{then['number']}. {key}**: no longer in the report (was {then['verdict']}).")
            moved += 1
    if not moved:
        lines.append("No claim's verdict moved.")
    return lines + [""]


# ------------------------------------------------------------------------------------------------ the report
def has_records(claim: Claim, records: list[dict], experiment: str) -> bool:
    return any(r.get("experiment") == experiment and matches(r, claim.where) for r in records)


def write_report(
    claims: list[Claim], records: list[dict], context: Context, out: Path, figures_dir: Path
) -> tuple[Path, list[ClaimResult]]:
    """Evaluate ``claims`` on ``records`` and write the report to ``out``; figures, ``per_seed.csv`` and
    ``verdicts.json`` land in ``figures_dir``."""
    out, figures_dir = Path(out), Path(figures_dir)
    results: list[ClaimResult] = []
    judged: list[ClaimResult] = []  # with the variants that ran: what the CSV and verdicts.json keep
    variants: dict[str, dict[str, Any]] = {}
    stable: dict[str, Stability] = {}
    sections: list[str] = []
    for claim in claims:
        result = evaluate(claim, records, experiment=context.experiment, seeds=context.seeds)
        results.append(result)
        judged.append(result)
        stable[claim.id] = stability(claim, records, experiment=context.experiment, seeds=context.seeds)
        figures = claim_figures(claim, records, context, figures_dir)
        variant_lines = []
        for name, variant in claim.variants.items():
            reason = context.not_run.get(variant.requires or name)
            if reason is not None and not has_records(variant, records, context.experiment):
                variants.setdefault(claim.id, {})[name] = reason
                variant_lines += variant_section(variant, context, None, reason)
                continue
            v_result = evaluate(variant, records, experiment=context.experiment, seeds=context.seeds)
            variants.setdefault(claim.id, {})[name] = v_result
            judged.append(v_result)
            variant_lines += variant_section(variant, context, v_result, None)
        sections.append(claim_section(result, context, figures, out.parent, variant_lines, stable[claim.id]))
    current = snapshot(judged, context)
    verdicts_path = figures_dir / VERDICTS_JSON
    previous = baseline(verdicts_path, out, current)
    text = "\n".join(header(context) + ["## Summary", ""] + summary_table(results, variants, stable) + [""]) + "\n"
    text += "\n".join(changes(current, previous)) + "\n"
    text += "".join(line + "\n" for line in context.calibration)
    text += "\n".join(sections)
    out.parent.mkdir(parents=True, exist_ok=True)
    figures_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(figures_dir / PER_SEED_CSV, per_seed_csv(judged))
    atomic_write_json(verdicts_path, {"current": current, "previous": previous})
    atomic_write_text(out, text)
    return out, results


def verdict_lines(results: list[ClaimResult]) -> list[str]:
    """One line per claim for the terminal."""
    return [f"  {r.claim.number:>2}. {r.claim.id:<32} {r.verdict}" for r in results]


def duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s"
