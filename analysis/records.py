"""Experiment records → one flat DataFrame, from the local store or from W&B run summaries.

Both loaders go through :func:`records_to_frame`, so a record gives the same row (same columns, same values, same
row order) whichever way it was fetched; only the ``source`` column (file path or W&B run path) differs.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from foundations.hashing import canonical
from foundations.progress import progress_bar
from foundations.record import SCALAR_FIELDS, legacy
from foundations.store import Store

log = logging.getLogger(__name__)

# The record's one-cell fields (foundations/record.py), in its order: these columns always exist (null when absent)
# so the report code never has to ask whether a column is there.
SCHEMA = list(SCALAR_FIELDS)
SOURCE = "source"
SETTING = "setting"  # the record's setting (foundations/record.py) as canonical JSON text
# df.attrs keys
ATTR_SOURCE = "source"
ATTR_UNREADABLE = "unreadable"  # list of [path, reason] for records that could not be read


# Where a record may keep a field: flat (``layer_collapse``), under the typed ``outputs`` mapping of the method's own
# fields (``outputs.layer_collapse``), or under the other name of a renamed field (the sweep's name: ``experiment``,
# later ``sweep``). Report code reads such fields through ``record_field`` only, so it reads both forms.
OUTPUTS = "outputs"
RENAMED = {"experiment": "sweep", "sweep": "experiment"}


def _field_names(name: str) -> list[str]:
    head, dot, rest = name.partition(".")
    heads = [head, *([RENAMED[head]] if head in RENAMED else [])]
    return [prefix + h + dot + rest for h in heads for prefix in ("", f"{OUTPUTS}.")]


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def record_field(df: pd.DataFrame, name: str) -> pd.Series:
    """The record field ``name`` (a dotted path: ``latency_ms.dense.256``) of every row, wherever the record keeps it
    (``_field_names``: flat, ``outputs.<name>``, the renamed field). A scalar comes back as its value (None where no
    form has it); a nested field (``per_layer_density``: columns ``per_layer_density.<key>``) as one dict per row of
    its present leaves, keyed by the rest of their path (``{"fc1.weight": 0.1}``; None where it has none)."""
    out = pd.Series([None] * len(df), index=df.index, dtype=object)
    for candidate in _field_names(name):
        leaves = [c for c in df.columns if c.startswith(candidate + ".")]
        for i in df.index:
            if _present(out[i]):
                continue
            if candidate in df.columns and _present(df.at[i, candidate]):
                out[i] = df.at[i, candidate]
            elif leaves:
                found = {c[len(candidate) + 1 :]: df.at[i, c] for c in leaves if _present(df.at[i, c])}
                out[i] = found or None
    return out


def flatten(record: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"latency_ms": {"dense": {"1": 0.1}}}`` → ``{"latency_ms.dense.1": 0.1}``. Lists stay as cell values."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            if value:
                out.update(flatten(value, name + "."))
            else:
                out[name] = None
        else:
            out[name] = value
    return out


def _sort_key(record: Mapping) -> tuple:
    """Row order independent of where the record came from; ties broken by the record's own content."""

    def text(v):
        return "" if v is None else str(v)

    def num(v):
        try:
            f = float(v)
        except (TypeError, ValueError):
            return math.inf
        return math.inf if math.isnan(f) else f

    return (
        text(record.get("experiment")),
        text(record.get("dataset")),
        text(record.get("model")),
        text(record.get("kind")),
        text(record.get("label")),
        num(record.get("target_sparsity")),
        num(record.get("seed")),
        json.dumps(record, sort_keys=True, default=str),
    )


def _row(record: Mapping, source: str) -> dict[str, Any]:
    """One record as a frame row: nested fields flattened, except ``setting``, kept whole as canonical JSON (the
    report compares settings as wholes; one column rather than one per config field)."""
    setting = record.get(SETTING)
    rest = {k: v for k, v in record.items() if k != SETTING}
    return {**flatten(rest), SETTING: canonical(setting) if isinstance(setting, Mapping) else None, SOURCE: source}


