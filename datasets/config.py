"""Schema of the ``dataset`` config group: one dataclass for every dataset, dataset-specific fields optional.

The YAMLs in ``conf/dataset/`` set the per-dataset values (``val_size``, ``augment``); a field a dataset does not
use is ignored by it (the synthetic fields by every real dataset).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from foundations.errors import UserError

NORMALIZATIONS = ("standard", "caffe", "none")


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise UserError(f"dataset.{key}: {message}")


@dataclass
class DatasetConfig:
    name: str = "fashion_mnist"
    data_dir: Optional[str] = None  # folder with the files; None = the dataset's default search path
    download: bool = False  # fetch with torchvision (needs a network) when the files are not found
    val_size: int = 5000  # carved from train with split_seed; model selection uses it, never the test set
    split_seed: int = 0
    train_limit: Optional[int] = None  # keep only the first N training examples after the carve (fast runs)
    # standard: the dataset's mean/std; caffe: x/256 as Caffe's LeNet (scale 0.00390625); none: x/255 in [0, 1]
    normalize: str = "standard"
    augment: bool = False  # random crop (4 px zero padding) + horizontal flip on shuffled training batches
    # 0: batches are indexed straight out of memory in the main process (fastest for these sizes);
    # N > 0: batches come through a torch DataLoader with N worker processes (same order and augmentation)
    num_workers: int = 0
    # synthetic only: Gaussian class blobs rendered as uint8 images; val_size is carved out of num_train
    num_train: int = 2000
    num_test: int = 500
    input_shape: list[int] = field(default_factory=lambda: [1, 8, 8])
    num_classes: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Range checks that need no data; the checks against the training-set size run when the data loads."""
        _check(isinstance(self.name, str) and bool(self.name), "name", f"must be a dataset name (got {self.name!r})")
        _check(self.data_dir is None or bool(str(self.data_dir).strip()), "data_dir",
               "must be a folder or null for the default search path (got an empty string)")
        _check(self.val_size >= 0, "val_size", f"must be >= 0 and smaller than the training set (got {self.val_size})")
        _check(self.split_seed >= 0, "split_seed", f"must be >= 0 (got {self.split_seed})")
        _check(self.train_limit is None or self.train_limit >= 1, "train_limit",
               f"must be >= 1 or null for the whole training split (got {self.train_limit})")
        _check(self.normalize in NORMALIZATIONS, "normalize",
               f"must be one of {', '.join(NORMALIZATIONS)} (got {self.normalize!r})")
        _check(self.num_workers >= 0, "num_workers", f"must be >= 0 (got {self.num_workers})")
        _check(self.num_train >= 1, "num_train", f"must be >= 1 (got {self.num_train})")
        _check(self.num_test >= 1, "num_test", f"must be >= 1 (got {self.num_test})")
        shape = list(self.input_shape)
        _check(len(shape) == 3 and all(int(s) >= 1 for s in shape), "input_shape",
               f"must be [channels, height, width] with every entry >= 1 (got {shape})")
        _check(self.num_classes >= 2, "num_classes", f"must be >= 2 (got {self.num_classes})")
        _check(self.seed >= 0, "seed", f"must be >= 0 (got {self.seed})")
