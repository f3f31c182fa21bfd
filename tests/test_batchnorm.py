"""BatchNorm re-estimation after pruning (``method.recalibrate_bn``) against statistics computed here by hand: each
BN's running mean and variance must be the mean over the batches of the per-batch mean and unbiased variance of its
input, the masked network's layers before it run with batch statistics (BN in train mode) and dropout off."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from datasets import build_dataset
from foundations.errors import UserError
from foundations.store import Store
from methods.pipeline.batchnorm import recalibrate_bn
from methods.pipeline.masks import apply_masks
from methods.pipeline.results import MaskResult
from runners.experiment import run_experiment
from tests.conftest import TINY_MLP_BN, make_run

EPS = 1e-5
# mlp_bn 16 -> 6 -> 5 -> 4 on 120 synthetic images (80 train, 40 val): two batches of 40 use the whole train split
TINY = [
    *TINY_MLP_BN,
    "train.epochs=1",
    "train.batch_size=20",
    "method.sparsity=0.5",
]


def normalized(h: torch.Tensor, bn: nn.BatchNorm1d) -> torch.Tensor:
    """BatchNorm in train mode, written out: the batch's mean and *biased* variance normalize."""
    mean, var = h.mean(0), h.var(0, unbiased=False)
    return (h - mean) / torch.sqrt(var + EPS) * bn.weight + bn.bias


def hand_statistics(layers: list[tuple[torch.Tensor, torch.Tensor, nn.BatchNorm1d]], batches) -> list:
    """[(mean over batches of the batch means, mean over batches of the unbiased batch variances)] per BN, for the
    chain x -> (x W^T + b) -> BN -> ReLU -> ... (W already masked)."""
    sums = [[0.0, 0.0] for _ in layers]
    for x in batches:
        a = torch.flatten(x, 1)
        for k, (w, b, bn) in enumerate(layers):
            h = a @ w.T + b
            sums[k][0] = sums[k][0] + h.mean(0)
            sums[k][1] = sums[k][1] + h.var(0, unbiased=True)
            a = torch.relu(normalized(h, bn))
    return [(m / len(batches), v / len(batches)) for m, v in sums]


