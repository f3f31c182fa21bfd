"""Which records are seeds of one setting, and how the report names its rows.

A *setting* is an experiment's identity without its seed: the record fields ``setting`` (the hashed config — model,
dataset, method, train, explicit ``seeds.*`` overrides, thread count — without the top-level ``seed`` and the sweep
name; ``runners.experiment.setting_spec``) and ``setting_hash``. Records of one setting differ only in their seed;
records of different settings are never averaged.

- **Rows.** A table row is a method label. Where one label holds several settings (besides the sparsity, which is the
  column), each gets its own row, labelled with the fields in which those settings differ:
  ``magnitude [dataset.num_train=2000, train.epochs=1]``. The sparsity is named too, for a method that sets its own
  sparsity (its column is the achieved value) when two targets land in one column.
- **Cells.** One row at one sparsity. A cell counts one value per seed: records of one setting and seed are the same
  computation (another sweep name, or a shared training below), so they count once (their mean).
- **Shared rows.** Records whose final stage is the same for every seed at every sparsity are one training under two
  labels (Scratch-E/B of slimming and of ThiNet on ``mlp_bn``: the same layer widths, and the scratch training is
  keyed by the widths). They are one row, labelled with both sources: ``scratch-E (slimming = thinet)``.
- **Dense baselines.** One per dense setting (the setting without its method part, nor ``seeds.prune``): the dense
  models the rows started from. Several dense settings in one table are labelled like rows.
- **Old records** (no ``setting``): grouped by label, sparsity and ``method_config``, as before these fields; a
  caption says so, since such records may differ in training or data and still share a cell.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Optional

import pandas as pd

from analysis.records import flatten
from foundations.hashing import canonical

SPARSITY_PATH = "method.sparsity"  # the column axis: a row is named by it only where two targets share a column
DEFAULT = "default"  # how a field missing from a setting (its default value) is named
OLD_RECORD = "old record"  # the row name of records without a setting beside rows with one
# prepare()'s columns (analysis.tables.prepare)
ROW, SETTING_KEY, LEGACY, SHARED, DENSE_KEY, DENSE_ROW = (
    "row",
    "setting_key",
    "legacy",
    "shared",
    "dense_key",
    "dense_row",
)

NOTE_VARIANTS = (
    "[field=value]: one method run in several settings; each is its own row, named by the config fields (dotted "
    f"paths; {DEFAULT!r}: the field's default) in which they differ. Different settings are never averaged."
)
NOTE_LEGACY = (
    "Some records predate the record's setting (an older store): they are grouped by method label, sparsity and "
    "method config only, so runs that differ in their training or data may share a cell."
)


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _setting(row: Mapping) -> Optional[dict]:
    raw = row.get("setting")
    if isinstance(raw, str) and raw:
        value = json.loads(raw)
        return value if isinstance(value, dict) else None
    return raw if isinstance(raw, dict) else None


def _method_config(row: Mapping) -> dict:
    """An old record's method config as setting paths (``method.<field>``), from the frame's flattened columns."""
    prefix = "method_config."
    return {f"method.{k[len(prefix) :]}": v for k, v in row.items() if k.startswith(prefix) and _present(v)}


def short(value: Any) -> str:
    """A setting value as a row label shows it: short (a content digest is cut to its first characters)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(short(v) for v in value) + "]"
    text = str(value)
    return text if len(text) <= 20 else text[:16] + "…"


def differing(variants: Iterable[Mapping]) -> list[str]:
    """The paths whose values are not the same in every variant (a missing path is the field's default)."""
    variants = list(variants)
    paths = sorted(set().union(*(v.keys() for v in variants))) if variants else []
    return [p for p in paths if len({canonical(v.get(p, DEFAULT)) for v in variants}) > 1]


def name_fields(variant: Mapping, paths: list[str]) -> list[str]:
    return [f"{p}={short(variant[p]) if p in variant else DEFAULT}" for p in paths]


def with_names(label: str, names: list[str]) -> str:
    return f"{label} [{', '.join(names)}]" if names else label


_TOKEN = re.compile(r"[^\s(),\[\]=]+|[\s(),\[\]=]")


def merge_labels(labels: list[str]) -> str:
    """One label for rows that are one training: the parts in which the labels differ joined by " = "
    (``scratch-E (slimming)``, ``scratch-E (thinet)`` -> ``scratch-E (slimming = thinet)``)."""
    tokens = [_TOKEN.findall(label) for label in labels]
    shortest = min(len(t) for t in tokens)
    head = 0
    while head < shortest and len({t[head] for t in tokens}) == 1:
        head += 1
    tail = 0
    while tail < shortest - head and len({t[len(t) - 1 - tail] for t in tokens}) == 1:
        tail += 1
    middles = ["".join(t[head : len(t) - tail]).strip() for t in tokens]
    if not all(middles):
        return " = ".join(labels)
    first = tokens[0]
    return "".join(first[:head]) + " = ".join(middles) + "".join(first[len(first) - tail :])


