"""CIFAR-10/100 from the python pickle batches (local files, or torchvision download), kept in memory as uint8."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from datasets.base import bundle
from runners.errors import UserError

CACHE = Path.home() / ".cache" / "prunelab"
SPECS = {
    "cifar10": {"folder": "cifar-10-batches-py", "train": [f"data_batch_{i}" for i in range(1, 6)],
                "test": ["test_batch"], "labels": b"labels", "classes": 10, "tv": "CIFAR10",
                "mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]},
    "cifar100": {"folder": "cifar-100-python", "train": ["train"], "test": ["test"], "labels": b"fine_labels",
                 "classes": 100, "tv": "CIFAR100", "mean": [0.5071, 0.4865, 0.4409], "std": [0.2673, 0.2564, 0.2762]},
}


def _read(folder: Path, names: list[str], key: bytes):
    xs, ys = [], []
    for name in names:
        try:
            with open(folder / name, "rb") as fh:
                batch = pickle.load(fh, encoding="bytes")
        except (OSError, pickle.UnpicklingError, EOFError) as err:
            raise UserError(f"{folder / name}: cannot read CIFAR batch ({err}); fix dataset.data_dir") from None
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[key], dtype=np.int64))
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def load(cfg):
    spec = SPECS[cfg.name]
    root = Path(cfg.data_dir).expanduser() if cfg.data_dir else CACHE
    folder = root / spec["folder"]
    if not folder.exists() and cfg.download:
        import torchvision

        getattr(torchvision.datasets, spec["tv"])(str(root), download=True)
    if not folder.exists():
        raise UserError(f"{cfg.name}: {folder} not found; put the python batches there with dataset.data_dir=DIR "
                        f"(the folder containing {spec['folder']}/), or dataset.download=true with a network")
    train_x, train_y = _read(folder, spec["train"], spec["labels"])
    test_x, test_y = _read(folder, spec["test"], spec["labels"])
    return bundle(cfg, cfg.name, train_x, train_y, test_x, test_y, spec["mean"], spec["std"], spec["classes"])