def records_to_frame(items: Iterable[tuple[Mapping, str]]) -> pd.DataFrame:
    """``(record, source)`` pairs → the report's DataFrame: one row per record, nested dicts flattened (but
    ``setting``: one JSON text column, null in records written before it)."""
    items = sorted(items, key=lambda item: _sort_key(item[0]))
    rows = [_row(record, source) for record, source in items]
    df = pd.DataFrame(rows) if rows else pd.DataFrame(columns=[*SCHEMA, SETTING, SOURCE])
    for column in SCHEMA:
        if column not in df.columns:
            df[column] = pd.Series([None] * len(df), dtype=object, index=df.index)
    # `latency_ms: null` in one record and a dict in another: the bare column says nothing the leaves don't.
    nested = {c.split(".", 1)[0] for c in df.columns if "." in c}
    df = df.drop(columns=[c for c in df.columns if c in nested and c not in SCHEMA and df[c].isna().all()])
    rest = sorted(c for c in df.columns if c not in SCHEMA and c != SOURCE)
    return df[[*SCHEMA, *rest, SOURCE]].reset_index(drop=True)


def read_records(root: str | Path) -> tuple[list[tuple[dict, str]], list[list[str]]]:
    """Every experiment record of the store at ``root`` as ``(record, path)`` (as this version writes records:
    ``foundations.record.legacy``), and ``[path, reason]`` for each file that could not be read (logged and
    skipped)."""
    items, unreadable = [], []
    found = list(Store(root).records())
    for path, record, problem in progress_bar(found, desc="reading records", unit="file", leave=False):
        if record is None:
            log.warning("skipping unreadable record %s (%s)", path, problem)
            unreadable.append([str(path), str(problem)])
            continue
        items.append((legacy(record), str(path)))  # without the store's bookkeeping, as W&B summaries have it
    return items, unreadable


def load_local(root: str | Path) -> pd.DataFrame:
    """Every ``<root>/runs/experiment/*/result.json`` as one row. Unreadable files are logged, listed in
    ``df.attrs["unreadable"]`` and skipped."""
    items, unreadable = read_records(root)
    df = records_to_frame(items)
    df.attrs[ATTR_SOURCE] = f"local store {Path(root)}"
    df.attrs[ATTR_UNREADABLE] = unreadable
    return df


def _plain(value: Any) -> Any:
    """W&B summary objects (SummarySubDict and friends) → plain dicts/lists, recursively."""
    raw = getattr(value, "_json_dict", None)
    if isinstance(raw, dict):
        value = raw
    if isinstance(value, Mapping) or (hasattr(value, "items") and hasattr(value, "keys")):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _is_media(value: Any) -> bool:
    # W&B stores logged tables/images in the summary as {"_type": "table-file", ...}
    return isinstance(value, dict) and "_type" in value


def record_from_wandb(summary: Any, config: Any) -> dict:
    """The experiment record a run logged as its summary, without W&B's own keys (``_step``, ``_wandb``...),
    logged metric series (``stage/metric``) and media; fields missing from the summary are taken from the config.
    A run logged before records had ``outputs`` reads as this version writes records (``legacy``)."""
    summary = _plain(summary) or {}
    config = _plain(config) or {}
    record = {k: v for k, v in summary.items() if not k.startswith("_") and "/" not in k and not _is_media(v)}
    # the config's key for the experiment name is `name` (`experiment` in runs logged before the rename)
    for field, keys in (("experiment", ("name", "experiment")), ("seed", ("seed",))):
        value = next((config[k] for k in keys if not isinstance(config.get(k), (dict, list, type(None)))), None)
        if field not in record and value is not None:
            record[field] = value
    for field in ("model", "dataset", "method"):
        value = config.get(field)
        if field not in record and isinstance(value, dict) and isinstance(value.get("name"), str):
            record[field] = value["name"]
    return legacy(record) if "status" in record else record


