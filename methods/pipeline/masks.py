"""Weight masks for unstructured pruning, built on ``torch.nn.utils.prune``; the one definition of their format.

A pruned model stays a normal PyTorch model: the forward uses ``weight = weight_orig * weight_mask`` and the state
dict holds ``weight_orig`` and ``weight_mask``. This module alone knows that format: ``current_masks`` reads the
masks a model carries (by plain name, as ``named_parameters`` of the plain model names the tensor), ``folded``
exports a plain copy with the masks multiplied in, ``folded_state`` does the same to a state dict, ``plain_name``
maps ``fc1.weight_orig`` to ``fc1.weight``.

Training a masked model goes through ``masked_training``, not through the pruning hooks: recomputing
``weight_orig * mask`` in a forward pre-hook every step, and re-zeroing every optimizer-state tensor after every step,
made masked training 1.3-1.6x slower than dense. Inside it the forward reads ``weight_orig`` itself (its pruned
entries are exactly zero) and the gradients are masked in one fused in-place step after the other gradient hooks.
The numbers are bitwise those of the hooks (``grad * mask`` is what autograd computes through ``weight_orig * mask``),
and nothing needs re-zeroing after a step: with a zero gradient, a zero weight and zero state, SGD's update
(momentum, Nesterov, weight decay) and Adam's (both moments, AMSGrad's maximum, L2 decay) are exactly zero at the
pruned entries, so the weights and the optimizer state stay zero (tests/test_masks.py checks both after every step).
Re-zeroing the weights anyway cost 6 % of a LeNet-300-100 step.

That induction needs zero state at the pruned entries to start from. An optimizer that meets a mask with state of its
own (momentum gathered before the mask was applied, a mask changed inside the stage) would push the pruned weights
off zero, so the weights and every elementwise state tensor are zeroed at the pruned entries once, when the handle of
``masked_training`` first sees the optimizer and whenever ``MaskedTraining.update`` changes a mask: never per step.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Optional, cast

import torch
from torch import nn
from torch.nn.utils import prune

from foundations.errors import ConfigError, RefusedModel
from foundations.training import Hooks, IterationHook, eval_mode
from models import INPUT_SHAPE

Masks = dict[str, torch.Tensor]
_BN = nn.modules.batchnorm._BatchNorm


@dataclass(frozen=True)
class MaskSchedule:
    """Masks that change inside one train stage (pruning during training, e.g. GMP).

    After ``t`` optimizer steps of the stage's schedule, for each ``t`` in ``steps``, the masks become
    ``update(weights, alive, t)``: ``weights`` are the prunable tensors as the forward uses them (exactly zero where
    pruned), ``alive`` the masks in force (boolean, on the CPU). A pure function of its arguments, so a resumed
    stage, whose masks come back from the checkpoint, continues the same sequence."""

    steps: tuple[int, ...]
    update: Callable[[dict[str, torch.Tensor], Masks, int], Masks]

    @property
    def last(self) -> int:
        """The step after which the masks no longer change."""
        return max(self.steps)


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
            raise ConfigError(
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
        raise RefusedModel(
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
            names.append(_joined(module_name, "weight"))
            if which.biases and module.bias is not None:
                names.append(_joined(module_name, "bias"))
        elif which.batchnorm and isinstance(module, _BN) and module.weight is not None:
            names.append(_joined(module_name, "weight"))
    return names


def _split(name: str) -> tuple[str, str]:
    module, _, param = name.rpartition(".")
    return module, param


def _joined(module: str, tensor: str) -> str:
    """A tensor's plain name: ``fc1.weight``; ``weight`` for a parameter of the root module (a bare Linear)."""
    return f"{module}.{tensor}" if module else tensor


_ORIG, _MASK = "_orig", "_mask"  # torch.nn.utils.prune's suffixes of a masked tensor's parameter and buffer


def plain_name(name: str) -> str:
    """``fc1.weight_orig`` (a masked parameter) → ``fc1.weight``; other names unchanged."""
    return name[: -len(_ORIG)] if name.endswith(_ORIG) else name


def folded_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A masked model's state dict (``w_orig``, ``w_mask``) as a plain one with the masks multiplied in."""
    out = {}
    for key, value in state.items():
        if key.endswith(_MASK) and f"{key[: -len(_MASK)]}{_ORIG}" in state:
            continue
        if key.endswith(_ORIG):
            base = key[: -len(_ORIG)]
            out[base] = value * state[f"{base}{_MASK}"]
        else:
            out[key] = value
    return out


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
    """The masks attached to a model (plain names), as boolean tensors on the CPU."""
    return {name: mask.detach().bool().cpu() for name, _, _, mask in _masked(model)}


