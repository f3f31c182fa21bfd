import pytest
import torch
from torch import nn

from methods.pipeline.masks import (
    Prunable,
    apply_masks,
    current_masks,
    density,
    folded,
    masked_training,
    prunable_names,
)
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


# ------------------------------------------------------------------------------------------------------------------
# Whatever optimizer masked_training is given: state from before the masks, masks that change inside the stage.

OPTIMIZERS = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
    "adam": lambda params: torch.optim.Adam(params, lr=0.01, weight_decay=1e-2),
    "amsgrad": lambda params: torch.optim.Adam(params, lr=0.01, weight_decay=1e-2, amsgrad=True),
}
LAYERS = {"0.weight": 0, "2.weight": 2}


def _guard(model, expected: dict, layers: dict = LAYERS) -> list:
    """Forward pre-hooks asserting that the weight each masked module's forward reads is exactly zero wherever the
    test's own masks (``expected``, changed by the test as it prunes) say pruned. Returns the call log."""
    calls = []

    def check(module, _args, name):
        weight = module.weight  # the attribute Linear.forward reads
        assert torch.all(weight[~expected[name]] == 0), f"{name}: a pruned weight is used by the forward"
        calls.append(name)

    for name, index in layers.items():
        model[index].register_forward_pre_hook(lambda m, a, name=name: check(m, a, name))
    return calls


def _assert_state_zero(opt, model, masks: dict, layers: dict = LAYERS) -> None:
    for name, index in layers.items():
        weight = model[index].weight_orig
        assert torch.all(weight[~masks[name]] == 0), name
        state = [v for v in opt.state[weight].values() if torch.is_tensor(v) and v.shape == weight.shape]
        assert state, f"{name}: the optimizer keeps no elementwise state (the test would prove nothing)"
        for value in state:
            assert torch.all(value[~masks[name]] == 0), f"{name}: optimizer state revives a pruned entry"


def _rezero(masks: dict):
    """The reference: after every step, every pruned weight and optimizer-state entry set to zero."""

    def hook(model, opt):
        with torch.no_grad():
            for name, index in LAYERS.items():
                weight = model[index].weight_orig
                weight.mul_(masks[name])
                for value in opt.state[weight].values():
                    if torch.is_tensor(value) and value.shape == weight.shape:
                        value.mul_(masks[name])

    return hook


def _dense_steps(model, opt, n: int = 5) -> None:
    for x, y in _batches(n):
        _step(model, opt, x, y)


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_an_optimizer_holding_state_from_before_the_masks_cannot_revive_pruned_weights(optimizer):
    """Momentum / Adam moments gathered while dense, then masks applied: the first step moves the pruned weights
    (their state is not zero), and masked training must undo it before any forward sees them. The reference path
    (pruning hooks, every pruned weight and state entry re-zeroed after every step) must agree bitwise."""
    fast, slow = net(), net()
    fast_opt, slow_opt = OPTIMIZERS[optimizer](list(fast.parameters())), OPTIMIZERS[optimizer](list(slow.parameters()))
    _dense_steps(fast, fast_opt)
    _dense_steps(slow, slow_opt)
    gen = torch.Generator().manual_seed(2)
    masks = {n: torch.rand(p.shape, generator=gen) > 0.5 for n, p in fast.named_parameters() if n in LAYERS}
    apply_masks(fast, masks)
    apply_masks(slow, masks)
    calls = _guard(fast, masks)
    with masked_training(fast) as masking:
        for x, y in _batches(20):
            _step(fast, fast_opt, x, y, masking.before_step, masking.after_step)
            _step(slow, slow_opt, x, y, (), [_rezero(masks)])
            _assert_state_zero(fast_opt, fast, masks)
    assert len(calls) == 2 * 20
    for (name, a), b in zip(fast.state_dict().items(), slow.state_dict().values()):
        assert torch.equal(a, b), name


def _magnitude_masks(model, masks: dict, keep: float, layers: dict = LAYERS) -> dict:
    """Keep the ``keep`` fraction of each layer's entries with the largest |w| among the alive ones."""
    out = {}
    for name, index in layers.items():
        weight = model[index].weight_orig.detach().abs().masked_fill(~masks[name], -1.0).flatten()
        k = round(keep * weight.numel())
        mask = torch.zeros(weight.numel(), dtype=torch.bool)
        mask[weight.topk(k).indices] = True
        out[name] = mask.view_as(masks[name]) & masks[name]
    return out


