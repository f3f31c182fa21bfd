import pytest
import torch
from torch import nn

from methods.pipeline.masks import Prunable, apply_masks, density, folded, keep_masked, prunable_names
from methods.pipeline.select import ladder, select


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_pruned_weights_stay_exactly_zero(optimizer):
    model = net()
    masks = {n: torch.rand_like(p) > 0.5 for n, p in model.named_parameters() if n.endswith("weight")}
    apply_masks(model, masks)
    params = [p for p in model.parameters()]
    opt = (torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-2) if optimizer == "sgd"
           else torch.optim.Adam(params, lr=0.01, weight_decay=1e-2))
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(16, 20)), torch.randint(0, 5, (16,))).backward()
        opt.step()
        keep_masked(model, opt)
    plain = folded(model)
    for name, mask in masks.items():
        weight = dict(plain.named_parameters())[name]
        assert torch.all(weight[~mask] == 0)
        assert torch.all(weight[mask] != 0)


def test_global_prunes_the_small_weight_layer_more_and_layerwise_evenly():
    scores = {"big": torch.rand(100) + 10, "small": torch.rand(100)}
    alive = {n: torch.ones(100, dtype=torch.bool) for n in scores}
    g = select(scores, alive, scope="global", layer_targets={}, global_target=0.5)
    assert g["big"].sum() == 100 and g["small"].sum() == 0
    lw = select(scores, alive, scope="layerwise", layer_targets={"big": 0.5, "small": 0.5}, global_target=0.5)
    assert lw["big"].sum() == lw["small"].sum() == 50


def test_ties_are_broken_deterministically_and_counts_are_exact():
    scores = {"a": torch.zeros(10), "b": torch.zeros(7)}
    alive = {n: torch.ones_like(s, dtype=torch.bool) for n, s in scores.items()}
    first = select(scores, alive, scope="global", layer_targets={}, global_target=0.3)
    again = select(scores, alive, scope="global", layer_targets={}, global_target=0.3)
    assert sum(int(m.sum()) for m in first.values()) == round(0.3 * 17)
    assert all(torch.equal(first[n], again[n]) for n in first)


def test_only_survivors_are_ranked():
    scores = {"a": torch.arange(10.0)}
    alive = {"a": torch.tensor([True] * 5 + [False] * 5)}  # the largest scores are already pruned
    kept = select(scores, alive, scope="global", layer_targets={}, global_target=0.2)
    assert kept["a"].tolist() == [False, False, False, True, True] + [False] * 5


def test_lottery_ladder_matches_the_paper_formula():
    """LeNet-300-100, 20% per round, output layer at 10%: P_m(k) = (265,200·0.8^k + 1,000·0.9^k)/266,200."""
    sizes = {"fc1": 784 * 300, "fc2": 300 * 100, "fc3": 100 * 10}
    rates = {"fc1": 0.2, "fc2": 0.2, "fc3": 0.1}
    steps = ladder(20, 0.0 + 0.8**20, layer_rates=rates, names=list(sizes))
    for k in (3, 7, 15, 20):
        _, layers = steps[k - 1]
        kept = {n: round(layers[n] * sizes[n]) for n in sizes}
        assert abs(kept["fc1"] + kept["fc2"] - 265_200 * 0.8**k) <= 2 and abs(kept["fc3"] - 1_000 * 0.9**k) <= 1
        assert abs(sum(kept.values()) / 266_200 - (265_200 * 0.8**k + 1_000 * 0.9**k) / 266_200) < 3 / 266_200


def test_classifier_and_biases_are_configurable():
    model = net()
    assert prunable_names(model, Prunable()) == ["0.weight", "2.weight"]
    assert prunable_names(model, Prunable(classifier=False, biases=True)) == ["0.weight", "0.bias"]
    assert density({"a": torch.tensor([True, False])}) == 0.5


def test_variants_of_a_method_never_share_a_label(tmp_path):
    # the report groups by label: two variants under one label would be averaged as if they were seeds
    from conftest import SYNTH, make_run

    from methods import get_method

    def label(*overrides):
        run = make_run(tmp_path, *SYNTH, *overrides)
        return get_method(run.method.name)(run.method).label()

    variants = [("method=random",), ("method=random", "method.when=after_training"),
                ("method=random", "method.variant=global"), ("method=magnitude",),
                ("method=magnitude", "method.scope=layerwise"), ("method=magnitude", "method.rounds=3"),
                ("method=magnitude", "method.when=init"), ("method=obd",), ("method=obd", "method.estimator=lecun"),
                ("method=snip",), ("method=snip", "method.fresh_init=true")]
    labels = [label(*v) for v in variants]
    assert len(set(labels)) == len(labels), labels
    assert labels[0] == "random" and labels[3] == "magnitude" and labels[7] == "obd" and labels[9] == "snip"
    assert labels[1] == "random (after training)" and labels[5] == "magnitude (3 rounds)"
