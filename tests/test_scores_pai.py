"""Pruning at initialization, the score functions: SynFlow against path products computed by enumeration and by
matrix products, its conservation laws; GraSP's Hg against torch.autograd.functional.hvp and finite differences, its
three sign conventions; exact-count selection against a stable sort; layer collapse and critical compression against
a rank argument; GMP's cubic schedule against the expanded polynomial."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from foundations.errors import UserError
from methods.grasp import class_balanced
from methods.pipeline.collapse import compression_grid, critical_compression, kept_per_layer, layer_collapse
from methods.pipeline.schedules import cubic_sparsity, magnitude_update, update_steps
from methods.pipeline.scores.grasp import hessian_gradient
from methods.pipeline.scores.synflow import iterative_synflow, synflow_scores
from methods.pipeline.select import _keep_top, select

DT = torch.float64


def mlp(widths, seed=0, bias=False, bn=False, dtype=DT):
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(widths) - 2:
            layers += [nn.BatchNorm1d(b)] if bn else []
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).to(dtype)


def linears(model):
    return [(f"{i}.weight", m) for i, m in enumerate(model) if isinstance(m, nn.Linear)]


# ------------------------------------------------------------------------------------------------- selection
def test_exact_count_selection_is_the_head_of_a_stable_descending_sort():
    gen = torch.Generator().manual_seed(0)
    for _ in range(500):
        n = int(torch.randint(1, 80, (1,), generator=gen))
        scores = torch.randint(0, 4, (n,), generator=gen).float()  # many ties
        alive = torch.rand(n, generator=gen) > 0.3
        keep = int(torch.randint(0, n + 1, (1,), generator=gen))
        flat = torch.where(alive, scores.double(), torch.tensor(-math.inf, dtype=DT))
        want = torch.zeros(n, dtype=torch.bool)
        want[torch.argsort(flat, descending=True, stable=True)[:keep]] = True
        assert torch.equal(_keep_top(scores, alive, keep), want)


# ------------------------------------------------------------------------------------------------- SynFlow
def path_scores(weights: list[np.ndarray]) -> list[np.ndarray]:
    """Σ over every input→output path through each weight of the product of |w| on the path, by enumeration."""
    absw = [np.abs(w) for w in weights]  # w[l] has shape (out, in)
    sizes = [absw[0].shape[1]] + [w.shape[0] for w in absw]
    out = [np.zeros_like(w) for w in absw]
    for path in itertools.product(*(range(s) for s in sizes)):
        product = math.prod(absw[layer][path[layer + 1], path[layer]] for layer in range(len(absw)))
        for layer in range(len(absw)):
            out[layer][path[layer + 1], path[layer]] += product
    return out


def matrix_scores(weights: list[np.ndarray], scale: list[float] | None = None) -> list[np.ndarray]:
    """The same sums by products: S_l[i, j] = (1ᵀ A_L … A_{l+1})_i |w_l[i, j]| (A_{l-1} … A_1 1)_j, A = |W|
    (optionally times a per-hidden-layer constant, the eval-mode BN at its initial statistics)."""
    absw = [np.abs(w) for w in weights]
    scale = scale or [1.0] * (len(absw) - 1)
    forward = [np.ones(absw[0].shape[1])]
    for layer, a in enumerate(absw[:-1]):
        forward.append(scale[layer] * (a @ forward[-1]))
    backward = [np.ones(absw[-1].shape[0])]
    for layer in range(len(absw) - 1, 0, -1):
        backward.insert(0, scale[layer - 1] * (absw[layer].T @ backward[0]))
    return [np.outer(backward[layer], forward[layer]) * absw[layer] for layer in range(len(absw))]


def test_synflow_scores_are_the_path_products_by_enumeration():
    model = mlp([3, 4, 3, 2])
    names = [n for n, _ in linears(model)]
    got = synflow_scores(model, names, (3,))
    want = path_scores([m.weight.detach().numpy() for _, m in linears(model)])
    for n, w in zip(names, want):
        np.testing.assert_allclose(got[n].numpy(), w, rtol=1e-13)


def test_synflow_scores_are_the_matrix_products_with_bn_at_init_and_leave_the_model_alone():
    model = mlp([12, 9, 7, 5, 4], seed=1, bn=True)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    names = [n for n, _ in linears(model)]
    got = synflow_scores(model, names, (12,))
    bn = 1 / math.sqrt(1 + 1e-5)  # eval-mode BN with mean 0, variance 1, γ = 1, β = 0
    want = matrix_scores([m.weight.detach().numpy() for _, m in linears(model)], [bn] * 3)
    for n, w in zip(names, want):
        np.testing.assert_allclose(got[n].numpy(), w, rtol=1e-12)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and model.training


def test_synflow_is_conserved_per_layer_and_per_neuron():
    model = mlp([20, 16, 12, 8, 5], seed=2)
    names = [n for n, _ in linears(model)]
    scores = synflow_scores(model, names, (20,))
    sums = [float(scores[n].sum()) for n in names]
    assert max(sums) - min(sums) <= 1e-12 * max(sums)  # every layer carries the whole flow R
    for into, out in zip(names, names[1:]):  # hidden neuron j: Σ_i S(w_ji) into it = Σ_k S(w_kj) out of it
        torch.testing.assert_close(scores[into].sum(1), scores[out].sum(0), rtol=1e-12, atol=0)
    assert all(float(s.min()) > 0 for s in scores.values())


def test_clamped_relus_are_scored_as_relus():
    relu = mlp([30, 20, 10, 3], seed=7)
    clamped = mlp([30, 20, 10, 3], seed=7)
    clamped[2], clamped[4] = nn.ReLU6(), nn.Hardtanh(0, 6)  # path sums reach ~30: the clamps would cut the flow
    names = [n for n, _ in linears(relu)]
    want = synflow_scores(relu, names, (30,))
    got = synflow_scores(clamped, names, (30,))
    assert all(torch.equal(got[n], want[n]) for n in names)
    assert isinstance(clamped[2], nn.ReLU6)  # the model itself is untouched


def test_nonzero_biases_break_conservation_as_in_the_released_code():
    model = mlp([10, 8, 6, 3], seed=3, bias=True)
    names = [n for n, _ in linears(model)]
    sums = [float(synflow_scores(model, names, (10,))[n].sum()) for n in names]
    assert max(sums) - min(sums) > 1e-3 * max(sums)


def test_synflow_scores_pruned_weights_zero_and_refuses_float32_underflow():
    model = mlp([6, 5, 4], seed=4)
    with torch.no_grad():
        model[1].weight[:, :2] = 0.0
    scores = synflow_scores(model, [n for n, _ in linears(model)], (6,))
    assert bool((scores["1.weight"][:, :2] == 0).all()) and bool((scores["1.weight"][:, 2:] > 0).all())
    deep = mlp([4] * 41, seed=5, dtype=torch.float32)
    with torch.no_grad():
        for _, m in linears(deep):
            m.weight.mul_(1e-3)  # R ≈ 4^41 · 1e-123: below float32's range, fine in float64
    names = [n for n, _ in linears(deep)]
    with pytest.raises(UserError, match=r"^method.precision: every synaptic-flow score of .* is 0"):
        synflow_scores(deep, names, (4,), torch.float32)
    assert all(float(s.min()) > 0 for s in synflow_scores(deep, names, (4,), torch.float64).values())


def test_iterative_synflow_follows_the_exponential_schedule_on_rescored_survivors():
    model = mlp([10, 8, 6, 4], seed=6)
    names = [n for n, _ in linears(model)]
    total, n_iter, density = sum(m.weight.numel() for _, m in linears(model)), 5, 0.1

    def choose(scores, alive, k):  # keep the top d^{k/n} of all weights, among survivors
        return select(scores, alive, scope="global", layer_targets={}, global_target=density ** (k / n_iter))

    full = {n: torch.ones_like(m.weight, dtype=torch.bool) for n, m in linears(model)}
    got = iterative_synflow(model, full, choose, n_iter, (10,))
    # reference: the closed form on the masked weights, top-k by numpy (no tie at any cut, checked)
    weights = [m.weight.detach().numpy() for _, m in linears(model)]
    alive = [np.ones_like(w, dtype=bool) for w in weights]
    for k in range(1, n_iter + 1):
        scores = matrix_scores([w * a for w, a in zip(weights, alive)])
        flat = np.concatenate([np.where(a, s, -np.inf).ravel() for s, a in zip(scores, alive)])
        count = round(density ** (k / n_iter) * total)
        order = np.sort(flat)[::-1]
        assert order[count - 1] > order[count], f"tie at the cut of iteration {k}"
        kept = flat >= order[count - 1]
        parts = np.split(kept, np.cumsum([w.size for w in weights])[:-1])
        alive = [part.reshape(w.shape) for part, w in zip(parts, weights)]
    for n, a in zip(names, alive):
        assert np.array_equal(got[n].numpy(), a), n
    assert sum(int(m.sum()) for m in got.values()) == round(density * total)


# ------------------------------------------------------------------------------------------------- GraSP
def grasp_setup(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    model = model.to(DT).train()  # train-mode BN, as the official code scores
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(16, 6, generator=g, dtype=DT), torch.randint(0, 3, (16,), generator=g)
    names = ["0.weight", "3.weight", "5.weight"]
    return model, names, [(x[:8], y[:8]), (x[8:], y[8:])]


def flat_loss(model, names, halves, temperature):
    """Σ_halves CE(f(x)/T, y) as a function of the concatenated named weights (everything else fixed)."""
    params = dict(model.named_parameters())
    shapes = [params[n].shape for n in names]
    fixed = {k: v.detach() for k, v in model.state_dict().items() if k not in names}

    def loss(theta):
        parts = dict(zip(names, (t.view(s) for t, s in zip(theta.split([math.prod(s) for s in shapes]), shapes))))
        state = {**fixed, **parts}
        return sum(F.cross_entropy(functional_call(model, state, (x,)) / temperature, y) for x, y in halves)

    theta = torch.cat([params[n].detach().flatten() for n in names])
    return loss, theta, shapes


@pytest.mark.parametrize("temperature", [1.0, 200.0])
def test_grasp_hg_equals_autograd_hvp_and_finite_differences(temperature):
    model, names, halves = grasp_setup()
    got = hessian_gradient(model, names, halves, temperature)
    got_flat = torch.cat([got[n].flatten() for n in names])
    loss, theta, _ = flat_loss(model, names, halves, temperature)
    theta_leaf = theta.clone().requires_grad_(True)
    g = torch.autograd.grad(loss(theta_leaf), theta_leaf)[0]
    _, hvp = torch.autograd.functional.hvp(loss, theta, g)
    torch.testing.assert_close(got_flat, hvp, rtol=1e-10, atol=1e-14)
    eps = 1e-6 * float(theta.norm() / g.norm())

    def gradient(t):
        leaf = t.clone().requires_grad_(True)
        return torch.autograd.grad(loss(leaf), leaf)[0]

    finite = (gradient(theta + eps * g) - gradient(theta - eps * g)) / (2 * eps)
    torch.testing.assert_close(got_flat, finite, rtol=1e-5, atol=1e-6 * float(hvp.abs().max()))
    assert float(hvp.abs().max()) > 0


def test_grasp_sign_conventions_of_the_official_code_synaptic_flow_and_lubana_give_one_mask():
    model, names, halves = grasp_setup(seed=1)
    hg = hessian_gradient(model, names, halves)
    params = dict(model.named_parameters())
    theta = torch.cat([params[n].detach().flatten() for n in names])
    hgf = torch.cat([hg[n].flatten() for n in names])
    total, sparsity = theta.numel(), 0.7
    remove = round(sparsity * total)
    # official pruner/GraSP.py: −θ⊙Hg normalized by |Σ| + eps, remove the `remove` largest
    official = -theta * hgf
    official = official / (official.sum().abs() + 1e-10)
    keep_official = torch.ones(total, dtype=torch.bool)
    keep_official[torch.topk(official, remove).indices] = False
    # Synaptic-Flow: θ⊙Hg (normalized), remove the smallest; Lubana & Dick `grasp`: θ·Hg, remove the smallest
    for score in (theta * hgf / (theta * hgf).sum().abs(), theta * hgf):
        keep = torch.ones(total, dtype=torch.bool)
        keep[torch.topk(score, remove, largest=False).indices] = False
        assert torch.equal(keep, keep_official)
    # prunelab: scores θ⊙Hg, higher = keep, exact count
    scores = {n: params[n].detach() * hg[n] for n in names}
    alive = {n: torch.ones_like(s, dtype=torch.bool) for n, s in scores.items()}
    ours = select(scores, alive, scope="global", layer_targets={}, global_target=1 - sparsity)
    assert torch.equal(torch.cat([ours[n].flatten() for n in names]), keep_official)


def test_grasp_leaves_the_models_parameters_and_flags_alone_but_not_train_mode_bn_statistics():
    model, names, halves = grasp_setup(seed=2)
    params = {k: v.clone() for k, v in model.named_parameters()}
    model[3].weight.requires_grad_(False)
    hessian_gradient(model, names, halves)
    assert all(torch.equal(params[k], v) for k, v in model.named_parameters())
    assert not model[3].weight.requires_grad and all(p.grad is None for p in model.parameters())
    assert model[1].num_batches_tracked.item() == 4  # two passes over two halves: why GraSP scores a copy


def test_class_balanced_takes_the_first_examples_of_each_class_in_the_shuffled_order(tmp_path):
    from datasets import build_dataset
    from tests.conftest import make_run

    run = make_run(
        tmp_path,
        "dataset=synthetic",
        "dataset.input_shape=[1,4,4]",
        "dataset.num_train=300",
        "dataset.val_size=50",
    )
    data = build_dataset(run.dataset)
    x, y = class_balanced(data.train, 3, data.num_classes, seed=5)
    assert y.tolist() == [c for c in range(data.num_classes) for _ in range(3)]
    stream = [(a, int(b)) for xb, yb in data.train.batches(7, shuffle=True, seed=5) for a, b in zip(xb, yb)]
    for c in range(data.num_classes):
        first = [a for a, b in stream if b == c][:3]
        assert torch.equal(x[y == c], torch.stack(first))
    with pytest.raises(UserError, match=r"^method.samples_per_class: class \d+ has only"):
        class_balanced(data.train, 10_000, data.num_classes, seed=5)


# ------------------------------------------------------------------------------------------------- layer collapse
def test_layer_collapse_counts_only_weight_layers():
    masks = {
        "a.weight": torch.tensor([[True, False], [False, False]]),
        "a.bias": torch.zeros(2, dtype=torch.bool),  # a fully pruned bias disconnects nothing
        "b.weight": torch.tensor([[False, True, True]]),
    }
    assert kept_per_layer(masks) == {"a.weight": 1, "b.weight": 2} and not layer_collapse(masks)
    masks["b.weight"] = torch.zeros(1, 3, dtype=torch.bool)
    assert layer_collapse(masks)


def test_critical_compression_of_a_one_shot_global_score_is_set_by_the_weakest_layers_best_weight():
    gen = torch.Generator().manual_seed(0)
    sizes = {"l1.weight": (40, 50), "l2.weight": (20, 40), "l3.weight": (5, 20)}
    # layer 1's scores are small: it is the first to lose its last weight under a global threshold
    scores = {n: torch.rand(s, generator=gen) * (0.05 if n == "l1.weight" else 1.0) for n, s in sizes.items()}
    alive = {n: torch.ones(s, dtype=torch.bool) for n, s in sizes.items()}
    total = sum(math.prod(s) for s in sizes.values())

    def masks_at(density):
        return select(scores, alive, scope="global", layer_targets={}, global_target=density)

    grid = compression_grid(alive)
    assert grid == [10 ** (k / 4) for k in range(len(grid))] and grid[-1] <= total / 3 < 10 ** (len(grid) / 4)
    # every layer keeps a weight iff the global count reaches the rank of the weakest layer's best weight
    flat = torch.cat([s.flatten() for s in scores.values()])
    needed = max(int((flat >= s.max()).sum()) for s in scores.values())
    expected = max(rho for rho in grid if round(total / rho) >= needed)
    assert critical_compression(masks_at, grid) == expected < grid[-1]


# ------------------------------------------------------------------------------------------------- GMP schedule
def test_cubic_sparsity_at_every_step_is_zhu_and_gupta_eq_1():
    s_i, s_f, t0, n, dt = 0.1, 0.9, 7, 5, 3
    steps = update_steps(t0, n, dt)
    assert steps == [7, 10, 13, 16, 19, 22]
    for step in range(0, 40):
        if step < t0:
            want = 0.0
        else:
            x = min((step - t0) // dt, n) / n  # the last update's progress
            want = s_f + (s_i - s_f) * (1 - 3 * x + 3 * x * x - x * x * x)  # (1 − x)³ expanded
        assert cubic_sparsity(step, s_i, s_f, t0, n, dt) == pytest.approx(want, abs=1e-15), step
    assert cubic_sparsity(22, s_i, s_f, t0, n, dt) == s_f and cubic_sparsity(13, 0, 0.9, t0, n, dt) == pytest.approx(
        0.9 * (1 - 0.6**3)
    )
    with pytest.raises(UserError, match=r"^s_i, s_f:"):
        cubic_sparsity(0, 0.5, 0.2, 0, 1, 1)
    with pytest.raises(UserError, match=r"^t0, n, dt:"):
        update_steps(0, 0, 1)


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_gmp_updates_are_nested_and_land_on_the_target_exactly(scope):
    gen = torch.Generator().manual_seed(0)
    weights = {"a.weight": torch.randn(30, 20, generator=gen), "b.weight": torch.randn(10, 30, generator=gen)}
    alive = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    s_f, t0, n, dt = 0.93, 2, 6, 4
    for step in update_steps(t0, n, dt):
        weights = {
            k: (w + 0.3 * torch.randn(w.shape, generator=gen)) * alive[k] for k, w in weights.items()
        }  # training
        new = magnitude_update(weights, alive, cubic_sparsity(step, 0.0, s_f, t0, n, dt), scope)
        assert all(bool((new[k] <= alive[k]).all()) for k in alive)  # a pruned weight never returns
        alive = new
    sizes = {k: w.numel() for k, w in weights.items()}
    if scope == "global":
        assert sum(int(m.sum()) for m in alive.values()) == round((1 - s_f) * sum(sizes.values()))
    else:
        assert {k: int(m.sum()) for k, m in alive.items()} == {k: round((1 - s_f) * v) for k, v in sizes.items()}
