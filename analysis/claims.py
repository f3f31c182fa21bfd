"""Paper claims as data (``conf/claims/<id>.yaml``), judged on experiment records with paired statistics over seeds.

A claim file says what a paper claims, which experiments test it (Hydra overrides of experiment configs, run by
``python -m runners.reproduce``), how to pick its arms out of the records, and how to compare them::

    id: snip_beats_random                     # the file's stem
    number: 6                                 # the issue's numbering (``--claims 6``)
    paper: ...; source: Table 1; sentence: "..."; setting: "what we ran, in words"
    experiments: ["+experiment=reproduce_mlp +experiment/arm=snip,random method.sparsity=0.95,0.98"]
    where: {model: mlp_bn, dataset: fashion_mnist}      # filters every arm shares
    metric: test_acc                                    # default metric of every side
    at: {key: target_sparsity, values: [0.95, 0.98]}    # optional axis: each comparison is judged at each value
    arms: {snip: {label: snip}, random: {label: random}}   # record filters (dotted keys; {not|in|gt|lt: v})
    comparisons:
      - {a: snip, relation: greater, b: random, primary: 0.98}   # the claim's one primary part (here: at 98 %)
      - {a: {arm: snip, metric: density}, relation: approx, tolerance: 0.001, b: {value: 0.02}, precondition: true}
    chance: 0.1                                         # optional: chance accuracy (default 1 / the dataset's classes)
    collapse_metric: test_acc_before_recovery           # optional: the accuracy that says a network has collapsed
    published: {text: "...", value: 0.984, arm: snip, metric: test_acc,     # the paper's number, where it has one
                deltas: [{label: "...", value: 0.019, a: snip, b: random}]}  # the paper's A − B against its own B
    evidence: [{text: "... {x} ...", values: {x: {arm: snip, metric: density}}}]   # numbers for the "why"
    figures: [{kind: curve, name: ..., arms: [...]}]    # analysis.reproduction draws them
    variants: {mnist: {requires: mnist, experiments: [...], where: {dataset: mnist}, ...}}   # replaces fields

Relations, on the paired differences d = A − B over seeds (same seed: same dense model and data order):

- ``greater`` (A − B > threshold, default 0) / ``less`` (A − B < threshold);
- ``at_least`` (A ≥ B − tolerance) / ``approx`` (|A − B| ≤ tolerance);
- ``monotone`` (``direction: increasing | decreasing``): one arm along the ``at`` axis, each step a part.

**p-values.** With t(x) = (mean d − x) / (s / √n) and T Student's t with n − 1 degrees of freedom, each part has a
p-value for its claimed side (p_confirm) and one for the other side (p_refute); they are the two one-sided tails,
doubled so that p < 0.05 holds exactly when the 95 % Student-t interval of the mean lies on that side:

- ``greater`` (bound θ = threshold) and ``at_least`` (θ = −tolerance): p_confirm = 2 P(T ≥ t(θ)),
  p_refute = 2 P(T ≤ t(θ)) — the interval above θ, resp. below it; ``less`` mirrors them;
- ``approx`` (TOST): p_confirm = 2 max(P(T ≥ t(−tol)), P(T ≤ t(tol))) — both one-sided tests of the equivalence
  margin reject, i.e. the interval lies inside [−tol, tol]; p_refute = 2 min(P(T ≥ t(tol)), P(T ≤ t(−tol))) — the
  interval lies wholly beyond one margin;
- ``monotone``: each step is ``greater`` (increasing) or ``less`` (decreasing) with θ = 0.

p_confirm + p_refute = 2 (each capped at 1), so a part's p = min(p_confirm, p_refute) is its two-sided p-value and
the smaller one names the side. s = 0 (identical differences) gives p = 0 on the side the interval lies on, else 1.

**Roles and verdicts.** Every claim names exactly one *primary* part (``primary: true`` on a comparison with one
part, ``primary: <axis value>`` on one judged along the axis): it alone gives the claim's verdict. Comparisons
marked ``precondition: true`` are self-checks of the setting (the achieved density, the channels kept): each must
be *confirmed* (unadjusted), else the claim's verdict is "no verdict: precondition" naming it, whatever the other
parts say; a precondition never votes. Every other part is *secondary*: shown beside the verdict, judged with
Holm's step-down correction over the claim's secondary parts that were tested (sorted p_(1) ≤ … ≤ p_(m),
adjusted p_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j))). A part is *confirmed* when its p (Holm-adjusted for a
secondary) is below 0.05 on the claimed side, *refuted* when below 0.05 on the other side, *inconclusive*
otherwise; without correction this is exactly "the 95 % interval lies on the claimed side / the other side / straddles
the bound". A part whose two sides are both networks at or below chance + 5 pp in accuracy (the mean over the seeds
of the side's accuracy metric, or of ``collapse_metric`` for claims on another metric such as a loss; chance =
``chance`` or 1 / the classes of the records' dataset) is *uninformative*: shown, never judged, not in the Holm
family (an uninformative primary makes the claim uninformative). A part whose records are missing, failed,
ambiguous (two records fit one arm and seed) or fewer than ``MIN_SEEDS`` gets no verdict; a primary without one
leaves the claim without one.

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
ALPHA = 1 - CONFIDENCE  # a part is decided when its p (Holm-adjusted for a secondary) is below this
CONFIRMED, REFUTED, INCONCLUSIVE, NO_VERDICT = "confirmed", "refuted", "inconclusive", "no verdict"
UNINFORMATIVE = "uninformative"  # both sides at or below chance + CHANCE_MARGIN: not judged
PRECONDITION_FAILED = "no verdict: precondition"  # a claim whose self-check did not hold
MIXED = "mixed"  # only in reports written before the primary/secondary rules (RULES_V1), read back for their diff
PRIMARY, SECONDARY, PRECONDITION = "primary", "secondary", "precondition"
CHANCE_MARGIN = 0.05
# Class counts of the built-in datasets whose count is fixed (datasets/: mnist_like, small, cifar), by the records'
# `dataset` name: analysis reads records and may not import the loaders (tests/test_claims.py checks they agree).
# A claim on other data states its chance accuracy itself (`chance:`).
CLASSES = {"fashion_mnist": 10, "mnist": 10, "mnist_5k": 10, "digits": 10, "cifar10": 10, "cifar100": 100}
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
        {"a": "outputs.rounds.-1.measured_loss_increase", "b": "outputs.rounds.-1.predicted_loss_increase"},
    ),
    # slimming: fraction of the BN scales |γ| after sparsity training that are below `threshold`
    "gamma_fraction_below": (_fraction_below, {"path": "outputs.sparsity_trained_gamma_abs", "threshold": 0.05}),
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


def is_accuracy(metric: Any) -> bool:
    """A record field holding an accuracy (``test_acc``, ``dense_test_acc``, ``test_acc_before_recovery``, …); derived
    metrics (a drop, a fraction) are not."""
    if isinstance(metric, dict) or metric in DERIVED:
        return False
    return "acc" in str(metric).split(".")[-1]


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
    """The unadjusted verdict of one comparison from the 95 % interval of A − B (module docstring); the same as
    ``decide(*p_values(...))`` for a single part."""
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


def p_values(
    stats: Stats, relation: str, *, threshold: float = 0.0, tolerance: Optional[float] = None
) -> tuple[float, float]:
    """(p_confirm, p_refute) of one part (module docstring): each below ``ALPHA`` exactly when the interval of
    ``judge`` lies on that side."""
    se = stats.std / math.sqrt(stats.n)
    if se == 0 or not math.isfinite(se):  # identical differences: the interval is a point
        verdict = judge(stats, relation, threshold=threshold, tolerance=tolerance)
        return (0.0 if verdict == CONFIRMED else 1.0), (0.0 if verdict == REFUTED else 1.0)
    df = stats.n - 1

    def above(bound: float) -> float:  # P(T >= t(bound)): small when the mean lies clearly above the bound
        return float(scipy_stats.t.sf((stats.mean - bound) / se, df))

    def below(bound: float) -> float:  # P(T <= t(bound)): small when the mean lies clearly below the bound
        return float(scipy_stats.t.cdf((stats.mean - bound) / se, df))

    tol = 0.0 if tolerance is None else tolerance
    if relation in ("greater", "at_least"):
        bound = threshold if relation == "greater" else -tol
        confirm, refute = above(bound), below(bound)
    elif relation == "less":
        confirm, refute = below(threshold), above(threshold)
    elif relation == "approx":
        confirm, refute = max(above(-tol), below(tol)), min(above(tol), below(-tol))
    else:
        raise ValueError(f"unknown relation {relation!r}")
    return min(1.0, 2 * confirm), min(1.0, 2 * refute)


def decide(p_confirm: float, p_refute: float, p: Optional[float] = None) -> str:
    """Confirmed or refuted when ``p`` (default: the part's own min(p_confirm, p_refute); a Holm-adjusted one for a
    secondary) is below ``ALPHA``, on the side whose p is the smaller; inconclusive otherwise."""
    p = min(p_confirm, p_refute) if p is None else p
    if p >= ALPHA:
        return INCONCLUSIVE
    return CONFIRMED if p_confirm <= p_refute else REFUTED


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order: sorted ascending, the i-th (from 0) is multiplied by
    m − i, then made monotone by a running maximum, capped at 1."""
    m = len(pvalues)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda k: pvalues[k])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


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
    primary: Any = None  # True (the comparison's one part) or the axis value of the claim's primary part
    precondition: bool = False  # a self-check of the setting: must be confirmed, never votes


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
    chance: Optional[float] = None  # chance accuracy; None: 1 / CLASSES of the records' dataset
    collapse_metric: Any = None  # the accuracy that tells a collapsed network, for claims on another metric
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
    precondition = raw.get("precondition", False)
    if not isinstance(precondition, bool):
        _fail(where, f"precondition is true or false (got {precondition!r})")
    primary = raw.get("primary")
    if primary is not None and precondition:
        _fail(where, "a precondition cannot be the primary comparison")
    if relation == "monotone":
        if raw.get("direction") not in ("increasing", "decreasing"):
            _fail(where, "monotone needs direction: increasing or decreasing")
        if a.arm is None or len(claim.get("at", {}).get("values", [])) < 2:
            _fail(where, "monotone needs an arm and an `at` axis with at least two values")
        if primary is not None:
            _fail(where, "a monotone comparison cannot be primary; make one step a greater/less comparison")
        return Comparison(
            a=a, relation=relation, direction=raw["direction"], format=raw.get("format"), precondition=precondition
        )
    b = _side(raw.get("b"), claim, f"{where}.b")
    tolerance = _number(raw.get("tolerance"))
    if relation in ("at_least", "approx") and (tolerance is None or tolerance < 0):
        _fail(where, f"{relation} needs a tolerance >= 0")
    fixed = a.at is not None or (b.at is not None)
    axis = claim.get("at", {}).get("values", []) if claim.get("at") else []
    if primary is True and axis and not fixed:
        _fail(where, f"primary: this comparison is judged at each of {axis}; give the value (primary: {axis[-1]})")
    if (primary is not None and primary is not True) and (
        fixed or not axis or not any(_matches_value(primary, v) for v in axis)
    ):
        _fail(where, f"primary is true, or one value of the claim's `at` axis {axis} (got {primary!r})")
    return Comparison(
        a=a,
        relation=relation,
        b=b,
        threshold=float(raw.get("threshold", 0.0)),
        tolerance=tolerance,
        format=raw.get("format"),
        primary=primary,
        precondition=precondition,
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
    "chance",
    "collapse_metric",
    "requires",
    "variants",
}
COMPARISON_KEYS = {"a", "b", "relation", "threshold", "tolerance", "direction", "format", "primary", "precondition"}


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


