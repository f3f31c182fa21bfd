"""Weight masks for unstructured pruning, built on ``torch.nn.utils.prune``.

A pruned model stays a normal PyTorch model: the forward uses ``weight = weight_orig * weight_mask`` and the state
dict holds ``weight_orig`` and ``weight_mask``. ``folded`` exports a plain copy with the masks multiplied in.

Training a masked model goes through ``masked_training``, not through the pruning hooks: recomputing
``weight_orig * mask`` in a forward pre-hook every step, and re-zeroing every optimizer-state tensor after every step,
made masked training 1.3-1.6x slower than dense. Inside it the forward reads ``weight_orig`` itself (its pruned
entries are exactly zero) and the gradients are masked in one fused in-place step after the other gradient hooks.
The numbers are bitwise those of the hooks (``grad * mask`` is what autograd computes through ``weight_orig * mask``),
and nothing needs re-zeroing after the step: with a zero gradient, a zero weight and zero state, SGD's update
(momentum, Nesterov, weight decay) and Adam's (both moments, L2 decay) are exactly zero at the pruned entries, so the
weights and the optimizer state stay zero (tests/test_masks.py checks both after every step). Re-zeroing the weights
anyway cost 6 % of a LeNet-300-100 step.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Optional

import torch
from torch import nn
from torch.nn.utils import prune

from foundations.errors import UserError
from foundations.training import Hooks, eval_mode
from models import INPUT_SHAPE

Masks = dict[str, torch.Tensor]
_BN = nn.modules.batchnorm._BatchNorm


@dataclass
class Prunable:
    """Which tensors count as prunable: Conv/Linear weights always; biases, BN scales, the classifier optional.

    ``exclude``: module or tensor names, or ``fnmatch`` globs of them (``conv1``, ``layer4.*``, ``features.0.*``),
    that are never pruned; a pattern matching no prunable layer is an error (a typo must not prune everything).
    Channel methods skip every coupled group with an excluded member.
    """

    biases: bool = False
    batchnorm: bool = False
    classifier: bool = True
    exclude: list[str] = field(default_factory=list)


def excluded(name: str, patterns: list[str]) -> bool:
    """Whether module ``name`` (or its ``name.weight``) matches one of the ``exclude`` patterns."""
    return any(fnmatchcase(name, p) or fnmatchcase(f"{name}.weight", p) for p in patterns)


def check_exclude(model: nn.Module, patterns: list[str]) -> None:
    candidates = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d, _BN))]
    for pattern in patterns:
        if not any(excluded(name, [pattern]) for name in candidates):
            raise UserError(
                f"method.prunable.exclude: {pattern!r} matches no Conv2d/Linear/BatchNorm of the model; "
                f"its layers: {', '.join(candidates[:8])}{', ...' if len(candidates) > 8 else ''}"
            )


@torch.no_grad()
def _logits_layer(model: nn.Module, shape: tuple[int, ...], linears: list[str]) -> Optional[str]:
    """The Linear whose output is the model's output, found by one forward pass (eval mode, restored)."""
    outputs: dict[str, torch.Tensor] = {}
    hooks = [
        model.get_submodule(n).register_forward_hook(lambda _m, _i, o, n=n: outputs.__setitem__(n, o)) for n in linears
    ]
    try:
        device = next(model.parameters()).device
        with eval_mode(model):
            out = model(torch.zeros(2, *shape, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    if not isinstance(out, torch.Tensor):
        return None
    for name in reversed(linears):  # the same storage: the logits themselves or a view of them
        o = outputs.get(name)
        if isinstance(o, torch.Tensor) and o.data_ptr() == out.data_ptr() and o.numel() == out.numel():
            return name
    return None


def classifier_name(model: nn.Module) -> str:
    """The classifier: the last ``nn.Linear`` that produces the logits.

    For a model built by ``models.build_model`` (which records its input shape) it is found by a forward pass, so a
    head declared before other Linears (an auxiliary branch, an attention block) is still the one pruned last;
    otherwise, and when no Linear's output is the model's output, the last ``nn.Linear`` in module order.
    """
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise UserError(
            "model: it has no nn.Linear classifier (prunelab takes the Linear producing the logits as the classifier)"
        )
    shape = getattr(model, INPUT_SHAPE, None)
    if shape is None or len(linears) == 1:
        return linears[-1]
    return _logits_layer(model, tuple(shape), linears) or linears[-1]


def prunable_names(model: nn.Module, which: Prunable) -> list[str]:
    """Names (as in a plain model's ``named_parameters``) of the prunable tensors, in forward order."""
    check_exclude(model, which.exclude)
    head = classifier_name(model)
    names = []
    for module_name, module in model.named_modules():
        if excluded(module_name, which.exclude):
            continue
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            if module_name == head and not which.classifier:
                continue
            names.append(f"{module_name}.weight")
            if which.biases and module.bias is not None:
                names.append(f"{module_name}.bias")
        elif which.batchnorm and isinstance(module, _BN) and module.weight is not None:
            names.append(f"{module_name}.weight")
    return names


def _split(name: str) -> tuple[str, str]:
    module, _, param = name.rpartition(".")
    return module, param


def apply_masks(model: nn.Module, masks: Masks) -> nn.Module:
    """Attach (or update) masks in place; pruned weights are set to exactly zero."""
    for name, mask in masks.items():
        module_name, param = _split(name)
        module = model.get_submodule(module_name)
        mask = mask.to(dtype=torch.bool, device=next(model.parameters()).device)
        if hasattr(module, f"{param}_mask"):
            getattr(module, f"{param}_mask").copy_(mask)
        else:
            prune.custom_from_mask(module, param, mask)
        with torch.no_grad():
            getattr(module, f"{param}_orig").mul_(mask)
    return model


def current_masks(model: nn.Module) -> Masks:
    """The masks attached to a model (plain names), as boolean tensors."""
    out = {}
    for module_name, module in model.named_modules():
        for buffer_name, buffer in module.named_buffers(recurse=False):
            if buffer_name.endswith("_mask"):
                out[f"{module_name}.{buffer_name[:-5]}"] = buffer.detach().bool().cpu()
    return out


def folded(model: nn.Module) -> nn.Module:
    """A plain copy of ``model`` with masks multiplied into the weights and the pruning hooks removed."""
    with torch.no_grad():  # the computed `weight` must be a graph leaf for deepcopy
        for module in model.modules():
            for hook in module._forward_pre_hooks.values():
                if isinstance(hook, prune.BasePruningMethod):
                    name = hook._tensor_name
                    setattr(module, name, getattr(module, f"{name}_orig") * getattr(module, f"{name}_mask"))
    plain = copy.deepcopy(model)
    for module in plain.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
    return plain


def _pruned(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(module, tensor name) of every tensor a pruning hook masks."""
    return [
        (module, hook._tensor_name)
        for module in model.modules()
        for hook in module._forward_pre_hooks.values()
        if isinstance(hook, prune.BasePruningMethod)
    ]


@contextmanager
def masked_training(model: nn.Module) -> Iterator[Hooks]:
    """The masked model trains as fast as a dense one; yields the step hooks that keep the pruned entries zero.

    For the duration the pruning pre-hooks are detached and each masked ``weight`` is ``weight_orig`` itself; on
    exit the hooks and the computed ``weight`` are back, so ``folded``, ``current_masks`` and the state dict are
    unchanged. Append the yielded ``before_step`` hook after any other (it masks what they add too).
    """
    pruned = _pruned(model)
    if not pruned:
        yield Hooks()
        return
    weights = [getattr(module, f"{name}_orig") for module, name in pruned]
    masks = [getattr(module, f"{name}_mask") for module, name in pruned]
    saved = [(module, dict(module._forward_pre_hooks)) for module in {id(m): m for m, _ in pruned}.values()]

    def mask_gradients(_model: nn.Module) -> None:
        present = [(w.grad, m) for w, m in zip(weights, masks) if w.grad is not None]
        if present:
            torch._foreach_mul_([g for g, _ in present], [m for _, m in present])

    with torch.no_grad():
        torch._foreach_mul_(weights, masks)
    for module, hooks in saved:
        for key, hook in hooks.items():
            if isinstance(hook, prune.BasePruningMethod):
                del module._forward_pre_hooks[key]
    for (module, name), weight in zip(pruned, weights):
        module.__dict__[name] = weight  # a plain attribute, as the hook sets it: not a second registered parameter
    try:
        yield Hooks([mask_gradients], [])
    finally:
        for module, hooks in saved:
            module._forward_pre_hooks.clear()
            module._forward_pre_hooks.update(hooks)
        with torch.no_grad():
            for module, name in pruned:
                module.__dict__[name] = getattr(module, f"{name}_orig") * getattr(module, f"{name}_mask")


def full_masks(model: nn.Module, names: list[str]) -> Masks:
    params = dict(model.named_parameters())
    return {name: torch.ones_like(params[name], dtype=torch.bool) for name in names}


def density(masks: Masks) -> float:
    total = sum(m.numel() for m in masks.values())
    return sum(int(m.sum()) for m in masks.values()) / max(total, 1)


def layer_density(masks: Masks) -> dict[str, float]:
    return {name: int(m.sum()) / m.numel() for name, m in masks.items()}
