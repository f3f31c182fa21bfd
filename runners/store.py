"""Content-addressed stage folders: ``<root>/runs/<kind>/<hash>/``.

A stage's hash covers its spec (only fields that differ from their defaults — see ``foundations.checks.nondefault``)
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import yaml
from filelock import FileLock

from foundations.errors import UserError
from foundations.files import atomic_write_json, atomic_write_text, load_tensors, save_tensors, tensor_shapes
from foundations.hashing import canonical, file_sha256, stage_hash
from methods.pipeline.api import Weights
from methods.pipeline.channels import ChannelPlan

RESULT = "result.json"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
MIRROR = "wandb.json"  # where the W&B mirror logged an experiment: bookkeeping written after the record
_NOT_VOUCHED = {RESULT, CHECKPOINT, ".lock", METRICS, MIRROR}
# The only place that names the files of a stage folder.
_WEIGHTS = {"selected": "model.safetensors", "last": "last.safetensors"}
_MASKS, _PLAN, _CONFIG = "masks.safetensors", "plan.json", "config.yaml"


def _weights_file(which: Weights) -> str:
    if isinstance(which, int):
        return f"snapshot_{which}.safetensors"
    if which not in _WEIGHTS:
        raise ValueError(f"unknown weights {which!r}: selected, last or a snapshot iteration")
    return _WEIGHTS[which]


@dataclass
class Stage:
    """A finished stage folder: its result and its stored weights, masks or channel plan."""

    kind: str
    hash: str
    dir: Path
    result: dict
    reused: bool

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.hash}"

    def has_plan(self) -> bool:
        return (self.dir / _PLAN).exists()

    def has_masks(self) -> bool:
        return (self.dir / _MASKS).exists()

    def plan(self) -> ChannelPlan:
        return ChannelPlan.from_json((self.dir / _PLAN).read_text())

    def masks(self) -> dict[str, torch.Tensor]:
        return load_tensors(self.dir / _MASKS)

    def weights(self, which: Weights = "selected") -> dict[str, torch.Tensor]:
        return load_tensors(self.dir / _weights_file(which))

    def shapes(self, which: Weights = "selected") -> dict[str, tuple[int, ...]]:
        """The shapes of ``weights(which)`` without loading them (the architecture a stage stores)."""
        return tensor_shapes(self.dir / _weights_file(which))

    def mirror(self) -> Optional[dict]:
        """Where W&B holds this experiment's run (``{"project", "entity", "id"}``), once the mirror logged it."""
        try:
            return json.loads((self.dir / MIRROR).read_text())
        except (OSError, ValueError):
            return None

    def note_mirror(self, where: dict) -> None:
        atomic_write_json(self.dir / MIRROR, where)

    def model_files(self) -> list[Path]:
        """The files that are this stage's model: its selected weights and, where it has them, its masks or plan."""
        return [self.dir / name for name in (_WEIGHTS["selected"], _MASKS, _PLAN) if (self.dir / name).exists()]

    def snapshot(self, iteration: int) -> dict[str, torch.Tensor]:
        """The weights a training stage kept at ``iteration`` (a rewind point)."""
        return self.weights(iteration)

    def config(self) -> dict:
        """What the stage's hash covers: ``{"kind", "spec", "parents"}`` (its ``config.yaml``)."""
        return yaml.safe_load((self.dir / _CONFIG).read_text())

    def metrics(self) -> list[dict]:
        """The per-evaluation rows of a training stage (empty for other stages)."""
        path = self.dir / METRICS
        return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


class StageFiles:
    """What a stage's ``compute`` writes into its folder (each file atomically)."""

    def __init__(self, folder: Path):
        self.dir = folder
        self.checkpoint = folder / CHECKPOINT  # the training loop's resumable state; deleted once the stage is done

    def weights(self, state: dict[str, torch.Tensor], which: Weights = "selected") -> None:
        save_tensors(self.dir / _weights_file(which), state)

    def masks(self, masks: dict[str, torch.Tensor]) -> None:
        save_tensors(self.dir / _MASKS, masks)

    def plan(self, plan: ChannelPlan) -> None:
        atomic_write_text(self.dir / _PLAN, plan.to_json())

    def metrics(self, rows: list[dict]) -> None:
        atomic_write_text(self.dir / METRICS, "".join(json.dumps(row) + "\n" for row in rows))


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

    @staticmethod
    def weights_id(which: Weights) -> str:
        """How a choice of weights is named in a stage spec (the file it is stored in, as hashes always said)."""
        return _weights_file(which)

    def get(self, ref: str) -> Optional[Stage]:
        """The finished stage named ``kind/hash`` (as records name stages), verified against its checksums; None if
        the store has no such stage."""
        kind, _, digest = ref.partition("/")
        folder = self.stage_dir(kind, digest)
        result = self._verified(folder)
        return Stage(kind, digest, folder, result, True) if result is not None else None

    def at(self, ref: str) -> Stage:
        """:meth:`get`, for a stage that must exist."""
        stage = self.get(ref)
        if stage is None:
            raise UserError(f"stage {ref}: missing or corrupt in {self.root}; rerun the experiment that made it")
        return stage

    def get_or_compute(
        self, kind: str, spec: dict, parents: Optional[dict[str, str]], compute: Callable[[StageFiles], dict]
    ) -> Stage:
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
            (folder / _CONFIG).write_text(
                yaml.safe_dump(json.loads(canonical({"kind": kind, "spec": spec, "parents": parents})), sort_keys=True)
            )
            start = time.perf_counter()
            fields = compute(StageFiles(folder))
            files = {
                p.name: file_sha256(p)
                for p in sorted(folder.iterdir())
                if p.is_file() and p.name not in _NOT_VOUCHED and not p.name.startswith(".")
            }
            result = {
                "wall_time_s": time.perf_counter() - start,
                **fields,
                "stage_kind": kind,
                "hash": digest,
                "parents": parents,
                "files": files,
            }
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
            bad = [
                name
                for name, digest in result.get("files", {}).items()
                if not (folder / name).exists() or file_sha256(folder / name) != digest
            ]
        except (OSError, json.JSONDecodeError) as err:
            bad = [f"{RESULT} ({err})"]
        if bad:
            warnings.warn(
                f"stage {folder} is corrupt ({', '.join(bad)} failed its checksum); recomputing it", stacklevel=2
            )
            return None
        return result

    @staticmethod
    def _discard_corrupt(folder: Path) -> None:
        """A folder with a result.json that failed verification is emptied; an incomplete one keeps its checkpoint."""
        if (folder / RESULT).exists():
            for entry in folder.iterdir():
                if entry.name != ".lock":
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
