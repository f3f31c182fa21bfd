"""Channel groups, selection, masking and surgery (methods/channels/) on every model family of ``models/``."""

import math

import pytest
import torch
from torch import nn

from foundations.errors import UserError
from methods.pipeline.channels import (
    ChannelPlan,
    channel_sparsity,
    compact,
    mask_channels,
    prunable_channel_groups,
    select_channels,
)
from models import ModelConfig, build_model

FAMILIES = {
    "lenet300": (ModelConfig(name="lenet300"), (1, 28, 28)),
    "lenet5": (ModelConfig(name="lenet5"), (1, 28, 28)),
    "mlp_bn": (ModelConfig(name="mlp_bn"), (1, 28, 28)),
    "conv_bn": (ModelConfig(name="conv_bn"), (1, 28, 28)),
    "vgg11": (ModelConfig(name="vgg", depth=11), (3, 32, 32)),
    "resnet20": (ModelConfig(name="resnet", depth=20), (3, 32, 32)),
}


def build(family, seed=0):
    """A model of ``family`` with non-trivial BN parameters and running statistics (as after training)."""
    cfg, shape = FAMILIES[family]
    model = build_model(cfg, shape, 10, torch.Generator().manual_seed(seed))
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.weight.uniform_(0.5, 1.5, generator=gen)
                module.bias.normal_(0.0, 0.2, generator=gen)
                module.running_mean.normal_(0.0, 0.2, generator=gen)
                module.running_var.uniform_(0.5, 2.0, generator=gen)
    return model, torch.randn(6, *shape, generator=gen)


def random_plan(groups, seed=0, keep_fraction=0.5):
    gen = torch.Generator().manual_seed(seed)
    keep = {}
    for g in groups:
        k = max(1, round(keep_fraction * g.num_channels))
        keep[g.name] = sorted(torch.randperm(g.num_channels, generator=gen)[:k].tolist())
    return ChannelPlan.for_groups(groups, keep)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


# --- groups -----------------------------------------------------------------------------------------------------


def test_groups_exclude_the_classifier_and_record_bn_and_consumers():
    model, x = build("lenet5")
    groups = prunable_channel_groups(model, x)
    assert [(g.name, g.bn, g.consumers, g.num_channels) for g in groups] == [
        ("conv1", None, ["conv2"], 20),
        ("conv2", None, ["fc1"], 50),
        ("fc1", None, ["fc2"], 500),
    ]
    model, x = build("mlp_bn")
    assert [(g.name, g.bn, g.consumers) for g in prunable_channel_groups(model, x)] == [
        ("fc1", "bn1", ["fc2"]),
        ("fc2", "bn2", ["fc3"]),
    ]


def test_resnet_stages_are_tied_into_one_group_each():
    model, x = build("resnet20")
    model.train()
    groups = {g.name: g for g in prunable_channel_groups(model, x)}
    assert model.training and all(m.training for m in model.modules())  # tracing restored the mode
    assert len(groups) == 3 + 9  # one per residual stage + each block's inner conv1
    stage1 = groups["conv1"]
    assert stage1.layers == ["conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2"]
    assert stage1.bn_of == {
        "conv1": "bn1",
        "layer1.0.conv2": "layer1.0.bn2",
        "layer1.1.conv2": "layer1.1.bn2",
        "layer1.2.conv2": "layer1.2.bn2",
    }
    stage3 = groups["layer3.0.conv2"]
    assert stage3.layers == ["layer3.0.conv2", "layer3.0.shortcut.conv", "layer3.1.conv2", "layer3.2.conv2"]
    assert stage3.bn_of["layer3.0.shortcut.conv"] == "layer3.0.shortcut.bn"
    assert "fc" in stage3.consumers and stage3.num_channels == 64
    inner = groups["layer2.1.conv1"]
    assert inner.layers == ["layer2.1.conv1"] and inner.bn == "layer2.1.bn1" and inner.consumers == ["layer2.1.conv2"]


# --- surgery ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", list(FAMILIES))
def test_compacted_model_equals_channel_masked_model(family):
    model, x = build(family)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    groups = prunable_channel_groups(model, x)
    plan = random_plan(groups, seed=3)
    masked = mask_channels(model, plan)
    small = compact(model, plan, x)
    with torch.no_grad():
        diff = (masked(x) - small(x)).abs().max().item()
        changed = (model(x) - masked(x)).abs().max().item()
    assert diff < 1e-5
    assert changed > 1e-3  # the plan really removed something that mattered
    assert n_params(small) < n_params(model)
    for g in groups:  # every coupled layer and its BN lost the same channels
        for layer in g.layers:
            module = small.get_submodule(layer)
            assert (module.out_channels if isinstance(module, nn.Conv2d) else module.out_features) == len(
                plan.keep[g.name]
            )
            if g.bn_of[layer]:
                bn = small.get_submodule(g.bn_of[layer])
                assert bn.num_features == bn.running_mean.numel() == bn.running_var.numel() == len(plan.keep[g.name])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original is untouched


