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


# What each dataset gives, declared (the loaders produce and check exactly this), so that a model can be checked
# against its input before any data is read or any stage is written.
INPUT_SHAPES: dict[str, tuple[int, int, int]] = {
    "fashion_mnist": mnist_like.SHAPE, "mnist": mnist_like.SHAPE, "mnist_5k": small.MNIST_5K_SHAPE,
    "digits": small.DIGITS_SHAPE, "cifar10": cifar.SHAPE, "cifar100": cifar.SHAPE,
}


def input_shape(cfg: DatasetConfig) -> tuple[int, int, int]:
    """The (C, H, W) of ``cfg``'s examples, without loading them."""
    if cfg.name == "synthetic":
        channels, height, width = (int(s) for s in cfg.input_shape)
        return channels, height, width
    if cfg.name not in INPUT_SHAPES:
        raise UserError(f"dataset.name: unknown dataset {cfg.name!r}; choose one of {', '.join(sorted(REGISTRY))}")
    return INPUT_SHAPES[cfg.name]


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


__all__ = ["DataBundle", "DatasetConfig", "INPUT_SHAPES", "InMemorySplit", "LoaderSplit", "Normalization", "REGISTRY",
           "build_dataset", "carve_validation", "input_shape"]
