"""``python -m runners.reproduce``: the sweeps it plans from the claims (shared lines once, dense models first, the
tier's seeds last, launcher overrides passed through) and a real run on synthetic data — report written, a re-run
computing nothing, the report alone regenerated."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from analysis.claims import load_claims, parse_claim
from runners.reproduce import command, dense_line, jobs_of, load_tiers, plan

ROOT = Path(__file__).resolve().parent.parent


def test_every_tier_sets_every_knob_and_three_seeds_by_default():
    tiers = load_tiers()
    assert set(tiers) >= {"default", "paper", "smoke"}
    assert all(set(t) == set(tiers["default"]) for t in tiers.values())
    assert tiers["default"]["seeds"] == [0, 1, 2] and len(tiers["paper"]["seeds"]) >= 3


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
    from foundations.errors import UserError
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
    "comparisons": [{"a": "magnitude", "relation": "greater", "b": "random"}],
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
    """The report without its run-specific header lines (date, commit, wall time)."""
    return re.sub(r"- \*\*(Date|Wall time|Command)\*\*.*\n", "", path.read_text())


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
    assert (tmp_path / "results" / "report" / "reproduction" / "tiny.png").stat().st_size > 0
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

    only = reproduce(tmp_path, "--report-only")
    assert only.returncode == 0 and "report only; the last run" in report.read_text()
    assert body(report) == first_body
