"""Fashion-MNIST (the embedded default, from Debian's dataset-fashion-mnist) and MNIST, read from IDX files."""

from __future__ import annotations

from pathlib import Path

from datasets.base import bundle
from datasets.idx import read_idx
from runners.errors import UserError

CACHE = Path.home() / ".cache" / "prunelab"
FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
         "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}
SPECS = {
    "fashion_mnist": {"search": [Path("/usr/share/datasets/fashion-mnist"), CACHE / "fashion-mnist"],
                      "torchvision": "FashionMNIST", "mean": [0.2860], "std": [0.3530],
                      "hint": "install the Debian package (apt-get install dataset-fashion-mnist)"},
    "mnist": {"search": [CACHE / "mnist"], "torchvision": "MNIST", "mean": [0.1307], "std": [0.3081],
              "hint": "place the four MNIST IDX files in a folder"},
}


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.exists():
            return candidate
    return None


def locate(name: str, data_dir: str | None) -> dict[str, Path]:
    spec = SPECS[name]
    roots = [Path(data_dir).expanduser()] if data_dir else spec["search"]
    for root in roots:
        for folder in (root, root / spec["torchvision"] / "raw"):  # also an existing torchvision download
            found = {key: _find(folder, stem) for key, stem in FILES.items()}
            if all(found.values()):
                return found
    where = data_dir or ", ".join(str(r) for r in roots)
    raise UserError(f"{name}: IDX files not found in {where}; {spec['hint']}, or set dataset.data_dir=DIR, "
                    f"or dataset.download=true with a network")


def _download(name: str) -> str:
    import torchvision

    root = CACHE / name.replace("_", "-")
    getattr(torchvision.datasets, SPECS[name]["torchvision"])(str(root), download=True)
    return str(root)


def load(cfg):
    data_dir = cfg.data_dir
    if cfg.download:
        try:
            locate(cfg.name, data_dir)
        except UserError:
            data_dir = _download(cfg.name)
    files = locate(cfg.name, data_dir)
    tensors = {key: read_idx(path) for key, path in files.items()}
    spec = SPECS[cfg.name]
    return bundle(cfg, cfg.name, tensors["train_x"].unsqueeze(1), tensors["train_y"], tensors["test_x"].unsqueeze(1),
                  tensors["test_y"], spec["mean"], spec["std"], 10)
