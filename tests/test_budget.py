"""Training budget (foundations.training.budget, the record's ``training_budget``) against hand counts, and the LR
trace of each recovery protocol (methods.pipeline.recover) against the schedule computed here independently.

The tiny setup: 120 synthetic examples of which 40 are validation, so 80 train; batch 30 -> batches of 30, 30, 20
(3 steps and 80 examples per epoch). mlp_bn 16 -> 6 -> 5 -> 4: a forward pass of one example is one multiply-add per
kept weight of the three Linear layers (16·6 + 6·5 + 5·4 = 146 dense); BatchNorm is not counted.
"""

from __future__ import annotations

import functools
import math

import pandas as pd
import pytest
from hydra import initialize_config_dir

from analysis.reproduction import _budget_cell
from analysis.tables import EPOCHS_COLUMN, LR_INTEGRAL_COLUMN, budget_text
from foundations.errors import UserError
from foundations.store import Store
from foundations.training import TrainConfig
from foundations.training.budget import examples_seen, lr_trace, result_budget, stage_budget
from runners.callbacks import budget_rule_line
from runners.config import register_schemas, validate
from runners.experiment import run_experiment
from tests.conftest import TINY_MLP_BN, make_run
from tests.hash_audit import jobs
from tests.test_sweeps import CONF, compose

TINY = [
    *TINY_MLP_BN,
    "train.epochs=2",
    "train.batch_size=30",
    "train.lr=0.05",
    "train.schedule=cosine",
    "latency.sparse_kernel=none",  # the record's timing is beside the point here
    "latency.run_time=0.01",
]
N, STEPS_PER_EPOCH, DENSE_STEPS = 80, 3, 6
SIZES = {"fc1.weight": 96, "fc2.weight": 30, "fc3.weight": 20}  # 16·6, 6·5, 5·4
DENSE_MACS = 146


def cosine(lr: float, t: int, total: int) -> float:
    return lr * 0.5 * (1 + math.cos(math.pi * t / total))


def run(tmp_path, *overrides: str) -> dict:
    config = make_run(tmp_path, *TINY, *overrides)
    return run_experiment(config, Store(config.paths.results))


def kept_weights(record: dict) -> float:
    return sum(record["per_layer_density"][n] * size for n, size in SIZES.items())


def test_examples_count_each_epochs_short_last_batch():
    # 80 examples in batches of 30: steps 0..8 see 30, 30, 20 | 30, 30, 20 | 30, 30, 20
    assert examples_seen(80, 30, 0, 3) == 80
    assert examples_seen(80, 30, 2, 4) == 20 + 30
    assert examples_seen(80, 30, 1, 8) == 30 + 20 + 80 + 30 + 30


def test_magnitude_fine_tune_budget_is_the_hand_count(tmp_path):
    record = run(tmp_path, "method=magnitude", "method.sparsity=0.5", "method.recovery.epochs=1")
    spent = record["training_budget"]
    dense, recover = spent["stages"]
    assert (dense["stage"], recover["stage"]) == ("dense", "recover1")
    assert dense["steps"] == DENSE_STEPS and dense["epochs"] == 2 and dense["examples"] == 2 * N
    assert dense["lr_integral"] == pytest.approx(sum(cosine(0.05, t, 6) for t in range(6)))
    assert dense["forward_macs"] == DENSE_MACS and dense["train_macs"] == 3 * DENSE_MACS * 2 * N
    # fine-tune: one epoch at 0.05 × 0.1 on a cosine of its own 3 steps, on the pruned network
    assert recover["steps"] == 3 and recover["examples"] == N
    assert recover["lr_integral"] == pytest.approx(sum(cosine(0.005, t, 3) for t in range(3)))
    kept = kept_weights(record)
    assert kept == pytest.approx(DENSE_MACS / 2, abs=1)  # global 50 % of the 146 weights
    assert recover["forward_macs"] == round(kept)
    assert recover["train_macs"] == 3 * round(kept) * N
    total = spent["total"]
    assert total["steps"] == 9 and total["epochs"] == 3 and total["examples"] == 3 * N
    assert total["lr_integral"] == pytest.approx(dense["lr_integral"] + recover["lr_integral"])
    assert total["train_macs"] == dense["train_macs"] + recover["train_macs"]


def test_a_reused_stage_counts_as_one_computed_here(tmp_path):
    first = run(tmp_path, "method=magnitude", "method.sparsity=0.5", "method.recovery.epochs=1")
    second = run(tmp_path, "method=magnitude", "method.sparsity=0.75", "method.recovery.epochs=1")
    assert second["stages_reused"]["dense"] and not first["stages_reused"]["dense"]
    one, other = first["training_budget"]["stages"][0], second["training_budget"]["stages"][0]
    assert other["reused"] and {**one, "reused": True} == other


