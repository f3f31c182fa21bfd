"""Read an offline W&B run back from its transaction log (``offline-run-*/run-<id>.wandb``), as `wandb sync` would
upload it: the records are wandb's own protobuf messages (``wandb.proto.wandb_internal_pb2.Record``) in a
LevelDB-style log (a 7-byte ``:W&B`` header, then 32 KiB blocks of chunks with a 7-byte checksum/length/type header).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 32768
HEADER = struct.Struct("<IHB")  # crc32 (of type byte + data), length, type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1 and version == 0, (ident, magic, version)
    pos, payload = 7, b""
    while pos + HEADER.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER.size:  # a block's tail too short for a header is padding
            pos += left
            continue
        crc, length, kind = HEADER.unpack_from(data, pos)
        if kind == 0:  # zero padding up to the next block
            pos += left
            continue
        chunk = data[pos + HEADER.size : pos + HEADER.size + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == crc, f"bad checksum at {pos} in {path}"
        pos += HEADER.size + length
        payload = chunk if kind in (FULL, FIRST) else payload + chunk
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(payload)
            yield record


def _key(item) -> tuple[str, ...]:
    return tuple(item.nested_key) if item.nested_key else (item.key,)


def _set(target: dict, key: tuple[str, ...], value: Any) -> None:
    for part in key[:-1]:
        target = target.setdefault(part, {})
    target[key[-1]] = value


@dataclass
class OfflineRun:
    folder: Path
    id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    metrics: list[dict] = field(default_factory=list)  # define_metric: {name|glob_name, step_metric, hidden}
    artifacts: list[dict] = field(default_factory=list)  # {name, type, aliases, metadata, entries {path: ref}}
    exit_code: int | None = None

    def curve(self, key: str) -> list:
        return [row[key] for row in self.history if key in row]


def read_run(folder: Path) -> OfflineRun:
    """One ``offline-run-*`` folder as plain Python values (the last run record wins, as on the server)."""
    (log,) = Path(folder).glob("run-*.wandb")
    run = OfflineRun(Path(folder))
    for record in records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.id, run.name, run.group, run.job_type = r.run_id, r.display_name, r.run_group, r.job_type
            run.tags = list(r.tags)
            for item in r.config.update:
                _set(run.config, _key(item), json.loads(item.value_json))
        elif kind == "config":
            for item in record.config.update:
                _set(run.config, _key(item), json.loads(item.value_json))
        elif kind == "summary":
            for item in record.summary.update:
                _set(run.summary, _key(item), json.loads(item.value_json))
        elif kind == "history":
            row: dict = {}
            for item in record.history.item:
                _set(row, _key(item), json.loads(item.value_json))
            run.history.append(row)
        elif kind == "metric":
            m = record.metric
            run.metrics.append(
                {"name": m.name or m.glob_name, "step_metric": m.step_metric, "hidden": m.options.hidden}
            )
        elif kind == "artifact":
            a = record.artifact
            run.artifacts.append(
                {
                    "name": a.name,
                    "type": a.type,
                    "aliases": list(a.aliases),
                    "metadata": json.loads(a.metadata or "{}"),
                    "entries": {e.path: e.ref for e in a.manifest.contents},
                }
            )
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def offline_runs(root: Path) -> list[OfflineRun]:
    """Every offline run under ``root`` (any depth), by path."""
    return [read_run(p) for p in sorted(Path(root).rglob("offline-run-*")) if p.is_dir()]
