"""The report's answers to "does it get faster?" and "does a layer collapse?", from hand-written records whose
expected numbers are worked out here: measured speed-up = dense ms / pruned ms per record, mean and sample std over
seeds; the smallest per-layer density and the collapse flag of at-init records. Records in both layouts: method
fields flat (today) and under ``outputs`` with the sweep's name in ``sweep`` (the typed-record refactor)."""

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.lines import Line2D

from analysis import figures, report
from analysis.collapse import collapse_cells, collapse_tables
from analysis.figures import KERNEL_MARKERS, faster_counts, speedup_figure, speedup_points, style_map
from analysis.records import record_field, records_to_frame, split_usable
from analysis.speed import headline, kernel_of, machine, speedups
from analysis.tables import build_tables, prepare

LAYERS = {"fc1.weight": 0.1, "fc2.weight": 0.1, "fc3.weight": 0.1}


def rec(label, kind, sparsity, seed, *, latency=None, kernels=None, theoretical=10.0, **more):
    """A finished record with only what the report reads (and the latency timed on one thread of an AMD EPYC)."""
    return {
        "status": "ok",
        "experiment": "s",
        "method": label,
        "label": label,
        "kind": kind,
        "model": "mlp_bn",
        "dataset": "fashion_mnist",
        "seed": seed,
        "target_sparsity": sparsity,
        "density": 1 - sparsity,
        "compression": 1 / (1 - sparsity),
        "speedup_theoretical": theoretical,
        "test_acc": 0.8,
        "dense_test_acc": 0.9,
        "stage_hashes": {"dense": f"d{seed}"},
        "latency_ms": latency,
        "latency_kernels": kernels,
        "latency_device": "cpu" if latency else None,
        "latency_processor": "AMD EPYC" if latency else None,
        "latency_threads": 1 if latency else None,
        "per_layer_density": dict(LAYERS),
        **more,
    }


def weight_level(label, seed, sparse256, sparse1, kernel="csr", theoretical=9.5):
    latency = {
        "dense": {"1": 0.10, "256": 4.0},
        "masked": {"1": 0.125, "256": 5.0},
        "sparse": {"1": sparse1, "256": sparse256},
    }
    kernels = {"fc1": kernel, "fc2": f"{kernel} (im2col)", "fc3": "dense: not pruned"}
    return rec(label, "unstructured", 0.9, seed, latency=latency, kernels=kernels, theoretical=theoretical)


RECORDS = [
    weight_level("magnitude", 0, sparse256=2.0, sparse1=0.20),  # csr: 2.0 at 256, 0.5 at 1
    weight_level("magnitude", 1, sparse256=1.6, sparse1=0.25, theoretical=9.7),  # csr: 2.5 at 256, 0.4 at 1
    weight_level("obd", 0, sparse256=8.0, sparse1=0.05, kernel="bsr 4x4"),  # bsr: 0.5 at 256, 2.0 at 1
    rec("random", "unstructured", 0.9, 0),  # latency.sparse_kernel=none: no latency at all
    rec(
        "slimming",
        "structured",
        0.5,
        0,
        latency={"dense": {"1": 0.12, "256": 3.6}, "pruned": {"1": 0.1, "256": 1.2}},  # 1.2 at 1, 3.0 at 256
        theoretical=3.9,
    ),
]


def frame(records):
    usable, _ = split_usable(records_to_frame([(r, f"r{i}") for i, r in enumerate(records)]))
    return prepare(usable)


def point(points, label, kernel, batch):
    rows = points[(points["label"] == label) & (points["kernel"] == kernel) & (points["batch"] == batch)]
    assert len(rows) == 1, (label, kernel, batch, points)
    return rows.iloc[0]


