"""OBD end to end: every round records the predicted loss increase Σ s_k of the deleted weights next to the
measured one (the paper's Fig. 1b). The diagonal itself is tested against autograd in test_scores_hessian.py."""

from conftest import SYNTH, make_run

from foundations.store import Store
from runners.experiment import run_experiment

OBD = [*SYNTH, "method=obd", "method.samples=256", "method.recovery.epochs=1"]


def test_each_round_records_predicted_and_measured_loss_increase(tmp_path):
    store = Store(tmp_path / "results")
    record = run_experiment(make_run(tmp_path, *OBD, "method.sparsity=0.9", "method.rounds=2"), store)
    assert [r["round"] for r in record["outputs"]["rounds"]] == [1, 2]
    assert all(r["predicted_loss_increase"] > 0 and "measured_loss_increase" in r for r in record["outputs"]["rounds"])
    assert record["outputs"]["rounds"][-1]["test_acc_after_pruning"] == record["test_acc_before_recovery"]


def test_deleting_more_weights_predicts_a_larger_increase(tmp_path):
    # one-shot global selection on the same saliencies: the 0.9 deletion set contains the 0.3 one and s_k >= 0
    store = Store(tmp_path / "results")
    low, high = (
        run_experiment(make_run(tmp_path, *OBD, f"method.sparsity={s}"), store)["outputs"]["rounds"][0]
        for s in (0.3, 0.9)
    )
    assert 0 < low["predicted_loss_increase"] < high["predicted_loss_increase"]
    assert low["measured_loss_increase"] < high["measured_loss_increase"]
