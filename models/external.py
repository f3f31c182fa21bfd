"""Models prunelab did not write: torchvision's classification models and any callable returning an ``nn.Module``;
and starting weights from a checkpoint file.

Construction draws from the global torch RNG (that is where constructors draw their initialization), forked and
seeded from the experiment's generator: the same seed gives the same weights, and nothing outside is disturbed.
A built model is checked with a forward pass on a batch of the dataset's shape, in train and eval mode (the
training loop uses both): it must return one tensor of ``num_classes`` logits per example.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from foundations.errors import UserError
from models.config import NATIVE, TargetModelConfig, TorchvisionConfig
from models.init import initialize

Shape = tuple[int, int, int]


# ----------------------------------------------------------------------------------------------- construction
def _seeded(generator: Optional[torch.Generator], construct: Callable[[], nn.Module]) -> nn.Module:
    if generator is None:
        return construct()
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return construct()


def _finish(model: object, cfg, shape: Shape, classes: int, generator: Optional[torch.Generator]) -> nn.Module:
    """prunelab's init scheme (unless native), BN scales, and the forward check."""
    if not isinstance(model, nn.Module):
        raise UserError(f"model {cfg.tag}: the callable returned {type(model).__name__}, not a torch.nn.Module")
    if cfg.init != NATIVE:
        initialize(model, cfg.init, generator, 1.0 if cfg.bn_weight_init is None else cfg.bn_weight_init)
    if cfg.bn_weight_init is not None:
        model.bn_weight_init = float(cfg.bn_weight_init)  # type: ignore[assignment]  # a compacted copy's re-init reuses it
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
                    module.weight.fill_(float(cfg.bn_weight_init))
    key = (repr(cfg), tuple(shape), classes)
    if key not in _CHECKED:  # an experiment rebuilds its architecture for every stage: check it once per process
        check_forward(model, shape, classes, cfg.tag)
        _CHECKED.add(key)
    return model


_CHECKED: set[tuple] = set()


