"""``python -m runners.reproduce``: the sweeps it plans from the claims (shared lines once, dense models first, the
tier's seeds last, launcher overrides passed through) and a real run on synthetic data — report written, a re-run
computing nothing, the report alone regenerated."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from analysis.claims import load_claims, parse_claim
from analysis.reproduction import VERDICT_MARK, duration
from foundations.errors import UserError
from runners.reproduce import command, dense_line, jobs_of, load_tiers, plan, plan_lines

ROOT = Path(__file__).resolve().parent.parent


def test_every_tier_sets_every_knob_and_eight_seeds_by_default():
    tiers = load_tiers()
    assert set(tiers) >= {"default", "paper", "smoke"}
    assert all(set(t) == set(tiers["default"]) for t in tiers.values())
    assert tiers["default"]["seeds"] == list(range(8)) and len(tiers["paper"]["seeds"]) >= 3


def test_the_plan_counts_jobs_and_estimates_from_the_last_runs_seconds_per_job():
    sweeps = plan(load_claims(), mnist=False)
    seeds = list(range(8))
    every = sum(len(jobs_of(s.line)) for s in sweeps) * 8
    last = {
        "date": "d",
        "machine": {"floor_gflops": 180.0},
        "sweeps": [
            {"line": sweeps[0].line, "seconds": 30.0, "jobs": 3, "returncode": 0},  # 10 s per job
            {"line": sweeps[1].line, "seconds": 0.0, "jobs": 3, "returncode": 0, "skipped": True},  # no timing
        ],
    }
    lines = plan_lines(sweeps, seeds, last)
    assert lines[0] == f"plan: {len(sweeps)} sweeps, {every} jobs (8 seeds)"
    per_seed = len(jobs_of(sweeps[0].line))
    assert lines[1].startswith(f"estimate from the last run (d, floor 180.0 GFLOP/s): {duration(10.0 * per_seed * 8)}")
    assert lines[1].endswith(f"not timed: {len(sweeps) - 1} sweep(s)")
    assert plan_lines(sweeps, seeds, {})[1] == "no earlier run of this tier timed these lines: no estimate"


def test_plan_runs_each_line_once_dense_models_first_and_mnist_only_when_asked():
    claims = load_claims()
    sweeps = plan(claims, mnist=False)
    lines = [s.line for s in sweeps]
    assert len(lines) == len(set(lines))
    dense = [i for i, s in enumerate(sweeps) if s.claims == ["dense models"]]
    assert dense == list(range(len(dense))) and len(dense) == 3  # mlp_bn, lenet300, conv_bn
    shared = next(s for s in sweeps if "obd,magnitude,random_after" in s.line)
    assert shared.claims == ["obd_loss_order", "obd_quadratic_model"]
    assert not any("+experiment=han_lenet" in line for line in lines)
    with_mnist = plan(claims, mnist=True)
    mnist = [s for s in with_mnist if s.requires == "mnist"]
    assert {s.line for s in mnist} >= {"+experiment=han_lenet model=lenet300", "+experiment=slimming_mlp"}
    assert all(dense_line(s.line) is None for s in mnist)  # the papers' own configs bring their own dense stage


def test_the_tier_is_a_known_key_of_the_reproduce_configs_only():
    from runners.train import check_top_level_keys

    check_top_level_keys(["+experiment=reproduce_mlp", "+experiment/arm=snip", "reproduce.tier=smoke"])
    with pytest.raises(UserError, match="reproduce.tier: no such config group or key"):
        check_top_level_keys(["+experiment=survey_mlp", "reproduce.tier=smoke"])


def test_dense_line_keeps_the_experiment_model_and_data_only():
    assert (
        dense_line(
            "+experiment=reproduce_mlp model=lenet300 dataset=synthetic dataset.train_limit=null "
            "+experiment/arm=a,b model.init=variance_scaling method.sparsity=0.5"
        )
        == "+experiment=reproduce_mlp model=lenet300 dataset=synthetic dataset.train_limit=null +experiment/arm=dense"
    )


def test_command_appends_name_tier_and_seeds_last_and_passes_overrides_through(tmp_path):
    sweep = plan(load_claims(), mnist=False)[-1]
    cmd = command(
        sweep,
        tier="default",
        seeds=[0, 1, 2],
        sweep_dir=tmp_path,
        extra=["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "logger=wandb"],
    )
    assert cmd[1:4] == ["-m", "runners.train", "-m"]
    assert cmd[-1] == "seed=0,1,2"  # last: consecutive jobs differ in seed, so parallel workers rarely share a stage
    assert "name=reproduce_default" in cmd and "reproduce.tier=default" in cmd
    assert "hydra/launcher=joblib" in cmd and "hydra.launcher.n_jobs=2" in cmd
    assert "logger=wandb" in cmd and "logger=none" not in cmd  # a given override wins over the runner's default
    assert "progress=false" in cmd and f"hydra.sweep.dir={tmp_path}" in cmd


def test_every_claim_line_passes_the_checks_and_the_composition_of_its_multirun(tmp_path):
    # each job of a line composes alone (tests/test_claims.py); the pre-launch check composes and validates every job
    # of the line's multirun, as `prunelab-train -m` does before the first job starts
    from runners.jobs import check_command
    from runners.reproduce import is_reproduce_config

    for sweep in plan(load_claims(), mnist=True):
        argv = ["-m", *shlex.split(sweep.line), *(["reproduce.tier=smoke"] if is_reproduce_config(sweep.line) else [])]
        check_command([*argv, f"paths.results={tmp_path}"])


def test_jobs_of_a_line_are_hydras_product_with_the_last_axis_fastest():
    # Hydra's basic sweeper: the experiment config's own params first (its +experiment/arm axis, which the line's
    # list replaces in place), then the line's overrides
    assert jobs_of("+experiment=reproduce_mlp +experiment/arm=magnitude,snip method.sparsity=0.5,0.9") == [
        ["+experiment/arm=magnitude", "+experiment=reproduce_mlp", "method.sparsity=0.5"],
        ["+experiment/arm=magnitude", "+experiment=reproduce_mlp", "method.sparsity=0.9"],
        ["+experiment/arm=snip", "+experiment=reproduce_mlp", "method.sparsity=0.5"],
        ["+experiment/arm=snip", "+experiment=reproduce_mlp", "method.sparsity=0.9"],
    ]
    assert [job[-1] for job in jobs_of("+experiment=reproduce_mlp seed=range(3)")] == ["seed=0", "seed=1", "seed=2"]


TINY_CLAIM = {
    "id": "tiny",
    "number": 1,
    "paper": "nobody",
    "source": "Fig. 0",
    "sentence": "Magnitude pruning after training beats random deletion after training.",
    "experiments": [
        "+experiment=reproduce_mlp dataset=synthetic model=lenet300 dataset.train_limit=null "
        "+experiment/arm=magnitude,random_after method.sparsity=0.8"
    ],
    "where": {"model": "lenet300", "dataset": "synthetic"},
    "at": {"key": "target_sparsity", "values": [0.8]},
    "arms": {"magnitude": {"label": "magnitude"}, "random": {"label": "random (after training)"}},
    "metric": "test_acc_before_recovery",
    "comparisons": [{"a": "magnitude", "relation": "greater", "b": "random", "primary": 0.8}],
    "figures": [{"kind": "curve", "name": "tiny", "arms": ["magnitude", "random"]}],
}


def reproduce(tmp_path, *args):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "runners.reproduce",
            "--tier",
            "smoke",
            "--claims-dir",
            str(tmp_path / "claims"),
            "--out",
            str(tmp_path / "REPRODUCTION.md"),
            "--sweep-dir",
            str(tmp_path / "sweeps"),
            *args,
            f"paths.results={tmp_path / 'results'}",
            "threads=1",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def body(path: Path) -> str:
    """The report without its run-specific header lines (date, commit, wall time, the machine's floor)."""
    return re.sub(r"- \*\*(Date|Wall time|Command|Machine)\*\*.*\n", "", path.read_text())


@pytest.mark.slow
def test_a_run_writes_the_report_and_a_second_run_computes_nothing(tmp_path):
    (tmp_path / "claims").mkdir()
    (tmp_path / "claims" / "tiny.yaml").write_text(yaml.safe_dump(TINY_CLAIM, allow_unicode=True))
    parse_claim(TINY_CLAIM, "tiny")  # the claim itself is valid
    first = reproduce(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "sweep: 6/6 jobs done (6 ok, 0 failed)" in first.stdout  # the sweeps' own progress line
    report = tmp_path / "REPRODUCTION.md"
    text = report.read_text()
    assert "## 1. tiny" in text and "| magnitude > random |" in text
    assert re.search(r"\| \[tiny\]\(#1-tiny\) \| Fig\. 0 \| .*(confirmed|refuted|inconclusive)", text), text[:2000]
    figures = tmp_path / "results" / "report" / "reproduction"
    assert (figures / "tiny.png").stat().st_size > 0
    floor = re.search(r"- \*\*Machine\*\*: .*floor at the start of the run .*\*\*([\d.]+) GFLOP/s\*\*", text)
    assert floor is not None and float(floor.group(1)) > 0, text[:3000]
    assert "machine: " in first.stdout and "plan: 2 sweeps, 9 jobs (3 seeds)" in first.stdout
    assert (figures / "per_seed.csv").read_text().startswith("claim,kind,name,at,metric,seed,value\n")
    tiny = json.loads((figures / "verdicts.json").read_text())["current"]["claims"]["tiny"]
    assert f"| [tiny](#1-tiny) | Fig. 0 | {VERDICT_MARK[tiny['verdict']]} | 3 |" in text
    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "runs" / "experiment").glob("*/result.json")]
    assert sorted((r["label"], r["seed"]) for r in records) == sorted(
        (label, s) for label in ("dense", "magnitude", "random (after training)") for s in (0, 1, 2)
    )
    assert {r["experiment"] for r in records} == {"reproduce_smoke"}
    first_body = body(report)

    second = reproduce(tmp_path)  # basic launcher this time
    assert second.returncode == 0, second.stderr[-3000:]
    meta = json.loads((tmp_path / "results" / "report" / "reproduction" / "run.json").read_text())
    assert "; 0 stages computed" in meta["wall_time"]
    assert all(sweep["skipped"] for sweep in meta["sweeps"])  # every record found: no sweep even launched
    assert body(report) == first_body
    assert f"**{meta['machine']['floor_gflops']:.1f} GFLOP/s**" in report.read_text()  # measured by this run

    only = reproduce(tmp_path, "--report-only")
    assert only.returncode == 0 and "report only; the last run" in report.read_text()
    assert body(report) == first_body
    assert f"**{meta['machine']['floor_gflops']:.1f} GFLOP/s**" in report.read_text()  # the last run's, reprinted


