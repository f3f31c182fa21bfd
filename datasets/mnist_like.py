"""Fashion-MNIST (the default, from Debian's ``dataset-fashion-mnist``) and MNIST, read from the four IDX files.

A folder is accepted if it holds the files directly or in torchvision's layout (``<dir>/FashionMNIST/raw/``,
``<dir>/MNIST/raw/``), so an existing torchvision download can be reused with ``dataset.data_dir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, TypedDict

import torch

from datasets import cache
from datasets.base import DataBundle, cache_dir, make_bundle
from datasets.idx import read_idx
from foundations.errors import UserError

FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
SHAPE = (1, 28, 28)  # declared, so that models are checked against it before any data is read


class IdxSpec(TypedDict):
    title: str
    folder: str  # the cache sub-folder
    torchvision: str  # the torchvision class, also its folder name
    mean: list[float]
    std: list[float]
    hint: str  # how to get the files


SPECS: dict[str, IdxSpec] = {
    "fashion_mnist": {
        "title": "Fashion-MNIST",
        "folder": "fashion-mnist",
        "torchvision": "FashionMNIST",
        "mean": [0.2860],
        "std": [0.3530],
        "hint": "install it with 'apt-get install dataset-fashion-mnist' (Debian/Ubuntu)",
    },
    "mnist": {
        "title": "MNIST",
        "folder": "mnist",
        "torchvision": "MNIST",
        "mean": [0.1307],
        "std": [0.3081],
        "hint": "put the four MNIST IDX files (train-images-idx3-ubyte.gz, ...) in a folder",
    },
}


def search_folders(name: str, data_dir: Optional[str]) -> list[Path]:
    """Where the IDX files are looked for, in order."""
    spec = SPECS[name]
    if data_dir:
        root = Path(data_dir).expanduser()
        return [root, root / spec["torchvision"] / "raw"]
    cache = cache_dir()
    # The bare cache root is never searched directly: MNIST and Fashion-MNIST use the same file names.
    folders = [
        cache / spec["folder"],
        cache / spec["folder"] / spec["torchvision"] / "raw",
        cache / spec["torchvision"] / "raw",
    ]
    return ([DEBIAN_DIR] if name == "fashion_mnist" else []) + folders


def _find(folder: Path, stem: str) -> Optional[Path]:
    for candidate in (folder / stem, folder / f"{stem}.gz"):  # uncompressed first: it loads faster
        if candidate.is_file():
            return candidate
    return None


def locate(name: str, data_dir: Optional[str]) -> dict[str, Path]:
    """The four IDX files of the first folder that holds all of them; otherwise a one-line UserError."""
    folders = search_folders(name, data_dir)
    partial = None
    for folder in folders:
        found = {key: _find(folder, stem) for key, stem in FILES.items()}
        present = {key: path for key, path in found.items() if path is not None}
        if len(present) == len(FILES):
            return present
        if any(found.values()) and partial is None:
            missing = ", ".join(FILES[key] + "[.gz]" for key, path in found.items() if path is None)
            partial = f" ({folder} lacks {missing})"
    spec = SPECS[name]
    where = ", ".join(str(f) for f in folders)
    raise UserError(
        f"dataset.data_dir: {name} IDX files not found in {where}{partial or ''}; {spec['hint']}, "
        f"or set dataset.data_dir=DIR (a folder with the four IDX files, or a torchvision root), "
        f"or dataset.download=true to fetch them with torchvision"
    )


def download(name: str, data_dir: Optional[str]) -> None:
    """torchvision download into ``data_dir`` (or the cache): the files land in ``<root>/<Name>/raw/``, which
    ``search_folders`` covers."""
    spec = SPECS[name]
    root = Path(data_dir).expanduser() if data_dir else cache_dir()
    try:
        import torchvision

        getattr(torchvision.datasets, spec["torchvision"])(str(root), train=True, download=True)  # fetches all four
    except Exception as err:  # no network, proxy, disk full: all end the same way for the user
        message = " ".join(str(err).split()) or type(err).__name__
        raise UserError(
            f"dataset.download: torchvision could not download {spec['title']} into {root} ({message}); "
            f"{spec['hint']}, or set dataset.data_dir=DIR"
        ) from None


def load(cfg, decoded_cache: Optional[Path] = None) -> DataBundle:
    data_dir = cfg.data_dir
    try:
        files = locate(cfg.name, data_dir)
    except UserError:
        if not cfg.download:
            raise
        download(cfg.name, data_dir)
        files = locate(cfg.name, data_dir)
    sources = [files[key] for key in FILES]

    def assemble() -> DataBundle:
        x = cache.decoded(cfg.name, sources, lambda: _read(files, cfg.name), decoded_cache)
        spec = SPECS[cfg.name]
        return make_bundle(
            cfg,
            x["train_x"].unsqueeze(1),
            x["train_y"].long(),
            x["test_x"].unsqueeze(1),
            x["test_y"].long(),
            num_classes=10,
            mean=spec["mean"],
            std=spec["std"],
        )

    return cache.bundle(cfg, sources, assemble)


def _read(files: dict[str, Path], name: str) -> dict[str, torch.Tensor]:
    x = {key: read_idx(files[key]) for key in FILES}
    for split in ("train", "test"):
        images, labels = x[f"{split}_x"], x[f"{split}_y"]
        if images.dtype != torch.uint8 or images.dim() != 3 or labels.dim() != 1 or len(images) != len(labels):
            raise UserError(
                f"dataset.data_dir: {files[f'{split}_x']} ({tuple(images.shape)}) and "
                f"{files[f'{split}_y']} ({tuple(labels.shape)}) are not a uint8 image file and its "
                f"label file"
            )
        if tuple(images.shape[1:]) != SHAPE[1:]:
            raise UserError(
                f"dataset.data_dir: {files[f'{split}_x']} holds {'x'.join(map(str, images.shape[1:]))} "
                f"images; {SPECS[name]['title']} is {'x'.join(map(str, SHAPE[1:]))}"
            )
    return x
