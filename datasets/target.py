"""``dataset=target``: any callable returning torch Datasets, called as Hydra's ``instantiate`` calls a ``_target_``.

The callable returns ``(train, test)``, ``(train, val, test)`` or a dict with the keys ``train``, ``test`` and
optionally ``val``. Each Dataset yields ``(image, label)`` with the image unnormalized — a PIL image, a uint8 or a
float tensor in [0, 1] shaped (C, H, W) or (H, W), or a numpy array shaped (H, W, C) or (H, W) — and an integer
label. prunelab stores pixels as uint8 and normalizes per channel itself (``dataset.normalize``, ``mean``/``std``),
so float images are quantized to 8 bits. The Datasets must be deterministic (the same item for the same index):
augmentation is ``dataset.augment``'s, drawn from the seed, so that resume and determinism hold.

A first pass over every split infers the input shape and, unless ``dataset.num_classes`` is given, the class count
(largest training label + 1), checks that every image has that shape and every label lies in range, and computes
the training statistics. Its result is cached by the config (the callable's code and data are not hashed: change
a keyword argument, or the callable's path, when the data changes).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import torch
from torch.utils.data import DataLoader, Dataset

from datasets.base import DataBundle, cached, carve_validation, default_val_size, loader_bundle
from foundations.errors import UserError


def as_uint8_image(image: Any) -> torch.Tensor:
    """One image as a uint8 tensor (C, H, W); raises ValueError saying what is wrong."""
    import numpy as np

    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL
        image = image.convert("L" if image.mode in ("L", "1", "I", "F", "I;16") else "RGB")
        array = np.asarray(image, dtype=np.uint8).copy()
        x = torch.from_numpy(array)
        return x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1).contiguous()
    if isinstance(image, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(image))
        x = x.permute(2, 0, 1) if x.dim() == 3 else x  # numpy images are (H, W, C)
    elif isinstance(image, torch.Tensor):
        x = image.detach().cpu()
    else:
        raise ValueError(f"an image must be a PIL image, a tensor or a numpy array (got {type(image).__name__})")
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if x.dim() != 3:
        raise ValueError(f"an image must be (C, H, W) or (H, W) (got shape {tuple(x.shape)})")
    if x.dtype == torch.uint8:
        return x.contiguous()
    if x.is_floating_point():
        if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
            raise ValueError(
                f"float images must lie in [0, 1] (got {float(x.min()):.3g}..{float(x.max()):.3g}); "
                f"return them unnormalized: prunelab normalizes (dataset.normalize, mean/std)"
            )
        return (x * 255).round().to(torch.uint8).contiguous()
    raise ValueError(f"images must be uint8 or float in [0, 1] (got {x.dtype})")


def _label(label: Any) -> int:
    if isinstance(label, torch.Tensor):
        if label.numel() != 1:
            raise ValueError(f"a label must be one integer (got a tensor of shape {tuple(label.shape)})")
        label = label.item()
    if isinstance(label, bool) or not float(label).is_integer():
        raise ValueError(f"a label must be an integer class index (got {label!r})")
    return int(label)


class Uint8Images(Dataset):
    """A user's Dataset as ``(uint8 (C, H, W), int)`` samples."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        sample = self.dataset[i]
        if not isinstance(sample, (tuple, list)) or len(sample) < 2:
            raise ValueError(f"item {i} must be (image, label) (got {type(sample).__name__})")
        return as_uint8_image(sample[0]), _label(sample[1])