# ------------------------------------------------------------------------------------------------ what changed
CHANGE_CLAIM = {
    "id": "gain",
    "number": 1,
    "paper": "P",
    "source": "S",
    "sentence": "a beats b",
    "experiments": ["+experiment=reproduce_mlp +experiment/arm=a,b"],
    "arms": {"a": {"label": "a"}, "b": {"label": "b"}},
    "comparisons": [{"a": "a", "relation": "greater", "b": "b", "primary": True}],
}


def report_on(tmp_path, gains, date):
    from analysis.reproduction import Context, write_report

    records = []
    for seed, gain in enumerate(gains):
        for label, acc in (("a", 0.8 + gain), ("b", 0.8)):
            records.append(
                {
                    "status": "ok",
                    "experiment": "reproduce_test",
                    "label": label,
                    "seed": seed,
                    "test_acc": acc,
                    "dataset": "fashion_mnist",
                }
            )
    context = Context(experiment="reproduce_test", tier="test", seeds=[0, 1, 2], header={"date": date, "commit": date})
    out, _ = write_report([parse_claim(CHANGE_CLAIM, "gain")], records, context, tmp_path / "R.md", tmp_path / "fig")
    text = out.read_text()
    return text[text.index("## What changed") : text.index("## 1. gain")]


def test_what_changed_names_each_moved_verdict_with_its_numbers_and_survives_regeneration(tmp_path):
    assert "No earlier report to compare with." in report_on(tmp_path, [0.02, 0.03, 0.025], "first")
    moved = report_on(tmp_path, [-0.02, -0.03, -0.025], "second")
    assert "Against the report of first (commit `first`, tier `test`, seeds 0–2)." in moved
    # the means of the paired differences, by hand: +2.50 pp then, −2.50 pp now
    assert "- **1. gain**: ✅ confirmed → ❌ refuted. Primary a > b: now -2.50 pp [" in moved
    assert "(n = 3, refuted), then +2.50 pp [" in moved and "(n = 3, confirmed)." in moved
    assert report_on(tmp_path, [-0.02, -0.03, -0.025], "third") == moved  # the same numbers: the same diff
    steady = report_on(tmp_path, [-0.021, -0.03, -0.025], "fourth")  # numbers moved, the verdict did not
    assert "Against the report of third" in steady and "No claim's verdict moved." in steady


