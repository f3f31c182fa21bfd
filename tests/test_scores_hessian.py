"""OBD Hessian-diagonal estimators against independently computed answers (LeCun et al. 1990 §2).

References: the full autograd Hessian of the mean loss (``torch.autograd.functional.hessian``), the explicit GGN
(mean J_nᵀ H_ℓ J_n from full Jacobians), an explicit-loop implementation of LeCun et al.'s recursion, and plain
per-example loops. Everything is float64 so that "exact" means agreement to ~1e-10.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from foundations.errors import UserError
from methods.pipeline.scores import ESTIMATORS, hessian_diagonal, obd_saliency, predicted_loss_increase

DT = torch.float64


# ---------------------------------------------------------------------------------------------------- models, data


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)).to(DT)


def convnet(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3)).to(DT)


def strided_convnet(seed=0):
    """Dilation, padding, stride, 'valid', and a grouped conv (which takes the generic path even with fast_path)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=2, dilation=2),
        nn.ReLU(),
        nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2),
        nn.ReLU(),
        nn.Conv2d(4, 3, 2, stride=(1, 2), padding="valid"),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(18, 3),
    ).to(DT)


def randomize_bn(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g, dtype=DT) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=g, dtype=DT) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.randn(n, generator=g, dtype=DT))
                m.bias.copy_(torch.randn(n, generator=g, dtype=DT) * 0.2)
    return model


def bn_tanh_net(seed=0):
    """BN (eval) + tanh: the true Hessian diagonal differs from the GGN's, so the GGN comparison has teeth."""
    torch.manual_seed(seed)
    return randomize_bn(nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 3)).to(DT))


def bn_convnet(seed=0):
    torch.manual_seed(seed)
    return randomize_bn(
        nn.Sequential(
            nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3)
        ).to(DT)
    )


def data(n, shape, seed=0, classes=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=DT), torch.randint(0, classes, (n,), generator=g)


def batched(x, y, size):
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def scored(model, weights_only=False):
    return {n: p for n, p in model.named_parameters() if not weights_only or n.endswith("weight")}


# ---------------------------------------------------------------------------------------------------- references


class Flat:
    """The scored parameters as one flat vector, with the rest of the model fixed."""

    def __init__(self, model, names):
        self.model, self.names = model, names
        named = dict(model.named_parameters())
        self.shapes = [named[n].shape for n in names]
        self.base = {**{n: p.detach() for n, p in named.items()}, **dict(model.named_buffers())}
        self.flat0 = torch.cat([named[n].detach().reshape(-1) for n in names])

    def unflatten(self, flat):
        out, i = {}, 0
        for n, s in zip(self.names, self.shapes):
            k = math.prod(s)
            out[n] = flat[i : i + k].reshape(s)
            i += k
        return out

    def logits(self, flat, x):
        return functional_call(self.model, {**self.base, **self.unflatten(flat)}, (x,))


def autograd_hessian(model, x, y, names):
    model.eval()
    f = Flat(model, names)
    hess = torch.autograd.functional.hessian(lambda w: F.cross_entropy(f.logits(w, x), y), f.flat0)
    return f.unflatten(hess.diagonal().clone()), hess


def explicit_ggn_diag(model, x, y, names):
    model.eval()
    f = Flat(model, names)
    jac = torch.autograd.functional.jacobian(lambda w: f.logits(w, x), f.flat0)  # (N, C, P)
    p = torch.softmax(f.logits(f.flat0, x), 1)
    h_loss = torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)  # (N, C, C)
    ggn = torch.einsum("ncp,ncd,ndq->pq", jac, h_loss, jac) / len(x)
    return f.unflatten(ggn.diagonal().clone())


def assert_dicts_close(got, want, rtol=1e-5, atol=1e-12):
    assert got.keys() == want.keys()
    for n in want:
        torch.testing.assert_close(got[n].to(DT), want[n].to(DT), rtol=rtol, atol=atol, msg=lambda m, n=n: f"{n}: {m}")