@pytest.mark.parametrize("family", ["conv_bn", "resnet20"])
def test_compact_keeps_train_mode_and_matches_in_train_mode(family):
    model, x = build(family)
    model.train()
    plan = random_plan(prunable_channel_groups(model, x), seed=5)
    masked, small = mask_channels(model, plan), compact(model, plan, x)
    assert small.training and all(m.training for m in small.modules())
    for a, b in [(model, small)]:  # the trace must not have updated the copy's running statistics
        for name, module in b.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                assert int(module.num_batches_tracked) == int(a.get_submodule(name).num_batches_tracked)
    with torch.no_grad():  # batch statistics: a masked channel is 0 with batch mean 0 and γ = β = 0
        assert (masked(x) - small(x)).abs().max().item() < 1e-5


def test_masked_channels_are_exactly_zero_downstream():
    model, x = build("conv_bn")
    model.eval()
    groups = prunable_channel_groups(model, x)
    plan = random_plan(groups, seed=1)
    masked = mask_channels(model, plan)
    seen = {}
    masked.bn2.register_forward_hook(lambda m, i, o: seen.setdefault("bn2", o))
    with torch.no_grad():
        masked(x)
    removed = sorted(set(range(32)) - set(plan.keep["conv2"]))
    assert torch.all(seen["bn2"][:, removed] == 0)


def test_parameter_counts_match_hand_counts():
    model, x = build("mlp_bn")  # 784-500-300-10; hidden Linears have no bias (BN follows)
    groups = prunable_channel_groups(model, x)
    plan = ChannelPlan.for_groups(groups, {"fc1": range(100), "fc2": range(0, 120, 2)})
    small = compact(model, plan, x)
    assert n_params(small) == 784 * 100 + 2 * 100 + 100 * 60 + 2 * 60 + 60 * 10 + 10
    assert sum(b.numel() for n, b in small.named_buffers() if "running" in n) == 2 * 100 + 2 * 60  # buffers, not params
    model, x = build("lenet5")
    groups = prunable_channel_groups(model, x)
    a, b, h = 7, 13, 211
    plan = ChannelPlan.for_groups(groups, {"conv1": range(a), "conv2": range(b), "fc1": range(h)})
    small = compact(model, plan, x)
    assert n_params(small) == (a * 25 + a) + (b * a * 25 + b) + (b * 16 * h + h) + (h * 10 + 10)
    assert small.fc1.in_features == b * 16


def test_compact_refuses_an_emptied_group():
    model, x = build("lenet300")
    plan = ChannelPlan(keep={"fc1": [], "fc2": list(range(100))})
    with pytest.raises(UserError, match="keeps no channels"):
        compact(model, plan, x)
    with pytest.raises(UserError, match="not the key"):
        compact(model, ChannelPlan(keep={"fc3": [0]}), x)


# --- selection ----------------------------------------------------------------------------------------------------


def _groups(sizes):
    from methods.pipeline.channels.plan import ChannelGroup

    return [
        ChannelGroup(name=f"l{i}", layers=[f"l{i}"], bn_of={f"l{i}": None}, consumers=[], num_channels=n)
        for i, n in enumerate(sizes)
    ]


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.37, 0.5, 0.9])
def test_global_selection_removes_exactly_round_s_total(sparsity):
    groups = _groups([16, 32, 64, 7])
    gen = torch.Generator().manual_seed(0)
    scores = {g.name: torch.rand(g.num_channels, generator=gen) * (i + 1) for i, g in enumerate(groups)}
    plan = select_channels(scores, groups, sparsity, scope="global")
    total = sum(g.num_channels for g in groups)
    removed = total - sum(len(v) for v in plan.keep.values())
    assert removed == round(sparsity * total)
    # one threshold: a kept score is >= every removed score, except in groups held at their floor of 1 channel,
    # which keep their own best channel
    gone = torch.cat([scores[g.name][sorted(set(range(g.num_channels)) - set(plan.keep[g.name]))] for g in groups])
    for g in groups:
        kept = scores[g.name][plan.keep[g.name]]
        if gone.numel() == 0:
            continue
        if len(kept) > 1:
            assert kept.min() >= gone.max()
        else:
            assert kept.min() == scores[g.name].max()