class Net(nn.Module):
    """Linear-BN-ReLU-Dropout-Linear-BN-ReLU-Linear: the dropout must stay off during re-estimation."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.fc1, self.bn1 = nn.Linear(7, 6), nn.BatchNorm1d(6)
        self.drop = nn.Dropout(0.5)
        self.fc2, self.bn2 = nn.Linear(6, 5), nn.BatchNorm1d(5)
        self.fc3 = nn.Linear(5, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
            for bn in (self.bn1, self.bn2):  # stale statistics of "the dense network"
                bn.running_mean.fill_(7.0)
                bn.running_var.fill_(3.0)
                bn.num_batches_tracked.fill_(100)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(torch.relu(self.bn1(self.fc1(x))))
        return self.fc3(torch.relu(self.bn2(self.fc2(x))))


def test_re_estimated_statistics_equal_the_hand_computed_ones():
    torch.manual_seed(0)
    net = Net().double()
    g = torch.Generator().manual_seed(1)
    masks = {n: torch.rand(net.get_parameter(n).shape, generator=g) < 0.5 for n in ("fc1.weight", "fc2.weight")}
    apply_masks(net, masks)
    net.eval()
    batches = [torch.randn(16, 7, generator=g, dtype=torch.float64) for _ in range(3)]

    assert recalibrate_bn(net, iter(batches)) == 3

    masked = {n: net.get_parameter(f"{n.split('.')[0]}.weight_orig").detach() * masks[n] for n in masks}
    expected = hand_statistics(
        [
            (masked["fc1.weight"], net.fc1.bias.detach(), net.bn1),
            (masked["fc2.weight"], net.fc2.bias.detach(), net.bn2),
        ],
        batches,
    )
    for bn, (mean, var) in zip((net.bn1, net.bn2), expected):
        torch.testing.assert_close(bn.running_mean, mean, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(bn.running_var, var, rtol=1e-10, atol=1e-10)
        assert int(bn.num_batches_tracked) == 3
        assert bn.momentum == 0.1  # restored
    assert not any(m.training for m in net.modules())  # modes restored


def test_modes_are_restored_in_train_mode_too():
    net = Net().train()
    net.drop.eval()
    recalibrate_bn(net, [torch.randn(4, 7)])
    assert net.training and net.bn1.training and net.fc1.training and not net.drop.training


def run(tmp_path, *overrides):
    config = make_run(tmp_path, *TINY, *overrides)
    store = Store(config.paths.results)
    return run_experiment(config, store), store, config


def test_the_prune_stage_stores_statistics_of_the_masked_network_on_seeded_training_batches(tmp_path):
    record, store, config = run(tmp_path, "method=magnitude", "method.recalibrate_bn=3")
    pruned = store.at(f"prune/{record['stage_hashes']['prune1']}")
    state, masks = pruned.weights(), pruned.masks()
    train = build_dataset(config.dataset).train
    batches = [x for x, _ in train.subset(3 * 20, config.seed_for("prune")).batches(20)]
    layers = []
    for i in (1, 2):
        bn = nn.BatchNorm1d(state[f"bn{i}.weight"].numel())
        bn.load_state_dict({k[len(f"bn{i}.") :]: v for k, v in state.items() if k.startswith(f"bn{i}.")})
        w = state[f"fc{i}.weight"] * masks[f"fc{i}.weight"]
        layers.append((w, torch.zeros(w.shape[0]), bn))  # mlp_bn's hidden Linears have no bias
    for i, (mean, var) in enumerate(hand_statistics(layers, batches), start=1):
        torch.testing.assert_close(state[f"bn{i}.running_mean"], mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(state[f"bn{i}.running_var"], var, rtol=1e-5, atol=1e-6)
        assert int(state[f"bn{i}.num_batches_tracked"]) == 3

    # off: the dense network's statistics are kept, so the prune stage's differ from the re-estimated ones
    plain, store, _ = run(tmp_path, "method=magnitude")
    dense = store.at(f"train/{plain['stage_hashes']['dense']}").weights()
    stale = store.at(f"prune/{plain['stage_hashes']['prune1']}").weights()
    torch.testing.assert_close(stale["bn1.running_var"], dense["bn1.running_var"])
    assert not torch.allclose(stale["bn1.running_var"], state["bn1.running_var"])


def test_the_accuracy_right_after_pruning_is_that_of_the_re_estimated_network(tmp_path):
    record, store, config = run(tmp_path, "method=magnitude", "method.recalibrate_bn=2")
    pruned = store.at(f"prune/{record['stage_hashes']['prune1']}")
    off, _, _ = run(tmp_path, "method=magnitude")
    assert record["test_loss_before_recovery"] == MaskResult.from_json(pruned.result_json).after_pruning.test_loss
    assert record["test_loss_before_recovery"] != off["test_loss_before_recovery"]
    assert record["test_loss_before_pruning"] == off["test_loss_before_pruning"]  # the same dense network


def test_obd_measures_the_loss_increase_of_the_re_estimated_network(tmp_path):
    """OBD's measured increase (the paper's Fig. 1b, on its saliency samples) is that of the network the prune
    stage stores: recomputed here from the stored dense and pruned weights."""
    record, store, config = run(tmp_path, "method=obd", "method.samples=32", "method.recalibrate_bn=2")
    samples = build_dataset(config.dataset).train.subset(32, config.seed_for("prune"))
    x, y = next(iter(samples.batches(32)))

    def loss(state: dict) -> float:
        a = torch.flatten(x, 1)
        for i in (1, 2):
            bn = {k: state[f"bn{i}.{k}"] for k in ("running_mean", "running_var", "weight", "bias")}
            a = a @ state[f"fc{i}.weight"].T
            a = F.batch_norm(a, bn["running_mean"], bn["running_var"], bn["weight"], bn["bias"], False, 0.0, EPS)
            a = torch.relu(a)
        return float(F.cross_entropy(a @ state["fc3.weight"].T + state["fc3.bias"], y))

    dense = store.at(f"train/{record['stage_hashes']['dense']}").weights("last")
    pruned = store.at(f"prune/{record['stage_hashes']['prune1']}").weights()
    measured = record["outputs"]["rounds"][-1]["measured_loss_increase"]
    assert measured == pytest.approx(loss(pruned) - loss(dense), rel=1e-4, abs=1e-6)
    off, _, _ = run(tmp_path, "method=obd", "method.samples=32")
    assert (
        off["outputs"]["rounds"][-1]["predicted_loss_increase"]
        == record["outputs"]["rounds"][-1]["predicted_loss_increase"]
    )


def test_the_number_of_batches_is_in_the_prune_stage_hash_and_zero_is_the_default(tmp_path):
    off, _, _ = run(tmp_path, "method=magnitude")
    zero, _, _ = run(tmp_path, "method=magnitude", "method.recalibrate_bn=0")
    two, _, _ = run(tmp_path, "method=magnitude", "method.recalibrate_bn=2")
    three, _, _ = run(tmp_path, "method=magnitude", "method.recalibrate_bn=3")
    assert zero["stage_hashes"] == off["stage_hashes"]
    for on in (two, three):
        assert on["stage_hashes"]["dense"] == off["stage_hashes"]["dense"]
        assert on["stage_hashes"]["prune1"] != off["stage_hashes"]["prune1"]
    assert two["stage_hashes"]["prune1"] != three["stage_hashes"]["prune1"]
    assert "BN re-estimated on 2 batches" in two["label"] and two["label"] != off["label"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=lenet300", "method.recalibrate_bn=2"], "has no BatchNorm layer"),
        (["method.recalibrate_bn=5"], "need 100 training examples, the training split has 80"),
        (["method.recalibrate_bn=-1"], "must be a number of training batches >= 0"),
    ],
)
def test_impossible_requests_are_refused_in_one_line_before_any_stage(tmp_path, overrides, message):
    with pytest.raises(UserError, match=f"method.recalibrate_bn: .*{message}"):
        run(tmp_path, "method=magnitude", *overrides)
    assert not (tmp_path / "results" / "runs" / "train").exists()