def rel_err(got, want):
    diff = sum(float((got[n].to(DT) - want[n].to(DT)).square().sum()) for n in want)
    norm = sum(float(want[n].to(DT).square().sum()) for n in want)
    return math.sqrt(diff / norm)


# ---------------------------------------------------------------------------------------------------- ggn_exact


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "generic-torch.func"])
@pytest.mark.parametrize(
    "net,shape", [(mlp, (6,)), (convnet, (1, 6, 6)), (strided_convnet, (1, 7, 7))], ids=["mlp", "conv", "strided-conv"]
)
def test_ggn_exact_equals_autograd_hessian_diagonal_on_relu_nets(net, shape, fast):
    model = net()
    x, y = data(20, shape)
    want, _ = autograd_hessian(model, x, y, list(scored(model)))
    got = hessian_diagonal(model, scored(model), batched(x, y, 8), chunk_size=7, fast_path=fast)
    assert_dicts_close(got, want)
    assert rel_err(got, want) < 1e-5


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "generic-torch.func"])
@pytest.mark.parametrize("net,shape", [(bn_tanh_net, (6,)), (bn_convnet, (1, 6, 6))], ids=["bn1d-tanh", "bn2d-conv"])
def test_ggn_exact_equals_explicit_ggn_with_batchnorm_in_eval_mode(net, shape, fast):
    model = net()
    model.train()  # the estimator must switch BN to running statistics itself
    x, y = data(12, shape)
    names = list(scored(model))
    got = hessian_diagonal(model, scored(model), [(x, y)], chunk_size=5, fast_path=fast)
    want = explicit_ggn_diag(model, x, y, names)
    assert_dicts_close(got, want)
    hess, _ = autograd_hessian(model, x, y, names)
    if net is bn_tanh_net:  # with tanh the Hessian has a second-order term: GGN ≠ Hessian, so the check is informative
        assert rel_err(got, hess) > 1e-3
    else:  # eval-mode BN is affine: a ReLU net stays piecewise linear in each single weight, so diag(H) = diag(GGN)
        assert_dicts_close(got, hess)


def test_ggn_exact_fast_and_generic_paths_agree_on_partial_scoring():
    model = convnet()
    x, y = data(9, (1, 6, 6))
    params = {n: p for n, p in model.named_parameters() if n in ("0.weight", "4.weight")}
    fast = hessian_diagonal(model, params, [(x, y)])
    generic = hessian_diagonal(model, params, [(x, y)], fast_path=False)
    assert set(fast) == {"0.weight", "4.weight"}
    assert_dicts_close(fast, generic, rtol=1e-10)


def test_ggn_exact_linear_with_weight_sharing_falls_back_to_generic():
    class Tokens(nn.Module):  # a Linear applied to (batch, tokens, features): per-example grads do not factorize
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 3)
            self.head = nn.Linear(6, 2)

        def forward(self, x):
            return self.head(torch.relu(self.proj(x.view(len(x), 2, 4))).flatten(1))

    torch.manual_seed(0)
    model = Tokens().to(DT)
    x, y = data(10, (8,), classes=2)
    want, _ = autograd_hessian(model, x, y, list(scored(model)))
    assert_dicts_close(hessian_diagonal(model, scored(model), [(x, y)]), want)


# ---------------------------------------------------------------------------------------------------- lecun


