"""Calibrated hyperparameters: the selection rules on constructed measurements (largest λ within 0.5 pp on the
validation split, the boundary, nothing qualifying, validation against test disagreeing; the best fine-tuning LR),
bad input as one line with exit code 2, and a real ``runners.calibrate`` run on synthetic data whose file is checked
against the store's stages read directly."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from analysis.calibration import (
    LAM,
    LR_SCALE,
    Measurement,
    calibration_lines,
    choose_lam,
    choose_lr_scale,
    read_calibrations,
)
from foundations.errors import UserError
from runners.calibrate import main

ROOT = Path(__file__).resolve().parent.parent


def runs(dense_val, val, *, dense_test=None, test=None):
    """One Measurement per seed (seed = position); test accuracies default to the validation ones."""
    dense_test = dense_test or dense_val
    test = test or val
    return [Measurement(s, v, t, dv, dt) for s, (dv, v, dt, t) in enumerate(zip(dense_val, val, dense_test, test))]


# Costs by hand (dense − trained, validation, mean over the two seeds): λ=0 −0.10 pp, 1e-4 +0.20 pp, 1e-3 exactly
# +0.50 pp (0.4 and 0.6), 1e-2 +2.00 pp. On the test split the ranking is planted the other way round: 1e-3 costs
# 3 pp there and 1e-2 nothing, so a rule reading test accuracies would pick 1e-2.
GRID = {
    0.0: runs([0.90, 0.80], [0.901, 0.801]),
    1e-4: runs([0.90, 0.80], [0.898, 0.798]),
    1e-3: runs([0.90, 0.80], [0.896, 0.794], dense_test=[0.90, 0.80], test=[0.87, 0.77]),
    1e-2: runs([0.90, 0.80], [0.88, 0.78], dense_test=[0.90, 0.80], test=[0.91, 0.80]),
}


def test_lam_is_the_largest_whose_paired_validation_cost_is_within_half_a_point_boundary_included():
    choice = choose_lam(GRID)
    assert choice.value == 1e-3  # exactly 0.5 pp qualifies; 1e-2 (2 pp on validation) does not, whatever test says
    assert [p.value for p in choice.points] == [0.0, 1e-4, 1e-3, 1e-2]
    assert [p.qualifies for p in choice.points] == [True, True, True, False]
    assert [p.score for p in choice.points] == pytest.approx([-0.001, 0.002, 0.005, 0.02])
    assert choose_lam(GRID, tolerance=0.0049).value == 1e-4  # just below the boundary: the next smaller λ
    assert choose_lam({k: GRID[k] for k in reversed(GRID)}).value == 1e-3  # the grid's order does not matter


def test_the_cost_is_the_mean_of_paired_differences_over_seeds():
    # seed 0 loses 0.2 pp against its own dense model, seed 1 gains 0.1 pp: mean +0.05 pp, within
    grid = {1e-3: runs([0.90, 0.70], [0.898, 0.701]), 1e-2: runs([0.90, 0.70], [0.89, 0.69])}
    choice = choose_lam(grid)
    assert choice.points[0].score == pytest.approx(0.0005) and choice.value == 1e-3


def test_no_lam_within_the_tolerance_chooses_none_and_says_so():
    grid = {1e-3: runs([0.90, 0.90], [0.89, 0.89]), 1e-2: runs([0.90, 0.90], [0.80, 0.80])}
    choice = choose_lam(grid)
    assert choice.value is None
    assert "none chosen" in choice.message and "λ = 0.001, costs 1.00 pp" in choice.message
    only_zero = choose_lam({0.0: runs([0.9], [0.9]), 1e-3: runs([0.9], [0.85])})
    assert only_zero.value == 0.0 and "no λ > 0 qualifies" in only_zero.message


def test_every_grid_value_needs_the_same_seeds():
    with pytest.raises(UserError, match="method.lam: every grid value needs the same seeds"):
        choose_lam({0.0: runs([0.9, 0.9], [0.9, 0.9]), 1e-3: runs([0.9], [0.9])})
    with pytest.raises(UserError, match="the grid is empty"):
        choose_lr_scale({})


def test_the_fine_tuning_lr_is_the_best_mean_validation_accuracy_ties_to_the_smaller():
    dense = [0.9, 0.9]
    grid = {
        0.01: runs(dense, [0.80, 0.82]),  # 81.0 %
        0.1: runs(dense, [0.86, 0.84], test=[0.70, 0.70]),  # 85.0 % on validation, the best; poor on test
        1.0: runs(dense, [0.84, 0.84], test=[0.95, 0.95]),  # 84.0 %; the best on test
    }
    assert choose_lr_scale(grid).value == 0.1
    tied = {**grid, 0.3: runs(dense, [0.85, 0.85])}  # 85.0 % too: the smaller scale wins
    assert choose_lr_scale(tied).value == 0.1
    assert choose_lr_scale({k: tied[k] for k in (1.0, 0.3, 0.1, 0.01)}).value == 0.1


def calibration_file(tmp_path, **parts):
    data = {
        "name": "x",
        "command": "python -m runners.calibrate",
        "date": "d",
        "commit": "c",
        "seeds": [0, 1],
        "setting": {"line": "+experiment=reproduce_mlp", "setting_hash": "h"},
        **parts,
    }
    path = tmp_path / "calibration" / "x.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_the_report_table_shows_every_grid_point_and_marks_the_chosen(tmp_path):
    from analysis.calibration import calibration_section, choice_json

    lam = choice_json(choose_lam(GRID), {(1e-3, 0): {"record": "experiment/abc"}}, line="l", tolerance=0.005)
    assert lam["grid"][2]["runs"][0]["record"] == "experiment/abc"
    calibration_file(tmp_path, **{LAM: lam})
    text = "\n".join(calibration_section(tmp_path / "calibration"))
    assert "## Calibrated hyperparameters" in text and "setting hash `h`" in text
    rows = [line for line in text.splitlines() if line.startswith("| 0") or line.startswith("| 1e")]
    assert len(rows) == 4
    assert rows[2].startswith("| 0.001 | 85.00 % | 84.50 % | +0.50 pp | s0: +0.40 pp, s1: +0.60 pp | +3.00 pp |")
    assert rows[2].endswith("**chosen** |") and rows[3].endswith("| no |")
    assert "Chosen: **0.001**" in text
    assert calibration_section(tmp_path / "nothing") == []
    lr = choice_json(choose_lr_scale({0.1: runs([0.9], [0.85])}), {}, line="m")
    assert "| 0.1 | 85.00 % | s0: 85.00 % | 85.00 % | **chosen** |" in "\n".join(
        calibration_lines({**lam_free(), LR_SCALE: lr})
    )


def test_reproduction_md_carries_the_calibration_section(tmp_path):
    from analysis.calibration import calibration_section, choice_json
    from analysis.reproduction import Context, write_report

    calibration_file(tmp_path, **{LAM: choice_json(choose_lam(GRID), {}, line="l")})
    section = calibration_section(tmp_path / "calibration")
    context = Context(experiment="e", tier="t", seeds=[0], header={"date": "d", "commit": "c"}, calibration=section)
    out, _ = write_report([], [], context, tmp_path / "R.md", tmp_path / "fig")
    assert "\n".join(section) in out.read_text()


def lam_free():
    return {
        "name": "x",
        "command": "c",
        "date": "d",
        "commit": "c",
        "seeds": [0],
        "setting": {"line": "l", "setting_hash": "h"},
    }


def test_a_file_that_is_not_a_calibration_is_one_line(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="bad.json: not a calibration file"):
        read_calibrations(tmp_path)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lams", "0,abc"], "--lams: '0,abc' is not a comma-separated list of numbers"),
        (["--lams", "1e-4,1e-4"], "--lams: '1e-4,1e-4' repeats a value"),
        (["--lams=0,-1e-4"], "--lams: λ must be >= 0"),
        (["--lr-scales", "0,1"], "--lr-scales: every scale must be > 0"),
        (["--seeds", "0,0"], "--seeds: give distinct integers"),
        (["--tolerance", "nan"], "--tolerance: must be a finite number >= 0"),
        (["--experiment", "nosuch"], "--experiment: no conf/experiment/nosuch.yaml"),
        (["--experiment", "survey_mlp", "--tier", "smoke"], "--tier: survey_mlp has no tiers"),
        (["--tier", "huge"], "--tier: no tier 'huge'"),
        (["--out", "x.txt"], "--out: the calibration file is JSON"),
        (["--slimming-sparsity", "1.0"], "--slimming-sparsity: must be in"),
        (["method.lam=0.1"], "overrides: method.lam=0.1 sets a field the grids set"),
        (["model"], "overrides: model is not key=value"),
        (["model=nosuch"], "model=nosuch: no such option"),
    ],
)
def test_bad_input_is_one_user_error_before_any_run(tmp_path, args, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(".", r"\.")):
        main([*args, f"paths.results={tmp_path}"])
    assert not (tmp_path / "runs").exists() and not (tmp_path / "calibration").exists()


def calibrate(tmp_path, *args, timeout=900):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "runners.calibrate", *args, f"paths.results={tmp_path / 'results'}", "threads=1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path):
    done = calibrate(tmp_path, "--lams", "0,x", timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: --lams: '0,x' is not a comma-separated list of numbers (e.g. 0,1e-4,1e-3)"
    ]
    assert not (tmp_path / "results").exists()


def stage_selected(results: Path, digest: str) -> dict:
    """A training stage's validation-selected evaluation, read from its folder (not through runners.store)."""
    return json.loads((results / "runs" / "train" / digest / "result.json").read_text())["selected"]