def _call(cfg) -> dict[str, Uint8Images]:
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        out = instantiate({"_target_": cfg.target, **cfg.kwargs}, _convert_="all")
    except InstantiationException as err:
        reason = " ".join(str(err).split())
        raise UserError(f"dataset._target_: calling {cfg.target} failed: {reason}") from None
    if isinstance(out, dict):
        unknown = sorted(set(out) - {"train", "val", "test"})
        if unknown or "train" not in out or "test" not in out:
            raise UserError(
                f"dataset._target_: {cfg.target} returned a dict with keys {sorted(out)}; it must "
                f"have train and test (and optionally val)"
            )
        splits = dict(out)
    elif isinstance(out, (tuple, list)) and len(out) in (2, 3):
        splits = dict(zip(("train", "test") if len(out) == 2 else ("train", "val", "test"), out))
    else:
        raise UserError(
            f"dataset._target_: {cfg.target} must return (train, test), (train, val, test) or a dict "
            f"of Datasets (got {type(out).__name__})"
        )
    for split, ds in splits.items():
        if not (hasattr(ds, "__getitem__") and hasattr(ds, "__len__")) or len(ds) == 0:
            raise UserError(
                f"dataset._target_: the {split} split {cfg.target} returned is not a non-empty "
                f"map-style Dataset (it needs __len__ and __getitem__)"
            )
    return {split: Uint8Images(ds) for split, ds in splits.items()}


def _survey(split: str, dataset: Uint8Images, num_workers: int) -> dict:
    """Shapes and labels of every item of one split, one sample at a time (a bad item is named)."""
    shapes: dict[str, int] = {}
    low: Optional[int] = None
    high: Optional[int] = None
    loader = DataLoader(_Indexed(dataset), batch_size=None, num_workers=num_workers)
    for i, (outcome, x, y) in enumerate(loader):
        if outcome:
            raise UserError(f"dataset._target_: {split} item {i}: {outcome}")
        shapes.setdefault("x".join(map(str, x.shape)), i)
        low, high = (y, y) if low is None or high is None else (min(low, y), max(high, y))
    return {"shapes": shapes, "low": low, "high": high}


class _Indexed(Dataset):
    """Turns a conversion error into data, so a worker's failure reaches the main process as one line."""

    def __init__(self, dataset: Uint8Images):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        try:
            x, y = self.dataset[i]
        except (ValueError, TypeError) as err:
            return " ".join(str(err).split()), torch.zeros(0), 0
        return "", x, y


def load(cfg, decoded_cache: Optional[Path] = None) -> DataBundle:
    # Read through torchvision/the user's Dataset on demand: there is no decoded file to keep (decoded_cache unused).
    splits = _call(cfg)
    if "val" in splits and cfg.val_size is not None:
        raise UserError(
            f"dataset.val_size: {cfg.target} returns a validation split; remove dataset.val_size (or "
            f"return only train and test to carve validation from train)"
        )
    if "val" not in splits:
        cfg = replace(
            cfg, val_size=cfg.val_size if cfg.val_size is not None else default_val_size(len(splits["train"]))
        )
        carve_validation(len(splits["train"]), cfg.val_size, cfg.split_seed)  # a bad val_size fails before the pass
    key = {"target": cfg.target, "kwargs": cfg.kwargs}
    survey = cached("target-survey", key, lambda: {s: _survey(s, ds, cfg.num_workers) for s, ds in splits.items()})
    shapes: dict[str, tuple[str, int]] = {}
    for split in survey:
        for shape, i in survey[split]["shapes"].items():
            shapes.setdefault(shape, (split, i))
    if len(shapes) > 1:
        (a, (sa, ia)), (b, (sb, ib)) = list(shapes.items())[:2]
        raise UserError(
            f"dataset._target_: images differ in shape ({sa} item {ia}: {a}, {sb} item {ib}: {b}); "
            f"every image must have one (C, H, W)"
        )
    shape = tuple(int(s) for s in next(iter(shapes)).split("x"))
    num_classes = cfg.num_classes if cfg.num_classes is not None else survey["train"]["high"] + 1
    for split, seen in survey.items():
        if seen["low"] < 0 or seen["high"] >= num_classes:
            source = "dataset.num_classes" if cfg.num_classes is not None else "the training labels"
            raise UserError(
                f"dataset.num_classes: {split} labels span {seen['low']}..{seen['high']} but {source} "
                f"give {num_classes} classes; labels must lie in [0, num_classes)"
            )
    if num_classes < 2:
        raise UserError(f"dataset._target_: the training labels hold one class ({num_classes}); a classifier needs two")
    return loader_bundle(
        cfg,
        splits["train"],
        splits["test"],
        splits.get("val"),
        num_classes=num_classes,
        input_shape=shape,
        stats_key=key,
    )
