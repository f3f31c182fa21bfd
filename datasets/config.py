"""Schemas of the ``dataset`` config group: the fields every dataset has, and one subclass per family that adds its
own, so a dataset's config (and ``--help``) shows only what that dataset uses and an unused field is refused.

| schema | datasets | adds |
|---|---|---|
| ``DatasetConfig`` | mnist_5k, digits | (the common fields) |
| ``FilesConfig`` | fashion_mnist, mnist, cifar10, cifar100 | ``data_dir``, ``download`` |
| ``SyntheticConfig`` | synthetic | ``num_train``, ``num_test``, ``input_shape``, ``num_classes``, ``seed`` |
| ``FolderConfig`` | folder (an ImageFolder tree) | ``data_dir``, ``resize``, ``channels``, ``mean``, ``std`` |
| ``TargetDatasetConfig`` | target (any callable) | ``target``, ``kwargs``, ``num_classes``, ``mean``, ``std`` |

Every field keeps the default it had when all datasets shared one schema (``name`` defaults to fashion_mnist in
every class): a stage hash covers the non-default fields, so splitting the schema changed no existing hash.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional, cast

from omegaconf import MISSING

from foundations.checks import typed, typed_target
from foundations.errors import UserError

NORMALIZATIONS = ("standard", "caffe", "none")


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise UserError(f"dataset.{key}: {message}")


@dataclass
class DatasetConfig:
    name: str = "fashion_mnist"
    val_size: int = 5000  # carved from train with split_seed; model selection uses it, never the test set
    split_seed: int = 0
    train_limit: Optional[int] = None  # keep only the first N training examples after the carve (fast runs)
    # standard: the dataset's mean/std; caffe: x/256 as Caffe's LeNet (scale 0.00390625); none: x/255 in [0, 1]
    normalize: str = "standard"
    augment: bool = False  # random crop (4 px zero padding) + horizontal flip on shuffled training batches
    # 0: batches are indexed straight out of memory in the main process (fastest for these sizes);
    # N > 0: batches come through a torch DataLoader with N worker processes (same order and augmentation)
    num_workers: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Range checks that need no data; the checks against the training-set size run when the data loads."""
        _check(isinstance(self.name, str) and bool(self.name), "name", f"must be a dataset name (got {self.name!r})")
        _check(
            self.val_size is None or self.val_size >= 0,
            "val_size",
            f"must be >= 0 and smaller than the training set (got {self.val_size})",
        )
        _check(self.split_seed >= 0, "split_seed", f"must be >= 0 (got {self.split_seed})")
        _check(
            self.train_limit is None or self.train_limit >= 1,
            "train_limit",
            f"must be >= 1 or null for the whole training split (got {self.train_limit})",
        )
        _check(
            self.normalize in NORMALIZATIONS,
            "normalize",
            f"must be one of {', '.join(NORMALIZATIONS)} (got {self.normalize!r})",
        )
        _check(self.num_workers >= 0, "num_workers", f"must be >= 0 (got {self.num_workers})")


@dataclass
class FilesConfig(DatasetConfig):
    """Datasets read from their published files."""

    data_dir: Optional[str] = None  # folder with the files; None = the dataset's default search path
    download: bool = False  # fetch with torchvision (needs a network) when the files are not found

    def validate(self) -> None:
        super().validate()
        _check(
            self.data_dir is None or bool(str(self.data_dir).strip()),
            "data_dir",
            "must be a folder or null for the default search path (got an empty string)",
        )


@dataclass
class SyntheticConfig(DatasetConfig):
    """Gaussian class blobs rendered as uint8 images; ``val_size`` is carved out of ``num_train``."""

    num_train: int = 2000
    num_test: int = 500
    input_shape: list[int] = field(default_factory=lambda: [1, 8, 8])
    num_classes: int = 4
    seed: int = 0

    def validate(self) -> None:
        super().validate()
        _check(self.num_train >= 1, "num_train", f"must be >= 1 (got {self.num_train})")
        _check(self.num_test >= 1, "num_test", f"must be >= 1 (got {self.num_test})")
        shape = list(self.input_shape)
        _check(
            len(shape) == 3 and all(int(s) >= 1 for s in shape),
            "input_shape",
            f"must be [channels, height, width] with every entry >= 1 (got {shape})",
        )
        _check(self.num_classes >= 2, "num_classes", f"must be >= 2 (got {self.num_classes})")
        _check(self.seed >= 0, "seed", f"must be >= 0 (got {self.seed})")


