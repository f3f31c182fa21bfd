"""Claims as data (analysis/claims.py): paired statistics, verdicts and their refusals on constructed records with
known answers, and every shipped claim file checked against the jobs its experiments really run."""

import math
import statistics
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml
from scipy import stats as scipy_stats

from analysis.claims import (
    CLASSES,
    CONFIRMED,
    INCONCLUSIVE,
    NO_VERDICT,
    PRECONDITION,
    PRECONDITION_FAILED,
    PRIMARY,
    REFUTED,
    SECONDARY,
    UNINFORMATIVE,
    Stats,
    decide,
    evaluate,
    judge,
    load_claim,
    load_claims,
    matches,
    metric_value,
    p_values,
    paired_stats,
    parse_claim,
    record_value,
    select_claims,
    stability,
)
from foundations.errors import UserError
from runners.reproduce import jobs_of

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = "reproduce_test"
SEEDS = [0, 1, 2]
# two-sided 95 % Student-t quantiles from a printed table (t_{0.975, df})
T_TABLE = {2: 4.303, 3: 3.182, 4: 2.776}


def record(label, seed, test_acc, **fields):
    return {
        "status": "ok",
        "experiment": EXPERIMENT,
        "label": label,
        "method": label.split(" ")[0],
        "model": "mlp_bn",
        "dataset": "fashion_mnist",
        "seed": seed,
        "target_sparsity": 0.9,
        "test_acc": test_acc,
        "dense_stage": f"dense{seed}",
        **fields,
    }


def claim(comparisons, arms=None, **extra):
    if not any("primary" in c for c in comparisons):  # one comparison of one part unless a test says otherwise
        comparisons = [{**comparisons[0], "primary": True}, *comparisons[1:]]
    raw = {
        "id": "t",
        "number": 1,
        "paper": "P",
        "source": "S",
        "sentence": "s",
        "experiments": ["+experiment=reproduce_mlp +experiment/arm=a,b"],
        "arms": arms or {"a": {"label": "a"}, "b": {"label": "b"}},
        "comparisons": comparisons,
        **extra,
    }
    return parse_claim(raw, "test")


def two_arms(a_values, b_values, **fields):
    return [record("a", s, v, **fields) for s, v in zip(SEEDS, a_values)] + [
        record("b", s, v, **fields) for s, v in zip(SEEDS, b_values)
    ]


def verdict_of(records, comparison, seeds=SEEDS, **extra):
    return evaluate(claim([comparison], **extra), records, experiment=EXPERIMENT, seeds=seeds)


# ------------------------------------------------------------------------------------------------ statistics
@pytest.mark.parametrize("diffs", [[1.0, 2.0, 3.0], [0.01, -0.02, 0.04, 0.0], [5.0, 5.5, 4.0, 6.0, 5.2]])
def test_paired_stats_is_the_student_t_interval_of_the_mean(diffs):
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = T_TABLE[n - 1] * sd / math.sqrt(n)
    got = paired_stats(diffs)
    assert got.n == n and got.mean == pytest.approx(mean) and got.std == pytest.approx(sd)
    assert got.low == pytest.approx(mean - half, abs=1e-3 * sd) and got.high == pytest.approx(
        mean + half, abs=1e-3 * sd
    )


def test_identical_differences_give_a_zero_width_interval():
    s = paired_stats([0.02, 0.02, 0.02])
    assert s.low == s.high == pytest.approx(0.02)
    with pytest.raises(ValueError):
        paired_stats([0.1])


@pytest.mark.parametrize(
    "relation,low,high,kwargs,expected",
    [
        ("greater", 0.01, 0.03, {}, CONFIRMED),
        ("greater", -0.03, -0.01, {}, REFUTED),
        ("greater", -0.01, 0.03, {}, INCONCLUSIVE),
        ("greater", 0.01, 0.03, {"threshold": 0.05}, REFUTED),
        ("less", -0.03, -0.01, {}, CONFIRMED),
        ("less", 0.01, 0.02, {}, REFUTED),
        ("less", -0.2, -0.11, {"threshold": -0.1}, CONFIRMED),
        ("less", -0.2, -0.05, {"threshold": -0.1}, INCONCLUSIVE),
        ("at_least", -0.004, 0.01, {"tolerance": 0.005}, CONFIRMED),
        ("at_least", -0.03, -0.01, {"tolerance": 0.005}, REFUTED),
        ("at_least", -0.01, 0.01, {"tolerance": 0.005}, INCONCLUSIVE),
        ("approx", -0.004, 0.004, {"tolerance": 0.005}, CONFIRMED),
        ("approx", 0.006, 0.01, {"tolerance": 0.005}, REFUTED),
        ("approx", -0.01, -0.006, {"tolerance": 0.005}, REFUTED),
        ("approx", -0.001, 0.01, {"tolerance": 0.005}, INCONCLUSIVE),
    ],
)
def test_judge_reads_the_interval_against_the_claimed_side(relation, low, high, kwargs, expected):
    assert judge(Stats(3, (low + high) / 2, 0.0, low, high), relation, **kwargs) == expected