def _check_delta(item: Any, claim: dict, where: str) -> None:
    """A published delta is the paper's A − B against its own B: {label, value, a, b} with a, b sides."""
    if not isinstance(item, dict) or _number(item.get("value")) is None or not item.get("label"):
        _fail(where, "a delta is {label: '...', value: <the paper's A − B>, a: <arm>, b: <arm>}")
    for key in ("a", "b"):
        side = _side(item.get(key), claim, f"{where}.{key}")
        if side.arm is None:
            _fail(f"{where}.{key}", "a delta compares two arms")


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
    primaries = [c for c in comparisons if c.primary is not None]
    if len(primaries) != 1:
        _fail(
            f"{where}.comparisons",
            f"{len(primaries)} primary comparisons; mark exactly one (the one the claim's sentence makes) with "
            f"primary: true, or primary: <axis value> for a comparison judged along the axis",
        )
    chance = raw.get("chance")
    if chance is not None and (_number(chance) is None or not 0 < float(chance) < 1):
        _fail(f"{where}.chance", f"chance accuracy is a number in (0, 1), e.g. 0.1 for 10 classes (got {chance!r})")
    collapse_metric = raw.get("collapse_metric")
    if collapse_metric is not None and not is_accuracy(collapse_metric):
        _fail(f"{where}.collapse_metric", f"must be an accuracy field of the records (got {collapse_metric!r})")
    for i, item in enumerate((raw.get("published") or {}).get("deltas") or []):
        _check_delta(item, raw, f"{where}.published.deltas[{i}]")
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
        chance=None if chance is None else float(chance),
        collapse_metric=collapse_metric,
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
    datasets: set[str] = field(default_factory=set)  # the `dataset` of the records read (chance accuracy)

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
    relation: str  # what is tested (a monotone step is greater or less)
    threshold: float = 0.0
    role: str = SECONDARY
    stats: Optional[Stats] = None
    p_confirm: Optional[float] = None
    p_refute: Optional[float] = None
    p: Optional[float] = None  # the p that decided the part: its own, or Holm-adjusted for a secondary
    verdict: str = NO_VERDICT
    reason: str = ""
    format: str = "number"
    collapse: Optional[tuple[float, float, float]] = None  # uninformative: both sides' accuracy means and chance


