"""Dataset registry: ``build_dataset(cfg) -> DataBundle`` with train / validation / test splits.

Validation is always carved from the training set (``dataset.split_seed``), never from the test set. A process
builds each bundle once; ``cache_dir`` keeps decoded files for the next process (``datasets/cache.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from datasets import cifar, mnist_like, small
from datasets.base import DataBundle, InMemorySplit, LoaderSplit, Normalization, carve_validation
from datasets.config import DatasetConfig
from foundations.errors import UserError

Builder = Callable[[DatasetConfig, Optional[Path]], DataBundle]

REGISTRY: dict[str, Builder] = {
    "fashion_mnist": mnist_like.load,
    "mnist": mnist_like.load,
    "mnist_5k": small.load_mnist_5k,
    "digits": small.load_digits,
    "cifar10": cifar.load,
    "cifar100": cifar.load,
    "synthetic": small.load_synthetic,
}


def build_dataset(cfg: Any, cache_dir: Optional[Path] = None) -> DataBundle:
    """Load ``cfg.name``. ``cfg`` is a DatasetConfig, or a mapping / DictConfig of its fields; ``cache_dir`` (e.g.
    ``<results>/cache``) keeps the decoded source files for later processes."""
    if not isinstance(cfg, DatasetConfig):
        from omegaconf import DictConfig, OmegaConf

        fields = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
        try:
            cfg = DatasetConfig(**fields)
        except TypeError as err:  # an unknown key
            raise UserError(f"dataset: {err}") from None
    if cfg.name not in REGISTRY:
        raise UserError(f"dataset.name: unknown dataset {cfg.name!r}; choose one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[cfg.name](cfg, cache_dir)


__all__ = ["DataBundle", "DatasetConfig", "InMemorySplit", "LoaderSplit", "Normalization", "REGISTRY",
           "build_dataset", "carve_validation"]