# ------------------------------------------------------------------------------------------------ rows


def _name_family(family: pd.DataFrame, variants: dict[Any, dict], legacy: pd.Series) -> dict[Any, str]:
    """Row label of each record of one (dataset, model, kind, label) family."""
    keys = {i: canonical(variants[i]) for i in family.index}
    if len(set(keys.values())) == 1:
        return {i: family.at[i, "label"] for i in family.index}
    mixed = legacy[family.index].any() and not legacy[family.index].all()
    names: dict[Any, str] = {}
    for is_legacy in (False, True):
        members = [i for i in family.index if bool(legacy[i]) == is_legacy]
        distinct = {keys[i]: variants[i] for i in members}
        paths = differing(distinct.values())
        for i in members:
            parts = ([OLD_RECORD] if is_legacy and mixed else []) + name_fields(variants[i], paths)
            names[i] = with_names(family.at[i, "label"], parts)
    return names


def _rows(df: pd.DataFrame, variants: dict[Any, dict], legacy: pd.Series) -> pd.Series:
    rows = pd.Series("", index=df.index, dtype=object)
    for _, family in df.groupby(["dataset", "model", "kind", "label"], sort=True, dropna=False):
        without = {i: {k: v for k, v in variants[i].items() if k != SPARSITY_PATH} for i in family.index}
        names = _name_family(family, without, legacy)
        cells = family.assign(_row=pd.Series(names)).groupby(
            ["_row", "sparsity", "sparsity_marked"], sort=False, dropna=False
        )
        if any(cell[SETTING_KEY].nunique() > 1 for _, cell in cells):  # two targets in one achieved column
            names = _name_family(family, variants, legacy)
        for i, name in names.items():
            rows[i] = name
    return rows


def _merge_shared(df: pd.DataFrame) -> pd.DataFrame:
    """Rows whose records have one final stage per (sparsity, seed), the same for every seed and sparsity, become
    one row (one training under several labels)."""
    df = df.copy()
    df[SHARED] = ""
    for _, group in df.groupby(["dataset", "model", "kind"], sort=True, dropna=False):
        by_signature: dict[frozenset, list[str]] = {}
        for row, records in group.groupby(ROW, sort=True):
            signature = _signature(records)
            if signature:
                by_signature.setdefault(signature, []).append(str(row))
        for rows in by_signature.values():
            if len(rows) > 1:
                members = group.index[group[ROW].isin(rows)]
                df.loc[members, ROW] = merge_labels(sorted(rows, key=lambda s: (s.casefold(), s)))
                df.loc[members, SHARED] = " | ".join(sorted(rows, key=lambda s: (s.casefold(), s)))
    return df


def _signature(records: pd.DataFrame) -> Optional[frozenset]:
    """{(sparsity, marked, seed, final stage)} of a row or a cell, or None when a (sparsity, seed) has no single
    final stage."""
    if "final_stage" not in records.columns:
        return None
    items = set()
    for key, cell in records.groupby(["sparsity", "sparsity_marked", "seed"], sort=False, dropna=False):
        stages = set(cell["final_stage"])
        if len(stages) != 1:
            return None
        stage = stages.pop()
        if not isinstance(stage, str) or not stage:
            return None
        items.add((*key, stage))
    return frozenset(items) or None


# ------------------------------------------------------------------------------------------------ dense


def _dense_variant(row: Mapping) -> Optional[dict]:
    """What the dense model of a record depends on: its setting without the method (nor the pruning seed)."""
    setting = _setting(row)
    if setting is None:
        return None
    dense = {k: v for k, v in setting.items() if k != "method"}
    seeds = {k: v for k, v in (dense.get("seeds") or {}).items() if k != "prune"}
    dense["seeds"] = seeds
    return flatten(dense)