# ------------------------------------------------------------------------------------------------ verdicts
def test_a_consistent_gain_is_confirmed():
    result = verdict_of(two_arms([0.90, 0.91, 0.92], [0.88, 0.88, 0.895]), {"a": "a", "relation": "greater", "b": "b"})
    assert result.verdict == CONFIRMED
    part = result.parts[0]
    assert part.stats.n == 3 and part.stats.mean == pytest.approx((0.02 + 0.03 + 0.025) / 3)
    assert part.a.summary[0] == pytest.approx(0.91)


def test_a_consistent_loss_is_refuted():
    result = verdict_of(two_arms([0.80, 0.81, 0.79], [0.88, 0.88, 0.87]), {"a": "a", "relation": "greater", "b": "b"})
    assert result.verdict == REFUTED and result.parts[0].stats.high < 0


def test_noisy_differences_are_inconclusive():
    result = verdict_of(two_arms([0.90, 0.84, 0.88], [0.85, 0.88, 0.87]), {"a": "a", "relation": "greater", "b": "b"})
    assert result.verdict == INCONCLUSIVE
    assert result.parts[0].stats.low < 0 < result.parts[0].stats.high


def test_a_missing_seed_gives_no_verdict_and_says_which():
    records = [r for r in two_arms([0.9, 0.91, 0.92], [0.8, 0.8, 0.8]) if not (r["label"] == "a" and r["seed"] == 2)]
    result = verdict_of(records, {"a": "a", "relation": "greater", "b": "b"})
    assert result.verdict == NO_VERDICT and result.parts[0].stats is None
    assert "a, seed 2: missing" in result.reasons[0]


def test_a_failed_run_gives_no_verdict_with_its_error():
    records = two_arms([0.9, 0.91, 0.92], [0.8, 0.8, 0.8])
    records[4] = {**records[4], "status": "failed", "error": "RuntimeError: out of memory", "test_acc": None}
    result = verdict_of(records, {"a": "a", "relation": "greater", "b": "b"})
    assert result.verdict == NO_VERDICT and "b, seed 1: failed (RuntimeError: out of memory)" in result.reasons[0]


def test_fewer_seeds_than_the_minimum_give_no_verdict():
    records = two_arms([0.9, 0.91, 0.92], [0.8, 0.8, 0.8])
    result = verdict_of(records, {"a": "a", "relation": "greater", "b": "b"}, seeds=[0, 1])
    assert result.verdict == NO_VERDICT and "2 seed(s) asked" in result.reasons[0]


def test_two_records_for_one_arm_and_seed_are_ambiguous():
    records = two_arms([0.9, 0.91, 0.92], [0.8, 0.8, 0.8]) + [record("a", 0, 0.5)]
    result = verdict_of(records, {"a": "a", "relation": "greater", "b": "b"})
    assert result.verdict == NO_VERDICT and "2 records fit the arm" in result.reasons[0]


def test_pairs_from_different_dense_models_are_refused():
    records = two_arms([0.9, 0.91, 0.92], [0.8, 0.8, 0.8])
    records[3] = {**records[3], "dense_stage": "another"}
    result = verdict_of(records, {"a": "a", "relation": "greater", "b": "b"})
    assert result.verdict == NO_VERDICT and "different dense models" in result.reasons[0]


def test_other_experiments_and_filters_are_not_mixed_in():
    records = two_arms([0.9, 0.91, 0.92], [0.8, 0.8, 0.8])
    records += [{**r, "experiment": "survey_mlp", "test_acc": 0.0} for r in records]
    records += [{**r, "model": "conv_bn", "test_acc": 1.0} for r in records[:6]]
    result = verdict_of(records, {"a": "a", "relation": "greater", "b": "b"}, where={"model": "mlp_bn"})
    assert result.verdict == CONFIRMED and result.parts[0].stats.mean == pytest.approx(0.11)


def test_each_axis_value_is_a_part_and_the_primary_one_gives_the_verdict():
    records = []
    for at, (a, b) in {
        0.5: ([0.90, 0.91, 0.92], [0.80, 0.80, 0.81]),
        0.9: ([0.70, 0.71, 0.69], [0.80, 0.80, 0.79]),
    }.items():
        records += [{**r, "target_sparsity": at} for r in two_arms(a, b)]
    axis = {"key": "target_sparsity", "values": [0.5, 0.9]}
    at_09 = verdict_of(records, {"a": "a", "relation": "greater", "b": "b", "primary": 0.9}, at=axis)
    assert [p.verdict for p in at_09.parts] == [CONFIRMED, REFUTED]
    assert [p.role for p in at_09.parts] == [SECONDARY, PRIMARY]
    assert at_09.verdict == REFUTED  # the confirmed secondary part never makes it "mixed"
    at_05 = verdict_of(records, {"a": "a", "relation": "greater", "b": "b", "primary": 0.5}, at=axis)
    assert at_05.verdict == CONFIRMED and at_05.parts[1].verdict == REFUTED


