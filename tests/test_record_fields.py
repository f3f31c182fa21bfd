"""The record fields the reproduction's claims judge (conf/claims/): the test loss right after pruning and the dense
model's, the method's whole config, slimming's |γ| after sparsity training — each against an answer computed here
from the stage files."""

import pytest
import torch
import torch.nn.functional as F
from conftest import SYNTH, make_run

from datasets import build_dataset
from foundations.errors import UserError
from foundations.store import Store
from methods.pipeline.channels import ChannelPlan
from models import build_model
from runners.experiment import record_failure, run_experiment

MAGNITUDE = [*SYNTH, "method=magnitude", "method.sparsity=0.8", "method.recovery.epochs=1"]


def mean_test_loss(model, split) -> float:
    """Mean cross-entropy over the split, summed per example here rather than through foundations.training."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in split.batches(97):
            total += F.cross_entropy(model(x), y, reduction="sum").item()
            count += len(y)
    return total / count


def lenet(run, data, state):
    model = build_model(run.model, data.input_shape, data.num_classes, generator=torch.Generator().manual_seed(0))
    model.load_state_dict(state)
    return model


@pytest.mark.parametrize("prune_from,weights", [("last", "last"), ("selected", "selected")])
def test_loss_right_after_pruning_and_before_it(tmp_path, prune_from, weights):
    run = make_run(tmp_path, *MAGNITUDE, f"method.prune_from={prune_from}", "train.epochs=3")
    store = Store(run.paths.results)
    record = run_experiment(run, store)
    data = build_dataset(run.dataset)
    stage = store.at(f"train/{record['stage_hashes']['dense']}")
    assert (
        stage.result_json["selected"]["iteration"] != stage.result_json["final"]["iteration"]
    )  # so the two cases differ
    pruned_from = stage.weights(weights)
    masks = store.at(f"prune/{record['stage_hashes']['prune1']}").masks()
    pruned = {k: v * masks[k] if k in masks else v for k, v in pruned_from.items()}
    assert abs(record["test_loss_before_pruning"] - mean_test_loss(lenet(run, data, pruned_from), data.test)) < 1e-5
    assert abs(record["test_loss_before_recovery"] - mean_test_loss(lenet(run, data, pruned), data.test)) < 1e-5
    assert (
        abs(record["dense_test_loss"] - mean_test_loss(lenet(run, data, stage.weights("selected")), data.test)) < 1e-5
    )
    assert record["test_loss_before_recovery"] > record["test_loss_before_pruning"]  # 80 % of the weights gone


def test_pruning_at_initialization_has_no_loss_before_pruning(tmp_path):
    run = make_run(tmp_path, *SYNTH, "method=random", "method.sparsity=0.5")
    record = run_experiment(run, Store(run.paths.results))
    assert record["test_loss_before_pruning"] is None and record["test_loss_before_recovery"] is not None


def test_method_config_holds_every_field_defaults_too(tmp_path):
    run = make_run(tmp_path, *MAGNITUDE, "method.scope=layerwise")
    record = run_experiment(run, Store(run.paths.results))
    config = record["method_config"]
    assert config["name"] == "magnitude" and config["scope"] == "layerwise" and config["sparsity"] == 0.8
    assert config["rounds"] == 1 and config["recovery"]["epochs"] == 1 and config["recovery"]["lr_scale"] == 0.1
    failed = record_failure(run, Store(tmp_path / "other"), UserError("boom"))
    # a failed arm is still found by a claim's filters (label or method_config), so it shows as failed, not missing
    assert failed["status"] == "failed" and failed["method_config"] == config
    assert failed["label"] == record["label"] == "magnitude (layerwise)"


def test_slimming_records_the_gammas_its_threshold_saw(tmp_path):
    run = make_run(
        tmp_path,
        "dataset=synthetic",
        "model=mlp_bn",
        "model.widths=[12,8]",
        "train.epochs=2",
        "train.batch_size=64",
        "method=slimming",
        "method.lam=0.01",
        "method.scope=layerwise",
        "method.sparsity=0.5",
        "method.recovery.epochs=1",
    )
    store = Store(run.paths.results)
    record = run_experiment(run, store)
    sparse = store.at(f"train/{record['stage_hashes']['sparsity']}").weights()
    gammas = record["outputs"]["sparsity_trained_gamma_abs"]
    assert sorted(gammas) == ["bn1", "bn2"]
    for bn in ("bn1", "bn2"):
        assert torch.allclose(torch.tensor(gammas[bn]), sparse[f"{bn}.weight"].abs())
    # the layerwise plan keeps exactly each layer's larger half of the recorded |γ|
    plan = ChannelPlan.from_json(store.at(record["final_stage"]).plan_json()).keep
    for layer, bn in (("fc1", "bn1"), ("fc2", "bn2")):
        g = torch.tensor(gammas[bn])
        assert sorted(plan[layer]) == sorted(torch.argsort(g, descending=True)[: len(g) // 2].tolist())
