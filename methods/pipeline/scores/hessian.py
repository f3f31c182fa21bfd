"""Diagonal second-derivative estimators for Optimal Brain Damage (LeCun, Denker & Solla, NIPS 1989/1990).

OBD ranks a weight by its saliency s_k = ½ h_kk u_k² (paper eq. 5), where h_kk = ∂²E/∂u_k² is the diagonal of the
Hessian of the training objective E. Here E is the mean softmax cross-entropy over the examples passed in, so
every estimate below is the average of per-example diagonals (the paper averages E and H over the training set, §2).

Estimators (``hessian_diagonal(..., estimator=...)``):

``ggn_exact`` (default)
    Exact diagonal of the generalized Gauss–Newton matrix G = mean_n J_nᵀ H_ℓ J_n, with J_n = ∂z_n/∂θ the Jacobian of
    the logits and H_ℓ = diag(p) − ppᵀ the Hessian of CE w.r.t. the logits. H_ℓ = Σ_c s_c s_cᵀ with
    s_c = √p_c (e_c − p), so diag(G) = mean_n Σ_c (J_nᵀ s_c)²: C vector–Jacobian products per example, squared
    *after* summing over weight sharing. For ReLU / max-pool networks (also with BatchNorm in eval mode, which is
    affine) the logits are piecewise linear in every single weight, so ∂²z/∂w_k² = 0 almost everywhere and this is
    exactly the Hessian diagonal. With smooth nonlinearities (tanh, sigmoid) it is the GGN, not the Hessian.
    Labels are not used (the GGN of CE does not depend on them). The C vectors are backpropagated for a whole chunk
    at once (batched backward; examples do not interact in eval mode); then nn.Linear tensors use
    (Σ_c δ_c²) ⊗ x², nn.Conv2d tensors form the per-example gradients δ_c · unfold(x)ᵀ with one batched matmul and
    square them, and any other tensor goes through the generic ``torch.func`` path (vmap over examples of vmap
    over C VJPs). Cost: LeNet-300-100 on 10k examples ≈ 0.3 s, a fraction of a training epoch; LeNet-5-Caffe on
    10k examples ≈ two epochs (the conv per-example gradients are the bulk; there is no factorization for them).

``lecun``
    LeCun et al. 1990's backpropagated second derivatives with the Levenberg–Marquardt approximation:
    ∂²E/∂w_ij² = ∂²E/∂a_i² · x_j²,  ∂²E/∂a_i² = f'(a_i)² Σ_l w_li² ∂²E/∂a_l²,  output boundary p_c(1 − p_c)
    (the diagonal of H_ℓ). The recursion keeps only the diagonal of each layer's second-derivative matrix: it drops
    the cross-unit terms ∂²E/∂a_l∂a_l' (and the −ppᵀ part of H_ℓ), so it is an approximation even of the GGN
    diagonal (exact for a single linear layer). Always ≥ 0. It costs about one forward plus one backward pass.
    Supported: chains of Linear, Conv1d/2d/3d (summation over weight sharing: a convolution of the squared inputs
    with the second-derivative map), ReLU/LeakyReLU/ReLU6/Tanh/Sigmoid, MaxPool1d/2d (routing to the argmax),
    uniform AvgPool2d / AdaptiveAvgPool2d, Flatten/Unflatten/Identity/Dropout (identity in eval mode), and
    BatchNorm1d/2d in eval mode (a per-channel affine map, so it scales by (γ/σ)²); functional reshapes and
    ``F.relu`` between modules are recognised. Anything else raises ``UserError`` (use ``ggn_exact``).

``mc_fisher``
    Monte-Carlo Fisher (BackPACK's DiagGGNMC): sample ŷ ~ p(y|x) (``mc_samples`` per example, drawn from
    ``generator``) and average the squared per-example gradients of CE(z, ŷ). Unbiased for the GGN diagonal of
    softmax-CE, cheaper than ``ggn_exact`` by a factor C / mc_samples in the backward part.

``empirical_fisher``
    Mean squared per-example gradient with the *true* labels. An ablation ("Fisher pruning"), not OBD: it is a biased
    proxy for the curvature (Kunstner, Balles & Hennig, NeurIPS 2019) and vanishes on well-fitted examples.

``hutchinson``
    E_z[z ⊙ Hz] with Rademacher z, Hz by forward-over-reverse differentiation of the summed loss of each chunk
    (``probes`` fresh probes per chunk). Unbiased for the *true* Hessian diagonal and can be negative.
    Tolerance: for a single chunk the error of entry k has standard deviation √(Σ_{j≠k} H_kj² / probes)
    (computed over the scored parameters only); chunks add independent errors, weighted by their share of the
    examples. With the default 100 probes that is 10 % of the off-diagonal norm of each Hessian row, which can
    exceed h_kk itself, so it is noisy; not recommended as the default.

All estimators run with every module in eval mode, so BatchNorm uses its running statistics (per-example, as in
SNIP/OBD scoring at a fixed network) and dropout is off; the previous modes are restored afterwards. BatchNorm
without running statistics is refused: it would couple the examples of a chunk. Per-example quantities are
vectorized (``torch.func.vmap`` or batched backward passes) over chunks of ``chunk_size`` examples. The model's
parameters, ``requires_grad`` flags and ``.grad`` are left untouched; the score is computed at the values of the
tensors in ``params`` (normally the model's own parameters), with every other parameter at its current value.
The model must return logits.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
import torch.nn.grad
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vjp, vmap

from foundations.errors import UserError
from foundations.progress import progress_bar
from foundations.training import eval_mode

ESTIMATORS = ("ggn_exact", "lecun", "mc_fisher", "empirical_fisher", "hutchinson")

# Elements (examples × vectors × scored parameters) one vmapped per-example gradient block may hold.
_GENERIC_BUDGET = 1 << 24
# Rademacher probes pushed through one vmapped Hessian-vector product.
_HUTCHINSON_GROUP = 32


# --------------------------------------------------------------------------------------------------------------
# Shared plumbing
# --------------------------------------------------------------------------------------------------------------


def check_per_example(model: nn.Module) -> None:
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is None:
            raise UserError(
                f"model: BatchNorm {name!r} has track_running_stats=False, so even in eval mode it mixes the examples "
                "of a batch; per-example scores need running statistics"
            )


def resolve_params(model: nn.Module, params: dict) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(values of the scored tensors, every parameter and buffer of the model), all detached."""
    if not params:
        raise UserError("params: nothing to score; pass {name: tensor} with names from model.named_parameters()")
    named = dict(model.named_parameters())
    values = {}
    for name, tensor in params.items():
        if name not in named:
            raise UserError(
                f"params: {name!r} is not a parameter of the model; use names from model.named_parameters()"
            )
        if tuple(tensor.shape) != tuple(named[name].shape):
            raise UserError(
                f"params: {name!r} has shape {tuple(tensor.shape)}, the model's is {tuple(named[name].shape)}"
            )
        values[name] = tensor.detach().to(named[name].device)
    full = {name: p.detach() for name, p in named.items()}
    full.update({name: b.detach() for name, b in model.named_buffers()})
    full.update(values)
    return values, full


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def iter_chunks(
    batches: Iterable, chunk_size: int, n_samples: Optional[int], device, dtype
) -> Iterator[tuple[Tensor, Tensor]]:
    """Re-cut (x, y) batches into chunks of ``chunk_size`` examples, stopping after ``n_samples`` examples."""
    xs, ys, have, seen = [], [], 0, 0
    for x, y in batches:
        if n_samples is not None:
            x, y = x[: n_samples - seen], y[: n_samples - seen]
        seen += len(x)
        x = x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device)
        y = y.to(device)
        while len(x):
            take = chunk_size - have
            xs.append(x[:take])
            ys.append(y[:take])
            have += len(xs[-1])
            x, y = x[take:], y[take:]
            if have == chunk_size:
                yield torch.cat(xs), torch.cat(ys)
                xs, ys, have = [], [], 0
        if n_samples is not None and seen >= n_samples:
            break
    if have:
        yield torch.cat(xs), torch.cat(ys)


