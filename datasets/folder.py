"""``dataset=folder``: a torchvision ``ImageFolder`` tree of the user's images.

Layout: ``<data_dir>/train/<class>/<image>``, ``<data_dir>/test/<class>/...`` and optionally ``val/``. Classes are
the folder names under ``train/`` in sorted order (as ``ImageFolder``); ``val/`` and ``test/`` may lack a class but
not add one. Without ``val/`` the validation split is carved from train with ``split_seed`` as for the built-in
sets (``val_size`` images, default 10%).

Images are decoded per batch (PIL, converted to RGB or L, resized with bilinear filtering when ``resize`` is set) into
uint8 tensors and served by a ``LoaderSplit``. The tree is indexed once: every file's bytes are hashed (its content
digest names the data in the stage hashes, so a changed image is a different experiment; the folder's path is not
part of it) and its header read (a common size is required unless ``resize`` is set; an unreadable file is named).
The index is cached by the files' paths, sizes and modification times, so later runs only ``stat`` the tree; a copy
of the tree gets new times, is hashed once more and yields the same digest.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import replace
from pathlib import Path
from typing import Optional

import torch
from torch.utils.data import Dataset

from datasets.base import DataBundle, cached, default_val_size, loader_bundle
from foundations.errors import UserError
from foundations.hashing import canonical

EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's
SPLITS = ("train", "val", "test")


def _root(cfg) -> Path:
    root = Path(cfg.data_dir).expanduser()
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise UserError(
                f"dataset.data_dir: {root} has no {split}/ folder; an ImageFolder tree needs "
                f"train/<class>/<images> and test/<class>/<images> (val/ is optional)"
            )
    return root


def _files(root: Path) -> dict[str, list[tuple[str, str]]]:
    """Per split, sorted (relative path, class name) of every image file one level under a class folder."""
    out = {}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            continue
        classes = sorted(d for d in folder.iterdir() if d.is_dir())
        out[split] = [
            (str(p.relative_to(root)), cls.name)
            for cls in classes
            for p in sorted(cls.rglob("*"))
            if p.is_file() and p.suffix.lower() in EXTENSIONS
        ]
    return out


def _index(root: Path, files: dict[str, list[tuple[str, str]]]) -> dict:
    """Content digest and image sizes of the tree, cached by (path, size, mtime) of every file."""
    stats = [(rel, (root / rel).stat()) for split in files for rel, _ in files[split]]
    listing = [(rel, st.st_size, st.st_mtime_ns) for rel, st in stats]

    def compute() -> dict:
        from PIL import Image, UnidentifiedImageError

        digest, sizes = hashlib.sha256(), dict[str, str]()
        for rel, _, _ in listing:
            data = (root / rel).read_bytes()
            digest.update(canonical([rel, hashlib.sha256(data).hexdigest()]).encode())
            try:
                with Image.open(io.BytesIO(data)) as image:
                    sizes.setdefault(f"{image.size[1]}x{image.size[0]}", rel)  # height x width -> first file
            except (UnidentifiedImageError, OSError) as err:
                raise UserError(
                    f"dataset.data_dir: {root / rel} is not a readable image ({err}); remove or replace it"
                ) from None
        return {"digest": digest.hexdigest(), "sizes": sizes}

    return cached("folder-index", {"listing": listing}, compute)


class ImageFiles(Dataset):
    """``(uint8 image (C, H, W), label)`` decoded from files on every access (the DataLoader's workers do it)."""

    def __init__(self, root: Path, samples: list[tuple[str, int]], channels: int, resize: Optional[list[int]]):
        self.root, self.samples, self.channels = root, samples, channels
        self.resize = tuple(resize) if resize is not None else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        import numpy as np
        from PIL import Image

        rel, label = self.samples[i]
        with Image.open(self.root / rel) as file:
            image = file.convert("RGB" if self.channels == 3 else "L")
        if self.resize is not None and image.size != (self.resize[1], self.resize[0]):
            image = image.resize((self.resize[1], self.resize[0]), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
        x = torch.from_numpy(array.copy())
        return (x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1).contiguous()), label


def _samples(files: dict, split: str, classes: list[str], root: Path) -> list[tuple[str, int]]:
    lookup = {c: i for i, c in enumerate(classes)}
    extra = sorted({c for _, c in files[split]} - set(lookup))
    if extra:
        raise UserError(
            f"dataset.data_dir: {root / split} has class folder {extra[0]!r} that train/ lacks; "
            f"every class must have training images"
        )
    return [(rel, lookup[c]) for rel, c in files[split]]


def scan(cfg) -> tuple[Path, dict, list[str], dict]:
    """(root, files per split, classes, index): everything the loader and the identity need, checked."""
    root = _root(cfg)
    files = _files(root)
    present = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
    classes = sorted({c for _, c in files["train"]})
    empty = sorted(set(present) - set(classes))
    if empty:
        raise UserError(
            f"dataset.data_dir: {root / 'train' / empty[0]} holds no image "
            f"({', '.join(EXTENSIONS)}); add images or remove the folder"
        )
    if len(classes) < 2:
        raise UserError(
            f"dataset.data_dir: {root / 'train'} must hold at least two class folders of images (found {len(classes)})"
        )
    if not files["test"]:
        raise UserError(f"dataset.data_dir: {root / 'test'} holds no image in class folders")
    if "val" in files and cfg.val_size is not None:
        raise UserError(
            f"dataset.val_size: {root} has a val/ folder, which is the validation split; remove "
            f"dataset.val_size (or the val/ folder to carve validation from train)"
        )
    index = _index(root, files)
    if cfg.resize is None and len(index["sizes"]) > 1:
        (a, fa), (b, fb) = list(index["sizes"].items())[:2]
        raise UserError(
            f"dataset.resize: the images differ in size ({fa}: {a}, {fb}: {b}); set dataset.resize=[height,width]"
        )
    return root, files, classes, index


def identity(cfg) -> dict:
    """What names this data in a stage hash: the tree's content digest (not its path)."""
    return {"content": scan(cfg)[3]["digest"]}


def load(cfg, decoded_cache: Optional[Path] = None) -> DataBundle:
    # Read through torchvision/the user's Dataset on demand: there is no decoded file to keep (decoded_cache unused).
    root, files, classes, index = scan(cfg)
    height, width = cfg.resize if cfg.resize is not None else map(int, next(iter(index["sizes"])).split("x"))
    splits = {s: ImageFiles(root, _samples(files, s, classes, root), cfg.channels, cfg.resize) for s in files}
    if "val" not in splits and cfg.val_size is None:
        cfg = replace(cfg, val_size=default_val_size(len(splits["train"])))
    stats_key = {"folder": index["digest"], "channels": cfg.channels, "resize": cfg.resize}
    return loader_bundle(
        cfg,
        splits["train"],
        splits["test"],
        splits.get("val"),
        num_classes=len(classes),
        input_shape=(cfg.channels, int(height), int(width)),
        stats_key=stats_key,
    )
