"""Content-addressed stage folders: ``<root>/runs/<kind>/<hash>/``.

A stage's hash covers its spec (only fields that differ from their defaults — see ``runners.config.nondefault``)
and the hashes of its parent stages, so a sweep shares every stage it can: 8 methods × 5 sparsities × 3 seeds train
each dense model once. ``result.json`` is written last and atomically, with a checksum of every file it vouches for;
a folder without it is incomplete (and resumable), a folder whose files fail their checksum is recomputed.
A file lock keeps two concurrent jobs (joblib, SLURM array) from computing the same stage twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import yaml
from filelock import FileLock
from safetensors.torch import load_file, save_file

RESULT = "result.json"
CHECKPOINT = "checkpoint.pt"
_NOT_VOUCHED = {RESULT, CHECKPOINT, ".lock", "metrics.jsonl"}


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def stage_hash(kind: str, spec: dict, parents: dict[str, str]) -> str:
    return hashlib.sha256(canonical({"kind": kind, "spec": spec, "parents": parents}).encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, fsync, rename: readers see the old file or the new, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


@dataclass
class Stage:
    kind: str
    hash: str
    dir: Path
    result: dict
    reused: bool

    def path(self, name: str) -> Path:
        return self.dir / name

    def tensors(self, name: str) -> dict[str, torch.Tensor]:
        return load_tensors(self.dir / name)


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.computed: list[str] = []  # "kind/hash" of stages this process computed (tests assert through it)

    def stage_dir(self, kind: str, digest: str) -> Path:
        return self.root / "runs" / kind / digest

    def find(self, kind: str, spec: dict, parents: Optional[dict[str, str]] = None) -> Optional[Stage]:
        """The complete, intact stage for this spec, or None."""
        digest = stage_hash(kind, spec, parents or {})
        folder = self.stage_dir(kind, digest)
        result = self._verified(folder)
        return Stage(kind, digest, folder, result, True) if result is not None else None

    def run(self, kind: str, spec: dict, parents: Optional[dict[str, str]], compute: Callable[[Path], dict]) -> Stage:
        """Reuse the stage if complete; otherwise compute it under a lock (``compute`` writes files into the folder
        and returns the result fields)."""
        parents = parents or {}
        digest = stage_hash(kind, spec, parents)
        folder = self.stage_dir(kind, digest)
        result = self._verified(folder)
        if result is not None:
            return Stage(kind, digest, folder, result, True)
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder / ".lock")):
            result = self._verified(folder)  # another job may have finished it while we waited
            if result is not None:
                return Stage(kind, digest, folder, result, True)
            self._discard_corrupt(folder)
            (folder / "config.yaml").write_text(yaml.safe_dump(json.loads(canonical({"kind": kind, "spec": spec,
                                                                                      "parents": parents})),
                                                               sort_keys=True))
            start = time.perf_counter()
            fields = compute(folder)
            files = {p.name: file_sha256(p) for p in sorted(folder.iterdir())
                     if p.is_file() and p.name not in _NOT_VOUCHED and not p.name.startswith(".")}
            result = {"wall_time_s": time.perf_counter() - start, **fields, "stage_kind": kind, "hash": digest,
                      "parents": parents, "files": files}
            atomic_write_json(folder / RESULT, result)
            (folder / CHECKPOINT).unlink(missing_ok=True)
        self.computed.append(f"{kind}/{digest}")
        return Stage(kind, digest, folder, result, False)

    def _verified(self, folder: Path) -> Optional[dict]:
        path = folder / RESULT
        if not path.exists():
            return None
        try:
            result = json.loads(path.read_text())
            bad = [name for name, digest in result.get("files", {}).items()
                   if not (folder / name).exists() or file_sha256(folder / name) != digest]
        except (OSError, json.JSONDecodeError) as err:
            bad = [f"{RESULT} ({err})"]
        if bad:
            warnings.warn(f"stage {folder} is corrupt ({', '.join(bad)} failed its checksum); recomputing it")
            return None
        return result

    @staticmethod
    def _discard_corrupt(folder: Path) -> None:
        """A folder with a result.json that failed verification is emptied; an incomplete one keeps its checkpoint."""
        if (folder / RESULT).exists():
            for entry in folder.iterdir():
                if entry.name != ".lock":
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
