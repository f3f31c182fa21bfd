"""Paper claims as data (``conf/claims/<id>.yaml``), judged on experiment records with paired statistics over seeds.

A claim file says what a paper claims, which experiments test it (Hydra overrides of experiment configs, run by
``python -m runners.reproduce``), how to pick its arms out of the records, and how to compare them::

    id: snip_beats_random                     # the file's stem
    number: 6                                 # the issue's numbering (``--claims 6``)
    paper: ...; source: Table 1; sentence: "..."; setting: "what we ran, in words"
    experiments: ["+experiment=reproduce_mlp +experiment/arm=snip,random method.sparsity=0.9,0.95"]
    where: {model: mlp_bn, dataset: fashion_mnist}      # filters every arm shares
    metric: test_acc                                    # default metric of every side
    at: {key: target_sparsity, values: [0.9, 0.95]}     # optional axis: each comparison is judged at each value
    arms: {snip: {label: snip}, random: {label: random}}   # record filters (dotted keys; {not|in|gt|lt: v})
    comparisons:
      - {a: snip, relation: greater, b: random}         # or {a: {arm, metric, at}, b: {value: 0.5}}
    published: {text: "...", value: 0.984, arm: snip, metric: test_acc}   # the paper's number, where it has one
    evidence: [{text: "... {x} ...", values: {x: {arm: snip, metric: density}}}]   # numbers for the "why"
    figures: [{kind: curve, name: ..., arms: [...]}]    # analysis.reproduction draws them
    variants: {mnist: {requires: mnist, experiments: [...], where: {dataset: mnist}, ...}}   # replaces fields

Relations, on the paired differences d = A − B over seeds (same seed: same dense model and data order):

- ``greater`` (A − B > threshold, default 0) / ``less`` (A − B < threshold);
- ``at_least`` (A ≥ B − tolerance) / ``approx`` (|A − B| ≤ tolerance);
- ``monotone`` (``direction: increasing | decreasing``): one arm along the ``at`` axis, each step a part.

Verdicts from the 95 % Student-t interval of the mean difference: *confirmed* when the interval lies on the claimed
side (inside the tolerance for ``approx``), *refuted* when it lies on the other side, *inconclusive* otherwise. A part
whose records are missing, failed, ambiguous (two records fit one arm and seed) or fewer than ``MIN_SEEDS`` gets no
verdict, and then neither does its claim. A claim's verdict is confirmed when every part is, *mixed* when some parts
are confirmed and others refuted, refuted when parts are refuted and none confirmed, inconclusive otherwise.

Metrics are record fields by dotted path (``rounds.-1.measured_loss_increase``) or one of ``DERIVED``.
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from scipy import stats as scipy_stats

from foundations.errors import UserError

CLAIMS_DIR = Path(__file__).resolve().parent.parent / "conf" / "claims"
MIN_SEEDS = 3
CONFIDENCE = 0.95
RELATIONS = ("greater", "less", "at_least", "approx", "monotone")
CONFIRMED, REFUTED, INCONCLUSIVE, MIXED, NO_VERDICT = "confirmed", "refuted", "inconclusive", "mixed", "no verdict"
_TOL = 1e-9  # float filters: target_sparsity 0.95 written in YAML equals the record's 0.95


# ------------------------------------------------------------------------------------------------ metrics
def record_value(record: dict, path: str) -> Any:
    """``a.b.0.c`` through nested dicts and lists (negative list indices count from the end); None if absent.

    Dict keys may contain dots themselves (``per_layer_density.conv1.weight``): the longest key that matches wins.
    """
    parts = str(path).split(".")
    value: Any = record
    i = 0
    while i < len(parts):
        if isinstance(value, dict):
            for j in range(len(parts), i, -1):
                key = ".".join(parts[i:j])
                if key in value:
                    value, i = value[key], j
                    break
            else:
                return None
        elif isinstance(value, list):
            try:
                value, i = value[int(parts[i])], i + 1
            except (ValueError, IndexError):
                return None
        else:
            return None
        if value is None:
            return None
    return value


def _difference(record: dict, a: str, b: str) -> Optional[float]:
    x, y = _number(record_value(record, a)), _number(record_value(record, b))
    return None if x is None or y is None else x - y


def _ratio(record: dict, a: str, b: str) -> Optional[float]:
    x, y = _number(record_value(record, a)), _number(record_value(record, b))
    return None if x is None or y is None or y == 0 else x / y


def _fraction_below(record: dict, path: str, threshold: float) -> Optional[float]:
    """Fraction of the values under ``path`` (a list, or a dict of lists, e.g. |γ| per BN layer) below ``threshold``."""
    values = record_value(record, path)
    if isinstance(values, dict):
        values = [v for layer in values.values() for v in layer]
    if not values:
        return None
    return sum(abs(float(v)) < threshold for v in values) / len(values)


# name -> (function(record, **params), default params): what a claim's ``metric`` may name besides a field path
DERIVED: dict[str, tuple[Callable[..., Optional[float]], dict]] = {
    # test-loss increase of the (last) pruning step, before any retraining (OBD Fig. 1's y axis, on the test set),
    # against the very weights that step pruned
    "loss_increase_before_recovery": (_difference, {"a": "test_loss_before_recovery", "b": "test_loss_before_pruning"}),
    "acc_drop_before_recovery": (_difference, {"a": "dense_test_acc", "b": "test_acc_before_recovery"}),
    # OBD's measured over predicted training-loss increase of its (last) deletion: > 1 = the quadratic model
    # underestimates the damage
    "obd_measured_over_predicted": (
        _ratio,
        {"a": "rounds.-1.measured_loss_increase", "b": "rounds.-1.predicted_loss_increase"},
    ),
    # slimming: fraction of the BN scales |γ| after sparsity training that are below `threshold`
    "gamma_fraction_below": (_fraction_below, {"path": "sparsity_trained_gamma_abs", "threshold": 0.05}),
}


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def metric_name(metric: Any) -> str:
    if isinstance(metric, dict):
        params = ", ".join(f"{k}={v}" for k, v in metric.items() if k != "name")
        return f"{metric['name']}({params})" if params else str(metric["name"])
    return str(metric)


def metric_value(record: dict, metric: Any) -> Optional[float]:
    """A claim metric of one record: a derived metric (``name`` or ``{name: ..., param: ...}``) or a field path."""
    name, params = (
        (metric["name"], {k: v for k, v in metric.items() if k != "name"}) if isinstance(metric, dict) else (metric, {})
    )
    if name in DERIVED:
        function, defaults = DERIVED[name]
        return function(record, **{**defaults, **params})
    return _number(record_value(record, name))


# ------------------------------------------------------------------------------------------------ filters
def _matches_value(actual: Any, wanted: Any) -> bool:
    if isinstance(wanted, dict) and len(wanted) == 1 and next(iter(wanted)) in ("not", "in", "gt", "lt"):
        op, operand = next(iter(wanted.items()))
        if op == "not":
            return not _matches_value(actual, operand)
        if op == "in":
            return any(_matches_value(actual, w) for w in operand)
        a, b = _number(actual), _number(operand)
        return a is not None and b is not None and (a > b if op == "gt" else a < b)
    if isinstance(wanted, (int, float)) and not isinstance(wanted, bool):
        a = _number(actual)
        return a is not None and abs(a - float(wanted)) <= _TOL
    return actual == wanted


def matches(record: dict, filters: dict) -> bool:
    """Every ``dotted.key: value`` of ``filters`` holds for ``record`` (numbers within 1e-9; ``{not: v}``,
    ``{in: [v, ...]}``, ``{gt: v}``, ``{lt: v}``)."""
    return all(_matches_value(record_value(record, key), wanted) for key, wanted in filters.items())


# ------------------------------------------------------------------------------------------------ statistics
@dataclass(frozen=True)
class Stats:
    n: int
    mean: float
    std: float  # sample standard deviation (ddof = 1)
    low: float  # the CONFIDENCE interval of the mean (Student t, n - 1 degrees of freedom)
    high: float


def paired_stats(diffs: list[float], confidence: float = CONFIDENCE) -> Stats:
    """Mean, standard deviation and Student-t confidence interval of paired differences (n >= 2)."""
    n = len(diffs)
    if n < 2:
        raise ValueError("a confidence interval needs at least 2 paired differences")
    mean = sum(diffs) / n
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return Stats(n=n, mean=mean, std=std, low=mean - half, high=mean + half)


def judge(stats: Stats, relation: str, *, threshold: float = 0.0, tolerance: Optional[float] = None) -> str:
    """The verdict of one comparison from the interval of A − B (module docstring)."""
    low, high = stats.low, stats.high
    tol = 0.0 if tolerance is None else tolerance
    if relation == "greater":
        return CONFIRMED if low > threshold else REFUTED if high < threshold else INCONCLUSIVE
    if relation == "less":
        return CONFIRMED if high < threshold else REFUTED if low > threshold else INCONCLUSIVE
    if relation == "at_least":
        return CONFIRMED if low >= -tol else REFUTED if high < -tol else INCONCLUSIVE
    if relation == "approx":
        if -tol <= low and high <= tol:
            return CONFIRMED
        return REFUTED if low > tol or high < -tol else INCONCLUSIVE
    raise ValueError(f"unknown relation {relation!r}")


def overall(verdicts: list[str]) -> str:
    if not verdicts or NO_VERDICT in verdicts:
        return NO_VERDICT
    if all(v == CONFIRMED for v in verdicts):
        return CONFIRMED
    if REFUTED in verdicts:
        return MIXED if CONFIRMED in verdicts else REFUTED
    return INCONCLUSIVE


# ------------------------------------------------------------------------------------------------ claims
@dataclass(frozen=True)
class Side:
    arm: Optional[str] = None
    metric: Any = None
    value: Optional[float] = None  # a constant instead of an arm (e.g. "most": 0.5)
    at: Any = None  # this side at a fixed value of the claim's axis


@dataclass(frozen=True)
class Comparison:
    a: Side
    relation: str
    b: Optional[Side] = None
    threshold: float = 0.0
    tolerance: Optional[float] = None
    direction: Optional[str] = None  # monotone: increasing | decreasing
    format: Optional[str] = None  # percent | number (default: from the metric's name)


@dataclass
class Claim:
    id: str
    number: int
    paper: str
    source: str
    sentence: str
    experiments: list[str]
    arms: dict[str, dict]
    comparisons: list[Comparison]
    metric: Any = "test_acc"
    setting: str = ""
    where: dict = field(default_factory=dict)
    at_key: Optional[str] = None
    at_values: list = field(default_factory=list)
    published: Optional[dict] = None
    evidence: list[dict] = field(default_factory=list)
    figures: list[dict] = field(default_factory=list)
    notes: str = ""
    requires: Optional[str] = None  # a dataset the experiments need that may be absent (mnist)
    variant: Optional[str] = None  # None for the main claim, else the variant's name
    variants: dict[str, Claim] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.id if self.variant is None else f"{self.id}.{self.variant}"


def _fail(where: str, message: str) -> None:
    raise UserError(f"{where}: {message}")


def _side(raw: Any, claim: dict, where: str) -> Side:
    if isinstance(raw, str):
        raw = {"arm": raw}
    if not isinstance(raw, dict):
        _fail(where, f"a side is an arm name, {{arm: ..., metric: ...}} or {{value: number}} (got {raw!r})")
    if "value" in raw:
        if _number(raw["value"]) is None:
            _fail(where, f"value must be a number (got {raw['value']!r})")
        return Side(value=float(raw["value"]))
    if raw.get("arm") not in claim.get("arms", {}):
        _fail(where, f"arm {raw.get('arm')!r} is not one of the claim's arms ({', '.join(claim.get('arms', {}))})")
    return Side(arm=raw["arm"], metric=raw.get("metric", claim.get("metric", "test_acc")), at=raw.get("at"))


def _comparison(raw: dict, claim: dict, where: str) -> Comparison:
    if not isinstance(raw, dict) or set(raw) - COMPARISON_KEYS:
        _fail(where, f"a comparison is a mapping with {', '.join(sorted(COMPARISON_KEYS))}")
    relation = str(raw.get("relation"))
    if relation not in RELATIONS:
        _fail(where, f"relation must be one of {', '.join(RELATIONS)} (got {raw.get('relation')!r})")
    a = _side(raw.get("a"), claim, f"{where}.a")
    if relation == "monotone":
        if raw.get("direction") not in ("increasing", "decreasing"):
            _fail(where, "monotone needs direction: increasing or decreasing")
        if a.arm is None or len(claim.get("at", {}).get("values", [])) < 2:
            _fail(where, "monotone needs an arm and an `at` axis with at least two values")
        return Comparison(a=a, relation=relation, direction=raw["direction"], format=raw.get("format"))
    b = _side(raw.get("b"), claim, f"{where}.b")
    tolerance = _number(raw.get("tolerance"))
    if relation in ("at_least", "approx") and (tolerance is None or tolerance < 0):
        _fail(where, f"{relation} needs a tolerance >= 0")
    return Comparison(
        a=a,
        relation=relation,
        b=b,
        threshold=float(raw.get("threshold", 0.0)),
        tolerance=tolerance,
        format=raw.get("format"),
    )


CLAIM_KEYS = {
    "id",
    "number",
    "paper",
    "source",
    "sentence",
    "setting",
    "experiments",
    "where",
    "metric",
    "at",
    "arms",
    "comparisons",
    "published",
    "evidence",
    "figures",
    "notes",
    "requires",
    "variants",
}
COMPARISON_KEYS = {"a", "b", "relation", "threshold", "tolerance", "direction", "format"}


def _check_evidence(item: Any, claim: dict, where: str) -> None:
    """Every placeholder of the sentence is a named value (or ``at``), every value names an arm of the claim."""
    if not isinstance(item, dict) or not isinstance(item.get("text"), str):
        _fail(where, "evidence is {text: '... {name} ...', values: {name: {arm: ..., metric: ...}}, at: [...]}")
    values = item.get("values") or {}
    if not all(isinstance(k, str) for k in values):  # YAML reads a bare `no:` or `on:` as a boolean
        _fail(where, f"value names must be strings (got {[k for k in values if not isinstance(k, str)]}); quote them")
    for name, spec in values.items():
        if not isinstance(spec, dict) or spec.get("arm") not in claim.get("arms", {}):
            _fail(f"{where}.values.{name}", "needs arm: one of the claim's arms")
    fields = {f.split(".")[0].split("[")[0] for _, f, _, _ in string.Formatter().parse(item["text"]) if f}
    missing = sorted(fields - set(values) - {"at"})
    if missing:
        _fail(where, f"the text uses {', '.join(missing)} but values do not define it")
    if "at" in fields and not item.get("at"):
        _fail(where, "the text uses {at} but the evidence has no `at` list")


def parse_claim(raw: dict, where: str, variant: Optional[str] = None) -> Claim:
    """A claim from its YAML mapping; a bad field is one line naming the file and the field."""
    unknown = sorted(set(raw) - CLAIM_KEYS)
    if unknown:
        _fail(where, f"unknown field(s) {', '.join(unknown)}; a claim has {', '.join(sorted(CLAIM_KEYS))}")
    for key in ("id", "number", "paper", "source", "sentence", "experiments", "arms", "comparisons"):
        if raw.get(key) in (None, "", [], {}):
            _fail(where, f"{key} is missing")
    if not all(isinstance(line, str) and "+experiment=" in line for line in raw["experiments"]):
        _fail(f"{where}.experiments", "each entry is one command line of overrides with +experiment=<config>")
    if not isinstance(raw["arms"], dict) or not all(isinstance(f, dict) for f in raw["arms"].values()):
        _fail(f"{where}.arms", "a mapping of arm name -> record filters")
    at = raw.get("at") or {}
    if at and (not at.get("key") or not at.get("values")):
        _fail(f"{where}.at", "needs key (a record field) and values")
    comparisons = [_comparison(c, raw, f"{where}.comparisons[{i}]") for i, c in enumerate(raw["comparisons"])]
    for i, item in enumerate(raw.get("evidence") or []):
        _check_evidence(item, raw, f"{where}.evidence[{i}]")
    claim = Claim(
        id=str(raw["id"]),
        number=int(raw["number"]),
        paper=str(raw["paper"]),
        source=str(raw["source"]),
        sentence=" ".join(str(raw["sentence"]).split()),
        experiments=list(raw["experiments"]),
        arms=dict(raw["arms"]),
        comparisons=comparisons,
        metric=raw.get("metric", "test_acc"),
        setting=" ".join(str(raw.get("setting", "")).split()),
        where=dict(raw.get("where") or {}),
        at_key=at.get("key"),
        at_values=list(at.get("values") or []),
        published=raw.get("published"),
        evidence=list(raw.get("evidence") or []),
        figures=list(raw.get("figures") or []),
        notes=" ".join(str(raw.get("notes", "")).split()),
        requires=raw.get("requires"),
        variant=variant,
    )
    for name, changes in (raw.get("variants") or {}).items():
        if variant is not None:
            _fail(f"{where}.variants", "a variant cannot have variants")
        merged = {**{k: v for k, v in raw.items() if k != "variants"}, **changes}
        claim.variants[name] = parse_claim(merged, f"{where}.variants.{name}", variant=name)
    return claim


def load_claim(path: Path) -> Claim:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"{path}: cannot read the claim ({type(err).__name__}: {err})".splitlines()[0]) from None
    if not isinstance(raw, dict):
        _fail(str(path), "a claim file is one YAML mapping")
    claim = parse_claim(raw, str(path))
    if claim.id != Path(path).stem:
        _fail(str(path), f"id {claim.id!r} must equal the file name ({Path(path).stem})")
    return claim


def load_claims(folder: Path = CLAIMS_DIR) -> list[Claim]:
    claims = sorted((load_claim(p) for p in Path(folder).glob("*.yaml")), key=lambda c: (c.number, c.id))
    numbers = [c.number for c in claims]
    duplicate = sorted({n for n in numbers if numbers.count(n) > 1})
    if duplicate:
        _fail(str(folder), f"claim number(s) {duplicate} used twice")
    return claims


def select_claims(claims: list[Claim], spec: Optional[str]) -> list[Claim]:
    """``"4,5"`` (numbers) or ``"lth_reinit_gap,6"`` (ids and numbers); None = all."""
    if not spec:
        return list(claims)
    chosen = []
    for token in (t.strip() for t in spec.split(",") if t.strip()):
        found = [c for c in claims if c.id == token or (token.isdigit() and c.number == int(token))]
        if not found:
            options = ", ".join(f"{c.number} {c.id}" for c in claims)
            raise UserError(f"--claims: no claim {token!r}; choose numbers or ids among {options}")
        chosen += [c for c in found if c not in chosen]
    return sorted(chosen, key=lambda c: c.number)


# ------------------------------------------------------------------------------------------------ evaluation
@dataclass
class Values:
    """One side of a part: the metric per seed, or why a seed has none."""

    label: str
    by_seed: dict[int, float] = field(default_factory=dict)
    dense: dict[int, Optional[str]] = field(default_factory=dict)  # dense_stage per seed (pairing check)
    problems: list[str] = field(default_factory=list)

    @property
    def summary(self) -> Optional[tuple[float, float]]:
        """(mean, sample std) over the seeds present."""
        values = list(self.by_seed.values())
        if not values:
            return None
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        return mean, std


@dataclass
class Part:
    text: str  # "obd < magnitude"
    at: Any
    comparison: Comparison
    a: Values
    b: Values
    stats: Optional[Stats] = None
    verdict: str = NO_VERDICT
    reason: str = ""
    format: str = "number"


@dataclass
class ClaimResult:
    claim: Claim
    parts: list[Part]
    verdict: str
    reasons: list[str]
    evidence: list[str]
    arm_table: list[dict]  # per arm and axis value: mean, std, n of the claim metric
    published: Optional[dict] = None  # {"text", "value", "ours": (mean, std, n)} where the paper has a number


def arm_records(claim: Claim, records: list[dict], arm: str, at: Any, experiment: str) -> list[dict]:
    filters = dict(claim.arms[arm])
    if claim.at_key and at is not None and claim.at_key not in filters:
        filters[claim.at_key] = at
    return [r for r in records if r.get("experiment") == experiment and matches(r, claim.where) and matches(r, filters)]


def side_values(claim: Claim, records: list[dict], side: Side, at: Any, seeds: list[int], experiment: str) -> Values:
    at = side.at if side.at is not None else at
    if side.value is not None:
        return Values(label=f"{side.value:g}", by_seed={s: side.value for s in seeds})
    arm = str(side.arm)
    label = arm if side.metric == claim.metric else f"{arm}: {metric_name(side.metric)}"
    out = Values(label=label)
    found = arm_records(claim, records, arm, at, experiment)
    where = f"{side.arm}{f' at {claim.at_key} {at}' if claim.at_key and at is not None else ''}"
    for seed in seeds:
        mine = [r for r in found if r.get("seed") == seed]
        ok = [r for r in mine if r.get("status") == "ok"]
        if len(ok) > 1:
            out.problems.append(
                f"{where}, seed {seed}: {len(ok)} records fit the arm (different configs under one "
                f"experiment name); narrow the arm's filters or use a fresh store"
            )
        elif not ok:
            failed = [r for r in mine if r.get("status") != "ok"]
            error = str(failed[0].get("error") or "no error message").splitlines()[0][:200] if failed else ""
            out.problems.append(f"{where}, seed {seed}: " + (f"failed ({error})" if failed else "missing"))
        else:
            value = metric_value(ok[0], side.metric)
            if value is None:
                out.problems.append(f"{where}, seed {seed}: the record has no {metric_name(side.metric)}")
            else:
                out.by_seed[seed] = value
                out.dense[seed] = ok[0].get("dense_stage")
    return out


def format_for(metric: Any, explicit: Optional[str] = None) -> str:
    """How a metric prints: ``percent`` for accuracies and fractions (differences in pp), else ``number``."""
    if explicit:
        return explicit
    name = metric_name(metric)
    return "percent" if any(k in name for k in ("acc", "density", "fraction", "sparsity")) else "number"


def _part(
    claim: Claim,
    comparison: Comparison,
    a: Values,
    b: Values,
    at: Any,
    text: str,
    seeds: list[int],
    relation: str,
    threshold: float,
) -> Part:
    part = Part(
        text=text, at=at, comparison=comparison, a=a, b=b, format=format_for(comparison.a.metric, comparison.format)
    )
    problems = a.problems + b.problems
    for seed in seeds:
        da, db = a.dense.get(seed), b.dense.get(seed)
        if da and db and da != db:
            problems.append(f"seed {seed}: {a.label} and {b.label} start from different dense models ({da} vs {db})")
    if len(seeds) < MIN_SEEDS:
        problems.append(f"{len(seeds)} seed(s) asked; a verdict needs at least {MIN_SEEDS}")
    if problems:
        part.reason = "; ".join(problems)
        return part
    part.stats = paired_stats([a.by_seed[s] - b.by_seed[s] for s in seeds])
    part.verdict = judge(part.stats, relation, threshold=threshold, tolerance=comparison.tolerance)
    return part


_SYMBOL = {"greater": ">", "less": "<", "at_least": "≥", "approx": "≈"}


def comparison_text(comparison: Comparison, a: Values, b: Values, fmt: str) -> str:
    scale, unit = (100, " pp") if fmt == "percent" else (1, "")
    if comparison.b is not None and comparison.b.value is not None:  # a constant reads in the metric's units
        b = Values(label=format_value(comparison.b.value, fmt).replace(".00 %", " %"))
    if comparison.relation in ("at_least", "approx"):
        tol = f"{(comparison.tolerance or 0.0) * scale:g}{unit}"
        return f"{a.label} {_SYMBOL[comparison.relation]} {b.label} {'−' if comparison.relation == 'at_least' else '±'} {tol}"
    shift = (
        f" {'+' if comparison.threshold > 0 else '−'} {abs(comparison.threshold) * scale:g}{unit}"
        if comparison.threshold
        else ""
    )
    return f"{a.label} {_SYMBOL[comparison.relation]} {b.label}{shift}"


def evaluate(claim: Claim, records: list[dict], *, experiment: str, seeds: list[int]) -> ClaimResult:
    """Judge every comparison of ``claim`` (at each value of its axis) on ``records`` of ``experiment``."""
    seeds = sorted(seeds)
    axis = claim.at_values or [None]
    parts: list[Part] = []
    for comparison in claim.comparisons:
        if comparison.relation == "monotone":
            for lo, hi in zip(axis, axis[1:]):
                a = side_values(
                    claim, records, Side(comparison.a.arm, comparison.a.metric, at=hi), hi, seeds, experiment
                )
                b = side_values(
                    claim, records, Side(comparison.a.arm, comparison.a.metric, at=lo), lo, seeds, experiment
                )
                a.label, b.label = f"{a.label} @ {hi:g}", f"{b.label} @ {lo:g}"
                relation = "greater" if comparison.direction == "increasing" else "less"
                parts.append(
                    _part(
                        claim,
                        comparison,
                        a,
                        b,
                        f"{lo:g} → {hi:g}",
                        f"{comparison.a.arm} {comparison.direction} ({metric_name(comparison.a.metric)})",
                        seeds,
                        relation,
                        0.0,
                    )
                )
            continue
        other = comparison.b if comparison.b is not None else Side(value=0.0)
        fixed_at = comparison.a.at if comparison.a.at is not None else other.at
        for at in [fixed_at] if fixed_at is not None else axis:
            a = side_values(claim, records, comparison.a, at, seeds, experiment)
            b = side_values(claim, records, other, at, seeds, experiment)
            fmt = format_for(comparison.a.metric, comparison.format)
            parts.append(
                _part(
                    claim,
                    comparison,
                    a,
                    b,
                    at,
                    comparison_text(comparison, a, b, fmt),
                    seeds,
                    comparison.relation,
                    comparison.threshold,
                )
            )
    verdict = overall([p.verdict for p in parts])
    reasons = [f"{p.text}{_at(claim, p.at)}: {p.reason}" for p in parts if p.reason]
    return ClaimResult(
        claim=claim,
        parts=parts,
        verdict=verdict,
        reasons=reasons,
        evidence=evidence_lines(claim, records, experiment, seeds),
        arm_table=arm_table(claim, records, experiment, seeds),
        published=published_line(claim, records, experiment, seeds),
    )


def _at(claim: Claim, at: Any) -> str:
    return f" at {claim.at_key} {at}" if claim.at_key and at is not None else ""


def arm_table(claim: Claim, records: list[dict], experiment: str, seeds: list[int]) -> list[dict]:
    rows = []
    for arm in claim.arms:
        fixed = claim.at_key in claim.arms[arm] if claim.at_key else True
        for at in [None] if fixed else claim.at_values or [None]:
            values = side_values(claim, records, Side(arm, claim.metric), at, seeds, experiment)
            summary = values.summary
            rows.append(
                {
                    "arm": arm,
                    "at": at,
                    "n": len(values.by_seed),
                    "mean": summary and summary[0],
                    "std": summary and summary[1],
                }
            )
    return rows


def format_value(value: Optional[float], fmt: str, *, signed: bool = False) -> str:
    if value is None:
        return "—"
    if fmt == "percent":
        return f"{value * 100:+.2f}" if signed else f"{value * 100:.2f} %"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def _mean_std(values: Values, fmt: str) -> str:
    summary = values.summary
    if summary is None:
        return "—"
    mean, std = summary
    return f"{format_value(mean, fmt)} ± {format_value(std, fmt).replace(' %', '')}"


def evidence_lines(claim: Claim, records: list[dict], experiment: str, seeds: list[int]) -> list[str]:
    """The claim's ``evidence`` sentences with their placeholders filled with mean ± std over the seeds."""
    lines = []
    for item in claim.evidence:
        for at in item.get("at", [None]):
            filled = {}
            for name, spec in (item.get("values") or {}).items():
                side = Side(arm=spec["arm"], metric=spec.get("metric", claim.metric), at=spec.get("at"))
                values = side_values(claim, records, side, at, seeds, experiment)
                filled[name] = _mean_std(values, format_for(side.metric, spec.get("format")))
            text = str(item["text"]).format(at=at, **filled)
            lines.append(" ".join(text.split()))
    return lines


def published_line(claim: Claim, records: list[dict], experiment: str, seeds: list[int]) -> Optional[dict]:
    if not claim.published:
        return None
    out = {"text": " ".join(str(claim.published.get("text", "")).split()), "value": claim.published.get("value")}
    arm = claim.published.get("arm")
    if arm in claim.arms:
        metric = claim.published.get("metric", claim.metric)
        at = claim.published.get("at")
        values = side_values(claim, records, Side(arm, metric, at=at), at, seeds, experiment)
        summary = values.summary
        out["ours"] = None if summary is None else (summary[0], summary[1], len(values.by_seed))
        out["format"] = format_for(metric)
    return out
