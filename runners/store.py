"""Content-addressed stage folders: ``<root>/runs/<kind>/<hash>/``.

A stage's hash covers its spec (only fields that differ from their defaults — see ``runners.config.nondefault``)
and the hashes of its parent stages, so a sweep shares every stage it can: 8 methods × 5 sparsities × 3 seeds train
each dense model once. ``result.json`` is written last and atomically, with a checksum of every file it vouches for;
a folder without it is incomplete (and resumable), a folder whose files fail their checksum is recomputed.
A file lock keeps two concurrent jobs (joblib, SLURM array) from computing the same stage twice.
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import yaml
from filelock import FileLock

from foundations.files import atomic_write_json, load_tensors
from foundations.hashing import canonical, file_sha256, stage_hash

RESULT = "result.json"
CHECKPOINT = "checkpoint.pt"
_NOT_VOUCHED = {RESULT, CHECKPOINT, ".lock", "metrics.jsonl"}


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
