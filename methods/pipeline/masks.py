"""Weight masks for unstructured pruning, built on ``torch.nn.utils.prune``.

A pruned model stays a normal PyTorch model: the forward uses ``weight = weight_orig * weight_mask``. Because
optimizers (momentum, Adam moments, weight decay) act on ``weight_orig``, ``keep_masked`` re-zeroes the pruned
entries of the weights *and* of the optimizer state after every step (masking only the gradient is not enough:
momentum and Adam's moments would revive pruned weights). ``folded`` exports a plain copy with the masks multiplied in.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune

from foundations.errors import UserError

Masks = dict[str, torch.Tensor]


@dataclass
class Prunable:
    """Which tensors count as prunable: Conv/Linear weights always; biases, BN scales, the classifier optional."""

    biases: bool = False
    batchnorm: bool = False
    classifier: bool = True


def classifier_name(model: nn.Module) -> str:
    """The classifier: the last ``nn.Linear`` in module order (the model convention of ``models/``)."""
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise UserError("model: it has no nn.Linear classifier (prunelab takes the last Linear as the classifier)")
    return linears[-1]


def prunable_names(model: nn.Module, which: Prunable) -> list[str]:
    """Names (as in a plain model's ``named_parameters``) of the prunable tensors, in forward order."""
    head = classifier_name(model)
    names = []
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            if module_name == head and not which.classifier:
                continue
            names.append(f"{module_name}.weight")
            if which.biases and module.bias is not None:
                names.append(f"{module_name}.bias")
        elif which.batchnorm and isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None:
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


def keep_masked(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """After-step hook: pruned weights and their optimizer state stay exactly zero, whatever the optimizer."""
    with torch.no_grad():
        for module in model.modules():
            for buffer_name, mask in module.named_buffers(recurse=False):
                if not buffer_name.endswith("_mask"):
                    continue
                weight = getattr(module, f"{buffer_name[:-5]}_orig")
                weight.mul_(mask)
                for value in optimizer.state.get(weight, {}).values():
                    if torch.is_tensor(value) and value.shape == weight.shape:
                        value.mul_(mask)


def full_masks(model: nn.Module, names: list[str]) -> Masks:
    params = dict(model.named_parameters())
    return {name: torch.ones_like(params[name], dtype=torch.bool) for name in names}


def density(masks: Masks) -> float:
    total = sum(m.numel() for m in masks.values())
    return sum(int(m.sum()) for m in masks.values()) / max(total, 1)


def layer_density(masks: Masks) -> dict[str, float]:
    return {name: int(m.sum()) / m.numel() for name, m in masks.items()}