def test_each_record_gives_one_point_per_network_and_batch_dense_over_pruned():
    measured = speedups(frame(RECORDS))
    # magnitude: masked + csr, obd: masked + bsr, slimming: compacted; two batch sizes each; random: none
    assert sorted(measured.groupby("kernel").size().items()) == [
        ("bsr", 2),
        ("compacted", 2),
        ("csr", 4),
        ("masked", 6),
    ]
    points = speedup_points(frame(RECORDS))
    csr = point(points, "magnitude", "csr", 256)
    assert csr["y"] == pytest.approx((4.0 / 2.0 + 4.0 / 1.6) / 2)  # 2.25
    assert csr["y_std"] == pytest.approx(np.std([2.0, 2.5], ddof=1)) and csr["n"] == 2
    assert csr["x"] == pytest.approx(9.6) and csr["x_std"] == pytest.approx(np.std([9.5, 9.7], ddof=1))
    assert point(points, "magnitude", "csr", 1)["y"] == pytest.approx((0.10 / 0.20 + 0.10 / 0.25) / 2)
    assert point(points, "magnitude", "masked", 256)["y"] == pytest.approx(0.8)
    assert point(points, "obd", "bsr", 256)["y"] == pytest.approx(0.5) and point(points, "obd", "bsr", 1)["y"] == 2
    assert point(points, "slimming", "compacted", 256)["y"] == pytest.approx(3.0)
    assert point(points, "slimming", "compacted", 1)["x"] == pytest.approx(3.9)
    assert "random" not in set(points["label"])
    assert faster_counts(points[points["batch"] == 256]) == {
        "masked": (0, 2),
        "csr": (1, 1),
        "bsr": (0, 1),
        "compacted": (1, 1),
    }


def test_the_kernel_is_what_the_layers_ran():
    assert kernel_of({"a": "csr", "b": "csr (im2col)", "c": "dense: not pruned"}) == "csr"
    assert kernel_of({"a": "bsr 16x16", "b": "bsr 2x2"}) == "bsr"
    # every layer dense (semi_structured on a CPU): the "sparse" network is the dense one, no kernel to show
    assert kernel_of({"a": "dense: not supported (semi_structured: not supported on cpu)"}) is None
    df = frame([rec("magnitude", "unstructured", 0.9, 0, latency=RECORDS[0]["latency_ms"], kernels={"a": "dense: x"})])
    assert set(speedups(df)["kernel"]) == {"masked"} and headline(df)["speedup_measured"].isna().all()


def test_the_figure_draws_the_diagonal_dense_speed_and_every_point_in_two_panels():
    points = speedup_points(frame(RECORDS))
    fig = speedup_figure(points, style_map(points["label"]), title="t", machine_text="AMD EPYC (cpu), 1 thread")
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["batch 1", "batch 256 (throughput)"]
    for ax, batch in zip(axes, (1, 256)):
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        lines = [line for line in ax.get_lines() if isinstance(line, Line2D)]
        diagonal = [ln for ln in lines if len(ln.get_xdata()) == 2 and np.allclose(ln.get_xdata(), ln.get_ydata())]
        assert len(diagonal) == 1
        assert any(np.allclose(ln.get_ydata(), 1.0) and ln.get_linestyle() == "--" for ln in lines)  # dense speed
        drawn = sorted(
            (round(float(x), 6), round(float(y), 6))
            for ln in lines
            if ln.get_marker() in set(KERNEL_MARKERS.values())  # not the error bars' caps
            for x, y in zip(ln.get_xdata(), ln.get_ydata())
        )
        panel = points[points["batch"] == batch]
        assert drawn == sorted((round(x, 6), round(y, 6)) for x, y in zip(panel["x"], panel["y"]))
        assert not [c for c in ax.collections if isinstance(c, PathCollection)]  # no stray scatter
    assert "Timed on AMD EPYC (cpu), 1 thread" in fig.get_suptitle()
    boxes = [t.get_text() for t in axes[1].texts]
    assert boxes == [
        "faster than dense:\nmasked (dense kernels) 0/2\nCSR sparse 1/1\nBSR sparse 0/1\ncompacted (structured) 1/1"
    ]