def _dense_rows(df: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Each record's dense key and its baseline's label. Only records with a dense accuracy (dense records, pruned
    ones with ``dense_test_acc``) make baselines, so only their settings are compared (pruning at initialization
    under another init has no dense model: it names no field of the others)."""
    keys = pd.Series("", index=df.index, dtype=object)
    names = pd.Series("dense", index=df.index, dtype=object)
    variants = {i: _dense_variant(df.loc[i]) for i in df.index}
    for i, variant in variants.items():
        keys[i] = "legacy" if variant is None else canonical(variant)
    dense_acc = pd.to_numeric(df["dense_test_acc"], errors="coerce") if "dense_test_acc" in df.columns else None
    has_dense = (df["kind"] == "dense") | (dense_acc.notna() if dense_acc is not None else False)
    for _, group in df.groupby(["dataset", "model"], sort=True, dropna=False):
        distinct = {keys[i]: variants[i] for i in group.index if has_dense[i]}
        if len(distinct) < 2:
            continue
        paths = differing(v for v in distinct.values() if v is not None)
        for i in group.index:
            variant = variants[i]
            names[i] = with_names("dense", [OLD_RECORD] if variant is None else name_fields(variant, paths))
    return keys, names


# ------------------------------------------------------------------------------------------------ entry point


def assign_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The prepared frame (``label``, ``kind``, ``dataset``, ``model``, ``sparsity``, ``sparsity_marked`` filled) with
    the columns ``setting_key`` (records with equal keys are seeds of one setting), ``legacy`` (an old record, no
    setting), ``row`` (the row label), ``shared`` (the rows merged into this one, " | "-joined, or ""),
    ``dense_key`` and ``dense_row`` (the dense baseline a record's ``dense_test_acc`` belongs to, and its label)."""
    df = df.copy()
    if df.empty:
        for column in (SETTING_KEY, ROW, SHARED, DENSE_KEY, DENSE_ROW):
            df[column] = pd.Series(dtype=object)
        df[LEGACY] = pd.Series(dtype=bool)
        return df
    records = {i: df.loc[i].to_dict() for i in df.index}
    settings = {i: _setting(r) for i, r in records.items()}
    legacy = pd.Series({i: s is None for i, s in settings.items()}, dtype=bool)
    variants = {i: flatten(s) if s is not None else _method_config(records[i]) for i, s in settings.items()}
    keys = {}
    for i, record in records.items():
        digest = record.get("setting_hash")
        if settings[i] is not None:
            keys[i] = digest if isinstance(digest, str) and digest else canonical(settings[i])
        else:
            keys[i] = "legacy:" + canonical(variants[i])
    df[SETTING_KEY] = pd.Series(keys, dtype=object)
    df[LEGACY] = legacy
    df[ROW] = _rows(df, variants, legacy)
    df = _merge_shared(df)
    df[DENSE_KEY], df[DENSE_ROW] = _dense_rows(df)
    return df


def notes(group: pd.DataFrame) -> list[str]:
    """Caption notes for the records of one table or figure: named settings, shared rows, old records."""
    pruned = group[group["kind"] != "dense"]
    out = []
    if _named(group):
        out.append(NOTE_VARIANTS)
    for shared in sorted(set(pruned[SHARED]) - {""}):
        members = pruned[pruned[SHARED] == shared]
        why = (
            ": their sources leave the same layer widths, and a scratch training is keyed by the widths"
            if members["method"].eq("scratch").all()
            else ""
        )
        out.append(
            f"{members[ROW].iloc[0]}: {' and '.join(shared.split(' | '))} are one training (the same final stage "
            f"for every seed and sparsity{why}); one row."
        )
    out += partial_shares(pruned)
    if group[LEGACY].any():
        out.append(NOTE_LEGACY)
    return out


def _named(group: pd.DataFrame) -> bool:
    """Whether any row or dense label names setting fields (``[...]``)."""
    return bool(group[ROW].str.contains(r" \[", regex=True).any() or group[DENSE_ROW].ne("dense").any())


def partial_shares(pruned: pd.DataFrame) -> list[str]:
    """Rows not merged (their stages differ somewhere) that still share one training at some sparsities."""
    out = []
    for _, group in pruned.groupby(["dataset", "model", "kind"], sort=True, dropna=False):
        cells: dict[tuple, dict[frozenset, list[str]]] = {}
        for (row, sparsity, marked), cell in group.groupby([ROW, "sparsity", "sparsity_marked"], sort=True):
            signature = _signature(cell)
            if signature:
                cells.setdefault((sparsity, marked), {}).setdefault(signature, []).append(str(row))
        together: dict[tuple[str, ...], list[tuple]] = {}
        for column, by_signature in sorted(cells.items()):
            for rows in by_signature.values():
                if len(rows) > 1:
                    together.setdefault(tuple(sorted(rows)), []).append(column)
        for names, columns in together.items():
            at = ", ".join(f"{100 * s:.4g}%{'*' if m else ''}" for s, m in columns)
            out.append(f"{' and '.join(names)} are one training at {at} (the same final stage for every seed).")
    return out
