"""Scratch-E / Scratch-B (Liu et al. 2019) against hand-counted budgets and the source experiments' own stages."""

import pytest
import torch

from foundations.store import Store
from methods.scratch import scratch_b_length
from runners.experiment import Experiment, run_experiment
from tests.conftest import make_run
from tests.test_cli import cli

MLP_BN = ["dataset=synthetic", "model=mlp_bn", "model.widths=[40,20]", "train.epochs=2", "train.batch_size=64"]
L1_SOURCE = [
    "method=scratch",
    "method.source=l1_filter",
    "method.sparsity=0.5",
    "+method.source_overrides.recovery.epochs=1",
]


def experiment(tmp_path, *overrides):
    run = make_run(tmp_path, *overrides)
    store = Store(run.paths.results)
    return run_experiment(run, store), Experiment(run, store)


def test_scratch_b_length_formula():
    assert scratch_b_length(160, 4.0e8, 1.0e8) == 640
    assert scratch_b_length(2, 3440, 1520) == 5  # 4.53 rounds up
    assert scratch_b_length(2, 3440, 1520, rounding="floor") == 4  # main_B.py's int()
    assert scratch_b_length(90, 10, 1, cap=2) == 180  # ImageNet: at most 2x


def test_scratch_b_trains_the_plan_for_the_flop_ratio_from_a_fresh_init(tmp_path):
    record, exp = experiment(tmp_path, *MLP_BN, *L1_SOURCE, "method.budget=B")
    # synthetic inputs are 1x8x8 = 64 features, 4 classes; l1_filter at 0.5 keeps 20 and 10 of the 40 and 20 units
    flops_dense, flops_pruned = 64 * 40 + 40 * 20 + 20 * 4, 64 * 20 + 20 * 10 + 10 * 4
    assert (record["flops_dense"], record["flops_effective"]) == (flops_dense, flops_pruned)
    # the Rethinking count (the default): 2 per multiply-add, the classifier's bias, BN (2 per element), ReLU
    # (1 per element); the hidden Linears have no bias before their BN
    rethinking_dense = 2 * 64 * 40 + 2 * 40 + 40 + 2 * 40 * 20 + 2 * 20 + 20 + 2 * 20 * 4 + 4
    rethinking_pruned = 2 * 64 * 20 + 2 * 20 + 20 + 2 * 20 * 10 + 2 * 10 + 10 + 2 * 10 * 4 + 4
    assert record["outputs"]["scratch_flops"] == {
        "count": "rethinking",
        "dense": rethinking_dense,
        "pruned": rethinking_pruned,
    }
    assert record["outputs"]["scratch_epochs"] == round(2 * rethinking_dense / rethinking_pruned) == 5
    assert record["kind"] == "structured" and record["label"] == "scratch-B (l1_filter)"

    source = exp.model_from(exp.stage_at(record["outputs"]["source_stage"]))
    init = exp.model_from(exp.stage_at("init/" + record["stage_hashes"]["scratch_init"]))
    final = exp.model_from(exp.stage_at(record["final_stage"]))
    shapes = {k: v.shape for k, v in source.state_dict().items()}
    assert (
        {k: v.shape for k, v in init.state_dict().items()}
        == shapes
        == {k: v.shape for k, v in final.state_dict().items()}
    )
    assert final.fc1.out_features == 20 and final.fc2.out_features == 10
    # a fresh draw: neither the source's trained weights nor the compacted original initialization
    original = exp.model_from(exp.stage_at("init/" + record["stage_hashes"]["init"]))
    assert not torch.allclose(init.fc1.weight, source.fc1.weight)
    assert not torch.allclose(init.fc1.weight[:, :5], original.fc1.weight[:20, :5])


def test_scratch_e_reuses_the_source_and_keeps_the_dense_epochs(tmp_path):
    first, _ = experiment(tmp_path, *MLP_BN, *L1_SOURCE, "method.budget=B")
    second, _ = experiment(tmp_path, *MLP_BN, *L1_SOURCE, "method.budget=E")
    assert second["outputs"]["scratch_epochs"] == 2
    assert (
        second["stages_reused"]["scratch_init"]
        and second["outputs"]["source_stage"] == first["outputs"]["source_stage"]
    )
    assert second["stage_hashes"]["scratch"] != first["stage_hashes"]["scratch"]