def test_lottery_counts_every_level_and_scratch_only_its_own_training(tmp_path):
    # rate 0.5 to 75 %: two levels, each retraining the 2-epoch schedule from the init, after the dense run
    lottery = run(tmp_path, "method=lottery", "method.sparsity=0.75", "method.rate=0.5")
    assert [s["stage"] for s in lottery["training_budget"]["stages"]] == ["level0", "level1", "level2"]
    assert lottery["training_budget"]["total"]["epochs"] == 6
    scratch = run(tmp_path, "method=scratch", "method.source=magnitude", "method.sparsity=0.5")
    # Scratch-E: only its own 2 epochs (its source and its dense reference are other records' budgets)
    assert [s["stage"] for s in scratch["training_budget"]["stages"]] == ["scratch"]
    assert scratch["training_budget"]["total"]["epochs"] == 2


def test_at_init_training_counts_the_pruned_network(tmp_path):
    record = run(tmp_path, "method=random", "method.sparsity=0.5")
    (train,) = record["training_budget"]["stages"]
    assert train["forward_macs"] == round(kept_weights(record)) and train["steps"] == DENSE_STEPS


def stage_lrs(tmp_path, record: dict, name: str) -> list[float]:
    """The LR of each step of a stage, as the loop logged it with an evaluation after every step."""
    stage = Store(f"{tmp_path}/results").at(f"train/{record['stage_hashes'][name]}")
    return [row["lr"] for row in stage.metrics()]


@pytest.mark.parametrize("protocol", ["fine_tune", "lr_rewind", "weight_rewind"])
def test_each_recovery_protocol_trains_with_its_papers_lr_trace(tmp_path, protocol):
    record = run(
        tmp_path,
        "method=magnitude",
        "method.sparsity=0.5",
        "method.recovery.epochs=1",
        f"method.recovery.protocol={protocol}",
        "train.eval_every=1",
    )
    logged = stage_lrs(tmp_path, record, "recover1")
    if protocol == "fine_tune":  # Han: 0.1 × the dense LR, the cosine over the fine-tune's own 3 steps
        expected = [cosine(0.005, t, 3) for t in range(3)]
    else:  # Renda et al.: the dense schedule's last t = 1 epoch, steps 3..5 of its 6
        expected = [cosine(0.05, t, 6) for t in range(3, 6)]
    assert logged == pytest.approx(expected)
    recover = record["training_budget"]["stages"][-1]
    assert recover["lr_integral"] == pytest.approx(sum(expected))
    assert recover["start_iteration"] == (0 if protocol == "fine_tune" else 3) and recover["steps"] == 3


def test_weight_rewinding_restarts_from_the_dense_runs_weights_at_T_minus_t(tmp_path):
    record = run(
        tmp_path,
        "method=magnitude",
        "method.sparsity=0.5",
        "method.recovery.epochs=1",
        "method.recovery.protocol=weight_rewind",
    )
    store = Store(f"{tmp_path}/results")
    recover = store.at(f"train/{record['stage_hashes']['recover1']}")
    dense = store.at(f"train/{record['stage_hashes']['dense']}")
    assert recover.config()["parents"]["start"] == dense.hash and recover.config()["spec"]["file"] != "selected"
    assert set(dense.config()["spec"]["snapshots"]) == {3}
    # LR rewinding starts from the pruned trained weights instead
    lrr = run(
        tmp_path,
        "method=magnitude",
        "method.sparsity=0.5",
        "method.recovery.epochs=1",
        "method.recovery.protocol=lr_rewind",
    )
    lrr_recover = store.at(f"train/{lrr['stage_hashes']['recover1']}")
    assert lrr_recover.config()["parents"]["start"] == lrr["stage_hashes"]["prune1"]


def test_rewinding_longer_than_the_dense_schedule_is_refused(tmp_path):
    with pytest.raises(UserError, match="method.recovery.epochs"):
        run(tmp_path, "method=magnitude", "method.recovery.epochs=3", "method.recovery.protocol=lr_rewind")


def test_channel_methods_and_gmp_refuse_a_rewinding_protocol(tmp_path):
    with pytest.raises(UserError, match="method.recovery.protocol"):
        make_run(tmp_path, *TINY, "method=l1_filter", "method.recovery.protocol=lr_rewind")
    with pytest.raises(UserError, match="method.training.protocol"):
        make_run(tmp_path, *TINY, "method=gmp", "method.training.protocol=weight_rewind")