def lecun_reference_mlp(model, x):
    """LeCun et al. 1990 recursion (LM, diagonal) written out unit by unit for Flatten-L-ReLU-L-ReLU-L."""
    w = [model[i].weight.detach() for i in (1, 3, 5)]
    b = [model[i].bias.detach() for i in (1, 3, 5)]
    hw = [torch.zeros_like(t) for t in w]
    hb = [torch.zeros_like(t) for t in b]
    for xn in x:
        acts = [xn]  # inputs of each layer
        pre = []
        for k in range(3):
            a = [sum(w[k][i, j] * acts[-1][j] for j in range(w[k].shape[1])) + b[k][i] for i in range(w[k].shape[0])]
            pre.append(a)
            if k < 2:
                acts.append(torch.stack([max(ai, torch.zeros((), dtype=DT)) for ai in a]))
        z = torch.stack(pre[-1])
        p = torch.softmax(z, 0)
        d = [float(p[i] * (1 - p[i])) for i in range(len(p))]  # output boundary: diagonal of diag(p) − ppᵀ
        for k in (2, 1, 0):
            for i in range(w[k].shape[0]):
                hb[k][i] += d[i]
                for j in range(w[k].shape[1]):
                    hw[k][i, j] += d[i] * acts[k][j] ** 2  # ∂²E/∂w_ij² = ∂²E/∂a_i² · x_j²
            if k > 0:  # ∂²E/∂a_j² = f'(a_j)² Σ_i w_ij² ∂²E/∂a_i²
                rows, cols = w[k].shape
                d = [
                    (1.0 if pre[k - 1][j] > 0 else 0.0) * sum(float(w[k][i, j]) ** 2 * d[i] for i in range(rows))
                    for j in range(cols)
                ]
    n = len(x)
    names = ["1", "3", "5"]
    out = {f"{m}.weight": hw[k] / n for k, m in enumerate(names)}
    out.update({f"{m}.bias": hb[k] / n for k, m in enumerate(names)})
    return out


def two_conv_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3),
        nn.ReLU(),
        nn.Conv2d(2, 2, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2, stride=1),
        nn.Flatten(),
        nn.Linear(8, 3),
    ).to(DT)


def _conv_loops(x, w, b, stride, pad):
    cin, h, wd = x.shape
    xp = torch.zeros(cin, h + 2 * pad, wd + 2 * pad, dtype=DT)
    xp[:, pad : pad + h, pad : pad + wd] = x
    cout, _, k, _ = w.shape
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    a = torch.zeros(cout, ho, wo, dtype=DT)
    for co in range(cout):
        for r in range(ho):
            for s in range(wo):
                a[co, r, s] = b[co] + sum(
                    float(w[co, ci, u, v] * xp[ci, r * stride + u, s * stride + v])
                    for ci in range(cin)
                    for u in range(k)
                    for v in range(k)
                )
    return a, xp


def _conv_second_loops(d, x_padded, w, stride, pad, h_w, h_b):
    """∂²E/∂w = Σ over the positions a kernel entry touches of ∂²E/∂a² · x²;  ∂²E/∂x² = Σ w² ∂²E/∂a² (LM)."""
    cout, cin, k, _ = w.shape
    dxp = torch.zeros_like(x_padded)
    for co in range(cout):
        h_b[co] += d[co].sum()
        for r in range(d.shape[1]):
            for s in range(d.shape[2]):
                for ci in range(cin):
                    for u in range(k):
                        for v in range(k):
                            pos = (ci, r * stride + u, s * stride + v)
                            h_w[co, ci, u, v] += d[co, r, s] * x_padded[pos] ** 2
                            dxp[pos] += w[co, ci, u, v] ** 2 * d[co, r, s]
    return dxp[:, pad : dxp.shape[1] - pad, pad : dxp.shape[2] - pad]


