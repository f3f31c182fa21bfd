"""Does a pruned network get faster? Measured speed-up against the theoretical one, per kernel, from the records.

A record's ``latency_ms`` (``runners/experiment.py``) times the dense network and the pruned one in turns, in one
job on one machine (``latency_device``, ``latency_processor``, ``latency_threads``), at each batch size of
``latency.batch_sizes``. What "the pruned one" is depends on the method:

- weight-level records: ``masked`` (the network as stored: dense kernels, the mask multiplied in every forward) and
  ``sparse`` (the same weights through a ``torch.sparse`` kernel, ``runners/sparse.py``; ``latency_kernels`` names
  what each layer ran: ``csr``, ``bsr 4x4``, ``csr (im2col)``, ``dense: not pruned`` ...);
- channel-pruned records: ``pruned`` (the compacted network: fewer channels, dense kernels).

The measured speed-up of one of them is ``dense ms / its ms`` within one record (so a busy machine moves both
alike); the theoretical one is the record's ``speedup_theoretical`` (dense / effective multiply-adds). A record
timed with ``latency.sparse_kernel=none`` (or before these fields existed) has no ``latency_ms``: it has no
measured speed-up, which tables show as "—", never as 0.

The *throughput batch* is the largest batch size a record was timed at (256 by default); tables report it, and the
figure shows it beside batch 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Optional

import pandas as pd

from analysis.records import record_field

MASKED, COMPACTED = "masked", "compacted"
# the kernel a record's network ran, by what the record calls the network (`latency_ms` keys)
NETWORKS = {"masked": MASKED, "pruned": COMPACTED}  # "sparse": the kernel its layers name (kernel_of)
KERNEL_ORDER = (MASKED, "csr", "bsr", "coo", "semi_structured", COMPACTED)
KERNEL_NAMES = {
    MASKED: "masked (dense kernels)",
    "csr": "CSR sparse",
    "bsr": "BSR sparse",
    "coo": "COO sparse",
    "semi_structured": "2:4 sparse",
    COMPACTED: "compacted (structured)",
}
# columns prepare() adds per record: the table's measured speed-up (sparse kernel or compacted, throughput batch)
SPEEDUP, KERNEL, BATCH = "speedup_measured", "speedup_kernel", "speedup_batch"


def kernel_of(kernels: Optional[Mapping[str, Any]]) -> Optional[str]:
    """The kernel family a record's sparse network ran (``csr`` for ``csr`` / ``csr (im2col)``, ``bsr`` for
    ``bsr 4x4``), or None where no layer ran one (every layer ``dense: ...``: it timed the dense network twice)."""
    families = sorted(
        {str(v).split(" ")[0] for v in (kernels or {}).values() if isinstance(v, str) and not v.startswith("dense")}
    )
    return "+".join(families) if families else None


def _ms(value: Any) -> Optional[float]:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def record_speedups(latency: Optional[Mapping[str, Any]], kernels: Optional[Mapping[str, Any]]) -> list[dict]:
    """One record's measured speed-ups: ``[{"kernel", "batch", "speedup"}]``, ``speedup = dense ms / ms`` of each
    pruned network it timed, at each batch size timed for both. Latency in the report frame's flattened form
    (``{"dense.256": ms}``, as ``record_field`` gives it) or nested (``{"dense": {"256": ms}}``)."""
    nested: dict[str, dict[str, Any]] = {}
    for key, value in (latency or {}).items():
        if isinstance(value, Mapping):
            nested.setdefault(str(key), {}).update({str(b): v for b, v in value.items()})
        else:
            network, _, batch = str(key).partition(".")
            nested.setdefault(network, {})[batch] = value
    dense = nested.get("dense", {})
    out = []
    for network, times in nested.items():
        kernel = kernel_of(kernels) if network == "sparse" else NETWORKS.get(network)
        if network == "dense" or kernel is None:
            continue
        for batch, ms in times.items():
            reference, measured = _ms(dense.get(batch)), _ms(ms)
            if reference is not None and measured is not None and batch.isdigit():
                out.append({"kernel": kernel, "batch": int(batch), "speedup": reference / measured})
    return out


def speedups(df: pd.DataFrame) -> pd.DataFrame:
    """Every measured speed-up of every row of ``df``: columns ``index`` (the row's index in ``df``), ``kernel``,
    ``batch``, ``speedup`` and the row's ``theoretical`` speed-up. Rows without latency contribute nothing."""
    latency, kernels = record_field(df, "latency_ms"), record_field(df, "latency_kernels")
    theoretical = pd.to_numeric(record_field(df, "speedup_theoretical"), errors="coerce")
    rows = [
        {"index": i, **item, "theoretical": float(theoretical[i])}
        for i in df.index
        for item in record_speedups(latency[i], kernels[i])
    ]
    return pd.DataFrame(rows, columns=["index", "kernel", "batch", "speedup", "theoretical"])


def headline(df: pd.DataFrame) -> pd.DataFrame:
    """Per row of ``df``, the speed-up a table reports: the sparse kernel's (weight-level) or the compacted
    network's (structured) at the record's throughput batch (its largest), never the masked network's (dense
    kernels with a mask: what no one would deploy). Columns ``SPEEDUP``, ``KERNEL``, ``BATCH``; NaN / None where the
    record has no such measurement."""
    out = pd.DataFrame(
        {
            SPEEDUP: pd.Series(math.nan, index=df.index, dtype=float),
            KERNEL: pd.Series(None, index=df.index, dtype=object),
            BATCH: pd.Series(math.nan, index=df.index, dtype=float),
        }
    )
    measured = speedups(df)
    measured = measured[measured["kernel"] != MASKED]
    for i, rows in measured.groupby("index", sort=False):
        top = rows[rows["batch"] == rows["batch"].max()].iloc[0]
        out.at[i, SPEEDUP], out.at[i, KERNEL], out.at[i, BATCH] = top["speedup"], top["kernel"], top["batch"]
    return out


def kernel_order(kernel: str) -> tuple[int, str]:
    return (KERNEL_ORDER.index(kernel) if kernel in KERNEL_ORDER else len(KERNEL_ORDER), kernel)


def kernel_name(kernel: str) -> str:
    return KERNEL_NAMES.get(kernel, f"{kernel} sparse")


def machine(df: pd.DataFrame) -> str:
    """Where the latencies of ``df`` were measured: ``AMD EPYC (cpu), 1 thread``; several, "; "-joined; "machine not
    recorded" for records written before ``latency_processor``."""
    device = record_field(df, "latency_device")
    name = record_field(df, "latency_processor")
    threads = pd.to_numeric(record_field(df, "latency_threads"), errors="coerce")
    seen = []
    for i in df.index:
        if device[i] is None and name[i] is None:
            continue
        n = threads[i]
        count = "" if not math.isfinite(n) else f", {int(n)} thread{'s' if n != 1 else ''}"
        text = f"{name[i] or 'processor not recorded'} ({device[i] or '?'}){count}"
        if text not in seen:
            seen.append(text)
    return "; ".join(sorted(seen)) or "machine not recorded"
