"""Atomic file writes: readers see the old file or the new one, never half of one (kill -9, disk full)."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """``write(fh)`` into a temp file in the same folder, fsync, rename over ``path``; the temp file never stays."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:  # a full disk reports no file name from write(); say which file it was
        raise OSError(err.errno, err.strerror, str(path)) from err
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode()))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    plain = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda fh: fh.write(save(plain)))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of a safetensors file, read from its header (no tensor is loaded)."""
    with safe_open(str(path), framework="pt") as fh:
        return {key: tuple(fh.get_slice(key).get_shape()) for key in fh.keys()}  # noqa: SIM118 - not a dict


def save_torch(path: Path, payload: Any) -> None:
    # Serialized in memory first: torch.save straight into a file on a full disk raises an opaque RuntimeError
    # ("unexpected pos"), a plain write() raises OSError(ENOSPC), which the entry point reports in one line.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write(path, lambda fh: fh.write(buffer.getbuffer()))