def lecun_reference_conv(model, x):
    """Conv(3×3) - ReLU - Conv(3×3, stride 2, pad 1) - ReLU - MaxPool(2, stride 1) - Flatten - Linear, in loops."""
    c1, c2, fc = model[0], model[2], model[6]
    out = {k: torch.zeros_like(v) for k, v in scored(model).items()}
    for xn in x:
        a1, x1p = _conv_loops(xn, c1.weight, c1.bias, 1, 0)
        r1 = a1.clamp_min(0)
        a2, x2p = _conv_loops(r1, c2.weight, c2.bias, 2, 1)
        r2 = a2.clamp_min(0)
        pooled, argmax = torch.zeros(2, 2, 2, dtype=DT), {}
        for c in range(2):
            for r in range(2):
                for s in range(2):
                    window = [(float(r2[c, r + u, s + v]), (r + u, s + v)) for u in range(2) for v in range(2)]
                    pooled[c, r, s], argmax[c, r, s] = max(window, key=lambda t: t[0])
        h = pooled.reshape(-1)
        p = torch.softmax(fc.weight @ h + fc.bias, 0)
        dz = p * (1 - p)  # output boundary: the diagonal of diag(p) − ppᵀ
        out["6.bias"] += dz
        for i in range(3):
            for k in range(8):
                out["6.weight"][i, k] += dz[i] * h[k] ** 2
        dh = [sum(fc.weight[i, k] ** 2 * dz[i] for i in range(3)) for k in range(8)]
        d2 = torch.zeros(2, 3, 3, dtype=DT)
        for c in range(2):
            for r in range(2):
                for s in range(2):  # max-pool routes to the winner (windows overlap: contributions add up)
                    rr, ss = argmax[c, r, s]
                    d2[c, rr, ss] += dh[c * 4 + r * 2 + s]
        d2 = d2 * (a2 > 0)  # f'(a)² for ReLU
        d1 = _conv_second_loops(d2, x2p, c2.weight, 2, 1, out["2.weight"], out["2.bias"]) * (a1 > 0)
        _conv_second_loops(d1, x1p, c1.weight, 1, 0, out["0.weight"], out["0.bias"])
    return {k: v / len(x) for k, v in out.items()}


def bn_relu_mlp():
    return randomize_bn(nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3)).to(DT))


def lecun_reference_bn(model, x):
    """Linear(6→5) - BatchNorm1d (eval: per-unit affine) - ReLU - Linear(5→3)."""
    w1, b1, bn, w2, b2 = model[0].weight, model[0].bias, model[1], model[3].weight, model[3].bias
    inv_std = (bn.running_var + bn.eps).rsqrt()
    out = {k: torch.zeros_like(v) for k, v in scored(model).items()}
    for xn in x.detach():
        a1 = w1.detach() @ xn + b1.detach()
        xhat = (a1 - bn.running_mean) * inv_std
        a_bn = bn.weight.detach() * xhat + bn.bias.detach()
        hidden = a_bn.clamp_min(0)
        p = torch.softmax(w2.detach() @ hidden + b2.detach(), 0)
        dz = p * (1 - p)
        d_bn = torch.zeros(5, dtype=DT)
        for j in range(5):
            d_bn[j] = (1.0 if a_bn[j] > 0 else 0.0) * sum(w2[i, j].item() ** 2 * dz[i] for i in range(3))
        for i in range(3):
            out["3.bias"][i] += dz[i]
            for j in range(5):
                out["3.weight"][i, j] += dz[i] * hidden[j] ** 2
        for j in range(5):
            out["1.weight"][j] += d_bn[j] * xhat[j] ** 2
            out["1.bias"][j] += d_bn[j]
            d_a1 = d_bn[j] * (bn.weight[j].item() * inv_std[j]) ** 2
            out["0.bias"][j] += d_a1
            for k in range(6):
                out["0.weight"][j, k] += d_a1 * xn[k] ** 2
    return {k: v / len(x) for k, v in out.items()}


@pytest.mark.parametrize(
    "net,shape,reference",
    [
        (mlp, (6,), lecun_reference_mlp),
        (two_conv_net, (1, 7, 7), lecun_reference_conv),
        (bn_relu_mlp, (6,), lecun_reference_bn),
    ],
    ids=["mlp", "conv-maxpool", "batchnorm"],
)
def test_lecun_equals_explicit_loop_recursion(net, shape, reference):
    torch.manual_seed(0)
    model = net()
    x, y = data(6, shape)
    got = hessian_diagonal(model, scored(model), batched(x, y, 4), "lecun", chunk_size=5)
    model.eval()
    with torch.no_grad():
        want = reference(model, x)
    assert_dicts_close(got, want, rtol=1e-9)
    assert all(bool((v >= 0).all()) for v in got.values())


