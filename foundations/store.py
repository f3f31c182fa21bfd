"""The store: content-addressed stage folders ``<root>/runs/<kind>/<hash>/``, their file layout and its reader.

This module is the only one that names the files of a stage folder or the folders of the store; everything else
(the experiment, the export, the W&B mirror, the analysis) goes through ``Store`` and ``Stage``.

A stage's hash covers its spec (only fields that differ from their defaults — see ``foundations.checks.nondefault``)
and the hashes of its parent stages, so a sweep shares every stage it can: 8 methods × 5 sparsities × 3 seeds train
each dense model once. ``result.json`` is written last and atomically, with a checksum of every file it vouches for;
a folder without it is incomplete (and resumable). A folder whose files fail their checksum is moved aside, whoever
finds it (``find``, ``get``, ``get_or_compute``), to ``<root>/corrupt/<kind>/<hash>.<n>/`` with one warning, so the
next ``get_or_compute`` recomputes it from scratch and no reader of ``runs/`` ever sees it again.
A file lock per stage (``runs/<kind>/.<hash>.lock``, beside the folder so that moving the folder leaves it in place)
keeps two concurrent jobs (joblib, SLURM array) from computing the same stage twice, and a folder from being moved
while another job writes it: the checksums are checked again under the lock before anything is moved.

The store keeps JSON: ``result.json`` holds what a stage's ``compute`` returned (a typed result's ``to_json()``:
``methods.pipeline.results``) plus the store's own bookkeeping (``STORE_FIELDS``, ``wall_time_s``). Experiments are
stages of kind ``experiment`` whose result is the record (``foundations.record``): ``records`` reads them all.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
import yaml
from filelock import FileLock

from foundations.errors import UserError
from foundations.files import atomic_write_json, atomic_write_text, load_tensors, save_tensors, tensor_shapes
from foundations.hashing import canonical, file_sha256, stage_hash

# Which weights of a stage: its validation-selected checkpoint, its last iterate, or its snapshot at iteration k.
Weights = Union[str, int]  # "selected" | "last" | k
log = logging.getLogger("prunelab")
RESULT = "result.json"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
MIRROR = "wandb.json"  # where the W&B mirror logged an experiment: bookkeeping written after the record
_NOT_VOUCHED = {RESULT, CHECKPOINT, ".lock", METRICS, MIRROR}
# The only place that names the files of a stage folder.
_WEIGHTS = {"selected": "model.safetensors", "last": "last.safetensors"}
_MASKS, _PLAN, _CONFIG = "masks.safetensors", "plan.json", "config.yaml"
# tensors a following stage continues from that are no weights (ThiNet's sampling generator between its layers)
_STATE = "state.safetensors"
RUNS = "runs"  # <root>/runs/<kind>/<hash>/: the stages
CORRUPT = "corrupt"  # <root>/corrupt/<kind>/<hash>.<n>/: stage folders that failed verification, kept for a look
EXPERIMENT = "experiment"  # the kind of the stages whose result is an experiment's record
# What the store adds to every result.json: never science (not in a W&B summary, not in a table).
STORE_FIELDS = ("stage_kind", "hash", "parents", "files")
# A job folder's copy of a record (``runners.train``) also names the store holding its stages: an absolute path.
STORE_KEY = "store"


def store_of(path: Path, record: Mapping[str, Any]) -> Optional[Path]:
    """The store whose stages the record file ``path`` names: the one its job-folder copy names (``STORE_KEY``), or
    the one it lies in (``<root>/runs/experiment/<hash>/result.json``); None for neither."""
    if record.get(STORE_KEY):
        return Path(str(record[STORE_KEY]))
    where = path.resolve().parents
    inside = len(where) > 3 and where[1].name == EXPERIMENT and where[2].name == RUNS
    return where[3] if inside else None


def science(result: Mapping[str, Any]) -> dict[str, Any]:
    """A ``result.json`` without the store's bookkeeping (``STORE_FIELDS``, ``STORE_KEY``): a record as its W&B
    summary and the report see it."""
    return {k: v for k, v in result.items() if k not in STORE_FIELDS and k != STORE_KEY}


def _weights_file(which: Weights) -> str:
    if isinstance(which, int):
        return f"snapshot_{which}.safetensors"
    if which not in _WEIGHTS:
        raise ValueError(f"unknown weights {which!r}: selected, last or a snapshot iteration")
    return _WEIGHTS[which]


@dataclass
class Stage:
    """A finished stage folder: its ``result.json`` (``result_json``, as stored) and its weights, masks, channel
    plan or state. Typed views of the result are the callers' (``methods.pipeline.results``, ``ExperimentRecord``)."""

    kind: str
    hash: str
    dir: Path
    result_json: dict[str, Any]
    reused: bool

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.hash}"

    @property
    def wall_time_s(self) -> float:
        """Seconds its computation took (a stage's own bookkeeping; an experiment record's is per stage)."""
        return float(self.result_json["wall_time_s"])

    def has_plan(self) -> bool:
        return (self.dir / _PLAN).exists()

    def has_masks(self) -> bool:
        return (self.dir / _MASKS).exists()

    def plan_json(self) -> str:
        """The stored channel plan (``methods.pipeline.channels.ChannelPlan.from_json`` reads it)."""
        return (self.dir / _PLAN).read_text()

    def masks(self) -> dict[str, torch.Tensor]:
        return load_tensors(self.dir / _MASKS)

    def weights(self, which: Weights = "selected") -> dict[str, torch.Tensor]:
        return load_tensors(self.dir / _weights_file(which))

    def shapes(self, which: Weights = "selected") -> dict[str, tuple[int, ...]]:
        """The shapes of ``weights(which)`` without loading them (the architecture a stage stores)."""
        return tensor_shapes(self.dir / _weights_file(which))

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors the stage kept for a stage continuing from it (``StageFiles.state``); empty if none."""
        path = self.dir / _STATE
        return load_tensors(path) if path.exists() else {}

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

    def config(self) -> dict:
        """What the stage's hash covers: ``{"kind", "spec", "parents"}`` (its ``config.yaml``)."""
        return yaml.safe_load((self.dir / _CONFIG).read_text())

    @property
    def metrics_file(self) -> Optional[Path]:
        """Where a training stage's per-evaluation rows are (``metrics.jsonl``); None for other stages."""
        path = self.dir / METRICS
        return path if path.exists() else None

    def metrics(self) -> list[dict]:
        """The per-evaluation rows of a training stage (empty for other stages)."""
        path = self.metrics_file
        return [json.loads(line) for line in path.read_text().splitlines() if line] if path is not None else []