def test_the_compression_table_shows_the_measured_speedup_and_a_dash_without_latency():
    tables = build_tables(split_usable(records_to_frame([(r, f"r{i}") for i, r in enumerate(RECORDS)]))[0])
    table = next(t for t in tables if t.name.endswith("compression"))
    column = table.header.index("Measured speed-up b256 (kernel)")
    assert table.header[column - 1] == "Theoretical speed-up (×)"
    cells = {row[0].main: row[column].plain() for row in table.rows}
    assert cells["magnitude"] == f"2.25 ± {np.std([2.0, 2.5], ddof=1):.2f} (csr)"
    assert cells["obd"] == "0.50 (bsr)"
    assert cells["slimming"] == "3.00 (compacted)"
    assert cells["random"] == "—"  # not 0: nothing was timed
    assert cells["dense"] == "1.00 (dense)"
    assert "AMD EPYC (cpu), 1 thread" in table.caption
    long = table.long.set_index("label")
    assert long.loc["magnitude", "speedup_measured_mean"] == pytest.approx(2.25)
    assert math.isnan(long.loc["random", "speedup_measured_mean"])


def test_the_one_screen_summary_names_its_batch_and_kernel():
    text = report.compact_summary(frame(RECORDS))
    header = next(line for line in text.splitlines() if line.startswith("dataset / model"))
    assert "speed-up × b256 (kernel)" in header
    rows = {line.split()[4]: line for line in text.splitlines() if line.startswith("fashion_mnist / mlp_bn")}
    assert rows["magnitude"].rstrip().endswith("2.25 ± 0.35 (csr)")
    assert rows["slimming"].rstrip().endswith("3.00 (compacted)")
    assert rows["random"].rstrip().endswith("—")
    assert "throughput batch (the largest timed: 256)" in text and "AMD EPYC (cpu), 1 thread" in text


def test_a_record_timed_at_other_batch_sizes_reports_its_own_largest():
    latency = {"dense": {"1": 1.0, "64": 8.0}, "sparse": {"1": 2.0, "64": 2.0}}
    df = frame([rec("magnitude", "unstructured", 0.9, 0, latency=latency, kernels={"fc1": "coo"})])
    top = headline(df).iloc[0]
    assert (top["speedup_measured"], top["speedup_kernel"], top["speedup_batch"]) == (4.0, "coo", 64)
    assert "speed-up × b64 (kernel)" in report.compact_summary(df)


# ------------------------------------------------------------------------------------------------ layer collapse
def at_init(label, sparsity, seed, density, *, collapsed, critical=None, refactored=False):
    record = rec(label, "unstructured", sparsity, seed, method_config={"when": "init"})
    record["per_layer_density"] = density
    if refactored:  # the typed record: method fields under outputs, the sweep's name in `sweep`
        record["sweep"] = record.pop("experiment")
        record["outputs"] = {"layer_collapse": collapsed, "critical_compression": critical}
    else:
        record.update(layer_collapse=collapsed, critical_compression=critical)
    return record


COLLAPSE = [
    at_init("snip", 0.98, 0, {"fc1.weight": 0.0, "fc2.weight": 0.2, "fc3.weight": 0.5}, collapsed=True),
    at_init("snip", 0.98, 1, {"fc1.weight": 0.004, "fc2.weight": 0.2}, collapsed=False, refactored=True),
    at_init("snip", 0.5, 0, {"fc1.weight": 0.3, "fc2.weight": 0.1, "fc2.bias": 0.01}, collapsed=False),
    at_init("synflow", 0.5, 0, {"fc1.weight": 0.4, "fc2.weight": 0.6}, collapsed=False, critical=316.2),
    rec("magnitude", "unstructured", 0.98, 0, layer_collapse=True, method_config={"when": "after_training"}),
]