def test_at_least_with_a_tolerance_and_a_metric_of_the_same_record():
    # fine-tuned vs its own dense model: 0.3 pp below is within 0.5 pp, 2 pp below is not
    close = [record("a", s, acc, dense_test_acc=acc + 0.003 + 0.0005 * s) for s, acc in zip(SEEDS, (0.9, 0.91, 0.92))]
    far = [{**r, "dense_test_acc": r["test_acc"] + 0.02 + 0.001 * r["seed"]} for r in close]
    comparison = {"a": "a", "relation": "at_least", "tolerance": 0.005, "b": {"arm": "a", "metric": "dense_test_acc"}}
    assert verdict_of(close, comparison).verdict == CONFIRMED
    assert verdict_of(far, comparison).verdict == REFUTED


def test_a_constant_side_and_approx():
    records = [record("a", s, 0.9, density=d) for s, d in zip(SEEDS, (0.0818, 0.0819, 0.0817))]
    ok = {"a": {"arm": "a", "metric": "density"}, "relation": "approx", "tolerance": 0.001, "b": {"value": 0.0818}}
    off = {**ok, "b": {"value": 0.09}}
    assert verdict_of(records, ok).verdict == CONFIRMED and verdict_of(records, off).verdict == REFUTED


def test_monotone_judges_every_step_along_the_axis():
    records = []
    for at, values in {0.3: (1.0, 1.1, 0.9), 0.5: (1.5, 1.6, 1.45), 0.9: (1.4, 1.7, 1.3)}.items():
        records += [record("a", s, 0.9, target_sparsity=at, ratio=v) for s, v in zip(SEEDS, values)]
    result = evaluate(
        claim(
            [
                {"a": {"arm": "a", "at": 0.3}, "relation": "greater", "b": {"value": 0.0}, "primary": True},
                {"a": {"arm": "a", "metric": "ratio"}, "relation": "monotone", "direction": "increasing"},
            ],
            at={"key": "target_sparsity", "values": [0.3, 0.5, 0.9]},
        ),
        records,
        experiment=EXPERIMENT,
        seeds=SEEDS,
    )
    steps = result.secondary
    assert [p.at for p in steps] == ["0.3 → 0.5", "0.5 → 0.9"]
    assert [p.verdict for p in steps] == [CONFIRMED, INCONCLUSIVE]
    assert steps[0].stats.mean == pytest.approx(0.5166666, abs=1e-6)


# ------------------------------------------------------------------------------------------------ p-values, Holm
def one_sided(diffs, bound, side):
    """scipy's one-sample t-test of the mean against ``bound``: an implementation independent of analysis.claims."""
    return scipy_stats.ttest_1samp(diffs, bound, alternative=side).pvalue


@pytest.mark.parametrize(
    "diffs",
    [[0.01, 0.02, 0.025], [-0.01, 0.004, 0.002, 0.001], [0.003, -0.002, 0.004, 0.0, 0.001], [0.02, 0.03, 0.01, 0.05]],
)
@pytest.mark.parametrize(
    "relation,kwargs",
    [
        ("greater", {}),
        ("greater", {"threshold": 0.005}),
        ("less", {"threshold": 0.01}),
        ("at_least", {"tolerance": 0.005}),
        ("approx", {"tolerance": 0.005}),
        ("approx", {"tolerance": 0.03}),
    ],
)
def test_p_values_are_scipys_t_tests_and_decide_as_the_interval_does(diffs, relation, kwargs):
    stats = paired_stats(diffs)
    confirm, refute = p_values(stats, relation, **kwargs)
    thr, tol = kwargs.get("threshold", 0.0), kwargs.get("tolerance", 0.0)
    if relation in ("greater", "at_least"):
        bound = thr if relation == "greater" else -tol
        expected = (2 * one_sided(diffs, bound, "greater"), 2 * one_sided(diffs, bound, "less"))
    elif relation == "less":
        expected = (2 * one_sided(diffs, thr, "less"), 2 * one_sided(diffs, thr, "greater"))
    else:  # two one-sided tests of the equivalence margin, and the test beyond either margin
        expected = (
            2 * max(one_sided(diffs, -tol, "greater"), one_sided(diffs, tol, "less")),
            2 * min(one_sided(diffs, tol, "greater"), one_sided(diffs, -tol, "less")),
        )
    assert (confirm, refute) == pytest.approx(tuple(min(1.0, e) for e in expected), rel=1e-9, abs=1e-12)
    assert decide(confirm, refute) == judge(stats, relation, **kwargs)