def test_lecun_is_exact_for_a_single_linear_layer_and_nonnegative_elsewhere():
    torch.manual_seed(0)
    single = nn.Sequential(nn.Flatten(), nn.Linear(6, 3)).to(DT)
    x, y = data(15, (6,))
    hess, _ = autograd_hessian(single, x, y, list(scored(single)))
    assert_dicts_close(hessian_diagonal(single, scored(single), [(x, y)], "lecun"), hess, rtol=1e-10)

    # deeper: it drops cross-unit terms, so it differs from the exact diagonal but stays ≥ 0 everywhere
    deep = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)).to(DT)
    lecun = hessian_diagonal(deep, scored(deep), [(x, y)], "lecun")
    assert all(bool((v >= 0).all()) for v in lecun.values())
    assert rel_err(lecun, hessian_diagonal(deep, scored(deep), [(x, y)])) > 1e-3


def test_lecun_follows_functional_relu_and_reshapes():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            return self.fc(self.pool(F.relu(self.conv(x))).view(len(x), -1))

    reference = convnet()
    model = Functional().to(DT)
    model.load_state_dict(
        {
            "conv.weight": reference[0].weight,
            "conv.bias": reference[0].bias,
            "fc.weight": reference[4].weight,
            "fc.bias": reference[4].bias,
        }
    )
    x, y = data(7, (1, 6, 6))
    got = hessian_diagonal(model, scored(model), [(x, y)], "lecun")
    want = hessian_diagonal(reference, scored(reference), [(x, y)], "lecun")
    for a, b in zip(("conv", "fc"), ("0", "4")):
        for kind in ("weight", "bias"):
            torch.testing.assert_close(got[f"{a}.{kind}"], want[f"{b}.{kind}"], rtol=1e-12, atol=0)


@pytest.mark.parametrize("pool", ["avg", "adaptive"])
def test_lecun_average_pooling_equals_the_same_net_with_a_fixed_depthwise_conv(pool):
    """Average pooling is a depthwise convolution with weights 1/k (the conv rule is checked against loops above)."""
    torch.manual_seed(0)
    first, head = nn.Conv2d(1, 2, 3), nn.Linear(8, 3)
    pooling = nn.AvgPool2d(2) if pool == "avg" else nn.AdaptiveAvgPool2d((2, 2))
    as_conv = nn.Conv2d(2, 2, 2, stride=2, groups=2)
    with torch.no_grad():
        as_conv.weight.fill_(0.25)
        as_conv.bias.zero_()
    model = nn.Sequential(first, nn.ReLU(), pooling, nn.Flatten(), head).to(DT)
    twin = nn.Sequential(first, nn.ReLU(), as_conv, nn.Flatten(), head).to(DT)
    x, y = data(5, (1, 6, 6))
    names = ["0.weight", "0.bias", "4.weight", "4.bias"]
    got = hessian_diagonal(model, {n: p for n, p in model.named_parameters() if n in names}, [(x, y)], "lecun")
    want = hessian_diagonal(twin, {n: p for n, p in twin.named_parameters() if n in names}, [(x, y)], "lecun")
    assert_dicts_close(got, want, rtol=1e-12)


def test_lecun_refuses_non_chain_models():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 6), nn.Linear(6, 3)

        def forward(self, x):
            return self.b(x + torch.relu(self.a(x)))

    model = Residual().to(DT)
    x, y = data(4, (6,))
    with pytest.raises(UserError, match="ggn_exact"):
        hessian_diagonal(model, scored(model), [(x, y)], "lecun")


# ---------------------------------------------------------------------------------------------------- Monte Carlo


@pytest.mark.parametrize("net,shape", [(mlp, (6,)), (convnet, (1, 6, 6))], ids=["mlp", "conv"])
def test_mc_fisher_converges_to_ggn_exact(net, shape):
    model = net()
    x, y = data(16, shape)
    exact = hessian_diagonal(model, scored(model), [(x, y)])
    gen = torch.Generator().manual_seed(123)
    mc = hessian_diagonal(model, scored(model), [(x, y)], "mc_fisher", generator=gen, mc_samples=3000)
    assert rel_err(mc, exact) < 0.05
    few = hessian_diagonal(model, scored(model), [(x, y)], "mc_fisher", generator=torch.Generator().manual_seed(1))
    assert rel_err(few, exact) > rel_err(mc, exact)  # one sample per example is a noisy estimate