@pytest.mark.slow
def test_a_real_run_writes_the_grid_from_the_store_and_a_second_run_trains_nothing(tmp_path):
    # A small LR keeps synthetic data off 100 % after one epoch, so the stages' accuracies differ; one such epoch
    # costs the sparsity training far more than 0.5 pp (γ starts at 0.5), hence the wide tolerance.
    args = [
        "--tier", "smoke", "--lams", "0,0.05", "--lr-scales", "0.1,1", "--seeds", "0,1", "--tolerance", "0.3",
        "--out", str(tmp_path / "cal.json"), "--sweep-dir", str(tmp_path / "sweeps"),
        "dataset=synthetic", "dataset.train_limit=null", "train.lr=0.003",
    ]  # fmt: skip
    first = calibrate(tmp_path, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    data = json.loads((tmp_path / "cal.json").read_text())
    assert (tmp_path / "cal.md").read_text().startswith("### Calibration `reproduce_mlp_smoke`")
    assert data["seeds"] == [0, 1] and data["split"] == "validation"
    assert "dataset=synthetic" in data["setting"]["line"] and "reproduce.tier=smoke" in data["setting"]["line"]
    results = tmp_path / "results"
    records = {
        p.parent.name: json.loads(p.read_text()) for p in (results / "runs" / "experiment").glob("*/result.json")
    }
    assert {r["experiment"] for r in records.values()} == {"calibration"}
    dense_settings = set()
    for key, field in ((LAM, "lam"), (LR_SCALE, "recovery")):
        part = data[key]
        assert [p["value"] for p in part["grid"]] == ([0.0, 0.05] if key == LAM else [0.1, 1.0])
        for point in part["grid"]:
            assert [r["seed"] for r in point["runs"]] == [0, 1]
            for run in point["runs"]:
                record = records[run["record"].split("/")[1]]
                configured = record["method_config"][field]
                assert (configured if key == LAM else configured["lr_scale"]) == point["value"]
                assert record["seed"] == run["seed"]
                dense = stage_selected(results, record["dense_stage"])
                assert (run["dense_val_acc"], run["dense_test_acc"]) == (dense["val_acc"], dense["test_acc"])
                if key == LAM:  # the sparsity-trained model, not the fine-tuned one
                    trained = stage_selected(results, record["stage_hashes"]["sparsity"])
                    assert (run["val_acc"], run["test_acc"]) == (trained["val_acc"], trained["test_acc"])
                else:
                    assert (run["val_acc"], run["test_acc"]) == (record["val_acc"], record["test_acc"])
                dense_settings.add(record["dense_stage"])
        # the rule again, by hand, on the file's own numbers
        if key == LAM:
            within = [
                p["value"]
                for p in part["grid"]
                if sum(r["dense_val_acc"] - r["val_acc"] for r in p["runs"]) / 2 <= 0.3 + 1e-12
            ]
            assert part["tolerance"] == 0.3 and within and part["chosen"] == max(within)
            assert f"use: survey.slimming_lam={part['chosen']!r}" in first.stdout
        else:
            means = {p["value"]: sum(r["val_acc"] for r in p["runs"]) / 2 for p in part["grid"]}
            assert part["chosen"] == min(v for v, m in means.items() if m == max(means.values()))
            assert f"use: method.recovery.lr_scale={part['chosen']!r}" in first.stdout
    assert len(dense_settings) == 2  # one dense model per seed, shared by both grids
    # the val and test accuracies the stages store are not all equal: the rule's choice of split can matter here
    assert any(r["val_acc"] != r["test_acc"] for p in data[LAM]["grid"] for r in p["runs"])

    second = calibrate(tmp_path, *args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("every run's record is in the store; nothing launched") == 2
    again = json.loads((tmp_path / "cal.json").read_text())
    assert {k: v for k, v in again.items() if k != "date"} == {k: v for k, v in data.items() if k != "date"}


def test_the_default_tiers_lam_is_its_calibration_files_choice_for_the_same_setting():
    # conf/reproduce/tiers.yaml takes λ from results/calibration/reproduce_mlp_default.json (committed): the value is
    # the file's choice, and the file measured the setting the tier composes today (else: run the calibration again)
    from runners.calibrate import setting_hash

    tiers_file = ROOT / "conf" / "reproduce" / "tiers.yaml"
    calibration = ROOT / "results" / "calibration" / "reproduce_mlp_default.json"
    assert "results/calibration/reproduce_mlp_default.json" in tiers_file.read_text()
    data = json.loads(calibration.read_text())
    assert data[LAM]["chosen"] == yaml.safe_load(tiers_file.read_text())["tiers"]["default"]["slimming_lam"]
    assert data["setting"]["line"] == "+experiment=reproduce_mlp reproduce.tier=default"
    assert data["setting"]["setting_hash"] == setting_hash(["+experiment=reproduce_mlp", "reproduce.tier=default"], 0)
