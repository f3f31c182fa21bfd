"""Starting from trained weights (``model.checkpoint``): the dense stage is the checkpoint, evaluated
(``train.epochs=0``) or trained further; its file's sha256 names the experiment; schedules that would be empty are
refused before anything is written."""

import shutil

import pytest
import torch

from foundations.errors import UserError
from foundations.hashing import file_sha256
from foundations.store import Store
from methods.pipeline.channels import ChannelPlan
from models import build_model
from runners.experiment import Experiment, run_experiment
from tests.conftest import make_run

DATA = [
    "dataset=synthetic",
    "dataset.num_train=300",
    "dataset.num_test=100",
    "dataset.val_size=50",
    "train.batch_size=64",
]
MLP = [*DATA, "model=mlp_bn", "model.widths=[12,8]"]


def trained_checkpoint(path, *, seed=3, scale=1.0):
    """A state dict of the run's architecture that is not its init: other seed, distinct BN scales and statistics."""
    model = build_model(make_run(path.parent, *MLP).model, (1, 8, 8), 4, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for i, m in enumerate(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)):
            n = m.num_features
            m.weight.copy_(scale * torch.linspace(0.05, 1.0, n).roll(3 * i))
            m.running_mean.normal_(0, 0.1, generator=torch.Generator().manual_seed(i))
    torch.save(model.state_dict(), path)
    return model.eval()


def scored(model, split) -> tuple[float, float]:
    """(cross-entropy, accuracy), independent of the loop's evaluate: the whole split at once, in float64."""
    x = torch.cat([x for x, _ in split.batches(10_000)])
    y = torch.cat([y for _, y in split.batches(10_000)])
    with torch.no_grad():
        logits = model.eval()(x).double()
    return torch.nn.functional.cross_entropy(logits, y).item(), int((logits.argmax(1) == y).sum()) / len(y)


def test_epochs_zero_makes_the_dense_stage_the_checkpoint_evaluated(tmp_path):
    source = trained_checkpoint(tmp_path / "w.pt")
    run = make_run(tmp_path, *MLP, f"model.checkpoint={tmp_path / 'w.pt'}", "train.epochs=0")
    store = Store(run.paths.results)
    record = run_experiment(run, store)
    exp = Experiment(run, store)
    dense = store.at(f"train/{record['dense_stage']}")
    assert all(torch.equal(dense.weights()[k], v) for k, v in source.state_dict().items())
    test_loss, test_acc = scored(source, exp.data.test)
    assert record["dense_test_acc"] == test_acc and dense.result_json["selected"]["test_loss"] == pytest.approx(
        test_loss
    )
    assert (dense.result_json["selected"]["val_loss"], record["val_acc"]) == pytest.approx(scored(source, exp.data.val))
    assert dense.result_json["iterations"] == 0 and len(dense.metrics()) == 1
    init = store.at(f"init/{dense.result_json['parents']['start']}")
    assert init.config()["spec"]["checkpoint"] == f"sha256:{file_sha256(tmp_path / 'w.pt')}"
    assert "checkpoint" not in init.config()["spec"]["model"]  # hashed where it is loaded, not everywhere


def test_the_checkpoint_is_named_by_its_content(tmp_path):
    trained_checkpoint(tmp_path / "w.pt")
    (tmp_path / "moved").mkdir()
    shutil.copy(tmp_path / "w.pt", tmp_path / "moved" / "w.pt")
    args = [*MLP, "train.epochs=0"]
    first = run_experiment(
        make_run(tmp_path, *args, f"model.checkpoint={tmp_path / 'w.pt'}"), Store(tmp_path / "results")
    )
    again = Store(tmp_path / "results")
    moved = run_experiment(make_run(tmp_path, *args, f"model.checkpoint={tmp_path / 'moved' / 'w.pt'}"), again)
    assert again.computed == [] and moved == first  # a moved checkpoint is the same experiment
    trained_checkpoint(tmp_path / "moved" / "w.pt", seed=4)
    changed = Store(tmp_path / "results")
    other = run_experiment(make_run(tmp_path, *args, f"model.checkpoint={tmp_path / 'moved' / 'w.pt'}"), changed)
    assert other["dense_stage"] != first["dense_stage"] and changed.computed
    plain = run_experiment(make_run(tmp_path, *MLP, "train.epochs=1"), Store(tmp_path / "results"))
    assert plain["dense_stage"] != first["dense_stage"]


