"""Splits, the validation carve and the bundle every dataset builder returns.

Images stay uint8 (N, C, H, W) until a batch is drawn; the batch is then augmented (optional, training passes only),
moved to the device as uint8 and normalized there as float32. With ``shuffle`` the order and the augmentation of an
epoch are a pure function of ``seed`` (the loop passes ``seed = f(data_seed, epoch)``), so a resumed or rewound run
reproduces the data stream without saving any RNG state.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data._utils.collate import default_collate

from foundations.errors import UserError
from foundations.files import atomic_write_json
from foundations.hashing import canonical

PAD = 4  # the standard CIFAR augmentation: crop 32x32 out of the image zero-padded by 4 px on each side


def cache_dir() -> Path:
    """``~/.cache/prunelab`` (honours ``XDG_CACHE_HOME``): downloads, folder digests and computed statistics."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "prunelab"


# --------------------------------------------------------------------------------------------------- normalization
@dataclass(frozen=True)
class Normalization:
    """Per-channel affine map from raw uint8 pixels: ``x_float = x * scale[c] - shift[c]``.

    Kept as scale/shift (not mean/std) so that Caffe's ``x / 256`` is exact in float32.
    """

    scale: tuple[float, ...]
    shift: tuple[float, ...]

    @classmethod
    def standard(cls, mean: Sequence[float], std: Sequence[float]) -> Normalization:
        """``(x / 255 - mean) / std`` with mean/std given in [0, 1] pixel units, one entry per channel."""
        std = [s if s > 0 else 1.0 for s in std]  # a constant channel: centre it, do not divide by zero
        return cls(tuple(1.0 / (255.0 * s) for s in std), tuple(m / s for m, s in zip(mean, std)))

    @classmethod
    def caffe(cls, channels: int) -> Normalization:
        return cls((1.0 / 256.0,) * channels, (0.0,) * channels)  # Caffe LeNet's data layer: scale 0.00390625

    @classmethod
    def unit(cls, channels: int) -> Normalization:
        return cls((1.0 / 255.0,) * channels, (0.0,) * channels)

    @classmethod
    def from_config(cls, kind: str, mean: Sequence[float], std: Sequence[float]) -> Normalization:
        if kind == "caffe":
            return cls.caffe(len(mean))
        if kind == "none":
            return cls.unit(len(mean))
        return cls.standard(mean, std)

    def on(self, device: torch.device):
        """The map as a function of a uint8 batch already on ``device`` (constants built once per pass)."""
        scale = torch.tensor(self.scale, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        shift = torch.tensor(self.shift, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        return lambda x: x.to(torch.float32).mul_(scale).sub_(shift)


def channel_stats(images: Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, in [0, 1] pixel units (for datasets without published constants)."""
    if len(images) == 0:
        return [0.0] * images.shape[1], [1.0] * images.shape[1]
    f = images.transpose(0, 1).reshape(images.shape[1], -1).to(torch.float64) / 255.0
    return f.mean(1).tolist(), f.std(1).tolist()


# --------------------------------------------------------------------------------------------------- augmentation
def _augment_params(n: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """One crop offset and flip bit per example of the split, drawn at once: a batch looks its examples up, so an
    example's augmentation in an epoch does not depend on the batch size."""
    dy = torch.randint(0, 2 * PAD + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * PAD + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    return dy, dx, flip


def crop_flip(x: Tensor, dy: Tensor, dx: Tensor, flip: Tensor) -> Tensor:
    """Crop (offsets ``dy``, ``dx`` into the image zero-padded by PAD) then flip where ``flip``, for a whole batch
    with one gather (flat pixel indices shared by the channels)."""
    b, c, h, w = x.shape
    padded = F.pad(x, (PAD, PAD, PAD, PAD))
    wp = w + 2 * PAD
    rows = dy.view(b, 1) + torch.arange(h)
    cols = torch.where(flip.view(b, 1), torch.arange(w - 1, -1, -1), torch.arange(w)) + dx.view(b, 1)
    flat = (rows.view(b, h, 1) * wp + cols.view(b, 1, w)).view(b, 1, h * w).expand(b, c, h * w)
    return padded.view(b, c, -1).gather(2, flat).view(b, c, h, w)


# --------------------------------------------------------------------------------------------------- splits
def _check_batch_size(batch_size: int) -> None:
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1 (got {batch_size})")


def _num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    _check_batch_size(batch_size)
    return n // batch_size if drop_last else -(-n // batch_size)


def _epoch_plan(n: int, batch_size: int, shuffle: bool, seed: int, drop_last: bool, augment: bool):
    """The index batches of one pass and, for an augmented pass, the per-example augmentation parameters."""
    count = _num_batches(n, batch_size, drop_last)
    gen = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
    params = _augment_params(n, gen) if augment and shuffle else None
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(count)], params


def _subset_index(length: int, n: int, seed: int) -> Tensor:
    if n < 1:
        raise ValueError(f"subset size must be >= 1 (got {n})")
    # A request larger than the split returns all of it (in the seeded order).
    return torch.randperm(length, generator=torch.Generator().manual_seed(int(seed)))[:n]


class InMemorySplit:
    """uint8 images (N, C, H, W) and int64 labels in memory, batched by index (no per-sample Python)."""

    def __init__(self, images: Tensor, labels: Tensor, norm: Normalization, augment: bool = False):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise TypeError(f"images must be a uint8 tensor (N, C, H, W) (got {images.dtype} {tuple(images.shape)})")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images.contiguous(), labels.to(torch.int64).contiguous()
        self.norm, self.augment = norm, augment

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"InMemorySplit(n={len(self)}, shape={tuple(self.images.shape[1:])}, augment={self.augment})"

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return _num_batches(len(self), batch_size, drop_last)

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        device: Union[str, torch.device] = "cpu",
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Float32 normalized x (B, C, H, W) and int64 y. Augmentation (if on) applies to shuffled passes only, so
        evaluation passes over the training split see clean images."""
        device = torch.device(device)
        plan, params = _epoch_plan(len(self), batch_size, shuffle, seed, drop_last, self.augment)
        normalize = self.norm.on(device)
        for index in plan:
            x = self.images[index]
            if params is not None:
                x = crop_flip(x, *(p[index] for p in params))
            if device.type == "cuda":
                x = x.pin_memory()
            yield normalize(x.to(device, non_blocking=True)), self.labels[index].to(device, non_blocking=True)

    def subset(self, n: int, seed: int) -> InMemorySplit:
        """A fixed random subset of ``n`` examples (all of them if ``n`` >= len), e.g. OBD/ThiNet samples."""
        index = _subset_index(len(self), n, seed)
        return InMemorySplit(self.images[index], self.labels[index], self.norm, self.augment)

    def as_loader(self, num_workers: int) -> LoaderSplit:
        return LoaderSplit(
            MemoryDataset(self.images, self.labels), self.norm, augment=self.augment, num_workers=num_workers
        )


class MemoryDataset(Dataset):
    """A torch Dataset over uint8 tensors; ``__getitems__`` lets the DataLoader fetch a batch with one index op."""

    def __init__(self, images: Tensor, labels: Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.images[i], self.labels[i]

    def __getitems__(self, index: list[int]) -> tuple[Tensor, Tensor]:
        rows = torch.as_tensor(index, dtype=torch.int64)
        return self.images[rows], self.labels[rows]


def _collate(batch):
    # MemoryDataset.__getitems__ returns an already-stacked (x, y); any other Dataset gives a list of samples.
    return batch if isinstance(batch, tuple) else default_collate(batch)


class LoaderSplit:
    """A torch Dataset of ``(uint8 image (C, H, W), label)`` served by a DataLoader with ``num_workers`` workers.

    The index order is drawn in the main process exactly as in ``InMemorySplit`` and handed to the DataLoader as its
    batch sampler, and augmentation runs on the collated batch in the main process: for the same data and seed the
    batches equal those of an ``InMemorySplit``, whatever the number of workers.
    """

    def __init__(self, dataset: Dataset, norm: Normalization, *, augment: bool = False, num_workers: int = 0):
        self.dataset, self.norm, self.augment, self.num_workers = dataset, norm, augment, num_workers

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]  # torch's Dataset declares no __len__; ours all have one

    def __repr__(self) -> str:
        return f"LoaderSplit(n={len(self)}, num_workers={self.num_workers}, augment={self.augment})"

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return _num_batches(len(self), batch_size, drop_last)

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        device: Union[str, torch.device] = "cpu",
    ) -> Iterator[tuple[Tensor, Tensor]]:
        device = torch.device(device)
        plan, params = _epoch_plan(len(self), batch_size, shuffle, seed, drop_last, self.augment)
        if not plan:
            return
        normalize = self.norm.on(device)
        loader = DataLoader(
            self.dataset,
            batch_sampler=[index.tolist() for index in plan],
            collate_fn=_collate,
            num_workers=self.num_workers,
            pin_memory=device.type == "cuda",
        )
        for index, (x, y) in zip(plan, loader):
            x, y = torch.as_tensor(x), torch.as_tensor(y)
            if x.dtype != torch.uint8:
                raise TypeError(f"LoaderSplit needs uint8 images from its dataset (got {x.dtype})")
            if params is not None:
                x = crop_flip(x, *(p[index] for p in params))
            yield normalize(x.to(device, non_blocking=True)), y.to(device, torch.int64, non_blocking=True)

    def subset(self, n: int, seed: int) -> LoaderSplit:
        index = _subset_index(len(self), n, seed)
        return LoaderSplit(
            Subset(self.dataset, index.tolist()), self.norm, augment=self.augment, num_workers=self.num_workers
        )


Split = Union[InMemorySplit, LoaderSplit]


@dataclass
class DataBundle:
    name: str
    input_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    train: Split
    val: Split
    test: Split


# --------------------------------------------------------------------------------------------------- assembly
def carve_validation(n_train: int, val_size: int, split_seed: int) -> tuple[Tensor, Tensor]:
    """(train_idx, val_idx): a fixed permutation of the training set puts ``val_size`` examples in validation.

    Both index sets are sorted, so the training split keeps the file order (``train_limit`` takes its head).
    """
    if not 0 <= val_size < n_train:
        raise UserError(
            f"dataset.val_size: must be >= 0 and smaller than the training set of {n_train} examples (got {val_size})"
        )
    order = torch.randperm(n_train, generator=torch.Generator().manual_seed(int(split_seed)))
    return order[val_size:].sort().values, order[:val_size].sort().values


def limit_train(cfg, train_idx: Tensor) -> Tensor:
    """``train_limit``: the head of the carved training split."""
    if cfg.train_limit is None:
        return train_idx
    if cfg.train_limit > len(train_idx):
        raise UserError(
            f"dataset.train_limit: must be at most the {len(train_idx)} training examples left after "
            f"the validation carve (got {cfg.train_limit}); lower it or set it to null"
        )
    return train_idx[: cfg.train_limit]


def make_bundle(
    cfg,
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    num_classes: int,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    name: Optional[str] = None,
) -> DataBundle:
    """Carve validation out of train, apply ``train_limit``, choose the normalization and build the splits.

    ``mean``/``std`` are the dataset's published constants; without them they are computed on the training split
    (after the carve, before ``train_limit``, so a shorter run normalizes the same way).
    """
    name = name or cfg.name
    for what, y in (("training", train_y), ("test", test_y)):
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise UserError(
                f"dataset.data_dir: {name} {what} labels must lie in [0, {num_classes}) "
                f"(found {int(y.min())}..{int(y.max())}); the files are not {name}"
            )
    train_idx, val_idx = carve_validation(len(train_y), cfg.val_size, cfg.split_seed)
    if mean is None or std is None:
        mean, std = channel_stats(train_x[train_idx])
    train_idx = limit_train(cfg, train_idx)
    norm = Normalization.from_config(cfg.normalize, mean, std)
    in_memory = [
        InMemorySplit(train_x[train_idx], train_y[train_idx], norm, augment=cfg.augment),
        InMemorySplit(train_x[val_idx], train_y[val_idx], norm),
        InMemorySplit(test_x, test_y, norm),
    ]
    splits: list[Split] = list(in_memory)
    if cfg.num_workers > 0:
        splits = [split.as_loader(cfg.num_workers) for split in in_memory]
    channels, height, width = (int(s) for s in train_x.shape[1:])
    return DataBundle(
        name=name,
        input_shape=(channels, height, width),
        num_classes=num_classes,
        train=splits[0],
        val=splits[1],
        test=splits[2],
    )


# --------------------------------------------------------------------------------------------------- Dataset sources
# Families that hand over torch Datasets of ``(uint8 image (C, H, W), label)`` (an ImageFolder tree, a user's
# callable) are served through LoaderSplit; the order stays a pure function of the seed as for the in-memory sets.
def default_val_size(n_train: int) -> int:
    """10% of the training set (at least 1): the carve when a source has no validation split and none is asked."""
    return max(1, n_train // 10)


def streamed_channel_stats(
    dataset: Dataset, num_workers: int = 0, batch_size: int = 256
) -> tuple[list[float], list[float]]:
    """Per-channel mean and (unbiased) std, in [0, 1] pixel units, of a Dataset of uint8 images read once in batches.

    Batches are merged with Chan et al.'s pairwise update (float64), so no pass holds the images in memory.
    ``channel_stats`` stays the in-memory definition: the built-in datasets' constants must not move by a rounding.
    """
    count, mean, m2 = 0, torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate)
    for x, _ in loader:
        f = torch.as_tensor(x).transpose(0, 1).reshape(x.shape[1], -1).to(torch.float64) / 255.0
        n, batch_mean = f.shape[1], f.mean(1)
        batch_m2 = ((f - batch_mean[:, None]) ** 2).sum(1)
        if count == 0:
            count, mean, m2 = n, batch_mean, batch_m2
            continue
        delta, total = batch_mean - mean, count + n
        mean = mean + delta * (n / total)
        m2 = m2 + batch_m2 + delta**2 * (count * n / total)
        count = total
    if count == 0:
        raise UserError("dataset: the training split is empty; there is nothing to compute statistics on")
    std = (m2 / max(count - 1, 1)).sqrt()
    return mean.tolist(), std.tolist()


def cached(kind: str, key: dict, compute):
    """``compute()`` once per ``key``: the JSON result is kept in ``<cache_dir>/<kind>/`` (an unreadable entry is
    recomputed). Used for what a full pass over a user's data costs: folder digests and channel statistics."""
    import hashlib

    path = cache_dir() / kind / f"{hashlib.sha256(canonical(key).encode()).hexdigest()[:32]}.json"
    try:
        return json.loads(path.read_text())["value"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"value": value})
    return value


def loader_bundle(
    cfg, train: Any, test: Any, val: Any, *, num_classes: int, input_shape: tuple[int, int, int], stats_key: dict
) -> DataBundle:
    """Splits of (map-style, sized) Datasets of ``(uint8 (C, H, W), label)``: validation is ``val`` when the source has one, else
    carved from train with ``split_seed``; then ``train_limit``; the normalization is ``cfg.mean``/``cfg.std`` when
    given, else the statistics of the carved training split (computed once per ``stats_key`` and cached)."""
    if val is None:
        train_idx, val_idx = carve_validation(len(train), cfg.val_size, cfg.split_seed)
        val = Subset(train, val_idx.tolist())
    else:
        train_idx = torch.arange(len(train))
    channels = input_shape[0]
    if cfg.normalize != "standard":
        mean, std = [0.0] * channels, [1.0] * channels  # only the channel count is used
    elif cfg.mean is not None:
        mean, std = list(cfg.mean), list(cfg.std)
        if len(mean) != channels:
            raise UserError(f"dataset.mean: needs one value per channel of the images ({channels}); got {len(mean)}")
    else:
        carved = Subset(train, train_idx.tolist())
        stats = cached(
            "stats",
            {**stats_key, "val_size": cfg.val_size, "split_seed": cfg.split_seed},
            lambda: streamed_channel_stats(carved, cfg.num_workers),
        )
        mean, std = stats
    train_idx = limit_train(cfg, train_idx)
    norm = Normalization.from_config(cfg.normalize, mean, std)
    workers = cfg.num_workers
    c, h, w = (int(s) for s in input_shape)
    return DataBundle(
        name=cfg.name,
        input_shape=(c, h, w),
        num_classes=num_classes,
        train=LoaderSplit(Subset(train, train_idx.tolist()), norm, augment=cfg.augment, num_workers=workers),
        val=LoaderSplit(val, norm, num_workers=workers),
        test=LoaderSplit(test, norm, num_workers=workers),
    )