def _masked(model: nn.Module) -> list[tuple[str, nn.Module, str, torch.Tensor]]:
    """(plain name, module, tensor name, mask buffer) of every tensor a pruning hook masks, in module order."""
    return [
        (_joined(module_name, hook._tensor_name), module, hook._tensor_name, getattr(module, hook._tensor_name + _MASK))
        for module_name, module in model.named_modules()
        for hook in module._forward_pre_hooks.values()
        if isinstance(hook, prune.BasePruningMethod)
    ]


def masked_weight(module: nn.Module, name: str = "weight") -> Optional[torch.Tensor]:
    """The tensor ``name`` as the module's forward uses it: ``<name>_orig * <name>_mask`` where
    ``torch.nn.utils.prune`` masks it (``<name>`` itself is only refreshed by a forward), else the plain one."""
    mask = getattr(module, f"{name}{_MASK}", None)
    if mask is not None:
        return (getattr(module, f"{name}{_ORIG}") * mask).detach()
    value = getattr(module, name, None)
    return None if value is None else value.detach()


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


def _pruned(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """(plain name, module, tensor name) of every tensor a pruning hook masks."""
    return [(name, module, tensor) for name, module, tensor, _ in _masked(model)]


class MaskedTraining(Hooks):
    """The step hooks of a masked train stage (``before_step`` masks the gradients, ``after_step`` adopts the
    optimizer), and ``update`` for masks that change inside the stage (pruning during training).

    Invariant: at every forward inside ``masked_training`` each pruned entry of a weight is exactly zero, and so is
    every elementwise optimizer-state tensor of that weight (SGD's ``momentum_buffer``; Adam's ``exp_avg``,
    ``exp_avg_sq``, ``max_exp_avg_sq``) once the optimizer has taken a step. The masks are read from the module
    buffers (``<name>_mask``) at each step, so a mask loaded from a checkpoint, or a buffer the training loop replaced
    when it moved the model to another device or memory format, is the one applied.
    """

    def __init__(self, pruned: list[tuple[str, nn.Module, str]]):
        self._names = {name: i for i, (name, _, _) in enumerate(pruned)}
        self._weights = [getattr(module, f"{tensor}_orig") for _, module, tensor in pruned]
        self._slots = [(module._buffers, f"{tensor}_mask") for _, module, tensor in pruned]
        self._optimizer: Optional[torch.optim.Optimizer] = None  # the one whose state agrees with the masks
        super().__init__([self._mask_gradients] if pruned else [], [self._adopt] if pruned else [])

    def _masks(self) -> list[torch.Tensor]:
        return cast(list[torch.Tensor], [buffers[key] for buffers, key in self._slots])

    def _mask_gradients(self, _model: nn.Module) -> None:
        present = [(w.grad, m) for w, m in zip(self._weights, self._masks()) if w.grad is not None]
        if present:
            torch._foreach_mul_([g for g, _ in present], [m for _, m in present])

    def _adopt(self, _model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """An optimizer seen for the first time may hold state from before the masks: zero it (and the weights its
        step just moved) at the pruned entries, once. After that every step keeps them zero by itself."""
        if optimizer is not self._optimizer:
            self._agree(optimizer)

    def _agree(self, optimizer: torch.optim.Optimizer) -> None:
        self._zero(list(range(len(self._weights))), self._masks(), optimizer)
        self._optimizer = optimizer

    @torch.no_grad()
    def _zero(self, indices: list[int], keep: list[torch.Tensor], optimizer: Optional[torch.optim.Optimizer]) -> None:
        weights = [self._weights[i] for i in indices]
        torch._foreach_mul_(weights, keep)
        for weight, mask in zip(weights, keep):
            for value in _elementwise_state(optimizer, weight):
                value.mul_(mask)

    @torch.no_grad()
    def update(self, masks: Masks, optimizer: Optional[torch.optim.Optimizer]) -> None:
        """Replace the masks of some pruned tensors (plain names, as ``current_masks`` gives them), effective from
        the next forward; call it from an ``after_step`` hook with the optimizer the loop passes (None before any
        step). Entries pruned now get weight and optimizer state zero. An entry turned back on (regrowth) restarts
        at weight 0 with zero state (its momentum, its Adam moments) and trains from its next gradient. Adam's step
        count is per tensor, so a regrown entry is bias-corrected at the tensor's step t, not as a fresh parameter:
        its first move is lr·(1 - β1)/√(1 - β2) ≈ 3.2·lr for the default betas and large t, not lr. Only tensors masked
        when the stage began can be updated (attach ``full_masks`` to the others first), so the state dict's keys,
        and with them the loop's checkpoints, never change inside a stage."""
        indices, keep = [], []
        for name, new in masks.items():
            if name not in self._names:
                raise ValueError(
                    f"update: {name!r} had no mask when the stage began (masked: {', '.join(self._names)}); "
                    f"attach full_masks to every tensor that may be pruned before masked_training"
                )
            i = self._names[name]
            buffer = self._masks()[i]
            if tuple(new.shape) != tuple(buffer.shape):
                raise ValueError(f"update: the mask of {name} has shape {tuple(new.shape)}, not {tuple(buffer.shape)}")
            new = new.to(device=buffer.device, dtype=torch.bool)
            indices.append(i)
            keep.append(buffer.bool() & new)  # a regrown entry is zeroed too: it restarts from 0 whatever it held
            buffer.copy_(new)
        if indices:
            self._zero(indices, keep, optimizer)
        if optimizer is not None and optimizer is not self._optimizer:
            self._agree(optimizer)

    def following(self, schedule: MaskSchedule) -> IterationHook:
        """The ``at_iteration`` hook (``foundations.training.Hooks``) that applies ``schedule`` through ``update``:
        keyed by the loop's iteration, so a resumed stage picks the sequence up where its checkpoint left it."""
        steps = frozenset(schedule.steps)

        def at_iteration(_model: nn.Module, optimizer: torch.optim.Optimizer, iteration: int) -> None:
            if iteration not in steps:
                return
            names = list(self._names)
            weights = {name: self._weights[self._names[name]].detach() for name in names}
            masks = self._masks()
            alive = {name: masks[self._names[name]].detach().bool().cpu() for name in names}
            self.update(schedule.update(weights, alive, iteration), optimizer)

        return at_iteration


def _elementwise_state(optimizer: Optional[torch.optim.Optimizer], weight: torch.Tensor) -> list[torch.Tensor]:
    """The optimizer's state tensors of ``weight`` that hold one value per entry; a per-tensor scalar (Adam's
    ``step``) is left alone, and state of another shape (a factored second moment) cannot be masked: refused."""
    if optimizer is None or weight not in optimizer.state:
        return []
    out = []
    for key, value in optimizer.state[weight].items():
        if not torch.is_tensor(value) or (value.numel() == 1 and value.shape != weight.shape):
            continue
        if value.shape != weight.shape:
            raise ValueError(
                f"masked training: {type(optimizer).__name__}'s state {key!r} has shape {tuple(value.shape)}, not "
                f"the weight's {tuple(weight.shape)}: its pruned entries cannot be kept zero; use an elementwise "
                f"optimizer (SGD, Adam)"
            )
        out.append(value)
    return out


@contextmanager
def masked_training(model: nn.Module) -> Iterator[MaskedTraining]:
    """The masked model trains as fast as a dense one; yields the step hooks that keep the pruned entries zero.

    For the duration the pruning pre-hooks are detached and each masked ``weight`` is ``weight_orig`` itself; on
    exit the hooks and the computed ``weight`` are back, so ``folded``, ``current_masks`` and the state dict hold the
    masks as last updated. Append the yielded ``before_step`` hook after any other (it masks what they add too), and
    the ``after_step`` hook after any that updates the masks. Whatever optimizer the loop passes to ``after_step``,
    with or without state of its own, the pruned entries stay exactly zero (``MaskedTraining``).
    """
    pruned = _pruned(model)
    handle = MaskedTraining(pruned)
    if not pruned:
        yield handle
        return
    saved = [(module, dict(module._forward_pre_hooks)) for module in {id(m): m for _, m, _ in pruned}.values()]
    with torch.no_grad():
        torch._foreach_mul_(handle._weights, handle._masks())
    for module, hooks in saved:
        for key, hook in hooks.items():
            if isinstance(hook, prune.BasePruningMethod):
                del module._forward_pre_hooks[key]
    for (_, module, name), weight in zip(pruned, handle._weights):
        module.__dict__[name] = weight  # a plain attribute, as the hook sets it: not a second registered parameter
    try:
        yield handle
    finally:
        for module, hooks in saved:
            module._forward_pre_hooks.clear()
            module._forward_pre_hooks.update(hooks)
        with torch.no_grad():
            for _, module, name in pruned:
                module.__dict__[name] = getattr(module, f"{name}_orig") * getattr(module, f"{name}_mask")


def full_masks(model: nn.Module, names: list[str]) -> Masks:
    params = dict(model.named_parameters())
    return {name: torch.ones_like(params[name], dtype=torch.bool) for name in names}


def density(masks: Masks) -> float:
    total = sum(m.numel() for m in masks.values())
    return sum(int(m.sum()) for m in masks.values()) / max(total, 1)


def layer_density(masks: Masks) -> dict[str, float]:
    return {name: int(m.sum()) / m.numel() for name, m in masks.items()}