@dataclass
class ClaimResult:
    claim: Claim
    parts: list[Part]
    verdict: str
    reasons: list[str]
    evidence: list[str]
    arm_table: list[dict]  # per arm and axis value: mean, std, n and the value per seed of the claim metric
    published: Optional[dict] = None  # {"text", "value", "ours": (mean, std, n), "deltas"} where the paper has one
    seeds: list[int] = field(default_factory=list)

    @property
    def primary(self) -> Part:
        return next(p for p in self.parts if p.role == PRIMARY)

    @property
    def secondary(self) -> list[Part]:
        return [p for p in self.parts if p.role == SECONDARY]

    @property
    def preconditions(self) -> list[Part]:
        return [p for p in self.parts if p.role == PRECONDITION]


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
                out.datasets.add(str(ok[0].get("dataset")))
    return out


def format_for(metric: Any, explicit: Optional[str] = None) -> str:
    """How a metric prints: ``percent`` for accuracies and fractions (differences in pp), else ``number``."""
    if explicit:
        return explicit
    name = metric_name(metric)
    return "percent" if any(k in name for k in ("acc", "density", "fraction", "sparsity")) else "number"


def chance_of(claim: Claim, *sides: Values) -> Optional[float]:
    """The claim's ``chance``, else 1 / the class count of the one dataset the sides' records are on (None when
    unknown: the uninformative rule then does not apply)."""
    if claim.chance is not None:
        return claim.chance
    datasets = set().union(*(side.datasets for side in sides))
    return 1 / CLASSES[next(iter(datasets))] if len(datasets) == 1 and next(iter(datasets)) in CLASSES else None