@pytest.mark.parametrize("net,shape", [(mlp, (6,)), (convnet, (1, 6, 6))], ids=["mlp", "conv"])
def test_hutchinson_within_stated_tolerance_of_true_hessian_diagonal(net, shape):
    model = net()
    x, y = data(12, shape)
    names = list(scored(model))
    want, hess = autograd_hessian(model, x, y, names)
    probes = 4000
    gen = torch.Generator().manual_seed(5)
    got = hessian_diagonal(model, scored(model), [(x, y)], "hutchinson", probes=probes, generator=gen)
    # Stated tolerance (one chunk): std of entry k = sqrt(Σ_{j≠k} H_kj² / probes).
    off = hess - torch.diag(hess.diagonal())
    std = Flat(model, names).unflatten((off.square().sum(1) / probes).sqrt())
    for n in names:
        assert bool(((got[n] - want[n]).abs() <= 5 * std[n] + 1e-12).all()), n
    expected = math.sqrt(  # the relative error the stated tolerance implies
        sum(float(s.square().sum()) for s in std.values()) / sum(float(w.square().sum()) for w in want.values())
    )
    assert rel_err(got, want) < 2 * expected
    assert rel_err(got, want) < 0.15


def test_hutchinson_can_be_negative_where_the_hessian_is():
    deep = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).to(DT)
    torch.manual_seed(3)
    x, y = data(10, (6,))
    want, _ = autograd_hessian(deep, x, y, list(scored(deep)))
    assert any(bool((v < 0).any()) for v in want.values())
    got = hessian_diagonal(deep, scored(deep), [(x, y)], "hutchinson", probes=300)
    assert any(bool((v < 0).any()) for v in got.values())


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "generic-torch.func"])
@pytest.mark.parametrize("net,shape", [(mlp, (6,)), (convnet, (1, 6, 6))], ids=["mlp", "conv"])
def test_empirical_fisher_equals_looped_squared_gradients(net, shape, fast):
    model = net()
    x, y = data(11, shape)
    params = scored(model)
    want = {n: torch.zeros_like(p) for n, p in params.items()}
    for xn, yn in zip(x, y):
        grads = torch.autograd.grad(F.cross_entropy(model(xn[None]), yn[None]), list(params.values()))
        for n, g in zip(params, grads):
            want[n] += g.square() / len(x)
    got = hessian_diagonal(model, params, batched(x, y, 4), "empirical_fisher", chunk_size=3, fast_path=fast)
    assert_dicts_close(got, want, rtol=1e-10)


@pytest.mark.parametrize("estimator", ["mc_fisher", "hutchinson"])
def test_same_seed_same_result(estimator):
    model = convnet()
    x, y = data(8, (1, 6, 6))

    def run(seed):
        gen = None if seed is None else torch.Generator().manual_seed(seed)
        batches = batched(x, y, 3)
        return hessian_diagonal(model, scored(model), batches, estimator, probes=5, generator=gen, chunk_size=4)

    a, b, c = run(7), run(7), run(8)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)
    assert all(torch.equal(u, v) for u, v in zip(run(None).values(), run(None).values()))


