"""Schema of the ``dataset`` config group (one dataclass for every dataset; dataset-specific fields optional)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from runners.errors import UserError


@dataclass
class DatasetConfig:
    name: str = "fashion_mnist"
    data_dir: Optional[str] = None  # folder with the files; None = the default search path of the dataset
    download: bool = False  # fetch with torchvision when a network exists
    val_size: int = 5000  # carved from train with split_seed; model selection uses it, never the test set
    split_seed: int = 0
    train_limit: Optional[int] = None  # keep only the first N training examples after the carve (fast runs)
    normalize: str = "standard"  # standard (dataset mean/std) | caffe (x/256) | none (x/255)
    augment: bool = False  # random 4px-padded crop + horizontal flip on training batches
    num_workers: int = 0
    # synthetic only
    num_train: int = 2000
    num_test: int = 500
    input_shape: list[int] = field(default_factory=lambda: [1, 8, 8])
    num_classes: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.val_size < 0:
            raise UserError(f"dataset.val_size: must be >= 0 (got {self.val_size})")
        if self.normalize not in ("standard", "caffe", "none"):
            raise UserError(f"dataset.normalize: must be standard, caffe or none (got {self.normalize!r})")
        if self.train_limit is not None and self.train_limit < 1:
            raise UserError(f"dataset.train_limit: must be >= 1 (got {self.train_limit})")
