import pytest
import torch
from torch import nn

from methods.pipeline.masks import Prunable, apply_masks, density, folded, masked_training, prunable_names
from methods.pipeline.select import ladder, select


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))


def _optimizer(kind: str, params) -> torch.optim.Optimizer:
    if kind == "sgd":
        return torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)
    return torch.optim.Adam(params, lr=0.01, weight_decay=1e-2)


def _batches(n: int = 60):
    gen = torch.Generator().manual_seed(3)
    return [(torch.randn(16, 20, generator=gen), torch.randint(0, 5, (16,), generator=gen)) for _ in range(n)]


def _masked_net():
    model = net()
    gen = torch.Generator().manual_seed(2)
    masks = {n: torch.rand(p.shape, generator=gen) > 0.5 for n, p in model.named_parameters() if n.endswith("weight")}
    return apply_masks(model, masks), masks


def _step(model, opt, x, y, before=(), after=()):
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    for hook in before:
        hook(model)
    opt.step()
    for hook in after:
        hook(model, opt)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_pruned_weights_and_their_optimizer_state_stay_exactly_zero_after_every_step(optimizer):
    model, masks = _masked_net()
    opt = _optimizer(optimizer, list(model.parameters()))

    def revive(m):  # a gradient hook that writes into pruned entries (slimming-like): the mask must win
        for module in (m[0], m[2]):
            module.weight_orig.grad.add_(1.0)

    with masked_training(model) as masking:
        for x, y in _batches():
            _step(model, opt, x, y, [revive, *masking.before_step], masking.after_step)
            for module, name in ((model[0], "0.weight"), (model[2], "2.weight")):
                pruned = ~masks[name]
                assert torch.all(module.weight_orig[pruned] == 0)
                for value in opt.state[module.weight_orig].values():
                    if torch.is_tensor(value) and value.shape == pruned.shape:
                        assert torch.all(value[pruned] == 0)
    plain = folded(model)
    for name, mask in masks.items():
        weight = dict(plain.named_parameters())[name]
        assert torch.all(weight[~mask] == 0)
        assert torch.all(weight[mask] != 0)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_masked_training_is_bitwise_the_pruning_hooks_path(optimizer):
    """The reference: torch.nn.utils.prune's forward pre-hook (weight = weight_orig * mask every forward) and every
    pruned weight and optimizer-state entry re-zeroed after each step."""
    fast, _ = _masked_net()
    slow, _ = _masked_net()
    fast_opt, slow_opt = _optimizer(optimizer, list(fast.parameters())), _optimizer(optimizer, list(slow.parameters()))

    def rezero(model, opt):
        with torch.no_grad():
            for module in (model[0], model[2]):
                module.weight_orig.mul_(module.weight_mask)
                for value in opt.state[module.weight_orig].values():
                    if torch.is_tensor(value) and value.shape == module.weight_orig.shape:
                        value.mul_(module.weight_mask)

    keys = list(fast.state_dict())
    with masked_training(fast) as masking:
        for x, y in _batches():
            _step(fast, fast_opt, x, y, masking.before_step, masking.after_step)
            _step(slow, slow_opt, x, y, (), [rezero])
    assert list(fast.state_dict()) == keys
    for (name, a), b in zip(fast.state_dict().items(), slow.state_dict().values()):
        assert torch.equal(a, b), name
    x = torch.randn(8, 20)
    assert torch.equal(fast(x), slow(x))  # the hooks are back: the forward is the masked one again
    assert torch.equal(folded(fast)(x), folded(slow)(x))


def test_masked_training_leaves_an_unmasked_model_alone():
    model = net()
    with masked_training(model) as masking:
        assert not masking.before_step and not masking.after_step
    assert list(model.state_dict()) == list(net().state_dict())


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


def test_lottery_levels_match_the_paper_ladder():
    """LeNet-300-100, 20% per round, output layer at 10%: P_m(k) = (265,200·0.8^k + 1,000·0.9^k)/266,200, which gives
    the paper's labels 51.3 / 21.1 / 3.6 / 1.2 % at rounds 3 / 7 / 15 / 20 (the ladder the lottery really uses)."""
    from methods.lottery import Lottery, LotteryConfig

    sizes = {"fc1.weight": 784 * 300, "fc2.weight": 300 * 100, "fc3.weight": 100 * 10}
    p_m = {k: (265_200 * 0.8**k + 1_000 * 0.9**k) / 266_200 for k in range(1, 21)}
    lottery = Lottery(LotteryConfig(rate=0.2, output_rate=0.1, scope="layerwise", sparsity=1 - p_m[20]))
    levels = lottery.levels(sizes, "fc3")
    assert len(levels) == 20
    for k, label in ((3, 51.3), (7, 21.1), (15, 3.6), (20, 1.2)):
        layers = levels[k - 1]
        assert layers["fc1.weight"] == pytest.approx(0.8**k) and layers["fc3.weight"] == pytest.approx(0.9**k)
        density = sum(sizes[n] * layers[n] for n in sizes) / 266_200
        assert density == pytest.approx(p_m[k]) and round(100 * density, 1) == label


def test_the_ladder_lands_on_the_target_removing_the_same_fraction_each_round():
    steps = ladder(3, 0.125, names=["a", "b"])
    assert [overall for overall, _ in steps] == pytest.approx([0.5, 0.25, 0.125])
    assert all(layers == {"a": overall, "b": overall} for overall, layers in steps)


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

    variants = [
        ("method=random",),
        ("method=random", "method.when=after_training"),
        ("method=random", "method.variant=global"),
        ("method=magnitude",),
        ("method=magnitude", "method.scope=layerwise"),
        ("method=magnitude", "method.rounds=3"),
        ("method=magnitude", "method.when=init"),
        ("method=obd",),
        ("method=obd", "method.estimator=lecun"),
        ("method=snip",),
        ("method=snip", "method.fresh_init=true"),
    ]
    labels = [label(*v) for v in variants]
    assert len(set(labels)) == len(labels), labels
    assert labels[0] == "random" and labels[3] == "magnitude" and labels[7] == "obd" and labels[9] == "snip"
    assert labels[1] == "random (after training)" and labels[5] == "magnitude (3 rounds)"