def _check_stats(mean: Optional[list[float]], std: Optional[list[float]], channels: Optional[int]) -> None:
    _check(
        (mean is None) == (std is None),
        "mean",
        "give both dataset.mean and dataset.std, or neither (then they are computed on the training split and cached)",
    )
    if mean is None or std is None:
        return
    _check(
        len(mean) == len(std) and len(mean) >= 1,
        "std",
        f"needs one value per channel, as dataset.mean (got {len(mean)} means and {len(std)} stds)",
    )
    _check(
        channels is None or len(mean) == channels, "mean", f"needs one value per channel: {channels} (got {len(mean)})"
    )
    _check(all(s > 0 for s in std), "std", f"must be positive (got {list(std)})")


@dataclass
class FolderConfig(DatasetConfig):
    """A torchvision ``ImageFolder`` tree: ``<data_dir>/train/<class>/*.png``, ``test/``, optionally ``val/``."""

    data_dir: str = MISSING
    # null: validation is val/ when the folder has one, else 10% of train carved with split_seed;
    # an int: exactly that many carved from train (then the folder must not have val/)
    val_size: Optional[int] = None  # type: ignore[assignment]  # None = "the folder's val/"; the base says an int
    resize: Optional[list[int]] = None  # [height, width]; null: every image must already have one common size
    channels: int = 3  # 3: RGB, 1: greyscale (PIL conversion)
    mean: Optional[list[float]] = None  # per channel in [0, 1]; null: computed on the training split, cached
    std: Optional[list[float]] = None

    def validate(self) -> None:
        super().validate()
        _check(bool(str(self.data_dir).strip()), "data_dir", "must be the folder holding train/ and test/")
        _check(
            self.resize is None or (len(self.resize) == 2 and min(self.resize) >= 1),
            "resize",
            f"must be [height, width] with positive entries, or null (got {self.resize})",
        )
        _check(self.channels in (1, 3), "channels", f"must be 1 (greyscale) or 3 (RGB) (got {self.channels})")
        _check_stats(self.mean, self.std, self.channels)


@dataclass
class TargetDatasetConfig(DatasetConfig):
    """Any callable (a dotted path, as Hydra's ``_target_``) returning ``(train, test)`` or ``(train, val, test)``
    torch Datasets, or a dict with those keys. The YAML's extra fields are its keyword arguments (``kwargs``)."""

    target: str = MISSING
    kwargs: dict[str, Any] = field(default_factory=dict)
    # null: val from the callable when it returns one, else 10% of train carved with split_seed; an int: carve it
    val_size: Optional[int] = None  # type: ignore[assignment]  # None = "the callable's val"; the base says an int
    num_classes: Optional[int] = None  # null: inferred from the training labels (checked on every split)
    mean: Optional[list[float]] = None
    std: Optional[list[float]] = None

    def validate(self) -> None:
        super().validate()
        _check("." in str(self.target), "_target_", f"must be a dotted path to a callable (got {self.target!r})")
        _check(
            self.num_classes is None or self.num_classes >= 2,
            "num_classes",
            f"must be >= 2 or null to infer it (got {self.num_classes})",
        )
        _check_stats(self.mean, self.std, None)


SCHEMAS: dict[str, type] = {
    "fashion_mnist": FilesConfig,
    "mnist": FilesConfig,
    "cifar10": FilesConfig,
    "cifar100": FilesConfig,
    "mnist_5k": DatasetConfig,
    "digits": DatasetConfig,
    "synthetic": SyntheticConfig,
    "folder": FolderConfig,
    "target": TargetDatasetConfig,
}
# The target dataset's own keys; every other key of its YAML node goes to the callable.
TARGET_KEYS = (
    "name",
    "val_size",
    "split_seed",
    "train_limit",
    "normalize",
    "augment",
    "num_workers",
    "num_classes",
    "mean",
    "std",
)


def schema_for(name: str) -> type:
    if name not in SCHEMAS:
        raise UserError(f"dataset.name: unknown dataset {name!r}; choose one of {', '.join(sorted(SCHEMAS))}")
    return SCHEMAS[name]


def dataset_config(cfg: Any = None, **overrides: Any) -> DatasetConfig:
    """The typed config of ``cfg`` (a DatasetConfig of any class, a mapping or a DictConfig), in the schema of its
    dataset: a field that dataset does not have, or a bad type, is a one-line UserError."""
    node: dict[str, Any]
    if isinstance(cfg, DatasetConfig):
        node = asdict(cfg)
    elif cfg is None:
        node = {}
    else:
        from omegaconf import DictConfig, OmegaConf

        container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
        if not isinstance(container, dict):
            raise UserError(f"dataset: must be a mapping of fields (got {type(container).__name__})")
        node = {str(k): v for k, v in container.items()}
    node = {**node, **overrides}
    schema = schema_for(node.get("name", "fashion_mnist"))
    if isinstance(cfg, DatasetConfig) and isinstance(cfg, schema) and not overrides:
        return cfg
    if schema is TargetDatasetConfig:
        return cast(DatasetConfig, typed_target(schema, node, TARGET_KEYS, "dataset"))
    return cast(DatasetConfig, typed(schema, node, "dataset"))