def holm_by_hand(pvalues):
    """Holm-Bonferroni written out from its definition: the i-th smallest of m (from 1) times m − i + 1, then
    never below an earlier adjusted value, at most 1."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out = [0.0] * m
    for rank, i in enumerate(order, start=1):
        out[i] = min(1.0, max([(m - r + 1) * pvalues[j] for r, j in enumerate(order[:rank], start=1)]))
    return out


# Three sparsities where a beats b with p ≈ 0.02-0.04 each (3 seeds): each alone would be confirmed.
MARGINAL = {0.5: [0.012, 0.021, 0.017], 0.8: [0.012, 0.022, 0.015], 0.9: [0.011, 0.020, 0.019]}
MARGINAL_AXIS = {"key": "target_sparsity", "values": [0.5, 0.8, 0.9]}


def marginal_records(gains=MARGINAL, labels_b=("b",)):
    records = [record("c", s, 0.5 + 0.1 * s, target_sparsity=0.5) for s in SEEDS]  # the primary: c > 0.4
    for at, diffs in gains.items():
        records += [record("a", s, 0.8 + 0.01 * s + d, target_sparsity=at) for s, d in zip(SEEDS, diffs)]
        records += [record(b, s, 0.8 + 0.01 * s, target_sparsity=at) for s in SEEDS for b in labels_b]
    return records


def marginal_claim(**extra):
    return claim(
        [
            {"a": {"arm": "c", "at": 0.5}, "relation": "greater", "b": {"value": 0.4}, "primary": True},
            {"a": "a", "relation": "greater", "b": "b"},
        ],
        arms={"a": {"label": "a"}, "b": {"label": "b"}, "c": {"label": "c"}},
        at=MARGINAL_AXIS,
        **extra,
    )


def test_holm_within_a_claim_keeps_parts_that_alone_would_confirm_inconclusive():
    raw_p = [2 * one_sided(MARGINAL[at], 0.0, "greater") for at in MARGINAL_AXIS["values"]]
    assert all(p < 0.05 for p in raw_p) and any(p > 0.05 / 3 for p in raw_p)  # the case is the one we want
    result = evaluate(marginal_claim(), marginal_records(), experiment=EXPERIMENT, seeds=SEEDS)
    secondary = result.secondary
    assert [p.role for p in result.parts] == [PRIMARY, SECONDARY, SECONDARY, SECONDARY]
    assert [p.p for p in secondary] == pytest.approx(holm_by_hand(raw_p), rel=1e-9)
    for part, adjusted in zip(secondary, holm_by_hand(raw_p)):
        assert part.verdict == (CONFIRMED if adjusted < 0.05 else INCONCLUSIVE)
    assert [p.verdict for p in secondary].count(INCONCLUSIVE) >= 1
    # the same part alone is confirmed: it is the correction, not the data, that holds the verdict back
    alone = evaluate(
        claim(
            [{"a": "a", "relation": "greater", "b": "b", "primary": 0.8}],
            at={"key": "target_sparsity", "values": [0.8]},
        ),
        marginal_records(),
        experiment=EXPERIMENT,
        seeds=SEEDS,
    )
    assert alone.verdict == CONFIRMED and alone.primary.p == pytest.approx(raw_p[1], rel=1e-9)


def test_holm_is_within_each_claim_not_across_claims():
    # another claim with many significant secondary parts judged first must not change this claim's adjustment
    other = claim(
        [
            {"a": {"arm": "c", "at": 0.5}, "relation": "greater", "b": {"value": 0.4}, "primary": True},
            {"a": "a", "relation": "greater", "b": "z"},
        ],
        arms={"a": {"label": "a"}, "z": {"label": "z"}, "c": {"label": "c"}},
        at=MARGINAL_AXIS,
    )
    records = marginal_records(labels_b=("b", "z"))
    evaluate(other, records, experiment=EXPERIMENT, seeds=SEEDS)
    raw_p = [2 * one_sided(MARGINAL[at], 0.0, "greater") for at in MARGINAL_AXIS["values"]]
    result = evaluate(marginal_claim(), records, experiment=EXPERIMENT, seeds=SEEDS)
    assert [p.p for p in result.secondary] == pytest.approx(holm_by_hand(raw_p), rel=1e-9)


def test_holm_by_hand_matches_the_textbook_example():
    # Holm (1979)'s procedure on p = (0.01, 0.04, 0.03, 0.005): sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1
    assert holm_by_hand([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


# ------------------------------------------------------------------------------------------------ roles
def test_the_primary_part_alone_decides_the_claim():
    records = two_arms([0.90, 0.91, 0.92], [0.80, 0.81, 0.80]) + [
        record("c", s, v) for s, v in zip(SEEDS, (0.70, 0.71, 0.69))
    ]
    arms = {"a": {"label": "a"}, "b": {"label": "b"}, "c": {"label": "c"}}
    loses = {"a": "c", "relation": "greater", "b": "a"}  # refuted
    wins = {"a": "a", "relation": "greater", "b": "b"}  # confirmed
    confirmed = evaluate(
        claim([{**wins, "primary": True}, loses], arms=arms), records, experiment=EXPERIMENT, seeds=SEEDS
    )
    assert confirmed.verdict == CONFIRMED and confirmed.secondary[0].verdict == REFUTED
    refuted = evaluate(
        claim([wins, {**loses, "primary": True}], arms=arms), records, experiment=EXPERIMENT, seeds=SEEDS
    )
    assert refuted.verdict == REFUTED and refuted.secondary[0].verdict == CONFIRMED
    # a secondary without its records leaves the primary's verdict standing
    missing = [r for r in records if r["label"] != "c"]
    result = evaluate(claim([{**wins, "primary": True}, loses], arms=arms), missing, experiment=EXPERIMENT, seeds=SEEDS)
    assert result.verdict == CONFIRMED and result.secondary[0].verdict == NO_VERDICT and result.reasons


def test_a_secondary_part_with_identical_differences_is_decided_on_its_zero_p():
    records = [{**r, "density": 0.0818} for r in two_arms([0.90, 0.91, 0.92], [0.80, 0.81, 0.80])]
    c = claim(
        [
            {"a": "a", "relation": "greater", "b": "b", "primary": True},
            {"a": {"arm": "a", "metric": "density"}, "relation": "approx", "tolerance": 0.001, "b": {"value": 0.0818}},
        ]
    )
    exact = evaluate(c, records, experiment=EXPERIMENT, seeds=SEEDS).secondary[0]
    assert exact.stats.std == 0 and (exact.p_confirm, exact.p_refute) == (0.0, 1.0)
    assert exact.p == 0.0 and exact.verdict == CONFIRMED


def density_claim(density_value, primary_records_gain=True):
    records = two_arms([0.90, 0.91, 0.92], [0.80, 0.81, 0.80] if primary_records_gain else [0.95, 0.96, 0.97])
    records = [{**r, "density": density_value + 0.0001 * r["seed"]} for r in records]
    c = claim(
        [
            {"a": "a", "relation": "greater", "b": "b", "primary": True},
            {
                "a": {"arm": "a", "metric": "density"},
                "relation": "approx",
                "tolerance": 0.001,
                "b": {"value": 0.0818},
                "precondition": True,
            },
        ]
    )
    return evaluate(c, records, experiment=EXPERIMENT, seeds=SEEDS)


def test_a_failed_precondition_gives_no_verdict_naming_it_and_never_votes():
    held = density_claim(0.0818)
    assert held.preconditions[0].role == PRECONDITION and held.preconditions[0].verdict == CONFIRMED
    assert held.verdict == CONFIRMED and not held.reasons
    failed = density_claim(0.09)  # the method did not reach the density the claim is about
    assert failed.preconditions[0].verdict == REFUTED
    assert failed.verdict == PRECONDITION_FAILED and failed.primary.verdict == CONFIRMED
    assert failed.reasons[0].startswith("precondition a: density ≈ 8.18 % ± 0.1 pp is refuted")
    # a precondition that holds gives the primary's verdict, whatever it is: it is no vote for the claim
    assert density_claim(0.0818, primary_records_gain=False).verdict == REFUTED


def test_an_undecided_precondition_is_not_met():
    records = [{**r, "density": 0.0818 + (0.002 if r["seed"] == 1 else -0.001)} for r in two_arms([0.9] * 3, [0.8] * 3)]
    records = [{**r, "test_acc": r["test_acc"] + 0.001 * r["seed"]} for r in records]
    c = claim(
        [
            {"a": "a", "relation": "greater", "b": "b", "primary": True},
            {
                "a": {"arm": "a", "metric": "density"},
                "relation": "approx",
                "tolerance": 0.001,
                "b": {"value": 0.0818},
                "precondition": True,
            },
        ]
    )
    result = evaluate(c, records, experiment=EXPERIMENT, seeds=SEEDS)
    assert result.preconditions[0].verdict == INCONCLUSIVE and result.verdict == PRECONDITION_FAILED


# ------------------------------------------------------------------------------------------------ uninformative
def collapsed_records():
    # at 0.9 both networks are near chance (10 classes: 10 %), at 0.5 they are not; b wins at both
    records = []
    for at, (a, b) in {
        0.5: ([0.80, 0.81, 0.80], [0.85, 0.86, 0.86]),
        0.9: ([0.10, 0.11, 0.10], [0.13, 0.14, 0.15]),
    }.items():
        records += [{**r, "target_sparsity": at} for r in two_arms(a, b)]
    return records


def test_parts_where_both_networks_collapsed_are_not_judged_nor_counted_by_holm():
    axis = {"key": "target_sparsity", "values": [0.5, 0.9]}
    result = evaluate(
        claim(
            [
                {"a": {"arm": "a", "at": 0.5}, "relation": "less", "b": {"value": 0.9}, "primary": True},
                {"a": "a", "relation": "greater", "b": "b"},
            ],
            at=axis,
        ),
        collapsed_records(),
        experiment=EXPERIMENT,
        seeds=SEEDS,
    )
    at_05, at_09 = result.secondary
    assert at_09.verdict == UNINFORMATIVE and at_09.collapse == pytest.approx((0.1033333, 0.14, 0.1), abs=1e-6)
    assert at_09.p is None and at_09.stats is not None  # shown, not judged
    # the only tested secondary: Holm over one part is its own p
    assert at_05.verdict == REFUTED and at_05.p == pytest.approx(min(at_05.p_confirm, at_05.p_refute))
    # one network above chance + 5 pp is enough to judge the part
    lifted = [
        {**r, "test_acc": 0.16} if r["label"] == "b" and r["target_sparsity"] == 0.9 else r for r in collapsed_records()
    ]
    judged = evaluate(
        claim([{"a": "a", "relation": "greater", "b": "b", "primary": 0.9}], at=axis),
        lifted,
        experiment=EXPERIMENT,
        seeds=SEEDS,
    )
    assert judged.verdict == REFUTED
    primary_collapsed = evaluate(
        claim([{"a": "a", "relation": "greater", "b": "b", "primary": 0.9}], at=axis),
        collapsed_records(),
        experiment=EXPERIMENT,
        seeds=SEEDS,
    )
    assert primary_collapsed.verdict == UNINFORMATIVE


def test_chance_comes_from_the_claim_or_the_dataset_and_collapse_metric_serves_other_metrics():
    axis = {"key": "target_sparsity", "values": [0.5, 0.9]}
    records = [{**r, "loss": 1.0 + r["test_acc"]} for r in collapsed_records()]
    on_loss = {
        "a": {"arm": "a", "metric": "loss"},
        "relation": "less",
        "b": {"arm": "b", "metric": "loss"},
        "primary": 0.9,
    }
    # a loss says nothing about collapse: judged, unless the claim names the accuracy that does
    assert evaluate(claim([on_loss], at=axis), records, experiment=EXPERIMENT, seeds=SEEDS).verdict == CONFIRMED
    told = claim([on_loss], at=axis, collapse_metric="test_acc")
    assert evaluate(told, records, experiment=EXPERIMENT, seeds=SEEDS).verdict == UNINFORMATIVE
    # a 2-class problem: 80 % and 86 % are within chance (50 %) + 5 pp only if chance were higher; 0.9 = 90 %
    binary = claim([{"a": "a", "relation": "greater", "b": "b", "primary": 0.5}], at=axis, chance=0.85)
    assert evaluate(binary, collapsed_records(), experiment=EXPERIMENT, seeds=SEEDS).verdict == UNINFORMATIVE
    unknown = [{**r, "dataset": "my_folder"} for r in collapsed_records()]
    assert (
        evaluate(
            claim([{"a": "a", "relation": "greater", "b": "b", "primary": 0.9}], at=axis),
            unknown,
            experiment=EXPERIMENT,
            seeds=SEEDS,
        ).verdict
        == REFUTED
    )  # chance unknown: judged


def test_the_class_counts_agree_with_the_loaders():
    from datasets import build_dataset
    from datasets.cifar import SPECS
    from datasets.config import DatasetConfig

    assert CLASSES["digits"] == build_dataset(DatasetConfig(name="digits", val_size=100)).num_classes
    assert {name: CLASSES[name] for name in ("cifar10", "cifar100")} == {
        n: SPECS[n]["classes"] for n in ("cifar10", "cifar100")
    }


# ------------------------------------------------------------------------------------------------ stability
EIGHT = list(range(8))


def test_the_stability_line_judges_each_half_of_the_seeds_alone():
    steady = [record("a", s, 0.90 + 0.002 * s) for s in EIGHT] + [record("b", s, 0.85 + 0.001 * (s % 3)) for s in EIGHT]
    c = claim([{"a": "a", "relation": "greater", "b": "b"}])
    same = stability(c, steady, experiment=EXPERIMENT, seeds=EIGHT)
    assert [seeds for seeds, _ in same.halves] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [r.verdict for _, r in same.halves] == [CONFIRMED, CONFIRMED] and same.same is True
    # a gain on seeds 0-3 and a loss on 4-7: all eight together are undecided, each half decides the other way
    flips = [record("a", s, 0.90 + (0.03 if s < 4 else -0.03) + 0.001 * s) for s in EIGHT]
    flips += [record("b", s, 0.90 + 0.0005 * (s % 2)) for s in EIGHT]
    split = stability(c, flips, experiment=EXPERIMENT, seeds=EIGHT)
    assert [r.verdict for _, r in split.halves] == [CONFIRMED, REFUTED] and split.same is False
    assert evaluate(c, flips, experiment=EXPERIMENT, seeds=EIGHT).verdict == INCONCLUSIVE
    too_few = stability(c, steady, experiment=EXPERIMENT, seeds=[0, 1, 2, 3, 4])
    assert too_few.same is None and too_few.halves == []


def test_the_report_prints_per_seed_values_n_and_stability_and_writes_the_per_seed_csv(tmp_path):
    import csv

    from analysis.reproduction import Context, write_report

    a_values = {s: 0.90 + 0.002 * s for s in EIGHT}
    b_values = {s: 0.85 + 0.001 * (s % 3) for s in EIGHT}
    records = [record("a", s, v) for s, v in a_values.items()] + [record("b", s, v) for s, v in b_values.items()]
    c = claim([{"a": "a", "relation": "greater", "b": "b"}])
    context = Context(experiment=EXPERIMENT, tier="test", seeds=EIGHT)
    out, _ = write_report([c], records, context, tmp_path / "REPRODUCTION.md", tmp_path / "figures")
    text = out.read_text()
    assert "| a | 8 | 90.70 % ± 0.49 | 90.00 90.20 90.40 90.60 90.80 91.00 91.20 91.40 |" in text
    assert "**Verdict: ✅ confirmed**, n = 8." in text
    assert "seeds 0–3 alone → ✅ confirmed" in text and "seeds 4–7 alone → ✅ confirmed" in text
    assert "| [t](#1-t) | S | ✅ confirmed | 8 | — | yes | — |" in text
    with open(tmp_path / "figures" / "per_seed.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    arms = {(r["name"], int(r["seed"])): float(r["value"]) for r in rows if r["kind"] == "arm"}
    assert arms == {**{("a", s): v for s, v in a_values.items()}, **{("b", s): v for s, v in b_values.items()}}
    diffs = {int(r["seed"]): float(r["value"]) for r in rows if r["kind"] == "difference (primary)"}
    assert diffs == pytest.approx({s: a_values[s] - b_values[s] for s in EIGHT}, abs=1e-15)
    assert {r["claim"] for r in rows} == {"t"} and {r["metric"] for r in rows} == {"test_acc"}


def test_a_published_delta_sits_beside_our_paired_difference_of_the_same_arms(tmp_path):
    from analysis.reproduction import Context, write_report

    records = two_arms([0.90, 0.91, 0.93], [0.88, 0.88, 0.90])
    published = {"text": "t", "deltas": [{"label": "A − B on ImageNet", "value": 0.0192, "a": "a", "b": "b"}]}
    c = claim([{"a": "a", "relation": "greater", "b": "b"}], published=published)
    delta = evaluate(c, records, experiment=EXPERIMENT, seeds=SEEDS).published["deltas"][0]
    diffs = [0.02, 0.03, 0.03]
    half = T_TABLE[2] * statistics.stdev(diffs) / math.sqrt(3)
    assert delta["value"] == 0.0192 and delta["ours"].n == 3
    assert (delta["ours"].mean, delta["ours"].low) == pytest.approx(
        (statistics.mean(diffs), statistics.mean(diffs) - half), abs=1e-4
    )
    out, _ = write_report(
        [c], records, Context(experiment=EXPERIMENT, tier="t", seeds=SEEDS), tmp_path / "R.md", tmp_path
    )
    assert "| A − B on ImageNet | +1.92 pp | a − b | +2.67 pp [" in out.read_text()


# ------------------------------------------------------------------------------------------------ metrics, filters
def test_derived_metrics():
    r = {
        "test_loss_before_recovery": 0.9,
        "test_loss_before_pruning": 0.3,
        "dense_test_loss": 0.2,
        "outputs": {  # the methods' own fields: OBD's rounds, slimming's |γ|
            "rounds": [
                {"predicted_loss_increase": 1.0, "measured_loss_increase": 0.5},
                {"predicted_loss_increase": 0.2, "measured_loss_increase": 0.5},
            ],
            "sparsity_trained_gamma_abs": {"bn1": [0.01, 0.2, 0.001, 0.5], "bn2": [0.04, 0.06]},
        },
    }
    assert metric_value(r, "loss_increase_before_recovery") == pytest.approx(0.6)
    assert metric_value(r, "obd_measured_over_predicted") == pytest.approx(2.5)  # the last round
    assert metric_value(r, {"name": "gamma_fraction_below", "threshold": 0.05}) == pytest.approx(3 / 6)
    assert metric_value(r, {"name": "gamma_fraction_below", "threshold": 0.3}) == pytest.approx(5 / 6)
    assert metric_value({}, "loss_increase_before_recovery") is None


def test_paths_filters_and_operators():
    r = {
        "per_layer_density": {"conv1.weight": 0.5},
        "method_config": {"lam": 0.01, "scope": "global"},
        "target_sparsity": 0.95000000001,
        "rounds": [{"a": 1}, {"a": 2}],
    }
    assert record_value(r, "per_layer_density.conv1.weight") == 0.5 and record_value(r, "rounds.-1.a") == 2
    assert record_value(r, "method_config.nosuch") is None
    assert matches(r, {"target_sparsity": 0.95, "method_config.scope": "global"})
    assert matches(r, {"method_config.lam": {"gt": 0}}) and not matches(r, {"method_config.lam": 0})
    assert matches(r, {"method_config.scope": {"in": ["layerwise", "global"]}})
    assert matches(r, {"method_config.scope": {"not": "layerwise"}}) and not matches(
        r, {"method_config.lam": {"lt": 0}}
    )


# ------------------------------------------------------------------------------------------------ claim files
def test_a_bad_claim_file_is_one_line_naming_it(tmp_path):
    good = yaml.safe_load((ROOT / "conf" / "claims" / "snip_beats_random.yaml").read_text())
    cases = {
        "typo": {**good, "comparison": []},
        "relation": {**good, "comparisons": [{"a": "snip", "relation": "beats", "b": "random"}]},
        "arm": {**good, "comparisons": [{"a": "snip", "relation": "greater", "b": "nosuch"}]},
        "tolerance": {**good, "comparisons": [{"a": "snip", "relation": "approx", "b": "random"}]},
        "no primary": {**good, "comparisons": [{"a": "snip", "relation": "greater", "b": "random"}]},
        "two primaries": {
            **good,
            "comparisons": [{"a": "snip", "relation": "greater", "b": "random", "primary": 0.95}] * 2,
        },
        "primary off the axis": {
            **good,
            "comparisons": [{"a": "snip", "relation": "greater", "b": "random", "primary": 0.5}],
        },
        "primary without its axis value": {
            **good,
            "comparisons": [{"a": "snip", "relation": "greater", "b": "random", "primary": True}],
        },
        "primary precondition": {
            **good,
            "comparisons": [{"a": "snip", "relation": "greater", "b": "random", "primary": 0.95, "precondition": True}],
        },
        "chance": {**good, "chance": 10},
        "collapse metric": {**good, "collapse_metric": "test_loss"},
        "delta": {**good, "published": {"text": "t", "deltas": [{"label": "x", "value": 0.1, "a": "snip"}]}},
    }
    for name, raw in cases.items():
        path = tmp_path / f"{raw['id']}.yaml"
        path.write_text(yaml.safe_dump(raw))
        with pytest.raises(UserError) as err:
            load_claim(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value), name


def test_shipped_claims_load_and_are_selected_by_number_or_id():
    claims = load_claims()
    assert [c.number for c in claims] == list(range(1, len(claims) + 1)) and len(claims) >= 12
    assert [c.id for c in select_claims(claims, "5,lth_ticket_matches_dense")] == [
        "lth_ticket_matches_dense",
        "lth_reinit_gap",
    ]
    with pytest.raises(UserError, match="--claims"):
        select_claims(claims, "99")


def predicted_record(tmp_path, job: list[str]) -> dict:
    """The record fields arms filter on, as the job would write them (composed exactly as the CLI does)."""
    from conftest import make_run

    from foundations.hashing import canonical
    from methods import get_method
    from runners.identity import experiment_spec

    config = make_run(tmp_path, *job, "name=" + EXPERIMENT)
    method = get_method(config.method.name)(config.method)
    out = {
        "status": "ok",
        "experiment": config.sweep,
        "method": method.name,
        "label": method.label(),
        "model": config.model.name,
        "dataset": config.dataset.name,
        "seed": 0,
        "target_sparsity": config.method.sparsity,
        "method_config": asdict(config.method),
    }
    if method.name == "scratch":
        out["outputs"] = {"budget": config.method.budget, "source": method.source_config()}  # as ScratchOutputs
    out["identity"] = canonical(experiment_spec(config))  # what makes two jobs one record in the store
    return out


def claims_and_variants():
    return [c for main in load_claims() for c in (main, *main.variants.values())]


@pytest.fixture(scope="module")
def every_job(tmp_path_factory):
    """Every job of every claim's lines (the variants' too), as the record fields arms filter on: the records one
    store holds after a full reproduction."""
    tmp = tmp_path_factory.mktemp("jobs")
    lines = sorted({line for c in claims_and_variants() for line in c.experiments})
    return {line: [predicted_record(tmp, job) for job in jobs_of(line) or []] for line in lines}


def fitting(c, arm, at, jobs):
    filters = dict(c.arms[arm], **({c.at_key: at} if at is not None else {}))
    return [j for j in jobs if matches(j, c.where) and matches(j, filters)]


@pytest.mark.slow
@pytest.mark.parametrize("claim_id", sorted(p.stem for p in (ROOT / "conf" / "claims").glob("*.yaml")))
def test_every_arm_of_every_claim_is_exactly_one_job_of_its_experiments_and_of_the_whole_store(every_job, claim_id):
    # a label typo or a filter no job satisfies would otherwise only show as "missing" after an hour of runs, and
    # a filter that another claim's job also satisfies as "2 records fit the arm" (all claims share one store)
    main = load_claim(ROOT / "conf" / "claims" / f"{claim_id}.yaml")
    store = list({j["identity"]: j for jobs in every_job.values() for j in jobs}.values())
    for c in [main, *main.variants.values()]:
        own = [j for line in c.experiments for j in every_job[line]]
        used = {side.arm for comp in c.comparisons for side in (comp.a, comp.b) if side is not None and side.arm}
        assert used, c.key
        for arm in c.arms:
            fixed = c.at_key is None or c.at_key in c.arms[arm]
            for at in [None] if fixed else c.at_values:
                assert len(fitting(c, arm, at, own)) == 1, (
                    c.key,
                    arm,
                    at,
                    [j["label"] for j in fitting(c, arm, at, own)],
                )
                assert len(fitting(c, arm, at, store)) == 1, (c.key, arm, at, "another claim's job fits too")


@pytest.mark.slow
def test_every_job_the_claims_run_feeds_a_comparison(every_job):
    # the budget rule: an experiment that no primary, secondary or precondition part reads is not run
    sides = []
    for c in claims_and_variants():
        for comp in c.comparisons:
            for side in (comp.a, comp.b):
                if side is None or side.arm is None:
                    continue
                ats = [side.at] if side.at is not None else (c.at_values or [None])
                sides += [(c, side.arm, at) for at in ats]
    for line, jobs in every_job.items():
        for job in jobs:
            assert any(fitting(c, arm, at, [job]) for c, arm, at in sides), (line, job["label"], job["target_sparsity"])
