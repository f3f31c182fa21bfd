"""Dataset registry: ``build_dataset(cfg) -> DataBundle`` with train / validation / test splits.

Validation is always carved from the training set (``dataset.split_seed``), never from the test set — except where
the user's own data brings a validation split (``folder`` with ``val/``, a ``target`` returning one). A process
builds each bundle once; ``decoded_cache`` keeps decoded files for the next process (``datasets/cache.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from datasets import cifar, folder, mnist_like, small, target
from datasets.base import DataBundle, InMemorySplit, LoaderSplit, Normalization, carve_validation
from datasets.config import DatasetConfig, SyntheticConfig, dataset_config
from foundations.checks import nondefault

Builder = Callable[[DatasetConfig, Optional[Path]], DataBundle]

REGISTRY: dict[str, Builder] = {
    "fashion_mnist": mnist_like.load,
    "mnist": mnist_like.load,
    "mnist_5k": small.load_mnist_5k,
    "digits": small.load_digits,
    "cifar10": cifar.load,
    "cifar100": cifar.load,
    "synthetic": small.load_synthetic,
    "folder": folder.load,
    "target": target.load,
}
# Where the files are and how they are read do not change the data: a moved dataset keeps its stage hashes.
NOT_IDENTITY = ("data_dir", "download", "num_workers")


# What each dataset gives, declared (the loaders produce and check exactly this), so that a model can be checked
# against its input before any data is read or any stage is written.
INPUT_SHAPES: dict[str, tuple[int, int, int]] = {
    "fashion_mnist": mnist_like.SHAPE,
    "mnist": mnist_like.SHAPE,
    "mnist_5k": small.MNIST_5K_SHAPE,
    "digits": small.DIGITS_SHAPE,
    "cifar10": cifar.SHAPE,
    "cifar100": cifar.SHAPE,
}


def input_shape(cfg: Any) -> Optional[tuple[int, int, int]]:
    """The (C, H, W) of ``cfg``'s examples without loading them; None where only the data can tell (folder,
    target: checked when the data is loaded)."""
    cfg = dataset_config(cfg)
    if isinstance(cfg, SyntheticConfig):
        channels, height, width = (int(s) for s in cfg.input_shape)
        return channels, height, width
    return INPUT_SHAPES.get(cfg.name)


def build_dataset(cfg: Any, decoded_cache: Optional[Path] = None) -> DataBundle:
    """Load ``cfg.name``. ``cfg`` is a DatasetConfig (any schema), or a mapping / DictConfig of its fields;
    ``decoded_cache`` (e.g. ``<results>/cache``) keeps the decoded source files for later processes."""
    cfg = dataset_config(cfg)
    return REGISTRY[cfg.name](cfg, decoded_cache)


def identity(cfg: Any) -> dict:
    """The part of a dataset config a stage hash covers: its non-default fields except where the files live, plus
    the content digest of a folder dataset (whose files, not its path, are the data)."""
    cfg = dataset_config(cfg)
    out = {k: v for k, v in nondefault(cfg).items() if k not in NOT_IDENTITY}
    if cfg.name == "folder":
        out.update(folder.identity(cfg))
    return out


__all__ = [
    "DataBundle",
    "DatasetConfig",
    "INPUT_SHAPES",
    "InMemorySplit",
    "LoaderSplit",
    "Normalization",
    "REGISTRY",
    "build_dataset",
    "carve_validation",
    "dataset_config",
    "identity",
    "input_shape",
]