def check_forward(model: nn.Module, shape: Shape, classes: int, tag: str) -> None:
    """One forward pass in each mode on a batch of two examples; the state (BN statistics) is restored after."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    was_training = model.training
    x = torch.zeros(2, *shape)
    try:
        for training in (True, False):
            model.train(training)
            with torch.no_grad():
                try:
                    out = model(x)
                except Exception as err:  # any failure of the user's forward gets the same one line
                    reason = " ".join(str(err).split()) or type(err).__name__
                    raise UserError(
                        f"model {tag}: a forward pass on a batch of {'x'.join(map(str, shape))} inputs "
                        f"failed ({reason[:300]}); the model must take the dataset's images "
                        f"(their size: dataset.resize; torchvision: model.small_input)"
                    ) from None
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, classes):
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise UserError(
                    f"model {tag}: must return logits of shape (batch, {classes}) for the dataset's "
                    f"{classes} classes in {'train' if training else 'eval'} mode (got {got}); "
                    f"set its class count (+model.num_classes={classes}) or its auxiliary outputs off"
                )
    finally:
        model.load_state_dict(state)
        model.train(was_training)


# ----------------------------------------------------------------------------------------------- torchvision
def classification_models() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def _conv_like(
    old: nn.Conv2d, in_channels: int, kernel: Optional[int] = None, stride: Optional[int] = None
) -> nn.Conv2d:
    """``old`` rebuilt with another input width (and kernel/stride), initialized as torchvision initializes its
    ResNet and MobileNet convs (He normal, fan_out)."""
    size: Any = (kernel, kernel) if kernel else old.kernel_size
    padding: Any = (kernel // 2, kernel // 2) if kernel else old.padding
    steps: Any = (stride, stride) if stride else old.stride
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        size,
        stride=steps,
        padding=padding,
        dilation=old.dilation,  # type: ignore[arg-type]
        groups=old.groups if in_channels == old.in_channels else 1,
        bias=old.bias is not None,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    return new


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise UserError("model: has no Conv2d to take the dataset's channels")


def _small_input(model: nn.Module, arch: str) -> None:
    """CIFAR-style stems. ResNet family: conv1 3x3 stride 1 padding 1, max-pool removed (He et al. 2016 §4.2's CIFAR
    stem, as the ResNet-18 CIFAR code of Liu et al. 2019 uses). MobileNet: first conv stride 1."""
    import torchvision.models as tvm

    if isinstance(model, tvm.ResNet):
        _replace(model, "conv1", _conv_like(model.conv1, model.conv1.in_channels, kernel=3, stride=1))
        model.maxpool = nn.Identity()
    elif isinstance(model, (tvm.MobileNetV2, tvm.MobileNetV3)):
        name, conv = _first_conv(model)
        conv.stride = (1, 1)
    else:
        raise UserError(
            f"model.small_input: no small-input adaptation is defined for {arch} (only the ResNet family "
            f"- resnet*, resnext*, wide_resnet* - and mobilenet_v2/v3); set model.small_input=false"
        )


def build_torchvision(
    cfg: TorchvisionConfig, shape: Shape, classes: int, generator: Optional[torch.Generator]
) -> nn.Module:
    import torchvision

    names = classification_models()
    if cfg.arch not in names:
        import difflib

        close = difflib.get_close_matches(cfg.arch, names, n=4, cutoff=0.5) or names[:6]
        raise UserError(
            f"model.arch: {cfg.arch!r} is not a torchvision classification model; did you mean "
            f"{', '.join(close)}? (torchvision.models.list_models() lists them)"
        )

    def construct() -> nn.Module:
        try:
            model = torchvision.models.get_model(cfg.arch, weights=None, num_classes=classes, **cfg.kwargs)
        except (TypeError, ValueError) as err:
            raise UserError(
                f"model.kwargs: torchvision {cfg.arch} refused {dict(cfg.kwargs)} ({' '.join(str(err).split())})"
            ) from None
        if cfg.small_input:
            _small_input(model, cfg.arch)
        name, conv = _first_conv(model)
        if conv.in_channels != shape[0]:  # greyscale data on an RGB model: the stem takes the data's channels
            _replace(model, name, _conv_like(conv, shape[0]))
        return model

    return _finish(_seeded(generator, construct), cfg, shape, classes, generator)


# ----------------------------------------------------------------------------------------------- any callable
def _accepted(fn: Callable, offered: dict) -> dict:
    """The offered arguments the callable's signature names explicitly (not through ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin without a signature: offer nothing
        return {}
    named = {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {k: v for k, v in offered.items() if k in named}


def build_target(cfg: TargetModelConfig, shape: Shape, classes: int, generator: Optional[torch.Generator]) -> nn.Module:
    from hydra.errors import InstantiationException
    from hydra.utils import get_object, instantiate

    try:
        fn = get_object(cfg.target)
    except Exception as err:  # ImportError, AttributeError, ValueError: the path is wrong
        raise UserError(f"model._target_: cannot import {cfg.target} ({' '.join(str(err).split())})") from None
    offered = {"input_shape": tuple(shape), "num_classes": classes, "in_channels": shape[0]}
    extra = {k: v for k, v in _accepted(fn, offered).items() if k not in cfg.kwargs}

    def construct() -> nn.Module:
        # Hydra builds the call from the config (nested _target_s included); the offered arguments are passed to
        # it directly, so input_shape stays a tuple.
        try:
            call = instantiate({"_target_": cfg.target, "_partial_": True, **cfg.kwargs}, _convert_="all")
            return call(**extra)
        except (InstantiationException, TypeError) as err:
            raise UserError(f"model._target_: calling {cfg.target} failed: {' '.join(str(err).split())}") from None

    return _finish(_seeded(generator, construct), cfg, shape, classes, generator)


# ----------------------------------------------------------------------------------------------- checkpoints
_WRAPPERS = ("state_dict", "model_state_dict", "model")


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors``, or ``.pt``/``.pth`` read with ``torch.load(weights_only=True)`` (no code
    runs). A dict that wraps it under ``state_dict``/``model_state_dict``/``model`` is unwrapped, and a
    ``module.`` prefix on every key (``DataParallel``) is dropped."""
    path = Path(path).expanduser()
    state: Any
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError (not weights-only), a truncated file, a bad header
        raise UserError(
            f"model.checkpoint: {path} is not a state dict torch.load(weights_only=True) / safetensors "
            f"can read ({' '.join(str(err).split())[:200]}); save model.state_dict()"
        ) from None
    if isinstance(state, dict):
        wrapped = [state[key] for key in _WRAPPERS if isinstance(state.get(key), dict)]
        state = wrapped[0] if wrapped else state
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"model.checkpoint: {path} holds no mapping of names to tensors; save model.state_dict()")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load the checkpoint into ``model`` (strict); a mismatch is one line naming the first differing keys."""
    state = read_checkpoint(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs the model's {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]

    def head(items: list[str]) -> str:
        return ", ".join(items[:3]) + (f" (+{len(items) - 3} more)" if len(items) > 3 else "")

    problems = [
        f"{what}: {head(items)}"
        for what, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes))
        if items
    ]
    if problems:
        raise UserError(
            f"model.checkpoint: {path} does not fit the model ({'; '.join(problems)}); check the "
            f"architecture, model.small_input and the dataset's class count"
        )
    model.load_state_dict(state)
    return model