# A report written before verdicts.json (rules v1), as REPRODUCTION.md had it on 56ad63b (excerpt).
V1_REPORT = """# Reproduction report

- **Date**: 2026-12-03 15:14 · **commit** `56ad63b`
- **Tier** `default`: seeds 0, 1, 2; dense_epochs 6, recovery_epochs 3

## Summary

| # | claim | source | verdict | MNIST variant |
|---|---|---|---|---|
| 4 | [lth_ticket_matches_dense](#4-lth_ticket_matches_dense) | §2, Fig. 3 | ✅ confirmed | not run |

## 4. lth_ticket_matches_dense

**Verdict: ✅ confirmed.** Holds: ticket ≥ ticket: dense_test_acc − 0.5 pp.

| comparison | A | B | A − B [95 % CI] | n | verdict |
| --- | --- | --- | --- | --- | --- |
| ticket ≥ ticket: dense_test_acc − 0.5 pp | 89.67 % ± 0.03 | 89.47 % ± 0.15 | +0.20 pp [-0.12, +0.52] | 3 | ✅ confirmed |

### MNIST variant

not run: needs MNIST (README › Data)


## 13. obd_quadratic_model

**Verdict: ◐ mixed.** Holds: obd increasing.

| comparison | target_sparsity | A | B | A − B [95 % CI] | n | verdict |
| --- | --- | --- | --- | --- | --- | --- |
| obd ≈ 1 ± 0.25 | 30 % | 3.727 ± 0.3353 | 1 ± 0 | +2.727 [+1.894, +3.56] | 3 | ❌ refuted |
| obd increasing (obd_measured_over_predicted) | 0.3 → 0.5 | 10.92 ± 1.908 | 3.727 ± 0.3353 | +7.196 [+2.178, +12.21] | 3 | ✅ confirmed |
"""


