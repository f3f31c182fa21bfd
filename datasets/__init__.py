"""Dataset registry: ``build_dataset(cfg) -> DataBundle`` with train / validation / test splits.

Validation is always carved from the training set (``dataset.split_seed``), never from the test set — except where
the user's own data brings a validation split (``folder`` with ``val/``, a ``target`` returning one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from datasets import cifar, folder, mnist_like, small, target
from datasets.base import DataBundle, InMemorySplit, LoaderSplit, Normalization, carve_validation
from datasets.config import DatasetConfig, dataset_config
from foundations.checks import nondefault

Builder = Callable[[DatasetConfig], DataBundle]

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


def build_dataset(cfg: Any) -> DataBundle:
    """Load ``cfg.name``. ``cfg`` is a DatasetConfig (any schema), or a mapping / DictConfig of its fields."""
    cfg = dataset_config(cfg)
    return REGISTRY[cfg.name](cfg)


def identity(cfg: Any) -> dict:
    """The part of a dataset config a stage hash covers: its non-default fields except where the files live, plus
    the content digest of a folder dataset (whose files, not its path, are the data)."""
    cfg = dataset_config(cfg)
    out = {k: v for k, v in nondefault(cfg).items() if k not in NOT_IDENTITY}
    if cfg.name == "folder":
        out.update(folder.identity(cfg))
    return out


__all__ = ["DataBundle", "DatasetConfig", "InMemorySplit", "LoaderSplit", "Normalization", "REGISTRY",
           "build_dataset", "carve_validation", "dataset_config", "identity"]