def test_a_scratch_init_is_the_fresh_draw_of_the_widths_whichever_channels_the_plan_kept(tmp_path):
    from methods.pipeline.channels import ChannelPlan, compact, prunable_channel_groups
    from models.init import initialize

    exp = Experiment(make_run(tmp_path, *MLP_BN), Store(tmp_path / "results"))
    groups = prunable_channel_groups(exp.base_model(), exp.example_input)
    plan = lambda keep: ChannelPlan.for_groups(groups, keep)  # noqa: E731
    odd, low = plan({"fc1": range(1, 40, 2), "fc2": range(10)}), plan({"fc1": range(20), "fc2": range(10, 20)})
    a, b = exp.init_stage("a", seed=7, architecture=odd), exp.init_stage("b", seed=7, architecture=low)
    assert a.hash == b.hash and b.reused
    # the independent answer: the old construction (cut the fresh draw by the source's own channels, re-draw)
    expected = initialize(
        compact(exp.base_model(7), odd, exp.example_input), exp.config.model.init, torch.Generator().manual_seed(7)
    ).state_dict()
    got = exp.model_from(a).state_dict()
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
    # the stage's plan keeps the first channels: with model.init=native (no re-draw) the weights are the fresh draw's
    # first channels, so they too follow from the hashed widths alone
    assert a.plan().keep == {"fc1": list(range(20)), "fc2": list(range(10))}
    narrower = exp.init_stage("c", seed=7, architecture=plan({"fc1": range(20), "fc2": range(5)}))
    assert narrower.hash != a.hash and exp.model_from(narrower).fc2.out_features == 5
    assert exp.init_stage("d", seed=8, architecture=odd).hash != a.hash


def test_sources_leaving_the_same_widths_share_the_scratch_training(tmp_path):
    first, exp = experiment(tmp_path, *MLP_BN, *L1_SOURCE)
    second, _ = experiment(tmp_path, *MLP_BN, *L1_SOURCE, "method.source=random_channel")
    plans = [exp.stage_at(r["outputs"]["source_stage"]).plan() for r in (first, second)]
    assert plans[0].widths() == plans[1].widths() and plans[0].keep != plans[1].keep
    assert second["stages_reused"]["scratch_init"] and second["stages_reused"]["scratch"]
    assert (
        second["final_stage"] == first["final_stage"]
        and second["outputs"]["source_stage"] != first["outputs"]["source_stage"]
    )
    assert second["label"] == "scratch-E (random_channel)"


def test_scratch_of_a_mask_keeps_the_mask_fixed_and_counts_nonzero_flops(tmp_path):
    record, exp = experiment(
        tmp_path,
        "dataset=synthetic",
        "model=lenet300",
        "train.epochs=2",
        "method=scratch",
        "method.source=magnitude",
        "method.sparsity=0.8",
        "method.budget=B",
        "+method.source_overrides.recovery.epochs=1",
    )
    source = exp.stage_at(record["outputs"]["source_stage"])
    final = exp.stage_at(record["final_stage"])
    source_masks, final_masks = source.masks(), final.masks()
    assert source_masks.keys() == final_masks.keys()
    assert all(torch.equal(source_masks[k], final_masks[k]) for k in source_masks)
    weights = final.weights()
    assert all(int((weights[k][~final_masks[k]] != 0).sum()) == 0 for k in final_masks)
    assert abs(record["density"] - 0.2) < 1e-3
    flops = record["outputs"]["scratch_flops"]
    assert flops["pruned"] < 0.5 * flops["dense"] and record["outputs"]["scratch_epochs"] == round(
        2 * flops["dense"] / flops["pruned"]
    )
    assert record["kind"] == "unstructured"


def test_scratch_b_can_count_conv_linear_multiply_adds_only(tmp_path):
    record, _ = experiment(tmp_path, *MLP_BN, *L1_SOURCE, "method.budget=B", "method.flops=conv_linear")
    assert record["outputs"]["scratch_flops"] == {"count": "conv_linear", "dense": 3440, "pruned": 1520}
    assert record["outputs"]["scratch_epochs"] == 5 and record["label"] == "scratch-B (l1_filter, conv/linear FLOPs)"


def test_rethinking_flops_by_hand():
    """compute_flops.py's rules on conv(bias) → BN2d → ReLU → max-pool 2 → Linear(bias), then with half the conv
    weights zeroed (count_flops.py counts only nonzero kernel weights)."""
    from torch import nn

    from methods.pipeline.flops import rethinking_flops

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(3 * 3 * 3, 5),
    )
    conv = (2 * 3 * 2 * 3 * 3 + 3) * 6 * 6  # (2 · kernel weights + Cout biases) · H_out · W_out
    bn, relu, pool = 2 * 3 * 6 * 6, 3 * 6 * 6, 2 * 2 * 3 * 3 * 3  # pool: window · output elements
    linear = 2 * 27 * 5 + 5
    assert rethinking_flops(net, (2, 6, 6)) == conv + bn + relu + pool + linear
    with torch.no_grad():
        net[0].weight.view(-1)[::2] = 0  # 54 kernel weights, 27 left
    assert rethinking_flops(net, (2, 6, 6)) == (2 * 27 + 3) * 36 + bn + relu + pool + linear


@pytest.mark.parametrize(
    "args,field",
    [
        (["method.source=nosuch"], "nosuch"),
        (["method.source=magnitude", "method.build_source=false"], "method.source"),
        (["method.budget=C"], "method.budget"),
    ],
)
def test_bad_source_is_one_line_and_writes_nothing(tmp_path, args, field):
    result = cli(tmp_path, "dataset=synthetic", "method=scratch", *args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and field in lines[0], result.stderr
    assert not (tmp_path / "results" / "runs").exists()
