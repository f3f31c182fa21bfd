"""Claims as data (analysis/claims.py): paired statistics, verdicts and their refusals on constructed records with
known answers, and every shipped claim file checked against the jobs its experiments really run."""

import math
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from analysis.claims import (
    CONFIRMED,
    INCONCLUSIVE,
    MIXED,
    NO_VERDICT,
    REFUTED,
    Stats,
    evaluate,
    judge,
    load_claim,
    load_claims,
    matches,
    metric_value,
    paired_stats,
    parse_claim,
    record_value,
    select_claims,
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


def test_each_axis_value_is_a_part_and_disagreeing_parts_are_mixed():
    records = []
    for at, (a, b) in {
        0.5: ([0.90, 0.91, 0.92], [0.80, 0.80, 0.81]),
        0.9: ([0.70, 0.71, 0.69], [0.80, 0.80, 0.79]),
    }.items():
        records += [{**r, "target_sparsity": at} for r in two_arms(a, b)]
    result = verdict_of(
        records, {"a": "a", "relation": "greater", "b": "b"}, at={"key": "target_sparsity", "values": [0.5, 0.9]}
    )
    assert [p.verdict for p in result.parts] == [CONFIRMED, REFUTED]
    assert result.verdict == MIXED


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
    result = verdict_of(
        records,
        {"a": {"arm": "a", "metric": "ratio"}, "relation": "monotone", "direction": "increasing"},
        at={"key": "target_sparsity", "values": [0.3, 0.5, 0.9]},
    )
    assert [p.at for p in result.parts] == ["0.3 → 0.5", "0.5 → 0.9"]
    assert [p.verdict for p in result.parts] == [CONFIRMED, INCONCLUSIVE]
    assert result.parts[0].stats.mean == pytest.approx(0.5166666, abs=1e-6)


# ------------------------------------------------------------------------------------------------ metrics, filters
def test_derived_metrics():
    r = {
        "test_loss_before_recovery": 0.9,
        "test_loss_before_pruning": 0.3,
        "dense_test_loss": 0.2,
        "rounds": [
            {"predicted_loss_increase": 1.0, "measured_loss_increase": 0.5},
            {"predicted_loss_increase": 0.2, "measured_loss_increase": 0.5},
        ],
        "sparsity_trained_gamma_abs": {"bn1": [0.01, 0.2, 0.001, 0.5], "bn2": [0.04, 0.06]},
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

    from methods import get_method

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
        out.update(budget=config.method.budget, source=method.source_config())
    return out


@pytest.mark.slow
@pytest.mark.parametrize("claim_id", sorted(p.stem for p in (ROOT / "conf" / "claims").glob("*.yaml")))
def test_every_arm_of_every_claim_is_exactly_one_job_of_its_experiments(tmp_path, claim_id):
    # a label typo or a filter no job satisfies would otherwise only show as "missing" after an hour of runs
    main = load_claim(ROOT / "conf" / "claims" / f"{claim_id}.yaml")
    for c in [main, *main.variants.values()]:
        jobs = [predicted_record(tmp_path, job) for line in c.experiments for job in jobs_of(line) or []]
        used = {side.arm for comp in c.comparisons for side in (comp.a, comp.b) if side is not None and side.arm}
        assert used, c.key
        for arm in c.arms:
            fixed = c.at_key is None or c.at_key in c.arms[arm]
            for at in [None] if fixed else c.at_values:
                filters = dict(c.arms[arm], **({c.at_key: at} if at is not None else {}))
                fit = [j for j in jobs if matches(j, c.where) and matches(j, filters)]
                assert len(fit) == 1, (c.key, arm, at, [j["label"] for j in fit])