def _split_name(name: str) -> tuple[str, str]:
    module, _, attr = name.rpartition(".")
    return module, attr


# --------------------------------------------------------------------------------------------------------------
# Σ_k (J_nᵀ v_kn)² for a set of logit cotangents v (ggn_exact, mc_fisher, empirical_fisher)
# --------------------------------------------------------------------------------------------------------------


def _fast_modules(model: nn.Module, names: list[str], full: dict, x1: Tensor) -> dict[str, nn.Module]:
    """Linear/Conv2d modules whose scored weight/bias can skip the per-example torch.func path.

    Only the backpropagated vectors δ_k = ∂(v_k·z)/∂a at the layer's output must be per-example, and batched
    backward passes give them for a whole chunk at once (examples do not interact in eval mode):
    - Linear on (batch, features): the per-example gradient is δ ⊗ x, so Σ_k (δ_k ⊗ x)² = (Σ_k δ_k²) ⊗ x².
    - Conv2d (groups = 1, zero padding): weight sharing forbids that factorization, so the per-example gradient
      δ_k · unfold(x)ᵀ is formed with one batched matmul and squared after the sum over positions.
    A module called more than once, or a Linear on (batch, tokens, features), goes the generic way.
    """
    candidates = {}
    for name in names:
        module_name, attr = _split_name(name)
        module = model.get_submodule(module_name)
        if attr not in ("weight", "bias"):
            continue
        plain_conv = (
            type(module) is nn.Conv2d
            and module.groups == 1
            and module.padding_mode == "zeros"
            and module.padding != "same"
        )
        if type(module) is nn.Linear or plain_conv:
            candidates[module_name] = module
    if not candidates:
        return {}
    calls: dict[str, list[int]] = {m: [] for m in candidates}
    handles = [
        module.register_forward_hook(lambda mod, inp, out, m=m: calls[m].append(inp[0].dim()))
        for m, module in candidates.items()
    ]
    try:
        with torch.no_grad():
            functional_call(model, full, (x1,))
    finally:
        for handle in handles:
            handle.remove()
    wanted = {nn.Linear: [2], nn.Conv2d: [4]}
    return {m: module for m, module in candidates.items() if calls[m] == wanted[type(module)]}


