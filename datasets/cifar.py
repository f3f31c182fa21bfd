"""CIFAR-10/100 from the python pickle batches (``cifar-10-batches-py/``, ``cifar-100-python/``), kept in memory as
uint8 (N, 3, 32, 32). ``dataset.data_dir`` may be the folder that contains the batch folder (a torchvision root) or
the batch folder itself."""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Optional, TypedDict

import numpy as np
import torch

from datasets import cache
from datasets.base import DataBundle, cache_dir, make_bundle
from foundations.errors import UserError


class CifarSpec(TypedDict):
    title: str
    folder: str  # the batch folder
    train: list[str]  # batch file names
    test: list[str]
    labels: str  # the label key in each batch
    classes: int
    torchvision: str  # the torchvision class
    mean: list[float]
    std: list[float]


SHAPE = (3, 32, 32)
SPECS: dict[str, CifarSpec] = {
    "cifar10": {
        "title": "CIFAR-10",
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "labels": "labels",
        "classes": 10,
        "torchvision": "CIFAR10",
        "mean": [0.4914, 0.4822, 0.4465],
        "std": [0.2470, 0.2435, 0.2616],
    },
    "cifar100": {
        "title": "CIFAR-100",
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "labels": "fine_labels",
        "classes": 100,
        "torchvision": "CIFAR100",
        "mean": [0.5071, 0.4865, 0.4409],
        "std": [0.2673, 0.2564, 0.2762],
    },
}


def _field(batch: dict, key: str):
    # The official pickles were written by Python 2: loaded with encoding="bytes" their keys are bytes.
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise KeyError(key)


def read_batches(folder: Path, names: list[str], label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for name in names:
        path = folder / name
        try:
            with open(path, "rb") as fh:
                batch = pickle.load(fh, encoding="bytes")
            data = np.asarray(_field(batch, "data"))
            labels = np.asarray(_field(batch, label_key), dtype=np.int64)
        except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError, AttributeError) as err:
            detail = f"missing key {err}" if isinstance(err, KeyError) else " ".join(str(err).split())
            raise UserError(
                f"dataset.data_dir: {path} is not a readable CIFAR python batch ({detail}); "
                f"re-download it or fix dataset.data_dir"
            ) from None
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != math.prod(SHAPE) or len(labels) != len(data):
            raise UserError(
                f"dataset.data_dir: {path}: expected uint8 data (N, 3072) and N labels, got "
                f"{data.dtype} {data.shape} and {len(labels)} labels; re-download it"
            )
        xs.append(data.reshape(-1, *SHAPE))  # rows are 1024 R, 1024 G, 1024 B values, each row-major 32x32
        ys.append(labels)
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def _candidates(spec: CifarSpec, data_dir: Optional[str]) -> list[Path]:
    if data_dir:
        root = Path(data_dir).expanduser()
        return [root / spec["folder"], root]
    return [cache_dir() / spec["folder"]]


def locate(name: str, data_dir: Optional[str]) -> Path:
    spec = SPECS[name]
    folders = _candidates(spec, data_dir)
    for folder in folders:
        if all((folder / f).is_file() for f in spec["train"] + spec["test"]):
            return folder
    files = ", ".join(spec["train"] + spec["test"])
    raise UserError(
        f"dataset.data_dir: {name} python batches ({files}) not found in "
        f"{' or '.join(str(f) for f in folders)}; set dataset.data_dir=DIR (the folder containing "
        f"{spec['folder']}/), or dataset.download=true to fetch them with torchvision"
    )


def download(name: str, data_dir: Optional[str]) -> None:
    """torchvision download into ``data_dir`` (or the cache), where ``locate`` looks next."""
    spec = SPECS[name]
    root = Path(data_dir).expanduser() if data_dir else cache_dir()
    try:
        import torchvision

        getattr(torchvision.datasets, spec["torchvision"])(str(root), train=True, download=True)
    except Exception as err:  # no network, proxy, disk full: all end the same way for the user
        message = " ".join(str(err).split()) or type(err).__name__
        raise UserError(
            f"dataset.download: torchvision could not download {spec['title']} into {root} ({message}); "
            f"put the python batches in {root / spec['folder']} or set dataset.data_dir=DIR"
        ) from None


def load(cfg, decoded_cache: Optional[Path] = None) -> DataBundle:
    spec = SPECS[cfg.name]
    try:
        folder = locate(cfg.name, cfg.data_dir)
    except UserError:
        if not cfg.download:
            raise
        download(cfg.name, cfg.data_dir)
        folder = locate(cfg.name, cfg.data_dir)
    sources = [folder / name for name in spec["train"] + spec["test"]]

    def read() -> dict[str, torch.Tensor]:
        train_x, train_y = read_batches(folder, spec["train"], spec["labels"])
        test_x, test_y = read_batches(folder, spec["test"], spec["labels"])
        return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}

    def assemble() -> DataBundle:
        x = cache.decoded(cfg.name, sources, read, decoded_cache)
        return make_bundle(
            cfg,
            x["train_x"],
            x["train_y"],
            x["test_x"],
            x["test_y"],
            num_classes=spec["classes"],
            mean=spec["mean"],
            std=spec["std"],
        )

    return cache.bundle(cfg, sources, assemble)
