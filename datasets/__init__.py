"""Dataset registry: ``build_dataset(cfg) -> DataBundle`` (train / validation / test splits)."""

from __future__ import annotations

from runners.errors import UserError


def _registry():
    from datasets import cifar, mnist_like, small

    return {"fashion_mnist": mnist_like.load, "mnist": mnist_like.load, "mnist_5k": small.load_mnist_5k,
            "digits": small.load_digits, "cifar10": cifar.load, "cifar100": cifar.load,
            "synthetic": small.load_synthetic}


def build_dataset(cfg):
    loaders = _registry()
    if cfg.name not in loaders:
        raise UserError(f"dataset.name: unknown dataset {cfg.name!r}; choose one of {', '.join(sorted(loaders))}")
    return loaders[cfg.name](cfg)