class _SquaredVJP:
    """Accumulates Σ_n Σ_k (∂(v_kn · z_n)/∂θ)² for the scored θ, chunk by chunk."""

    def __init__(self, model, values, full, x1, fast: bool):
        self.model = model
        self.full = full
        names = list(values)
        self.fast = _fast_modules(model, names, full, x1) if fast else {}
        self.fast_names = {n for n in names if _split_name(n)[0] in self.fast}
        self.generic_names = [n for n in names if n not in self.fast_names]
        self.acc = {n: torch.zeros(values[n].shape, dtype=torch.float64, device=values[n].device) for n in names}
        self.generic_numel = sum(values[n].numel() for n in self.generic_names)

    def logits(self, x: Tensor) -> tuple[Tensor, dict]:
        """Logits of a chunk; with fast-path layers, also {module: (zero offset on its output, its input)}."""
        taps: dict[str, tuple[Tensor, Tensor]] = {}
        if not self.fast:
            with torch.no_grad():
                return functional_call(self.model, self.full, (x,)), taps

        def tap(module_name):
            def hook(module, inp, out):
                offset = torch.zeros_like(out, requires_grad=True)
                taps[module_name] = (offset, inp[0].detach())
                return out + offset

            return hook

        handles = [module.register_forward_hook(tap(m)) for m, module in self.fast.items()]
        try:
            with torch.enable_grad():
                z = functional_call(self.model, self.full, (x,))
        finally:
            for handle in handles:
                handle.remove()
        return z, taps

    def add(self, x: Tensor, z: Tensor, taps: dict, vectors: Tensor) -> None:
        """vectors: (K, B, C) cotangents for the logits z (B, C) of chunk x."""
        vectors = vectors.to(z.dtype)
        if self.fast:
            modules = list(taps)
            deltas = torch.autograd.grad(z, [taps[m][0] for m in modules], vectors, is_grads_batched=True)
            for m, delta in zip(modules, deltas):  # delta: (K, B, *output shape), per example and vector
                module = self.fast[m]  # exactly an nn.Linear or an nn.Conv2d (_fast_modules)
                if isinstance(module, nn.Conv2d):
                    self._add_conv(m, module, delta, taps[m][1])
                else:
                    self._add_linear(m, delta, taps[m][1])
        if self.generic_names:
            self._add_generic(x, vectors)

    def _add_linear(self, m: str, delta: Tensor, x_in: Tensor) -> None:
        d2 = delta.square().sum(0)  # (B, out): Σ_k δ_k², per example
        w, b = f"{m}.weight", f"{m}.bias"
        if w in self.acc:
            self.acc[w] += (d2.T @ x_in.square()).to(torch.float64)
        if b in self.acc:
            self.acc[b] += d2.sum(0).to(torch.float64)

    def _add_conv(self, m: str, module: nn.Conv2d, delta: Tensor, x_in: Tensor) -> None:
        w, b = f"{m}.weight", f"{m}.bias"
        if b in self.acc:  # per-example bias gradient: δ summed over positions, then squared
            self.acc[b] += delta.sum((3, 4)).square().sum((0, 1)).to(torch.float64)
        if w not in self.acc:
            return
        k, batch, out = delta.shape[:3]
        padding = _conv_padding(module)
        cols = F.unfold(x_in, module.kernel_size, module.dilation, padding, module.stride)  # (B, in·kh·kw, L)
        delta = delta.flatten(3)  # (K, B, out, L)
        step = max(1, _GENERIC_BUDGET // max(1, k * out * cols.shape[1]))
        total = torch.zeros(out, cols.shape[1], dtype=delta.dtype, device=delta.device)
        for start in range(0, batch, step):
            # per-example, per-vector weight gradients (K, b, out, in·kh·kw), squared after the sum over positions
            g = torch.einsum("kbol,bpl->kbop", delta[:, start : start + step], cols[start : start + step])
            total += g.square().sum((0, 1))
        self.acc[w] += total.view(module.weight.shape).to(torch.float64)

    def _add_generic(self, x: Tensor, vectors: Tensor) -> None:
        model, full, names = self.model, self.full, self.generic_names
        scored = {n: full[n] for n in names}

        def logits_one(p, x1):
            return functional_call(model, {**full, **p}, (x1.unsqueeze(0),)).squeeze(0)

        def squared_one(p, x1, v):  # v: (K, C) → Σ_k (J_nᵀ v_k)², squared after summing over weight sharing
            pullback = vjp(lambda q: logits_one(q, x1), p)[1]
            (grads,) = vmap(pullback)(v)
            return {n: g.square().sum(0) for n, g in grads.items()}

        per_example = vmap(squared_one, in_dims=(None, 0, 1))
        step = max(1, _GENERIC_BUDGET // max(1, vectors.shape[0] * self.generic_numel))
        for start in range(0, len(x), step):
            out = per_example(scored, x[start : start + step], vectors[:, start : start + step])
            for n in names:
                self.acc[n] += out[n].sum(0).to(torch.float64)


def _ggn_vectors(p: Tensor, y: Tensor, gen) -> Tensor:
    """s_c = √p_c (e_c − p) for every class c: H_ℓ = diag(p) − ppᵀ = Σ_c s_c s_cᵀ.  Shape (C, B, C)."""
    eye = torch.eye(p.shape[1], dtype=p.dtype, device=p.device)
    return p.T.sqrt().unsqueeze(-1) * (eye.unsqueeze(1) - p.unsqueeze(0))


def _mc_vectors(mc_samples: int):
    def make(p: Tensor, y: Tensor, gen) -> Tensor:
        # Sampling on the CPU with the caller's generator keeps results identical across devices.
        draws = torch.multinomial(p.detach().double().cpu(), mc_samples, replacement=True, generator=gen).to(p.device)
        onehot = F.one_hot(draws.T, p.shape[1]).to(p.dtype)  # (M, B, C)
        return (p.unsqueeze(0) - onehot) / math.sqrt(mc_samples)

    return make


def _empirical_vectors(p: Tensor, y: Tensor, gen) -> Tensor:
    return (p - F.one_hot(y, p.shape[1]).to(p.dtype)).unsqueeze(0)


# --------------------------------------------------------------------------------------------------------------
# LeCun et al. 1990 recursion (Levenberg–Marquardt, diagonal only)
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Call:
    module: nn.Module
    name: str
    inp: Tensor  # values on entry (copied: in-place ops later must not change them)
    out: Tensor  # values on exit
    weight: Optional[Tensor]  # the tensor the module used (functional_call swaps parameters in)


_RESHAPES = (nn.Flatten, nn.Unflatten, nn.Identity, nn.modules.dropout._DropoutNd, nn.Sequential)
_CONV_GRADS: dict[type[nn.Module], tuple[Callable, Callable]] = {
    nn.Conv1d: (torch.nn.grad.conv1d_weight, torch.nn.grad.conv1d_input),
    nn.Conv2d: (torch.nn.grad.conv2d_weight, torch.nn.grad.conv2d_input),
    nn.Conv3d: (torch.nn.grad.conv3d_weight, torch.nn.grad.conv3d_input),
}
_SUPPORTED = (
    "Linear, Conv1d/2d/3d, ReLU, LeakyReLU, ReLU6, Tanh, Sigmoid, MaxPool1d/2d, AvgPool2d, AdaptiveAvgPool2d, "
    "Flatten, Unflatten, Identity, Dropout, BatchNorm1d/2d"
)


def _record_chain(model: nn.Module, full: dict, x: Tensor) -> tuple[list[_Call], Tensor]:
    calls: list[_Call] = []
    pending: dict[int, list[Tensor]] = {}
    handles = []
    for name, module in model.named_modules():
        if any(True for _ in module.children()):
            continue

        def pre(mod, args, name=name):
            pending.setdefault(id(mod), []).append(args[0].detach().clone())

        def post(mod, args, out, name=name):
            calls.append(_Call(mod, name, pending[id(mod)].pop(), out.detach().clone(), getattr(mod, "weight", None)))

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    try:
        with torch.no_grad():
            z = functional_call(model, full, (x,))
    finally:
        for handle in handles:
            handle.remove()
    return calls, z


def _link(prev: _Call, cur: _Call) -> Optional[Tensor]:
    """How ``cur``'s input derives from ``prev``'s output: None for a reshape, else the ReLU mask (f'² = 1[a > 0])."""
    batch = len(prev.out)
    a, b = prev.out.reshape(batch, -1), cur.inp.reshape(batch, -1)
    if a.shape == b.shape:
        if torch.equal(a, b):
            return None
        if torch.equal(b, a.clamp_min(0)):
            return (prev.out > 0).to(prev.out.dtype)
    raise UserError(
        f"method.estimator: lecun follows a plain chain of modules, but the input of {cur.name!r} is not the output of "
        f"{prev.name!r} (up to a reshape or ReLU); use estimator=ggn_exact for this model"
    )


def _pair(v, n):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _conv_padding(module) -> tuple:
    n = module.weight.dim() - 2
    if module.padding_mode != "zeros":
        raise UserError(f"method.estimator: lecun supports zero-padded convolutions only ({module.padding_mode!r})")
    if module.padding == "valid":
        return (0,) * n
    if module.padding == "same":
        total = [d * (k - 1) for d, k in zip(_pair(module.dilation, n), module.weight.shape[2:])]
        if any(t % 2 for t in total):
            raise UserError(
                "method.estimator: lecun needs symmetric padding; padding='same' with an even kernel is not"
            )
        return tuple(t // 2 for t in total)
    return _pair(module.padding, n)


def _used_weight(call: _Call) -> Tensor:
    if call.weight is None:
        raise UserError(f"method.estimator: lecun found no weight on {type(call.module).__name__} {call.name!r}")
    return call.weight


def _lecun_backward(call: _Call, d: Tensor, acc: dict, prefix_names: tuple[str, str]) -> Tensor:
    """∂²E/∂(input)² from ∂²E/∂(output)² for one module (LM approximation); adds the parameter terms to ``acc``."""
    m, x = call.module, call.inp
    wname, bname = prefix_names
    if type(m) is nn.Linear:
        w = _used_weight(call)
        if wname in acc:
            acc[wname] += (d.reshape(-1, d.shape[-1]).T @ x.square().reshape(-1, x.shape[-1])).to(torch.float64)
        if bname in acc:
            acc[bname] += d.reshape(-1, d.shape[-1]).sum(0).to(torch.float64)
        return d @ w.square()
    if type(m) in _CONV_GRADS:
        weight_fn, input_fn = _CONV_GRADS[type(m)]
        w = _used_weight(call)
        n = w.dim() - 2
        kw = dict(stride=_pair(m.stride, n), padding=_conv_padding(m), dilation=_pair(m.dilation, n), groups=m.groups)
        if wname in acc:
            # Σ over positions of ∂²E/∂a² · x²: the weight gradient of a convolution with input x² and output grad d.
            acc[wname] += weight_fn(x.square(), w.shape, d, **kw).to(torch.float64)
        if bname in acc:
            acc[bname] += d.sum(dim=[0, *range(2, d.dim())]).to(torch.float64)
        return input_fn(x.shape, w.square(), d, **kw)
    if isinstance(m, (nn.ReLU,)):
        return d * (x > 0).to(d.dtype)
    if isinstance(m, nn.ReLU6):
        return d * ((x > 0) & (x < 6)).to(d.dtype)
    if isinstance(m, nn.LeakyReLU):
        return d * torch.where(x > 0, 1.0, m.negative_slope**2).to(d.dtype)
    if isinstance(m, nn.Tanh):
        return d * (1 - call.out.square()).square()
    if isinstance(m, nn.Sigmoid):
        return d * (call.out * (1 - call.out)).square()
    if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)):
        pool = F.max_pool1d if isinstance(m, nn.MaxPool1d) else F.max_pool2d
        _, idx = pool(x, m.kernel_size, m.stride, m.padding, m.dilation, ceil_mode=m.ceil_mode, return_indices=True)
        out = torch.zeros_like(x).flatten(2)
        return out.scatter_add_(2, idx.flatten(2), d.flatten(2)).view_as(x)
    if isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
        return _avgpool_backward(m, x, d)
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        if m.running_mean is None or m.running_var is None or x.dim() not in (2, 3, 4):
            raise UserError(f"method.estimator: lecun needs BatchNorm {call.name!r} with running statistics")
        shape = (1, -1) + (1,) * (x.dim() - 2)
        inv_std = (m.running_var + m.eps).rsqrt().view(shape)
        gamma = call.weight.view(shape) if call.weight is not None else torch.ones_like(inv_std)
        if wname in acc or bname in acc:
            dims = [0, *range(2, x.dim())]
            if wname in acc:
                acc[wname] += (d * ((x - m.running_mean.view(shape)) * inv_std).square()).sum(dims).to(torch.float64)
            if bname in acc:
                acc[bname] += d.sum(dims).to(torch.float64)
        return d * (gamma * inv_std).square()
    if isinstance(m, _RESHAPES):
        return d.reshape(x.shape)
    raise UserError(
        f"method.estimator: lecun has no rule for {type(m).__name__} ({call.name!r}); supported: {_SUPPORTED}; "
        "use estimator=ggn_exact"
    )


def _avgpool_backward(m, x: Tensor, d: Tensor) -> Tensor:
    """Average pooling with equal windows is y = (1/k)·(sum over a window): squared coefficients give (1/k)·Jᵀd."""
    h, w = x.shape[-2:]
    if isinstance(m, nn.AdaptiveAvgPool2d):
        oh, ow = _pair(m.output_size, 2)
        oh, ow = oh or h, ow or w
        if h % oh or w % ow:
            raise UserError("method.estimator: lecun supports AdaptiveAvgPool2d only with evenly dividing windows")
        size = (h // oh) * (w // ow)
    else:
        if m.ceil_mode or m.divisor_override is not None or (m.padding and not m.count_include_pad):
            raise UserError("method.estimator: lecun supports AvgPool2d only with equal windows (no ceil_mode/divisor)")
        kh, kw = _pair(m.kernel_size, 2)
        size = kh * kw
    with torch.enable_grad():
        probe = torch.zeros_like(x, requires_grad=True)
        (back,) = torch.autograd.grad(m(probe), probe, d)
    return back / size


class _LeCun:
    def __init__(self, model, values, full):
        self.model, self.full = model, full
        self.acc = {n: torch.zeros(values[n].shape, dtype=torch.float64, device=values[n].device) for n in values}

    def add(self, x: Tensor) -> None:
        calls, z = _record_chain(self.model, self.full, x)
        if not calls:
            raise UserError("method.estimator: lecun found no modules in the forward pass; use estimator=ggn_exact")
        if not torch.equal(calls[-1].out.reshape(len(z), -1), z.reshape(len(z), -1)):
            raise UserError(
                f"method.estimator: lecun needs the model's output to be the output of its last module ({calls[-1].name!r})"
            )
        p = torch.softmax(z, dim=1)
        d = (p * (1 - p)).reshape(calls[-1].out.shape)  # diagonal of H_ℓ = diag(p) − ppᵀ
        for i in range(len(calls) - 1, -1, -1):
            call = calls[i]
            d = _lecun_backward(call, d, self.acc, (f"{call.name}.weight", f"{call.name}.bias"))
            if i == 0:
                break
            mask = _link(calls[i - 1], call)
            d = d.reshape(calls[i - 1].out.shape)
            if mask is not None:
                d = d * mask


# --------------------------------------------------------------------------------------------------------------
# Hutchinson
# --------------------------------------------------------------------------------------------------------------


class _Hutchinson:
    def __init__(self, model, values, full, probes: int, gen):
        self.model, self.full, self.probes, self.gen = model, full, probes, gen
        self.values = values
        self.acc = {n: torch.zeros(v.shape, dtype=torch.float64, device=v.device) for n, v in values.items()}

    def add(self, x: Tensor, y: Tensor) -> None:
        model, full = self.model, self.full

        def loss(p):  # summed over the chunk; the total is divided by the number of examples at the end
            return F.cross_entropy(functional_call(model, {**full, **p}, (x,)), y, reduction="sum")

        gradient = grad(loss)
        with warnings.catch_warnings():
            # torch's first forward-mode use builds jit decompositions and warns that torch.jit.script is deprecated.
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
            self._probe(gradient)

    def _probe(self, gradient) -> None:
        def hvp(probe):
            return jvp(gradient, (self.values,), (probe,))[1]

        numel = sum(v.numel() for v in self.values.values())
        group = max(1, min(_HUTCHINSON_GROUP, _GENERIC_BUDGET // max(1, numel)))
        for start in range(0, self.probes, group):
            k = min(group, self.probes - start)
            # Drawn probe by probe, so the result does not depend on the grouping.
            draws = [
                {n: torch.randint(0, 2, v.shape, generator=self.gen) for n, v in self.values.items()} for _ in range(k)
            ]
            probe = {
                n: (torch.stack([d[n] for d in draws]) * 2 - 1).to(device=v.device, dtype=v.dtype)
                for n, v in self.values.items()
            }
            if k > 1:
                hz = vmap(hvp)(probe)
            else:
                hz = {n: t.unsqueeze(0) for n, t in hvp({n: t[0] for n, t in probe.items()}).items()}
            for n in self.acc:
                self.acc[n] += (probe[n] * hz[n]).sum(0).to(torch.float64) / self.probes


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------


def hessian_diagonal(
    model: nn.Module,
    params: dict[str, Tensor],
    batches: Iterable[tuple[Tensor, Tensor]],
    estimator: str = "ggn_exact",
    n_samples: Optional[int] = None,
    probes: int = 100,
    generator: Optional[torch.Generator] = None,
    progress: bool = False,
    *,
    mc_samples: int = 1,
    chunk_size: int = 256,
    fast_path: bool = True,
) -> dict[str, Tensor]:
    """Diagonal of ∂²E/∂θ² for E = mean cross-entropy over the examples of ``batches`` (see the module docstring).

    Args:
        model: plain module returning logits; evaluated in eval mode (BatchNorm uses running statistics), restored.
        params: {name in model.named_parameters(): tensor} — the tensors to score, at their current values.
        batches: iterable of (x float, y int64); only ``empirical_fisher`` and ``hutchinson`` use y.
        estimator: one of ``ESTIMATORS``.
        n_samples: use at most this many examples (the first ones in iteration order).
        probes: Rademacher probes per chunk (``hutchinson``).
        generator: CPU ``torch.Generator`` for ``mc_fisher``/``hutchinson``; None means a fresh one seeded with 0,
            so results are reproducible either way.
        progress: tqdm bar over chunks.
        mc_samples: sampled labels per example (``mc_fisher``).
        chunk_size: examples per vectorized chunk (memory bound); results do not depend on it beyond rounding.
        fast_path: batched paths for nn.Linear (factorized (Σ_k δ_k²) ⊗ x²) and nn.Conv2d (unfold + one matmul per
            chunk) in ``ggn_exact``/``mc_fisher``/``empirical_fisher``; False forces the generic torch.func
            per-example path everywhere (slower; the tests check that both agree with autograd).

    Returns:
        {name: tensor of the same shape}, detached, on the CPU, in the parameter's dtype.
    """
    if estimator not in ESTIMATORS:
        raise UserError(f"method.estimator: unknown {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    if chunk_size < 1:
        raise UserError(f"chunk_size: must be >= 1 (got {chunk_size})")
    if n_samples is not None and n_samples < 1:
        raise UserError(f"n_samples: must be >= 1 or None (got {n_samples})")
    if estimator == "hutchinson" and probes < 1:
        raise UserError(f"probes: must be >= 1 (got {probes})")
    if estimator == "mc_fisher" and mc_samples < 1:
        raise UserError(f"mc_samples: must be >= 1 (got {mc_samples})")
    check_per_example(model)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    device, dtype = model_device_dtype(model)
    values, full = resolve_params(model, params)
    total = math.ceil(n_samples / chunk_size) if n_samples is not None else None

    count = 0
    with eval_mode(model):
        chunks = progress_bar(
            iter_chunks(batches, chunk_size, n_samples, device, dtype),
            enabled=progress,
            total=total,
            desc=estimator,
            unit="chunk",
        )
        engine: Optional[_LeCun | _Hutchinson | _SquaredVJP] = None  # built on the first chunk
        for x, y in chunks:
            count += len(x)
            if estimator == "lecun":
                if not isinstance(engine, _LeCun):
                    engine = _LeCun(model, values, full)
                engine.add(x)
            elif estimator == "hutchinson":
                if not isinstance(engine, _Hutchinson):
                    engine = _Hutchinson(model, values, full, probes, gen)
                engine.add(x, y)
            else:
                if not isinstance(engine, _SquaredVJP):
                    engine = _SquaredVJP(model, values, full, x[:1], fast_path)
                make: Callable = {
                    "ggn_exact": _ggn_vectors,
                    "mc_fisher": _mc_vectors(mc_samples),
                    "empirical_fisher": _empirical_vectors,
                }[estimator]
                z, taps = engine.logits(x)
                p = torch.softmax(z.detach(), dim=1)  # p is a constant of the curvature, not differentiated
                engine.add(x, z, taps, make(p, y, gen))
    if engine is None or count == 0:
        raise UserError("batches: no examples to compute the Hessian diagonal on")
    return {n: (engine.acc[n] / count).to(dtype=params[n].dtype).cpu() for n in values}


def obd_saliency(params: dict[str, Tensor], hdiag: dict[str, Tensor]) -> dict[str, Tensor]:
    """OBD saliency s_k = ½ h_kk u_k² (LeCun et al. 1990, eq. 5): the predicted rise of E when u_k is set to 0."""
    missing = [n for n in params if n not in hdiag]
    if missing:
        raise UserError(f"hdiag: no Hessian diagonal for {', '.join(missing)}")
    out = {}
    for name, w in params.items():
        h = hdiag[name]
        w = w.detach().cpu().to(h.dtype)
        out[name] = 0.5 * h * w.square()
    return out


def predicted_loss_increase(saliency: dict[str, Tensor], removed_masks: dict[str, Tensor]) -> float:
    """Σ s_k over the deleted weights: ``removed_masks[name]`` is True where a weight is deleted (set to 0).

    Names absent from ``removed_masks`` delete nothing. This is OBD's quadratic prediction (LeCun et al. 1990,
    Fig. 1b), valid near a minimum and for deletions small enough that the diagonal/quadratic terms dominate.
    """
    total = 0.0
    for name, removed in removed_masks.items():
        if name not in saliency:
            raise UserError(f"removed_masks: {name!r} has no saliency")
        s = saliency[name]
        if tuple(removed.shape) != tuple(s.shape):
            raise UserError(f"removed_masks: {name!r} has shape {tuple(removed.shape)}, the saliency {tuple(s.shape)}")
        total += float(s[removed.to(device=s.device, dtype=torch.bool)].double().sum())
    return total