class StageFiles:
    """What a stage's ``compute`` writes into its folder (each file atomically)."""

    def __init__(self, folder: Path):
        self.dir = folder
        self.checkpoint = folder / CHECKPOINT  # the training loop's resumable state; deleted once the stage is done

    def weights(self, state: dict[str, torch.Tensor], which: Weights = "selected") -> None:
        save_tensors(self.dir / _weights_file(which), state)

    def masks(self, masks: dict[str, torch.Tensor]) -> None:
        save_tensors(self.dir / _MASKS, masks)

    def plan(self, plan_json: str) -> None:
        """A channel plan as its JSON text (``ChannelPlan.to_json``)."""
        atomic_write_text(self.dir / _PLAN, plan_json)

    def state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Tensors a following stage continues from (a random generator's state); vouched for like the weights."""
        save_tensors(self.dir / _STATE, tensors)

    def metrics(self, rows: list[dict]) -> None:
        atomic_write_text(self.dir / METRICS, "".join(json.dumps(row) + "\n" for row in rows))


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.computed: list[str] = []  # "kind/hash" of stages this process computed (tests assert through it)

    def stage_dir(self, kind: str, digest: str) -> Path:
        return self.root / RUNS / kind / digest

    def records(self) -> Iterator[tuple[Path, Optional[dict[str, Any]], Optional[str]]]:
        """Every experiment record file of the store, sorted: ``(path, result.json without the store's bookkeeping,
        None)``, or ``(path, None, why it is unreadable)``. Read as stored, without their checksums (the report
        reads many; a corrupt record's final stage is checked when an experiment needs it)."""
        for path in sorted((self.root / RUNS / EXPERIMENT).glob(f"*/{RESULT}")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(data, dict):
                    raise ValueError(f"expected a JSON object, found {type(data).__name__}")
            except (OSError, UnicodeDecodeError, ValueError) as err:
                yield path, None, f"{type(err).__name__}: {err}"
                continue
            yield path, science(data), None

    def count_stages(self) -> int:
        """Finished stages of every kind (a folder with its ``result.json``): the difference over a run is what the
        run computed."""
        runs = self.root / RUNS
        return sum(1 for _ in runs.glob(f"*/*/{RESULT}")) if runs.is_dir() else 0

    def record_path(self, digest: str) -> Path:
        """Where the record of the experiment ``digest`` lies (written by ``get_or_compute``, or ``write_record``)."""
        return self.stage_dir(EXPERIMENT, digest) / RESULT

    def write_record(self, digest: str, record: dict[str, Any]) -> None:
        """A record written outside ``get_or_compute`` (a failed experiment: no files to vouch for, retried by the
        next sweep since its status is not ok)."""
        path = self.record_path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, record)

    def forget_record(self, digest: str) -> None:
        """Remove a record about to be made again (its final stage was lost), so no reader sees the stale one."""
        self.record_path(digest).unlink(missing_ok=True)

    def _lock(self, kind: str, digest: str) -> FileLock:
        folder = self.stage_dir(kind, digest)
        folder.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(folder.parent / f".{digest}.lock"))

    def find(self, kind: str, spec: dict, parents: Optional[dict[str, str]] = None) -> Optional[Stage]:
        """The complete, intact stage for this spec, or None (a corrupt one is moved aside)."""
        digest = stage_hash(kind, spec, parents or {})
        result = self._intact(kind, digest)
        return Stage(kind, digest, self.stage_dir(kind, digest), result, True) if result is not None else None

    @staticmethod
    def weights_id(which: Weights) -> str:
        """How a choice of weights is named in a stage spec (the file it is stored in, as hashes always said)."""
        return _weights_file(which)

    def get(self, ref: str) -> Optional[Stage]:
        """The finished stage named ``kind/hash`` (as records name stages), verified against its checksums; None if
        the store has no such stage (a corrupt one is moved aside)."""
        kind, _, digest = ref.partition("/")
        result = self._intact(kind, digest)
        return Stage(kind, digest, self.stage_dir(kind, digest), result, True) if result is not None else None

    def at(self, ref: str) -> Stage:
        """:meth:`get`, for a stage that must exist."""
        stage = self.get(ref)
        if stage is None:
            raise UserError(
                f"stage {ref}: missing or corrupt (moved to {self.root / CORRUPT}) in {self.root}; "
                f"rerun the experiment that made it"
            )
        return stage

    def get_or_compute(
        self, kind: str, spec: dict, parents: Optional[dict[str, str]], compute: Callable[[StageFiles], dict]
    ) -> Stage:
        """Reuse the stage if complete; otherwise compute it under a lock (``compute`` writes files into the folder
        and returns the result fields). A corrupt folder is moved aside first and computed anew."""
        parents = parents or {}
        digest = stage_hash(kind, spec, parents)
        folder = self.stage_dir(kind, digest)
        result, _ = self._check(folder)
        if result is not None:
            return Stage(kind, digest, folder, result, True)
        with self._lock(kind, digest):
            result, problem = self._check(folder)  # another job may have finished (or moved) it while we waited
            if result is not None:
                return Stage(kind, digest, folder, result, True)
            if problem is not None:
                self._move_aside(kind, digest, problem)
            folder.mkdir(parents=True, exist_ok=True)
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

    def _intact(self, kind: str, digest: str) -> Optional[dict]:
        """The verified result of a finished stage; None for a missing or incomplete one, and for a corrupt one,
        which is moved aside. The first check takes no lock (the common case: intact, or not there); a failure is
        checked again under the stage's lock before anything moves, since what looked corrupt may have been a folder
        another job was moving or writing at that moment."""
        folder = self.stage_dir(kind, digest)
        result, problem = self._check(folder)
        if problem is None:
            return result
        with self._lock(kind, digest):
            result, problem = self._check(folder)
            if problem is None:
                return result
            self._move_aside(kind, digest, problem)
        return None

    @staticmethod
    def _check(folder: Path) -> tuple[Optional[dict], Optional[str]]:
        """``(result, None)`` for an intact finished stage, ``(None, None)`` for a missing or incomplete one (no
        result.json yet: resumable), ``(None, what failed)`` for a corrupt one."""
        path = folder / RESULT
        if not path.exists():
            return None, None
        try:
            result = json.loads(path.read_text())
            bad = [
                name
                for name, digest in result.get("files", {}).items()
                if not (folder / name).exists() or file_sha256(folder / name) != digest
            ]
        except (OSError, json.JSONDecodeError, AttributeError) as err:
            return None, f"{RESULT} is unreadable ({type(err).__name__})"
        if bad:
            return None, f"{', '.join(bad)} failed {'its' if len(bad) == 1 else 'their'} checksum"
        return result, None

    def _move_aside(self, kind: str, digest: str, problem: str) -> None:
        """Move a corrupt stage folder out of ``runs/`` (the caller holds the stage's lock), with one warning."""
        area = self.root / CORRUPT / kind
        area.mkdir(parents=True, exist_ok=True)
        n = 1
        while (area / f"{digest}.{n}").exists():
            n += 1
        target = area / f"{digest}.{n}"
        try:
            os.replace(self.stage_dir(kind, digest), target)
        except OSError:  # runs/ and corrupt/ on different file systems (a symlinked runs/)
            shutil.move(str(self.stage_dir(kind, digest)), str(target))
        log.warning(
            "stage %s/%s is corrupt (%s): moved to %s; it is recomputed when needed", kind, digest, problem, target
        )
