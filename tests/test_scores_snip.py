"""SNIP connection sensitivity (Lee et al. 2019 §4) vs an independent autograd pass through explicit masks c."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from foundations.errors import UserError
from methods.pipeline.scores import snip_scores

DT = torch.float64


def bn_convnet(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(12, 5),
        nn.ReLU(),
        nn.Linear(5, 4),
    ).to(DT)
    bn = model[1]
    bn.running_mean.copy_(torch.randn(3, dtype=DT) * 0.5)
    bn.running_var.copy_(torch.rand(3, dtype=DT) + 0.5)
    return model


def data(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 6, 6, generator=g, dtype=DT), torch.randint(0, 4, (n,), generator=g)


def prunable(model):
    """Conv/Linear weights and biases, as SNIP's official code masks (not the BN parameters)."""
    return {n: p for n, p in model.named_parameters() if not n.startswith("1.")}


def reference_mask_gradient(model, params, x, y, normalize=True):
    """|∂L/∂c| at c = 1, the network using c ⊙ w, L = mean CE over all examples, BN in eval mode (paper eqs. 3–6)."""
    model.eval()
    c = {n: torch.ones_like(p, requires_grad=True) for n, p in params.items()}
    weights = {n: p.detach() * c[n] for n, p in params.items()}
    logits = functional_call(model, weights, (x,))  # non-scored parameters and buffers come from the module
    grads = torch.autograd.grad(F.cross_entropy(logits, y), list(c.values()))
    scores = {n: g.abs() for n, g in zip(c, grads)}
    if normalize:
        total = sum(s.sum() for s in scores.values())
        scores = {n: s / total for n, s in scores.items()}
    return scores


def test_scores_equal_mask_gradient_over_the_union_of_batches_and_leave_the_model_alone():
    model = bn_convnet()
    model.train()
    model[-1].bias.requires_grad_(False)  # a frozen tensor stays frozen (mil-ad/snip#4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    x, y = data(20)
    batches = [(x[:7], y[:7]), (x[7:15], y[7:15]), (x[15:], y[15:])]
    params = prunable(model)

    got = snip_scores(model, params, batches)

    assert all(m.training for m in model.modules())  # BN mode restored
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # weights and running stats
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    want = reference_mask_gradient(model, params, x, y)
    assert got.keys() == want.keys()
    for n in want:
        assert got[n].shape == params[n].shape and got[n].dtype == DT and not got[n].requires_grad
        torch.testing.assert_close(got[n], want[n], rtol=1e-10, atol=1e-15)
    assert sum(float(s.sum()) for s in got.values()) == pytest.approx(1.0, rel=1e-12)


def test_scores_use_bn_running_statistics_not_batch_statistics():
    model = bn_convnet()
    model.train()
    x, y = data(16)
    params = prunable(model)
    got = snip_scores(model, params, [(x, y)])
    # The batch-statistics variant is a different answer, so the first test can tell the two modes apart.
    model.train()
    c = {n: torch.ones_like(p, requires_grad=True) for n, p in params.items()}
    logits = functional_call(model, {n: p.detach() * c[n] for n, p in params.items()}, (x,))
    grads = torch.autograd.grad(F.cross_entropy(logits, y), list(c.values()))
    train_mode = {n: g.abs() for n, g in zip(c, grads)}
    total = sum(s.sum() for s in train_mode.values())
    assert max(float((got[n] - train_mode[n] / total).abs().max()) for n in got) > 1e-4


def test_unnormalized_scores_are_abs_gradient_times_weight_and_pruned_weights_score_zero():
    model = bn_convnet()
    with torch.no_grad():
        model[5].weight[:, :4] = 0.0  # pruned weights are exactly 0 in the plain model
        model[5].bias.zero_()  # zero-initialized biases have zero saliency |g_b · b|
    x, y = data(10)
    params = {"5.weight": model[5].weight, "5.bias": model[5].bias, "0.weight": model[0].weight}
    got = snip_scores(model, params, [(x, y)], normalize=False)
    model.eval()
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(params.values()))
    for (n, p), g in zip(params.items(), grads):
        torch.testing.assert_close(got[n], (g * p).abs().detach(), rtol=1e-10, atol=1e-15)
    assert bool((got["5.weight"][:, :4] == 0).all()) and bool((got["5.bias"] == 0).all())
    assert float(got["0.weight"].abs().sum()) > 0
    model.zero_grad(set_to_none=True)


def test_float32_model_and_bad_input():
    model = bn_convnet().float()
    x, y = data(5)
    got = snip_scores(model, prunable(model), [(x.float(), y)])
    assert all(v.dtype == torch.float32 for v in got.values())
    with pytest.raises(UserError, match="not a parameter"):
        snip_scores(model, {"9.weight": torch.zeros(1)}, [(x, y)])
    with pytest.raises(UserError, match="no examples"):
        snip_scores(model, prunable(model), [])
