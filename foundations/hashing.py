"""Canonical JSON and the content hash that names a stage folder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


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
