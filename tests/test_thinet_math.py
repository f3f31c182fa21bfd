"""ThiNet's math (methods/pipeline/channels/reconstruction.py; Luo et al. 2017 §3)."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from methods.pipeline.channels.reconstruction import (
    collect_contributions,
    greedy_channel_selection,
    least_squares_scale,
    reconstruction_error,
)


def objective(X, T):
    s = X[:, list(T)].sum(1) if T else torch.zeros(X.shape[0], dtype=X.dtype)
    return float((s * s).sum())


def brute_force(X, k):
    return min(itertools.combinations(range(X.shape[1]), k), key=lambda T: objective(X, T))


def greedy_reference(X, n_remove):
    """Alg. 1 written as plainly as possible: try every remaining channel, keep the best."""
    X = X.double()
    T = []
    for _ in range(n_remove):
        best, best_value = None, None
        for j in range(X.shape[1]):
            if j in T:
                continue
            value = objective(X, T + [j])
            if best_value is None or value < best_value:
                best, best_value = j, value
        T.append(best)
    return T


# --- greedy selection -------------------------------------------------------------------------------------------


def test_channels_that_contribute_nothing_are_removed_first():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(500, 10, generator=gen)
    X[:, [2, 5, 7]] = 0
    assert greedy_channel_selection(X, 3) == [2, 5, 7]
    assert set(greedy_channel_selection(X, 5)[:3]) == {2, 5, 7}


@pytest.mark.parametrize("seed", range(4))
def test_greedy_equals_brute_force_for_uncorrelated_channels(seed):
    # Orthogonal columns with distinct energies: the objective of T is Σ_{j∈T} e_j², so the optimum (the k smallest
    # energies) is what greedy must find; brute force over all C(8, 3) = 56 subsets checks it independently.
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(200, 8, generator=gen, dtype=torch.float64))
    energies = torch.randperm(8, generator=gen).double() + 1.0
    X = Q * energies
    greedy = greedy_channel_selection(X, 3)
    assert set(greedy) == set(brute_force(X, 3))
    assert greedy == sorted(greedy, key=lambda j: energies[j].item())  # in order of increasing energy


def test_greedy_versus_brute_force_on_random_correlated_data(record_property):
    """Greedy is not optimal in general; report how close it gets and check what must hold."""
    ratios = []
    for seed in range(10):
        gen = torch.Generator().manual_seed(seed)
        mix = torch.randn(8, 8, generator=gen, dtype=torch.float64)
        X = torch.randn(300, 8, generator=gen, dtype=torch.float64) @ mix  # correlated channels
        greedy = greedy_channel_selection(X, 3)
        optimum = objective(X, brute_force(X, 3))
        assert objective(X, greedy) >= optimum - 1e-9  # brute force is the optimum
        assert greedy[0] == brute_force(X, 1)[0]  # the first greedy step is exact
        ratios.append(objective(X, greedy) / optimum)
    record_property("greedy_over_bruteforce", ratios)
    print(
        f"greedy/brute-force objective ratio, C=8, |T|=3, 10 seeds: min {min(ratios):.3f} "
        f"mean {sum(ratios) / len(ratios):.3f} max {max(ratios):.3f}; optimal in {sum(r < 1 + 1e-9 for r in ratios)}/10"
    )


@pytest.mark.parametrize("seed", range(3))
def test_vectorized_greedy_equals_plain_loop_reference(seed):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(400, 12, generator=gen) @ torch.randn(12, 12, generator=gen)
    assert greedy_channel_selection(X, 12) == greedy_reference(X, 12)
    assert greedy_channel_selection(X, 0) == []
    with pytest.raises(ValueError):
        greedy_channel_selection(X, 13)


# --- contributions ----------------------------------------------------------------------------------------------


CONVS = [
    dict(kernel_size=3, stride=1, padding=0),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)),
    dict(kernel_size=3, stride=1, padding=2, dilation=2, groups=2),
    dict(kernel_size=5, stride=1, padding="same"),
]


@pytest.mark.parametrize("kw", CONVS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_conv_contributions_are_each_channels_share_of_the_output(kw):
    gen = torch.Generator().manual_seed(0)
    C = 6
    conv = nn.Conv2d(C, 4, bias=True, **kw).double()
    x = torch.randn(5, C, 9, 8, generator=gen, dtype=torch.float64)
    X, y, loc = collect_contributions(conv, x, 7, torch.Generator().manual_seed(1), return_locations=True)
    assert X.shape == (35, C) and y.shape == (35,)
    n, o, h, w = loc.unbind(1)
    with torch.no_grad():
        full = conv(x)  # the real layer, with its bias
        torch.testing.assert_close(y, full[n, o, h, w] - conv.bias[o], rtol=0, atol=1e-12)
        torch.testing.assert_close(X.sum(1), y, rtol=0, atol=1e-12)
        for c in range(C):  # x̂_c = the output with every other input channel silenced
            only_c = torch.zeros_like(x)
            only_c[:, c] = x[:, c]
            alone = F.conv2d(only_c, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
            torch.testing.assert_close(X[:, c], alone[n, o, h, w], rtol=0, atol=1e-12)


def test_contributions_are_reproducible_and_cover_all_positions():
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1)
    x = torch.randn(40, 3, 8, 8)
    a = collect_contributions(conv, x, 10, torch.Generator().manual_seed(3), return_locations=True)
    b = collect_contributions(conv, x, 10, torch.Generator().manual_seed(3), return_locations=True)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    loc = a[2]
    assert loc.shape == (400, 4) and torch.equal(loc[:, 0].bincount(), torch.full((40,), 10))
    assert set(loc[:, 2].tolist()) == set(range(4)) and set(loc[:, 1].tolist()) == set(range(5))
    torch.testing.assert_close(a[0].sum(1), a[1], rtol=1e-5, atol=1e-5)  # float32


def test_linear_contributions_including_a_flatten():
    gen = torch.Generator().manual_seed(0)
    fc = nn.Linear(10, 4).double()
    x = torch.randn(6, 10, generator=gen, dtype=torch.float64)
    X, y, loc = collect_contributions(fc, x, 5, torch.Generator().manual_seed(1), return_locations=True)
    n, o = loc.unbind(1)
    torch.testing.assert_close(X, fc.weight.detach()[o] * x[n], rtol=0, atol=1e-12)
    torch.testing.assert_close(y, (fc(x) - fc.bias)[n, o].detach(), rtol=0, atol=1e-12)
    # LeNet-5's conv2 → flatten → fc1: channel c owns features c·16 … c·16+15
    fc1 = nn.Linear(50 * 16, 7).double()
    maps = torch.randn(3, 50, 4, 4, generator=gen, dtype=torch.float64)
    X, y, loc = collect_contributions(fc1, maps, 4, torch.Generator().manual_seed(2), return_locations=True)
    n, o = loc.unbind(1)
    assert X.shape == (12, 50)
    with torch.no_grad():
        torch.testing.assert_close(y, (fc1(maps.flatten(1)) - fc1.bias)[n, o], rtol=0, atol=1e-10)
        c = 17
        only_c = torch.zeros_like(maps)
        only_c[:, c] = maps[:, c]
        torch.testing.assert_close(X[:, c], F.linear(only_c.flatten(1), fc1.weight)[n, o], rtol=0, atol=1e-12)


# --- least squares ----------------------------------------------------------------------------------------------


def test_least_squares_rescale_lowers_the_reconstruction_error():
    gen = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(16, 8, 3, padding=1)
    x = torch.relu(torch.randn(30, 16, 8, 8, generator=gen) + 0.3)  # nonnegative, like post-ReLU activations
    X, y = collect_contributions(conv, x, 20, torch.Generator().manual_seed(1))
    removed = greedy_channel_selection(X, 8)
    kept = sorted(set(range(16)) - set(removed))
    w = least_squares_scale(X[:, kept], y)
    assert w.dtype == torch.float64 and w.shape == (8,)
    plain, rescaled = reconstruction_error(X, y, kept), reconstruction_error(X, y, kept, w)
    assert rescaled < plain
    # ŵ is the least-squares optimum: the normal equations hold (gradient zero)
    Xk = X[:, kept].double()
    torch.testing.assert_close(Xk.T @ (y.double() - Xk @ w), torch.zeros(8, dtype=torch.float64), rtol=0, atol=1e-6)


def test_least_squares_recovers_a_planted_scale_and_handles_rank_deficiency():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(200, 4, generator=gen, dtype=torch.float64)
    true = torch.tensor([0.5, 2.0, -1.0, 1.5], dtype=torch.float64)
    torch.testing.assert_close(least_squares_scale(X, X @ true), true)
    X[:, 3] = X[:, 2]  # duplicated channel: minimum-norm solution splits the weight
    w = least_squares_scale(X, X[:, :3] @ true[:3])
    torch.testing.assert_close(X @ w, X[:, :3] @ true[:3])


def test_pruning_and_rescaling_the_next_layer_reproduces_the_fitted_output():
    """How a method applies the result: drop input channels T of layer i+1 and scale kept slices by ŵ."""
    gen = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(8, 6, 3, stride=2, padding=1).double()
    x = torch.randn(10, 8, 7, 7, generator=gen, dtype=torch.float64)
    X, y, loc = collect_contributions(conv, x, 15, torch.Generator().manual_seed(1), return_locations=True)
    kept = sorted(set(range(8)) - set(greedy_channel_selection(X, 3)))
    w = least_squares_scale(X[:, kept], y)
    small = nn.Conv2d(5, 6, 3, stride=2, padding=1).double()
    with torch.no_grad():
        small.weight.copy_(conv.weight[:, kept] * w.view(1, -1, 1, 1))
        small.bias.copy_(conv.bias)
        n, o, h, ww = loc.unbind(1)
        got = (small(x[:, kept]) - small.bias.view(1, -1, 1, 1))[n, o, h, ww]
    torch.testing.assert_close(got, X[:, kept] @ w, rtol=0, atol=1e-10)
    assert float(((y - got) ** 2).sum()) == pytest.approx(reconstruction_error(X, y, kept, w), rel=1e-9)