def test_more_epochs_train_on_from_the_checkpoint(tmp_path):
    source = trained_checkpoint(tmp_path / "w.pt")
    run = make_run(tmp_path, *MLP, f"model.checkpoint={tmp_path / 'w.pt'}", "train.epochs=1")
    store = Store(run.paths.results)
    record = run_experiment(run, store)
    dense = store.at(f"train/{record['dense_stage']}")
    init = store.at(f"init/{dense.result_json['parents']['start']}")
    assert all(torch.equal(init.weights()[k], v) for k, v in source.state_dict().items())
    assert dense.result_json["iterations"] == 4  # one epoch of 250 examples at batch 64
    assert not torch.equal(dense.weights()["fc1.weight"], source.fc1.weight)


def test_empty_schedules_are_refused_before_anything_is_written(tmp_path):
    trained_checkpoint(tmp_path / "w.pt")
    ckpt = f"model.checkpoint={tmp_path / 'w.pt'}"
    with pytest.raises(
        UserError, match=r"^train\.epochs: 0 trains nothing; it only makes sense from model\.checkpoint"
    ):
        make_run(tmp_path, *MLP, "train.epochs=0")
    cases = [
        (
            ["method=l1_filter", "method.recovery.epochs=null"],
            r"^method\.recovery\.epochs: the fine-tune takes its length from train\.epochs",
        ),
        (["method=slimming"], r"^method\.recovery\.epochs: the fine-tune takes"),  # paper preset = dense schedule
        (["method=lottery"], r"^train\.epochs: method=lottery trains for the dense schedule"),
        (["method=snip"], r"^train\.epochs: method=snip trains for the dense schedule"),
        (["method=scratch", "method.source=l1_filter"], r"^train\.epochs: method=scratch"),
        (["method=gmp"], r"^method\.training\.epochs: GMP trains for train\.epochs unless told otherwise"),
        (["method=gmp", "method.train_from=dense"], r"^method\.training\.epochs: GMP trains for train\.epochs"),
    ]
    for extra, message in cases:
        run = make_run(tmp_path, *MLP, ckpt, "train.epochs=0", *extra)
        with pytest.raises(UserError, match=message):
            run_experiment(run, Store(run.paths.results))
    assert not (tmp_path / "results" / "runs").exists()


def test_pruning_a_checkpoint_reads_its_own_weights(tmp_path):
    """magnitude's pruned-but-not-recovered accuracy and slimming's plan come from the checkpoint, computed here
    independently (|w| threshold; the global |γ| ranking of the checkpoint's own scales, not slimming's 0.5)."""
    source = trained_checkpoint(tmp_path / "w.pt")
    ckpt = [f"model.checkpoint={tmp_path / 'w.pt'}", "train.epochs=0", "method.recovery.epochs=1"]
    run = make_run(tmp_path, *MLP, *ckpt, "method=magnitude", "method.sparsity=0.7")
    store = Store(run.paths.results)
    record = run_experiment(run, store)
    exp = Experiment(run, store)
    pruned = build_model(run.model, (1, 8, 8), 4)
    pruned.load_state_dict(source.state_dict())
    weights = {n: p for n, p in pruned.named_parameters() if n.endswith(".weight") and n.startswith("fc")}
    threshold = (
        torch.cat([w.detach().abs().flatten() for w in weights.values()])
        .kthvalue(round(0.7 * sum(w.numel() for w in weights.values())))
        .values
    )
    masks = store.at(f"prune/{record['stage_hashes']['prune1']}").masks()
    assert masks.keys() == weights.keys()
    assert all(torch.equal(masks[n], w.detach().abs() > threshold) for n, w in weights.items())
    with torch.no_grad():
        for w in weights.values():
            w.mul_(w.abs() > threshold)
    assert record["test_acc_before_recovery"] == scored(pruned, exp.data.test)[1]

    run = make_run(tmp_path, *MLP, *ckpt, "method=slimming", "method.sparsity=0.4")
    record = run_experiment(run, store)
    plan = ChannelPlan.from_json(store.at(f"prune/{record['stage_hashes']['prune']}").plan_json())
    gammas = {"fc1": source.bn1.weight.detach().abs(), "fc2": source.bn2.weight.detach().abs()}
    flat = sorted((float(g), name, i) for name, gs in gammas.items() for i, g in enumerate(gs))
    removed = {(name, i) for _, name, i in flat[: round(0.4 * 20)]}
    expect = {name: [i for i in range(len(gs)) if (name, i) not in removed] for name, gs in gammas.items()}
    assert plan.keep == expect