def test_the_collapse_table_flags_collapsed_records_with_their_smallest_layer():
    cells = collapse_cells(frame(COLLAPSE)).set_index(["label", "target_sparsity"])
    assert set(cells.index) == {("snip", 0.98), ("snip", 0.5), ("synflow", 0.5)}  # magnitude is not at init
    high = cells.loc[("snip", 0.98)]
    assert (high["collapsed"], high["collapse_recorded"], high["n"]) == (1, 2, 2)  # flat and `outputs.` forms
    assert high["smallest_density_mean"] == pytest.approx(0.002) and high["smallest_layer"] == "fc1.weight"
    low = cells.loc[("snip", 0.5)]
    assert low["collapsed"] == 0 and low["smallest_density_mean"] == 0.1 and low["smallest_layer"] == "fc2.weight"
    assert cells.loc[("synflow", 0.5), "critical_compression_mean"] == 316.2
    assert math.isnan(high["critical_compression_mean"])
    (table,) = collapse_tables(frame(COLLAPSE))
    rows = {(r[0].main, r[1].main): r for r in table.rows}
    assert rows[("snip", "98%")][5].main == "yes (1/2 seeds)" and rows[("snip", "98%")][5].bold
    assert rows[("snip", "50%")][5].main == "no" and not rows[("snip", "50%")][5].bold
    assert rows[("snip", "50%")][3].main == "10" and rows[("snip", "50%")][4].main == "fc2.weight"
    assert rows[("synflow", "50%")][6].main == "316" and rows[("snip", "50%")][6].main == "—"


def test_no_collapse_table_or_figure_without_at_init_records(tmp_path, monkeypatch):
    monkeypatch.setattr(figures, "accuracy_figure", lambda *args, **kwargs: [])  # seconds each; tested elsewhere
    assert collapse_tables(frame(RECORDS)) == []
    outputs = report.generate_report(records_to_frame([(r, "x") for r in RECORDS]), tmp_path)
    names = {p.name for group in outputs.values() for p in group}
    assert not any("collapse" in n for n in names)
    assert "fashion_mnist_mlp_bn_speedup_measured_vs_theoretical.png" in names
    outputs = report.generate_report(records_to_frame([(r, "x") for r in COLLAPSE]), tmp_path / "c")
    names = {p.name for group in outputs.values() for p in group}
    assert {"fashion_mnist_mlp_bn_layer_collapse.png", "fashion_mnist_mlp_bn_layer_collapse.md"} <= names
    assert "fashion_mnist_mlp_bn_speedup_measured_vs_theoretical.png" not in names  # nothing timed


def test_record_field_reads_flat_outputs_and_the_renamed_sweep():
    df = records_to_frame([(COLLAPSE[0], "flat"), (COLLAPSE[1], "outputs")]).set_index("source")
    assert {"layer_collapse", "outputs.layer_collapse", "experiment", "sweep"} <= set(df.columns)
    assert record_field(df, "layer_collapse").to_dict() == {"flat": True, "outputs": False}
    assert record_field(df, "experiment").to_dict() == {"flat": "s", "outputs": "s"}
    assert record_field(df, "sweep").to_dict() == {"flat": "s", "outputs": "s"}
    assert record_field(df, "per_layer_density")["outputs"] == {"fc1.weight": 0.004, "fc2.weight": 0.2}
    assert record_field(df, "critical_compression").isna().all() and record_field(df, "no_such_field").isna().all()


def test_machine_lists_each_place_latency_was_timed_once():
    two = [RECORDS[0], {**RECORDS[2], "latency_threads": 2, "latency_processor": "Xeon"}, RECORDS[3]]
    assert machine(records_to_frame([(r, "x") for r in two])) == "AMD EPYC (cpu), 1 thread; Xeon (cpu), 2 threads"
    assert machine(records_to_frame([(RECORDS[3], "x")])) == "machine not recorded"
    assert pd.isna(headline(frame([RECORDS[3]]))["speedup_measured"]).all()