def test_global_ties_are_broken_by_group_order_then_index():
    groups = _groups([4, 4])
    plan = select_channels({"l0": torch.zeros(4), "l1": torch.zeros(4)}, groups, 0.5, scope="global")
    assert plan.keep == {"l0": [3], "l1": [1, 2, 3]}  # floor 1 stops l0; the deficit moves to l1
    plan = select_channels({"l0": torch.zeros(4), "l1": torch.zeros(4)}, groups, 0.25, scope="global")
    assert plan.keep == {"l0": [2, 3], "l1": [0, 1, 2, 3]}


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.8])
def test_layerwise_removes_the_same_fraction_per_group(sparsity):
    groups = _groups([16, 32, 64, 20])
    gen = torch.Generator().manual_seed(1)
    scores = {g.name: torch.rand(g.num_channels, generator=gen) + 10 * i for i, g in enumerate(groups)}
    plan = select_channels(scores, groups, sparsity, scope="layerwise")
    for g in groups:
        assert g.num_channels - len(plan.keep[g.name]) == round(sparsity * g.num_channels)
        kept = scores[g.name][plan.keep[g.name]]
        assert kept.min() >= scores[g.name].sort().values[round(sparsity * g.num_channels) - 1]


def test_floor_keeps_a_dominated_layer_alive_at_high_sparsity():
    groups = _groups([10, 100, 200])
    scores = {"l0": torch.full((10,), -5.0), "l1": torch.rand(100), "l2": torch.rand(200) + 1}
    plan = select_channels(scores, groups, 0.99, scope="global")
    assert len(plan.keep["l0"]) == 1 and all(len(v) >= 1 for v in plan.keep.values())
    assert sum(len(v) for v in plan.keep.values()) == 310 - round(0.99 * 310)  # deficit moved to the others
    plan = select_channels(scores, groups, 0.99, scope="layerwise")
    assert [len(plan.keep[g.name]) for g in groups] == [1, 1, 2]
    # slimming's multi-pass "at most 50% of a layer": the fraction floor
    plan = select_channels(scores, groups, 0.5, scope="global", min_keep_fraction=0.5)
    assert len(plan.keep["l0"]) == 5
    assert sum(len(v) for v in plan.keep.values()) == 310 - round(0.5 * 310)


def test_selection_refuses_what_cannot_be_met():
    groups = _groups([4, 4])
    scores = {"l0": torch.rand(4), "l1": torch.rand(4)}
    with pytest.raises(UserError, match=r"at most 4") as err:
        select_channels(scores, groups, 0.9, scope="global", min_keep=2)
    assert "\n" not in str(err.value)
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(UserError, match="sparsity"):
            select_channels(scores, groups, bad)
    with pytest.raises(UserError, match="scope"):
        select_channels(scores, groups, 0.5, scope="per_weight")
    with pytest.raises(UserError, match="3 scores"):
        select_channels({"l0": torch.rand(3), "l1": torch.rand(4)}, groups, 0.5)


def test_plan_json_roundtrip_and_sparsity(tmp_path):
    model, x = build("resnet20")
    groups = prunable_channel_groups(model, x)
    plan = random_plan(groups, seed=2, keep_fraction=0.25)
    path = tmp_path / "plan.json"
    path.write_text(plan.to_json())
    again = ChannelPlan.from_json(path.read_text())
    assert again == plan
    total = sum(g.num_channels for g in groups)
    kept = sum(len(v) for v in plan.keep.values())
    assert math.isclose(channel_sparsity(again, model), (total - kept) / total)
    # the JSON plan carries its coupled layers, so masking it needs no tracing and matches the surgery
    with torch.no_grad():
        model.eval()
        assert (mask_channels(model, again)(x) - compact(model, again, x)(x)).abs().max() < 1e-5


def test_end_to_end_slimming_style_selection_on_bn_scales():
    model, x = build("vgg11")
    model.eval()
    groups = prunable_channel_groups(model, x)
    scores = {g.name: model.get_submodule(g.bn).weight.detach().abs() for g in groups}
    plan = select_channels(scores, groups, 0.6, scope="global")
    assert math.isclose(
        channel_sparsity(plan, model),
        round(0.6 * sum(g.num_channels for g in groups)) / sum(g.num_channels for g in groups),
    )
    small = compact(model, plan, x)
    with torch.no_grad():
        assert (mask_channels(model, plan)(x) - small(x)).abs().max() < 1e-5


def test_a_bare_plan_is_traced_for_its_coupled_layers():
    model, x = build("resnet20")
    model.eval()
    groups = prunable_channel_groups(model, x)
    bare = ChannelPlan(keep=random_plan(groups, seed=4).keep)  # keys only, as written by hand
    with pytest.raises(UserError, match="example_input"):
        mask_channels(model, bare)
    masked = mask_channels(model, bare, x)
    assert torch.all(
        masked.layer1.get_submodule("2").bn2.weight[sorted(set(range(16)) - set(bare.keep["conv1"]))] == 0
    )  # a residual member, found by tracing
    with torch.no_grad():
        assert (masked(x) - compact(model, bare, x)(x)).abs().max() < 1e-5
