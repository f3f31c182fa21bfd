"""Prunable layers of any model: the classifier found by a forward pass, ``method.prunable.exclude``, channel groups
through torch-pruning on torchvision ResNet-18 / MobileNetV2 (residuals, depthwise convs), one-line refusals."""

import pytest
import torch
from torch import nn

from foundations.errors import UserError
from methods.pipeline.channels import compact, mask_channels, prunable_channel_groups, select_channels
from methods.pipeline.channels.plan import TraceError
from methods.pipeline.masks import Prunable, classifier_name, prunable_names
from methods.pipeline.scores.filters import bn_scale_scores
from methods.thinet import layer_pairs
from models import build_model, model_config

SMALL = (3, 16, 16)


def tv(arch, **kw):
    cfg = {"name": "torchvision", "arch": arch, "small_input": True, **kw}
    return build_model(model_config(cfg), SMALL, 5, torch.Generator().manual_seed(0)).eval()


class HeadFirst(nn.Module):
    """The logits layer is declared before a Linear the forward uses earlier (module order would get it wrong)."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.head = nn.Linear(6, num_classes)
        self.conv = nn.Conv2d(in_channels, 6, 3, padding=1)
        self.mix = nn.Linear(6, 6)

    def forward(self, x):
        return self.head(torch.relu(self.mix(self.conv(x).mean((2, 3)))))


def test_the_classifier_is_the_linear_that_produces_the_logits():
    model = build_model(
        model_config({"name": "target", "_target_": "tests.test_generic_prunable.HeadFirst"}),
        SMALL,
        5,
        torch.Generator().manual_seed(0),
    )
    assert classifier_name(model) == "head"
    assert prunable_names(model, Prunable(classifier=False)) == ["conv.weight", "mix.weight"]
    plain = HeadFirst(3, 5)  # not built by prunelab: no input shape recorded, so module order decides
    assert classifier_name(plain) == "mix"
    assert classifier_name(tv("resnet18")) == "fc" and classifier_name(tv("mobilenet_v2")) == "classifier.1"


def test_exclude_by_name_and_glob():
    model = tv("resnet18")
    every = prunable_names(model, Prunable())
    kept = prunable_names(model, Prunable(exclude=["conv1", "layer4.*"]))
    assert "conv1.weight" in every and "conv1.weight" not in kept
    assert not any(n.startswith("layer4.") for n in kept) and any(n.startswith("layer4.") for n in every)
    assert set(every) - set(kept) == {"conv1.weight"} | {n for n in every if n.startswith("layer4.")}
    assert prunable_names(model, Prunable(exclude=["fc.weight"])) == every[:-1]  # a tensor name works too
    with pytest.raises(UserError, match=r"^method\.prunable\.exclude: 'layr4\.\*' matches no Conv2d/Linear"):
        prunable_names(model, Prunable(exclude=["layr4.*"]))
    groups = prunable_channel_groups(model, torch.zeros(1, *SMALL), exclude=["layer4.1.conv1"])
    names = [g.name for g in groups]
    assert "layer4.1.conv1" not in names and "layer4.0.conv1" in names
    # excluding one member of a residual group leaves the whole coupled group alone
    tied = [g for g in prunable_channel_groups(model, torch.zeros(1, *SMALL)) if "layer1.0.conv2" in g.layers][0]
    assert tied.name not in [
        g.name for g in prunable_channel_groups(model, torch.zeros(1, *SMALL), exclude=["layer1.0.conv2"])
    ]


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_compacted_torchvision_models_equal_the_channel_masked_ones(arch):
    kw = {"kwargs": {"width_mult": 0.35}} if arch == "mobilenet_v2" else {}
    model = tv(arch, **kw)
    with torch.no_grad():  # BN statistics that are not the identity, so a wrong slice shows
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    x = torch.randn(4, *SMALL, generator=torch.Generator().manual_seed(1))
    groups = prunable_channel_groups(model, x)
    if arch == "mobilenet_v2":  # depthwise convs lose their producer's channels
        assert any(m.groups > 1 for g in groups for m in [model.get_submodule(layer) for layer in g.layers])
    else:  # the stem and stage 1's block outputs are tied by the residual sums
        assert any({"conv1", "layer1.0.conv2", "layer1.1.conv2"} <= set(g.layers) for g in groups)
    gen = torch.Generator().manual_seed(2)
    scores = {g.name: torch.rand(g.num_channels, generator=gen) for g in groups}
    plan = select_channels(scores, groups, 0.4, scope="layerwise")
    small, masked = compact(model, plan, x).eval(), mask_channels(model, plan).eval()
    assert sum(p.numel() for p in small.parameters()) < 0.8 * sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        expect, got = masked(x), small(x)
    assert torch.allclose(got, expect, atol=1e-5, rtol=1e-4), (got - expect).abs().max()
    assert not torch.allclose(model(x), expect, atol=1e-3)  # the masking changed the function: not a vacuous test


def test_thinet_pairs_through_depthwise_convs_and_not_across_residuals():
    mobile = tv("mobilenet_v2", kwargs={"width_mult": 0.35})
    pairs = dict((g.name, c) for g, c in layer_pairs(mobile, prunable_channel_groups(mobile, torch.zeros(1, *SMALL))))
    assert pairs["features.2.conv.0.0"] == "features.2.conv.2"  # expansion → (depthwise) → projection
    assert "features.2.conv.2" not in pairs  # residual-tied projections have several producers
    resnet = tv("resnet18")
    pairs = dict((g.name, c) for g, c in layer_pairs(resnet, prunable_channel_groups(resnet, torch.zeros(1, *SMALL))))
    assert pairs == {f"layer{s}.{b}.conv1": f"layer{s}.{b}.conv2" for s in range(1, 5) for b in range(2)}


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3)
        self.grouped = nn.Conv2d(8, 8, 3, groups=2)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.grouped(self.stem(x)).mean((2, 3)))


class Detached(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        with torch.no_grad():
            y = self.conv(x)
        return self.fc(y.mean((2, 3)))


def test_channel_pruning_refusals_name_the_layer_and_the_reason():
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(
        UserError,
        match=r"^channel pruning: grouped is a grouped conv \(2 groups of 4 channels\); "
        r"only plain and depthwise convs .* method\.prunable\.exclude=\[grouped\]",
    ):
        prunable_channel_groups(Grouped(), x)
    with pytest.raises(
        TraceError,
        match=r"^channel pruning: torch-pruning's trace of Detached does not reach conv: "
        r"its output leaves autograd's graph",
    ):
        prunable_channel_groups(Detached(), x)
    with pytest.raises(
        UserError,
        match=r"^channel pruning: Sequential has no prunable channel group \(its only "
        r"Conv2d/Linear is the classifier 1",
    ):
        prunable_channel_groups(nn.Sequential(nn.Flatten(), nn.Linear(192, 4)), x)


class Concat(nn.Module):
    """Two branches concatenated (an Inception/DenseNet pattern): each producer owns a slice of the consumer's input."""

    def __init__(self, in_channels: int = 3, num_classes: int = 4):
        super().__init__()
        self.left = nn.Conv2d(in_channels, 6, 3, padding=1)
        self.right = nn.Conv2d(in_channels, 4, 1)
        self.bn = nn.BatchNorm2d(10)
        self.merge = nn.Conv2d(10, 8, 3, padding=1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        y = torch.relu(self.bn(torch.cat([self.left(x), self.right(x)], 1)))
        return self.fc(torch.relu(self.merge(y)).mean((2, 3)))


def test_concatenated_branches_compact_to_their_slices():
    model = Concat().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.bias.uniform_(-0.3, 0.3)
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    groups = {g.name: g for g in prunable_channel_groups(model, x)}
    assert {"left", "right", "merge"} <= set(groups) and groups["right"].num_channels == 4
    plan = select_channels(
        {"left": torch.arange(6.0), "right": torch.tensor([3.0, 0.0, 2.0, 1.0]), "merge": torch.arange(8.0)},
        list(groups.values()),
        0.5,
        scope="layerwise",
    )
    assert plan.keep == {"left": [3, 4, 5], "right": [0, 2], "merge": [4, 5, 6, 7]}
    small = compact(model, plan, x).eval()
    assert (small.left.out_channels, small.right.out_channels, small.bn.num_features, small.merge.in_channels) == (
        3,
        2,
        5,
        5,
    )
    with torch.no_grad():
        assert torch.allclose(small(x), mask_channels(model, plan).eval()(x), atol=1e-5)
    # slimming reads each branch's γ in its slice of the BN after the concatenation
    with torch.no_grad():
        model.bn.weight.copy_(torch.linspace(-1.0, 0.8, 10))
    scores = bn_scale_scores(model, [groups["left"], groups["right"]])  # merge has no BN: slimming refuses it
    assert torch.equal(scores["left"], model.bn.weight.detach().abs()[:6])
    assert torch.equal(scores["right"], model.bn.weight.detach().abs()[6:])
    # ThiNet has no layer i+1 for a branch: the consumer also reads the other branch's channels
    pairs = dict((g.name, c) for g, c in layer_pairs(model, list(groups.values())))
    assert "left" not in pairs and "right" not in pairs
