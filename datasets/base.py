"""In-memory splits batched by index: uint8 images stay uint8 until a batch is drawn, then are normalized."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from runners.errors import UserError


class InMemorySplit:
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                 augment: bool = False):
        self.images, self.labels, self.augment = images, labels.long(), augment
        channels = images.shape[1]
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1).expand(1, channels, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1).expand(1, channels, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0, drop_last: bool = False,
                device="cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self), generator=gen) if shuffle else torch.arange(len(self))
        mean, std = self.mean.to(device), self.std.to(device)
        for start in range(0, self.num_batches(batch_size, drop_last) * batch_size, batch_size):
            index = order[start:start + batch_size]
            x = self.images[index]
            if self.augment and shuffle:
                x = _crop_flip(x, gen)
            x = (x.to(device, torch.float32) / 255.0 - mean) / std
            yield x, self.labels[index].to(device)

    def subset(self, n: int, seed: int) -> "InMemorySplit":
        index = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        out = InMemorySplit(self.images[index], self.labels[index], [0.0], [1.0])
        out.mean, out.std = self.mean, self.std
        return out


def _crop_flip(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Standard CIFAR augmentation, vectorized: random crop from a zero-padded image, random horizontal flip."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy.view(n, 1) + torch.arange(h)).view(n, 1, h, 1).expand(n, x.shape[1], h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(w)).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
    out = out.gather(3, cols)
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(3)
    return out


@dataclass
class DataBundle:
    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    train: InMemorySplit
    val: InMemorySplit
    test: InMemorySplit


def carve_validation(n_train: int, val_size: int, split_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if val_size >= n_train:
        raise UserError(f"dataset.val_size: must be smaller than the training set ({n_train}), got {val_size}")
    order = torch.randperm(n_train, generator=torch.Generator().manual_seed(split_seed))
    return order[val_size:].sort().values, order[:val_size].sort().values


def bundle(cfg, name: str, train_x, train_y, test_x, test_y, mean, std, num_classes: int) -> DataBundle:
    """Carve validation from train, normalize per batch, optional train limit and augmentation."""
    if cfg.normalize == "caffe":
        mean, std = [0.0] * len(mean), [256.0 / 255.0] * len(std)  # Caffe LeNet: x / 256
    elif cfg.normalize == "none":
        mean, std = [0.0] * len(mean), [1.0] * len(std)
    train_idx, val_idx = carve_validation(len(train_y), cfg.val_size, cfg.split_seed)
    if cfg.train_limit is not None:
        train_idx = train_idx[:cfg.train_limit]
    return DataBundle(
        name=name, input_shape=tuple(train_x.shape[1:]), num_classes=num_classes,
        train=InMemorySplit(train_x[train_idx], train_y[train_idx], mean, std, augment=cfg.augment),
        val=InMemorySplit(train_x[val_idx], train_y[val_idx], mean, std),
        test=InMemorySplit(test_x, test_y, mean, std),
    )