def _identity(record: dict, config: Any, run_path: str) -> str:
    """Which experiment a run is: the ``experiment_hash`` runners.train puts in the config (also the run id), else,
    for runs logged before it did, the record itself (an identical re-run logged the very same record)."""
    digest = (_plain(config) or {}).get("experiment_hash")
    if isinstance(digest, str) and digest:
        return digest
    return json.dumps(record, sort_keys=True, default=str) if "status" in record else run_path


def load_wandb(entity: Optional[str], project: str, api: Any = None) -> pd.DataFrame:
    """Runs of ``entity/project`` whose summary holds an experiment record, as the same DataFrame as
    :func:`load_local`, one row per experiment (runs of the same experiment hash count once, an ok one preferred).
    Report runs and runs that never logged a record are skipped (crashed ones are kept as failed rows so they are
    counted)."""
    if api is None:
        import wandb

        api = wandb.Api()
    path = f"{entity}/{project}" if entity else project
    found: dict[str, tuple[dict, str]] = {}
    skipped, repeated = [], []
    for run in progress_bar(api.runs(path), desc="reading W&B runs", unit="run", leave=False):
        run_path = "/".join(str(p) for p in getattr(run, "path", None) or [path, getattr(run, "id", "?")])
        if getattr(run, "job_type", None) == "report":
            continue
        config = getattr(run, "config", None)
        record = record_from_wandb(getattr(run, "summary", None), config)
        if "status" not in record:
            state = getattr(run, "state", None)
            if state in ("failed", "crashed", "killed"):
                record.setdefault("label", record.get("method"))
                record.update(status="failed", error=f"W&B run {state} before logging its record")
            else:
                skipped.append(run_path)
                continue
        key = _identity(record, config, run_path)
        if key in found:
            repeated.append(run_path)
            if found[key][0].get("status") == "ok" or record.get("status") != "ok":
                continue
        found[key] = (record, f"wandb:{run_path}")
    if skipped:
        log.info("skipped %d W&B runs without an experiment record: %s", len(skipped), ", ".join(skipped[:10]))
    if repeated:
        log.info(
            "left out %d W&B runs repeating an experiment already read: %s", len(repeated), ", ".join(repeated[:10])
        )
    df = records_to_frame(found.values())
    df.attrs[ATTR_SOURCE] = f"W&B project {path}"
    df.attrs[ATTR_UNREADABLE] = []
    return df


def filter_experiments(df: pd.DataFrame, patterns: Optional[list[str]]) -> pd.DataFrame:
    """Rows whose ``experiment`` matches any of the glob ``patterns`` (all rows when there are none)."""
    if not patterns:
        return df
    keep = df["experiment"].map(lambda e: isinstance(e, str) and any(fnmatch.fnmatchcase(e, p) for p in patterns))
    out = df[keep.astype(bool)].reset_index(drop=True)
    out.attrs = dict(df.attrs)
    return out


def split_usable(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(usable rows, excluded rows with a ``reason`` column). Usable: ``status == "ok"`` and a test accuracy."""
    ok_status = df["status"].map(lambda s: s == "ok").astype(bool)
    has_acc = pd.to_numeric(df["test_acc"], errors="coerce").notna()
    usable = df[ok_status & has_acc].copy()
    excluded = df[~(ok_status & has_acc)].copy()
    reasons = []
    for _, row in excluded.iterrows():
        if row["status"] == "ok":
            reasons.append("status ok but test_acc is missing")
        else:
            error = row["error"] if isinstance(row["error"], str) and row["error"] else None
            reasons.append(error or f"status={row['status']!r}, no error message")
    excluded["reason"] = pd.Series(reasons, index=excluded.index, dtype=object)
    return usable.reset_index(drop=True), excluded.reset_index(drop=True)