def _collapse(
    claim: Claim, records: list[dict], sides: list[tuple[Side, Any]], values: list[Values], seeds: list[int], exp: str
) -> Optional[tuple[float, float, float]]:
    """(accuracy of A, of B, chance) when both sides are networks whose mean accuracy over the seeds is at or below
    chance + ``CHANCE_MARGIN``, else None. A side's accuracy is its own metric if that is one, else the claim's
    ``collapse_metric``; a constant side, or a metric without an accuracy, never collapses."""
    chance = chance_of(claim, *values)
    if chance is None or any(side.value is not None for side, _ in sides):
        return None
    means = []
    for side, at in sides:
        metric = side.metric if is_accuracy(side.metric) else claim.collapse_metric
        if metric is None:
            return None
        summary = side_values(claim, records, Side(side.arm, metric, at=side.at), at, seeds, exp).summary
        if summary is None:
            return None
        means.append(summary[0])
    if all(m <= chance + CHANCE_MARGIN for m in means):
        return means[0], means[1], chance
    return None


def _part(
    claim: Claim,
    records: list[dict],
    comparison: Comparison,
    sides: list[tuple[Side, Any]],
    text: str,
    at: Any,
    seeds: list[int],
    experiment: str,
    *,
    relation: str,
    threshold: float,
    labels: Optional[tuple[str, str]] = None,
) -> Part:
    """One part: both sides' values per seed, the paired interval and whether the networks collapsed (not judged
    yet: ``_judge`` decides every part of a claim together)."""
    a, b = (side_values(claim, records, side, side_at, seeds, experiment) for side, side_at in sides)
    if labels:
        a.label, b.label = labels
    fmt = format_for(comparison.a.metric, comparison.format)
    part = Part(
        text=text or comparison_text(comparison, a, b, fmt),
        at=at,
        comparison=comparison,
        a=a,
        b=b,
        relation=relation,
        threshold=threshold,
        format=fmt,
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
    part.collapse = _collapse(claim, records, sides, [a, b], seeds, experiment)
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


def _role(comparison: Comparison, at: Any) -> str:
    if comparison.precondition:
        return PRECONDITION
    if comparison.primary is True or (comparison.primary is not None and _matches_value(at, comparison.primary)):
        return PRIMARY
    return SECONDARY


def build_parts(claim: Claim, records: list[dict], *, experiment: str, seeds: list[int]) -> list[Part]:
    """Every comparison of ``claim`` at each value of its axis (a monotone one at each step), with its role."""
    axis = claim.at_values or [None]
    parts: list[Part] = []
    for comparison in claim.comparisons:
        if comparison.relation == "monotone":
            arm, metric = comparison.a.arm, comparison.a.metric
            for lo, hi in zip(axis, axis[1:]):
                part = _part(
                    claim,
                    records,
                    comparison,
                    [(Side(arm, metric, at=hi), hi), (Side(arm, metric, at=lo), lo)],
                    f"{arm} {comparison.direction} ({metric_name(metric)})",
                    f"{lo:g} → {hi:g}",
                    seeds,
                    experiment,
                    relation="greater" if comparison.direction == "increasing" else "less",
                    threshold=0.0,
                    labels=(f"{arm} @ {hi:g}", f"{arm} @ {lo:g}"),
                )
                part.role = _role(comparison, None)
                parts.append(part)
            continue
        other = comparison.b if comparison.b is not None else Side(value=0.0)
        fixed_at = comparison.a.at if comparison.a.at is not None else other.at
        for at in [fixed_at] if fixed_at is not None else axis:
            part = _part(
                claim,
                records,
                comparison,
                [(comparison.a, at), (other, at)],
                "",
                at,
                seeds,
                experiment,
                relation=comparison.relation,
                threshold=comparison.threshold,
            )
            part.role = _role(comparison, at)
            parts.append(part)
    return parts


def judge_parts(parts: list[Part]) -> None:
    """The verdict of every part of one claim: primary and preconditions on their own p, secondaries on their
    Holm-adjusted p over the claim's tested secondary parts; collapsed parts are uninformative (module docstring)."""
    family: list[tuple[Part, float, float]] = []  # the tested secondary parts with (p_confirm, p_refute)
    for part in parts:
        if part.stats is None:
            part.verdict = NO_VERDICT
            continue
        confirm, refute = p_values(
            part.stats, part.relation, threshold=part.threshold, tolerance=part.comparison.tolerance
        )
        part.p_confirm, part.p_refute = confirm, refute
        if part.collapse is not None:
            part.verdict = UNINFORMATIVE
        elif part.role == SECONDARY:
            family.append((part, confirm, refute))
        else:
            part.p = min(confirm, refute)
            part.verdict = decide(confirm, refute)
    for (part, confirm, refute), adjusted in zip(family, holm([min(c, r) for _, c, r in family])):
        part.p = adjusted
        part.verdict = decide(confirm, refute, adjusted)


def claim_verdict(claim: Claim, parts: list[Part]) -> tuple[str, list[str]]:
    """The claim's verdict (its primary part's, unless a precondition failed) and the reasons behind a missing one."""
    reasons = [f"{p.text}{_at(claim, p.at)}: {p.reason}" for p in parts if p.reason]
    failed = [p for p in parts if p.role == PRECONDITION and p.verdict != CONFIRMED]
    for p in failed:
        numbers = (
            f"A − B = {format_value(p.stats.mean, p.format, signed=True)} "
            f"[{format_value(p.stats.low, p.format, signed=True)}, {format_value(p.stats.high, p.format, signed=True)}]"
            if p.stats
            else "no data"
        )
        reasons.insert(
            0,
            f"precondition {p.text}{_at(claim, p.at)} is {p.verdict} ({numbers}{', in pp' if p.format == 'percent' else ''})",
        )
    if failed:
        return PRECONDITION_FAILED, reasons
    return next(p for p in parts if p.role == PRIMARY).verdict, reasons


def evaluate(claim: Claim, records: list[dict], *, experiment: str, seeds: list[int]) -> ClaimResult:
    """Judge every comparison of ``claim`` (at each value of its axis) on ``records`` of ``experiment``."""
    seeds = sorted(seeds)
    parts = build_parts(claim, records, experiment=experiment, seeds=seeds)
    judge_parts(parts)
    verdict, reasons = claim_verdict(claim, parts)
    return ClaimResult(
        claim=claim,
        parts=parts,
        verdict=verdict,
        reasons=reasons,
        evidence=evidence_lines(claim, records, experiment, seeds),
        arm_table=arm_table(claim, records, experiment, seeds),
        published=published_line(claim, records, experiment, seeds),
        seeds=seeds,
    )


@dataclass
class Stability:
    """Whether two disjoint halves of the seeds alone give the claim the same verdict."""

    halves: list[tuple[list[int], ClaimResult]]  # (seeds, the claim judged on them alone)
    same: Optional[bool]  # None: too few seeds for two halves of MIN_SEEDS
    secondary_agree: tuple[int, int] = (0, 0)  # secondary parts with one verdict in both halves, of all secondaries


def stability(claim: Claim, records: list[dict], *, experiment: str, seeds: list[int]) -> Stability:
    """The claim judged on the first and the second half of ``seeds`` (0–3 and 4–7 of eight) alone."""
    seeds = sorted(seeds)
    if len(seeds) < 2 * MIN_SEEDS:
        return Stability(halves=[], same=None)
    half = len(seeds) // 2
    halves = [(s, evaluate(claim, records, experiment=experiment, seeds=s)) for s in (seeds[:half], seeds[half:])]
    (_, first), (_, second) = halves
    verdicts = [r.verdict for _, r in halves]
    same = None if NO_VERDICT in verdicts else verdicts[0] == verdicts[1]
    pairs = list(zip(first.secondary, second.secondary))
    agree = sum(a.verdict == b.verdict for a, b in pairs)
    return Stability(halves=halves, same=same, secondary_agree=(agree, len(pairs)))


def _at(claim: Claim, at: Any) -> str:
    return f" at {claim.at_key} {at}" if claim.at_key and at is not None else ""


def arm_table(claim: Claim, records: list[dict], experiment: str, seeds: list[int]) -> list[dict]:
    rows = []
    for arm in claim.arms:
        fixed = claim.at_key in claim.arms[arm] if claim.at_key else True
        for at in [None] if fixed else claim.at_values or [None]:
            values = side_values(claim, records, Side(arm, claim.metric), at, seeds, experiment)
            summary = values.summary
            found = [r for r in arm_records(claim, records, arm, at, experiment) if r.get("seed") in values.by_seed]
            rows.append(
                {
                    "arm": arm,
                    "at": at,
                    "n": len(values.by_seed),
                    "mean": summary and summary[0],
                    "std": summary and summary[1],
                    "by_seed": dict(values.by_seed),
                    # (epochs, Σlr) from initialization of each record behind the values (foundations.training.budget)
                    "budget": [
                        (float(total["epochs"]), float(total["lr_integral"]))
                        for r in found
                        if r.get("status") == "ok" and (total := (r.get("training_budget") or {}).get("total"))
                    ],
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


def _side_of(raw: Any, claim: Claim) -> Side:
    raw = {"arm": raw} if isinstance(raw, str) else raw
    return Side(arm=raw["arm"], metric=raw.get("metric", claim.metric), at=raw.get("at"))


def published_line(claim: Claim, records: list[dict], experiment: str, seeds: list[int]) -> Optional[dict]:
    """The paper's number beside ours, and each published delta (the paper's A − B against its own B) beside our
    paired A − B over the seeds (``ours``: its Stats, None without every seed of both arms)."""
    if not claim.published:
        return None
    out: dict[str, Any] = {
        "text": " ".join(str(claim.published.get("text", "")).split()),
        "value": claim.published.get("value"),
    }
    arm = claim.published.get("arm")
    if arm in claim.arms:
        metric = claim.published.get("metric", claim.metric)
        at = claim.published.get("at")
        values = side_values(claim, records, Side(arm, metric, at=at), at, seeds, experiment)
        summary = values.summary
        out["ours"] = None if summary is None else (summary[0], summary[1], len(values.by_seed))
        out["format"] = format_for(metric)
    out["deltas"] = []
    for item in claim.published.get("deltas") or []:
        a, b = _side_of(item["a"], claim), _side_of(item["b"], claim)
        va = side_values(claim, records, a, a.at, seeds, experiment)
        vb = side_values(claim, records, b, b.at, seeds, experiment)
        common = sorted(set(va.by_seed) & set(vb.by_seed))
        ours = paired_stats([va.by_seed[s] - vb.by_seed[s] for s in common]) if len(common) >= 2 else None
        out["deltas"].append(
            {
                "label": " ".join(str(item["label"]).split()),
                "value": float(item["value"]),
                "a": va.label,
                "b": vb.label,
                "ours": ours,
                "format": format_for(a.metric, item.get("format")),
            }
        )
    return out