# ---------------------------------------------------------------------------------------------------- contract


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_model_untouched_and_modes_restored(estimator):
    model = bn_convnet() if estimator != "lecun" else convnet()
    model.train()
    model[-1].bias.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    x, y = data(6, (1, 6, 6))
    out = hessian_diagonal(model, scored(model), [(x, y)], estimator, probes=2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # weights and BN running stats
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(m.training for m in model.modules())
    for n, p in model.named_parameters():
        assert out[n].shape == p.shape and out[n].dtype == p.dtype and out[n].device.type == "cpu"
        assert not out[n].requires_grad and torch.isfinite(out[n]).all()


def test_n_samples_caps_examples_and_chunking_does_not_matter():
    model = mlp()
    x, y = data(30, (6,))
    first = hessian_diagonal(model, scored(model), [(x[:13], y[:13])], chunk_size=1000)
    capped = hessian_diagonal(model, scored(model), batched(x, y, 8), n_samples=13, chunk_size=3, progress=True)
    assert_dicts_close(capped, first, rtol=1e-12)
    consumed = []

    def lazy():  # stops pulling batches once n_samples examples are in
        for b in batched(x, y, 8):
            consumed.append(len(b[0]))
            yield b

    hessian_diagonal(model, scored(model), lazy(), n_samples=16)
    assert consumed == [8, 8]


def test_float32_model_gives_float32_scores_close_to_float64():
    model = convnet()
    x, y = data(10, (1, 6, 6))
    want = hessian_diagonal(model, scored(model), [(x, y)])
    model32 = convnet().float()
    got = hessian_diagonal(model32, scored(model32), [(x.float(), y)])
    assert all(v.dtype == torch.float32 for v in got.values())
    assert rel_err(got, want) < 1e-5


def test_bad_input_is_a_user_error():
    model = mlp()
    x, y = data(4, (6,))
    with pytest.raises(UserError, match="estimator"):
        hessian_diagonal(model, scored(model), [(x, y)], "obs")
    with pytest.raises(UserError, match="not a parameter"):
        hessian_diagonal(model, {"fc9.weight": torch.zeros(2)}, [(x, y)])
    with pytest.raises(UserError, match="no examples"):
        hessian_diagonal(model, scored(model), [])
    bn = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4, track_running_stats=False), nn.Linear(4, 3)).to(DT)
    with pytest.raises(UserError, match="track_running_stats"):
        hessian_diagonal(bn, scored(bn), [(x, y)])


# ---------------------------------------------------------------------------------------------------- saliency


def test_obd_saliency_and_predicted_increase():
    model = mlp()
    model[1].weight.data[0, :2] = 0.0  # already pruned: zero saliency
    x, y = data(20, (6,))
    params = scored(model, weights_only=True)
    h = hessian_diagonal(model, params, [(x, y)])
    s = obd_saliency(params, h)
    for n, p in params.items():
        torch.testing.assert_close(s[n], 0.5 * h[n] * p.detach().square(), rtol=0, atol=0)
    assert bool((s["1.weight"][0, :2] == 0).all())
    removed = {n: torch.zeros_like(v, dtype=torch.bool) for n, v in s.items()}
    removed["3.weight"][1, 2] = removed["5.weight"][0, 0] = True
    want = float(s["3.weight"][1, 2] + s["5.weight"][0, 0])
    assert predicted_loss_increase(s, removed) == pytest.approx(want, rel=1e-12)
    assert predicted_loss_increase(s, {"1.weight": removed["1.weight"]}) == 0.0


def test_predicted_increase_matches_actual_for_a_tiny_deletion_near_a_minimum():
    """OBD's premise (Fig. 1b): at a minimum, zeroing a small weight raises E by ≈ ½ h w²."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3)).to(DT)  # convex: train to the minimum quickly
    x, y = data(200, (6,))
    opt = torch.optim.LBFGS(model.parameters(), max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        base = float(F.cross_entropy(model(x), y))
    params = scored(model, weights_only=True)
    s = obd_saliency(params, hessian_diagonal(model, params, [(x, y)]))
    w = model[0].weight
    k = int(w.detach().abs().argmin())
    removed = torch.zeros_like(w, dtype=torch.bool).view(-1)
    removed[k] = True
    with torch.no_grad():
        w.view(-1)[k] = 0.0
        actual = float(F.cross_entropy(model(x), y)) - base
    predicted = predicted_loss_increase(s, {"0.weight": removed.view_as(w)})
    assert predicted == pytest.approx(actual, rel=0.05)
