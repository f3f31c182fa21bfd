"""Dataset registry: ``build_dataset(cfg) -> DataBundle`` with train / validation / test splits.

Validation is always carved from the training set (``dataset.split_seed``), never from the test set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from datasets import cifar, mnist_like, small
from datasets.base import DataBundle, InMemorySplit, LoaderSplit, Normalization, carve_validation
from datasets.config import DatasetConfig
from foundations.errors import UserError

Builder = Callable[[DatasetConfig], DataBundle]

REGISTRY: dict[str, Builder] = {
    "fashion_mnist": mnist_like.load,
    "mnist": mnist_like.load,
    "mnist_5k": small.load_mnist_5k,
    "digits": small.load_digits,
    "cifar10": cifar.load,
    "cifar100": cifar.load,
    "synthetic": small.load_synthetic,
}


def build_dataset(cfg: Any) -> DataBundle:
    """Load ``cfg.name``. ``cfg`` is a DatasetConfig, or a mapping / DictConfig of its fields."""
    if not isinstance(cfg, DatasetConfig):
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)  # a plain dict of the fields
        fields = dict(cfg)
        try:
            cfg = DatasetConfig(**fields)
        except TypeError as err:  # an unknown key
            raise UserError(f"dataset: {err}") from None
    if cfg.name not in REGISTRY:
        raise UserError(f"dataset.name: unknown dataset {cfg.name!r}; choose one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[cfg.name](cfg)


__all__ = ["DataBundle", "DatasetConfig", "InMemorySplit", "LoaderSplit", "Normalization", "REGISTRY",
           "build_dataset", "carve_validation"]