def test_budget_of_a_result_is_only_the_stages_behind_it():
    cfg = TrainConfig(lr=0.1, epochs=1, batch_size=10)
    spent = [{**stage_budget(cfg, n_examples=20, start=0, end=2, forward_macs=5, stage=s), "hash": s} for s in "abc"]
    # c descends from b descends from a; a stage only looked at (not a parent) is left out; a stage asked twice once
    parents = {"c": ["b"], "b": ["a"], "x": ["a"]}
    out = result_budget("c", parents, [*spent, spent[0]])
    assert [s["stage"] for s in out["stages"]] == ["a", "b", "c"]
    assert out["total"]["steps"] == 6 and out["total"]["lr_integral"] == pytest.approx(0.6)
    assert result_budget("b", parents, spent)["total"]["examples"] == 40
    assert lr_trace(cfg, 2, 0, 2) == [0.1, 0.1]


# ---- the survey's budget rule (survey.budget, runners.config BUDGET_RULES), counted from the composed configs
SURVEY_ARMS = ["magnitude", "obd", "snip", "grasp", "synflow", "random", "gmp", "slimming"]
SCRATCH_ARMS = ["scratch_e_slimming", "scratch_e_thinet"]


@functools.cache
def survey_jobs(overrides: tuple[str, ...]) -> list[list[str]]:
    register_schemas()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return jobs(["+experiment=survey_mlp", *overrides])


def survey_arm(tmp_path, arm: str, *overrides: str):
    """The arm's job at level 0 (or the ``level=`` given) as ``make survey`` launches it: the overrides in the order
    Hydra's sweeper gives them (its params, the arm among them, before the command line's ``+experiment=``), since
    the arm cannot override what the sweep file sets after it."""
    every = survey_jobs(tuple(o for o in overrides if not o.startswith("level=")))
    level = next((o for o in overrides if o.startswith("level=")), "level=0")
    (job,) = [j for j in every if f"+experiment/arm={arm}" in j and level in j]
    return validate(compose(tmp_path, *job))


def epochs_from_init(run) -> int:
    """The epochs an arm's final weights trained from initialization, read off its config as each method runs it."""
    method = run.method
    if method.name == "gmp":
        return method.training.epochs
    if method.name == "scratch":
        return method.epochs if method.epochs is not None else run.train.epochs
    if getattr(method, "when", "after_training") == "init":
        return run.train.epochs
    return run.train.epochs + method.recovery.epochs  # dense training, then the recovery


@pytest.mark.parametrize("level", ["level=0", "level=4"])
def test_matched_rule_gives_every_arm_the_same_epochs_from_init(tmp_path, level):
    runs = {arm: survey_arm(tmp_path, arm, level) for arm in SURVEY_ARMS + SCRATCH_ARMS}
    epochs = {arm: epochs_from_init(run) for arm, run in runs.items()}
    assert set(epochs.values()) == {6 + 3}, epochs  # survey_mlp: dense_epochs + recovery_epochs
    for arm in ("magnitude", "obd"):  # after training: LR rewinding over the last 3 of the 6 dense epochs
        assert runs[arm].method.recovery.protocol == "lr_rewind" and runs[arm].train.epochs == 6
    scratch_b = survey_arm(tmp_path, "scratch_b_slimming", level)
    assert scratch_b.method.epochs == 9 and scratch_b.method.budget == "B"  # Scratch-B scales the matched 9 by FLOPs


def test_paper_rule_keeps_each_papers_schedule(tmp_path):
    runs = {arm: survey_arm(tmp_path, arm, "survey.budget=paper") for arm in SURVEY_ARMS + SCRATCH_ARMS}
    epochs = {arm: epochs_from_init(run) for arm, run in runs.items()}
    assert epochs["snip"] == epochs["random"] == epochs["scratch_e_slimming"] == 6
    assert epochs["magnitude"] == epochs["gmp"] == 9
    assert (
        runs["magnitude"].method.recovery.protocol == "fine_tune" and runs["scratch_e_slimming"].method.epochs is None
    )


def test_an_unknown_budget_rule_is_one_line(tmp_path):
    with pytest.raises(UserError, match="survey.budget: must be one of matched, paper"):
        survey_arm(tmp_path, "snip", "survey.budget=fair")


def test_tables_and_reproduction_show_epochs_and_integrated_lr():
    cell = pd.DataFrame({EPOCHS_COLUMN: [9.0, 9.0], LR_INTEGRAL_COLUMN: [0.2, 0.25]})
    assert budget_text(cell) == "9 · 0.2–0.25"
    assert budget_text(pd.DataFrame({"acc": [0.9]})) == "—"  # a record from before the budget
    assert _budget_cell([(14.0, 8.57), (6.0, 3.7)]) == "6–14 · 3.7–8.57" and _budget_cell([]) == "—"
    assert budget_rule_line("matched").startswith("budget rule: matched") and budget_rule_line(None) is None