def _regrow(masks: dict, n: int = 7) -> dict:
    """Turn the first ``n`` pruned entries of each layer back on."""
    out = {}
    for name, mask in masks.items():
        flat = mask.flatten().clone()
        flat[(~flat).nonzero()[:n, 0]] = True
        out[name] = flat.view_as(mask)
    return out


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_masks_updated_during_training_keep_every_pruned_weight_and_its_state_zero(optimizer):
    """Gradual pruning inside one stage with one optimizer: masks shrink three times, then some entries regrow.
    At every forward the weights used are zero where pruned; after every step the optimizer state is zero there;
    the numbers are bitwise the reference's (pruning hooks, masks re-applied with apply_masks, every pruned weight
    and state entry re-zeroed after every step); a regrown entry restarts at 0 with zero state."""
    fast, slow = net(), net()
    full = {n: torch.ones_like(p, dtype=torch.bool) for n, p in fast.named_parameters() if n in LAYERS}
    apply_masks(fast, full)
    apply_masks(slow, full)
    fast_opt, slow_opt = OPTIMIZERS[optimizer](list(fast.parameters())), OPTIMIZERS[optimizer](list(slow.parameters()))
    current = dict(full)
    schedule = {10: 0.7, 20: 0.5, 30: 0.3, 40: "regrow"}
    regrown: dict = {}
    pending: dict = {}
    steps = []
    calls = _guard(fast, current)
    with masked_training(fast) as masking:

        def prune_on_schedule(model, opt):  # an after_step hook, as gradual pruning would run
            steps.append(1)
            what = schedule.get(len(steps))
            if what is None:
                return
            new = _regrow(current) if what == "regrow" else _magnitude_masks(model, current, what)
            regrown.update({n: new[n] & ~current[n] for n in new} if what == "regrow" else {})
            masking.update(new, opt)
            pending.update(new)
            current.update(new)
            if regrown and what == "regrow":  # right after the update: weight and state zero at regrown entries
                for name, index in LAYERS.items():
                    assert torch.all(model[index].weight_orig[regrown[name]] == 0)
                    for value in opt.state[model[index].weight_orig].values():
                        if torch.is_tensor(value) and value.shape == regrown[name].shape:
                            assert torch.all(value[regrown[name]] == 0)

        def reference(model, opt):  # the same masks at the same point, applied the plain way
            if pending:
                apply_masks(model, pending)
                pending.clear()
            _rezero(current)(model, opt)

        for x, y in _batches(50):
            _step(fast, fast_opt, x, y, masking.before_step, [prune_on_schedule, *masking.after_step])
            _step(slow, slow_opt, x, y, (), [reference])
            _assert_state_zero(fast_opt, fast, current)
            for (name, a), b in zip(fast.state_dict().items(), slow.state_dict().values()):
                assert torch.equal(a, b), (len(steps), name)
    assert len(calls) == 2 * 50
    assert all(regrown[n].sum() == 7 for n in LAYERS)
    assert all(fast[i].weight_orig[regrown[n]].ne(0).all() for n, i in LAYERS.items())  # they trained again
    slow_masks = current_masks(slow)
    for name, mask in current_masks(fast).items():
        assert torch.equal(mask, current[name]) and torch.equal(mask, slow_masks[name])
        assert density({name: mask}) < 0.5
    x = torch.randn(8, 20)
    assert torch.equal(fast(x), slow(x)) and torch.equal(folded(fast)(x), folded(slow)(x))
    assert list(fast.state_dict()) == list(slow.state_dict())


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_regrown_entry_takes_the_step_of_a_zero_weight_with_zero_state(optimizer):
    """The first step after regrowth, in closed form from its gradient g: SGD (Nesterov, μ = 0.9, decay on a zero
    weight adds nothing) moves it by -lr·(1 + μ)·g; Adam at the tensor's step count t by
    -lr·m̂/(√v̂ + ε) with m̂ = (1 - β1)·g/(1 - β1^t), v̂ = (1 - β2)·g²/(1 - β2^t)."""
    model = net()
    gen = torch.Generator().manual_seed(2)
    masks = {n: torch.rand(p.shape, generator=gen) > 0.5 for n, p in model.named_parameters() if n in LAYERS}
    apply_masks(model, masks)
    opt = OPTIMIZERS[optimizer](list(model.parameters()))
    batches = _batches(12)
    with masked_training(model) as masking:
        for x, y in batches[:10]:
            _step(model, opt, x, y, masking.before_step, masking.after_step)
        grown = _regrow(masks)
        masking.update(grown, opt)
        grads = {}

        def keep_grad(m):
            grads.update({n: m[i].weight_orig.grad.clone() for n, i in LAYERS.items()})

        _step(model, opt, *batches[10], [*masking.before_step, keep_grad], masking.after_step)
    for name, index in LAYERS.items():
        entries = grown[name] & ~masks[name]
        g = grads[name][entries]
        assert g.abs().min() > 0  # the regrown entries got a gradient (else the check proves nothing)
        if optimizer == "sgd":
            expected = -0.1 * (1 + 0.9) * g
        else:
            t = float(opt.state[model[index].weight_orig]["step"])
            (b1, b2), eps = opt.defaults["betas"], opt.defaults["eps"]
            m_hat = (1 - b1) * g / (1 - b1**t)
            v_hat = (1 - b2) * g**2 / (1 - b2**t)
            expected = -0.01 * m_hat / (v_hat.sqrt() + eps)
        torch.testing.assert_close(model[index].weight_orig.detach()[entries], expected, rtol=1e-5, atol=0)


