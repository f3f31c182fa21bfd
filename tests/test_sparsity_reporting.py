"""Records say what sparsity was achieved beside the one asked for; tables use the target where a method hits it
exactly and the achieved value, rounded and marked, where the method sets its own."""

from __future__ import annotations

import pytest

from analysis.tables import build_tables, prepare, to_markdown
from foundations.store import Store
from runners.experiment import run_experiment
from tests.conftest import make_run

TINY = [
    "dataset=synthetic",
    "dataset.input_shape=[1,4,4]",
    "dataset.num_train=200",
    "dataset.val_size=50",
    "dataset.num_test=50",
    "model=mlp_bn",
    "model.widths=[8,6]",
    "train.epochs=1",
    "train.batch_size=50",
]


def run(tmp_path, *overrides):
    config = make_run(tmp_path, *TINY, *overrides)
    return run_experiment(config, Store(config.paths.results))


def test_exact_methods_record_their_target_and_own_sparsity_methods_are_flagged(tmp_path):
    exact = run(tmp_path, "method=magnitude", "method.sparsity=0.75", "method.recovery.epochs=1")
    assert exact["achieved_sparsity"] == pytest.approx(exact["target_sparsity"], abs=1 / 200)
    assert exact["sparsity_set_by_method"] is False
    own = run(
        tmp_path, "method=magnitude", "method.scope=layerwise_std", "method.quality=1.0", "method.recovery.epochs=1"
    )
    assert own["sparsity_set_by_method"] is True and own["achieved_sparsity"] == pytest.approx(1 - own["density"])
    passes = run(tmp_path, "method=slimming", "method.sparsity=0.25", "method.passes=2")
    assert passes["sparsity_set_by_method"] is True
    assert passes["achieved_sparsity"] == passes["channel_sparsity"] and passes["target_sparsity"] == 0.25
    assert passes["achieved_sparsity"] > 0.25  # two passes of 25 % of what remains


def _record(label, target, achieved, own, acc, seed=0):
    return {
        "status": "ok",
        "experiment": "x",
        "method": label.split(" ")[0],
        "label": label,
        "kind": "unstructured",
        "model": "m",
        "dataset": "d",
        "seed": seed,
        "target_sparsity": target,
        "achieved_sparsity": achieved,
        "sparsity_set_by_method": own,
        "density": 1 - achieved,
        "compression": 1 / (1 - achieved),
        "test_acc": acc,
        "dense_test_acc": 0.99,
    }


def test_tables_mark_the_achieved_sparsity_of_methods_that_set_their_own():
    import pandas as pd

    records = [
        _record("magnitude", 0.9, 0.9, False, 0.95),
        _record("magnitude", 0.9, 0.9, False, 0.97, seed=1),
        _record("magnitude (layerwise_std)", 0.9, 0.8734, True, 0.96),
        _record("magnitude (layerwise_std)", 0.9, 0.8712, True, 0.94, seed=1),
    ]
    df = prepare(pd.DataFrame(records))
    assert df["sparsity"].tolist() == [0.9, 0.9, 0.87, 0.87]
    unstructured = next(t for t in build_tables(pd.DataFrame(records)) if t.name.endswith("unstructured"))
    assert unstructured.header == ["Method", "87%*", "90%"]  # the achieved value never shares the target's column
    rows = {row[0].main: [cell.plain() for cell in row[1:]] for row in unstructured.rows}
    assert rows == {"magnitude": ["—", "96.00 ± 1.41"], "magnitude (layerwise_std)": ["95.00 ± 1.41", "—"]}
    assert "*: achieved sparsity" in unstructured.caption and "87%*" in to_markdown(unstructured)
    compression = next(t for t in build_tables(pd.DataFrame(records)) if t.name.endswith("compression"))
    assert sorted(row[2].main for row in compression.rows if row[0].main != "dense") == ["87%*", "90%"]