def test_a_report_without_verdicts_json_is_read_back_as_the_baseline(tmp_path):
    from analysis.reproduction import RULES_V1, baseline, snapshot_from_markdown

    snap = snapshot_from_markdown(V1_REPORT)
    assert snap["rules"] == RULES_V1 and snap["tier"] == "default" and snap["seeds"] == [0, 1, 2]
    assert snap["commit"] == "56ad63b" and snap["date"] == "2026-12-03 15:14"
    assert {k: v["verdict"] for k, v in snap["claims"].items()} == {
        "lth_ticket_matches_dense": "confirmed",
        "obd_quadratic_model": "mixed",
    }
    ticket = snap["claims"]["lth_ticket_matches_dense"]["parts"]["ticket ≥ ticket: dense_test_acc − 0.5 pp"]
    assert (ticket["mean"], ticket["low"], ticket["high"], ticket["n"]) == pytest.approx((0.002, -0.0012, 0.0052, 3))
    obd = snap["claims"]["obd_quadratic_model"]["parts"]
    assert obd["obd ≈ 1 ± 0.25 @ 30 %"]["verdict"] == "refuted" and obd["obd ≈ 1 ± 0.25 @ 30 %"]["mean"] == 2.727
    assert obd["obd increasing (obd_measured_over_predicted) @ 0.3 → 0.5"]["high"] == 12.21
    report = tmp_path / "REPRODUCTION.md"
    report.write_text(V1_REPORT)
    assert baseline(tmp_path / "verdicts.json", report, {"claims": {}}) == snap
    assert snapshot_from_markdown("# something else\n") is None


def test_the_committed_verdicts_json_is_the_committed_reports_read_back():
    # the first regeneration under these rules diffs against it (results/report/reproduction/ is committed)
    from analysis.reproduction import RULES, snapshot_from_markdown

    stored = json.loads((ROOT / "results" / "report" / "reproduction" / "verdicts.json").read_text())
    report = (ROOT / "REPRODUCTION.md").read_text()
    if stored["current"]["rules"] == RULES:  # regenerated since: the report is the JSON's, not a read-back
        assert f"**commit** `{stored['current']['commit']}`" in report
    else:
        assert stored == {"current": snapshot_from_markdown(report), "previous": None}