class Interrupt(Exception):
    pass


CONV_LAYERS = {"0.weight": 0, "3.weight": 3}


def _gradual(optimizer: str, checkpoint, *, interrupt_at=None, resume_from=None, history=None):
    """A small conv net trained channels-last by the real loop (which builds the optimizer itself and moves the model
    to NHWC after masked_training began), pruned during training by an after_step hook: masks shrink at iterations
    10, 35 and 60 and regrow at 70 of 87. ``history`` collects the masks of each update; a resumed run starts from the
    masks the checkpoint holds."""
    from datasets import build_dataset
    from datasets.config import DatasetConfig
    from foundations.training import Hooks, TrainConfig, train

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 8 * 8, 4))
    full = {n: torch.ones_like(model.get_parameter(n), dtype=torch.bool) for n in CONV_LAYERS}
    apply_masks(model, full)
    data = build_dataset(DatasetConfig(name="synthetic", val_size=200))
    cfg = TrainConfig(
        optimizer=optimizer,
        lr=0.05 if optimizer == "sgd" else 0.005,
        nesterov=True,
        weight_decay=1e-2,
        epochs=3,
        batch_size=64,
        channels_last=True,
    )
    current = dict(full)
    if resume_from is not None:
        current.update(history[max(i for i in history if i <= resume_from)])
    iteration = [resume_from or 0]
    calls = _guard(model, current, CONV_LAYERS)
    with masked_training(model) as masking:

        def prune_on_schedule(m, opt):
            iteration[0] += 1
            what = {10: 0.6, 35: 0.4, 60: 0.25, 70: "regrow"}.get(iteration[0])
            if what is not None:
                new = _regrow(current) if what == "regrow" else _magnitude_masks(m, current, what, CONV_LAYERS)
                masking.update(new, opt)
                current.update(new)
                if history is not None:
                    history[iteration[0]] = dict(new)

        def check(m, opt):
            assert m[0].weight_orig.is_contiguous(memory_format=torch.channels_last)  # the loop's layout
            _assert_state_zero(opt, m, current, CONV_LAYERS)

        def on_eval(row):
            if interrupt_at is not None and row["epoch"] >= interrupt_at:
                raise Interrupt

        outcome = train(
            model,
            data,
            cfg,
            data_seed=0,
            device=torch.device("cpu"),
            hooks=Hooks(masking.before_step, [prune_on_schedule, *masking.after_step, check]),
            checkpoint=checkpoint,
            on_eval=on_eval,
            progress=False,
        )
    assert calls
    return model, outcome, current


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_pruning_during_training_in_the_real_loop_survives_a_resume(tmp_path, optimizer):
    """The loop's own optimizer (SGD with Nesterov momentum and decay; Adam with decay) reaches the pruning hook
    through ``after_step``; the loop replaces the conv masks' buffers when it goes channels-last and again when a
    checkpoint is loaded. Killed in epoch 2 and resumed from epoch 1's checkpoint (the masks of iteration 10 in it),
    the run ends bitwise where the straight one does."""
    history: dict = {}
    straight, outcome, masks = _gradual(optimizer, None, history=history)
    assert sorted(history) == [10, 35, 60, 70]
    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(Interrupt):
        _gradual(optimizer, checkpoint, interrupt_at=2)
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["iteration"] == 29 and not torch.equal(saved["model"]["0.weight_mask"], torch.ones(6, 1, 3, 3))
    resumed, again, resumed_masks = _gradual(optimizer, checkpoint, resume_from=29, history=history)
    assert again.metrics == outcome.metrics
    for (name, a), b in zip(resumed.state_dict().items(), straight.state_dict().values()):
        assert torch.equal(a, b), name
    for name, mask in current_masks(straight).items():
        assert torch.equal(mask, masks[name]) and torch.equal(mask, resumed_masks[name])
        assert torch.all(folded(straight).get_parameter(name)[~mask] == 0)


def test_update_refuses_what_it_cannot_keep_zero():
    model, masks = _masked_net()
    with masked_training(model) as masking:
        with pytest.raises(ValueError, match="had no mask when the stage began"):
            masking.update({"0.bias": torch.ones(30, dtype=torch.bool)}, None)
        with pytest.raises(ValueError, match="shape"):
            masking.update({"0.weight": torch.ones(3, dtype=torch.bool)}, None)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        opt.state[model[0].weight_orig]["factored"] = torch.zeros(30)  # a row factor (Adafactor-like)
        with pytest.raises(ValueError, match="cannot be kept zero"):
            masking.update({"0.weight": masks["0.weight"]}, opt)


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
