"""analysis.report on a hand-written store with known numbers: exact table cells, CSV numbers, failed and corrupt
records, figures, the W&B loader (mocked API) and the CLI.

Cells are mean ± *sample* std (ddof=1, the pandas default) of test accuracy in percent over seeds.
"""

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import report
from analysis.figures import KNOWN_STYLES, curve, spread_note, style_map
from analysis.records import load_local, load_wandb, split_usable
from analysis.tables import build_tables, clearly_better, dense_baseline, dense_baselines, numeric, prepare
from foundations.hashing import stage_hash
from runners.identity import hash_setting

DENSE = {0: 0.980, 1: 0.981, 2: 0.982}  # dense model per seed → dense row 98.10 ± 0.10 (n=3)
# (label, kind, target sparsity) → {seed: test_acc}
ACCS = {
    ("magnitude", "unstructured", 0.5): {0: 0.971, 1: 0.972, 2: 0.973},  # 97.20 ± 0.10, best at 50%
    ("magnitude", "unstructured", 0.9): {0: 0.950, 1: 0.960, 2: 0.970},  # 96.00 ± 1.00, best at 90%
    ("random", "unstructured", 0.5): {0: 0.961, 1: 0.963, 2: 0.965},  # 96.30 ± 0.20
    ("random", "unstructured", 0.9): {0: 0.900, 1: 0.910},  # 90.50 ± 0.71 (n=2); seed 2 failed
    ("slimming", "structured", 0.5): {0: 0.955, 1: 0.957, 2: 0.959},  # 95.70 ± 0.20, best at 50%
    ("scratch-B (slimming)", "structured", 0.5): {0: 0.950},  # 95.00 (n=1)
}


def record(label, kind, sparsity, seed, acc, experiment="survey"):
    compression = 1 / (1 - sparsity) * (0.95 if kind == "unstructured" else 1.2)
    latency = (
        {"dense": {"1": 0.12, "256": 3.4}, "pruned": {"1": 0.08, "256": 3.4 * (1 - sparsity)}}
        if kind == "structured"
        else None
    )
    return {
        "status": "ok",
        "error": None,
        "experiment": experiment,
        "method": label.split(" ")[0],
        "label": label,
        "kind": kind,
        "model": "mlp_bn",
        "dataset": "fashion_mnist",
        "seed": seed,
        "target_sparsity": sparsity,
        "density": 1 - sparsity,
        "sparsity_all_params": 1 - 1 / compression,
        "compression": compression,
        "params_total": 545810,
        "params_nonzero": int(545810 / compression),
        "flops_dense": 545000,
        "flops_effective": int(545000 / compression),
        "speedup_theoretical": compression,
        "val_acc": acc - 0.001,
        "test_acc": acc,
        "test_acc_before_recovery": None,
        "dense_test_acc": DENSE.get(seed),
        "stage_hashes": {"dense": f"dense{seed}", "prune": f"{label}{sparsity}{seed}"},
        "wall_time_s": {"dense": 30.0, "prune": 0.2, "recover": 12.0},
        "latency_ms": latency,
        "prunable": {"include": ["weight"], "classifier": True},
        "per_layer_density": {"fc1.weight": 1 - sparsity},
    }


FAILED = {
    "status": "failed",
    "error": "RuntimeError: loss diverged",
    "experiment": "survey",
    "method": "random",
    "label": "random",
    "model": "mlp_bn",
    "dataset": "fashion_mnist",
    "seed": 2,
    "target_sparsity": 0.9,
}
# Another sweep: would spoil magnitude's 50% cell if the --experiment filter let it through.
OTHER = record("magnitude", "unstructured", 0.5, 0, 0.10, experiment="other")


def all_records():
    records = [
        record(label, kind, s, seed, acc) for (label, kind, s), accs in ACCS.items() for seed, acc in accs.items()
    ]
    return records + [FAILED, OTHER]


def write_store(root: Path, records) -> Path:
    for i, rec in enumerate(records):
        folder = root / "runs" / "experiment" / f"{i:016x}"
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps(rec, indent=1))
    corrupt = root / "runs" / "experiment" / "badc0ffee0000000"
    corrupt.mkdir(parents=True)
    (corrupt / "result.json").write_text('{"status": "ok", "test_acc": 0.9')  # truncated write
    return root


def md_rows(path: Path) -> dict[str, list[str]]:
    """Markdown table → {first cell: other cells}, separator and header rows left out."""
    rows = {}
    for line in path.read_text().splitlines():
        if line.startswith("|") and not line.startswith("| :"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The CLI run once on the full store (tables/figure assertions share it)."""
    root = write_store(tmp_path_factory.mktemp("store") / "results", all_records())
    assert report.main(["--results", str(root), "--experiment", "surv*"]) == 0
    return root, root / "report"


def test_load_local_flattens_keeps_failed_and_skips_corrupt(tmp_path, caplog):
    root = write_store(tmp_path / "results", all_records())
    with caplog.at_level(logging.WARNING):
        df = load_local(root)
    assert len(df) == len(all_records())  # corrupt file skipped, failed record kept
    assert (df["status"] == "failed").sum() == 1
    assert {
        "latency_ms.pruned.256",
        "latency_ms.dense.1",
        "stage_hashes.dense",
        "wall_time_s.recover",
        "prunable.classifier",
        "per_layer_density.fc1.weight",
    } <= set(df.columns)
    assert "latency_ms" not in df.columns  # null for unstructured records, leaves for structured ones
    slim = df[df["label"] == "slimming"].iloc[0]
    assert slim["latency_ms.pruned.1"] == 0.08 and slim["latency_ms.dense.256"] == 3.4
    assert df.attrs["unreadable"] == [
        [str(root / "runs/experiment/badc0ffee0000000/result.json"), df.attrs["unreadable"][0][1]]
    ]
    assert sum("badc0ffee0000000" in r.getMessage() for r in caplog.records) == 1


def test_unstructured_table_cells(built):
    _, out = built
    rows = md_rows(out / "tables" / "fashion_mnist_mlp_bn_unstructured.md")
    assert rows["Method"] == ["50%", "90%"]
    assert rows["magnitude"] == ["**97.20 ± 0.10**", "**96.00 ± 1.00**"]  # the "other" sweep is filtered out
    assert rows["random"] == ["96.30 ± 0.20", "90.50 ± 0.71 (n=2)"]  # failed seed 2 not counted
    assert rows["dense"] == ["98.10 ± 0.10", "98.10 ± 0.10"]
    assert set(rows) == {"Method", "magnitude", "random", "dense"}


def test_structured_table_is_separate_and_shows_n1(built):
    _, out = built
    rows = md_rows(out / "tables" / "fashion_mnist_mlp_bn_structured.md")
    assert rows["Method"] == ["50%"]
    # 95.70 ± 0.20 (n=3) against one seed of scratch-B: one seed cannot show a difference beyond the spread
    assert rows["slimming"] == ["95.70 ± 0.20"]
    assert rows["scratch-B (slimming)"] == ["95.00 (n=1)"]
    assert rows["dense"] == ["98.10 ± 0.10"]
    compression = md_rows(out / "tables" / "fashion_mnist_mlp_bn_compression.md")
    assert {"magnitude", "random", "slimming", "scratch-B (slimming)", "dense"} <= set(compression)


def test_latex_is_booktabs_with_bold_best(built):
    _, out = built
    tex = (out / "tables" / "fashion_mnist_mlp_bn_unstructured.tex").read_text()
    for part in (
        r"\toprule",
        r"\midrule",
        r"\bottomrule",
        r"\begin{tabular}{lrr}",
        r"50\% & 90\%",
        r"magnitude & \textbf{97.20 $\pm$ 0.10} & \textbf{96.00 $\pm$ 1.00} \\",
        r"random & 96.30 $\pm$ 0.20 & 90.50 $\pm$ 0.71\,{\scriptsize (n=2)} \\",
        r"dense & \multicolumn{2}{c}{98.10 $\pm$ 0.10} \\",
        r"\caption{fashion\_mnist / mlp\_bn",
    ):
        assert part in tex, part


def test_csv_keeps_exact_numbers_in_long_form(built):
    _, out = built
    csv = pd.read_csv(out / "tables" / "fashion_mnist_mlp_bn_unstructured.csv")  # pandas 3 parses floats exactly
    assert list(csv["label"]) == ["magnitude", "magnitude", "random", "random", "dense"]
    for (label, _, sparsity), accs in ACCS.items():
        if label not in ("magnitude", "random"):
            continue
        row = csv[(csv["label"] == label) & (csv["target_sparsity"] == sparsity)].iloc[0]
        values = np.array(list(accs.values()))
        assert row["test_acc_mean"] == values.mean()
        assert row["test_acc_std"] == values.std(ddof=1)
        assert row["n"] == len(values)
        assert bool(row["best"]) == (label == "magnitude")
    dense = csv[csv["label"] == "dense"].iloc[0]
    assert dense["test_acc_mean"] == np.mean(list(DENSE.values())) and dense["n"] == 3
    assert dense["test_acc_std"] == np.std(list(DENSE.values()), ddof=1)


def test_failed_and_unreadable_are_reported(built):
    root, out = built
    summary = (out / "summary.md").read_text()
    assert "## 1 failed run excluded" in summary
    assert "random @ 90%, seed 2 (fashion_mnist / mlp_bn, experiment survey): RuntimeError: loss diverged" in summary
    assert "1 unreadable record file skipped" in summary and "badc0ffee0000000" in summary
    assert "tables/fashion_mnist_mlp_bn_unstructured.md" in summary
    assert "figures/fashion_mnist_mlp_bn_acc_vs_compression.png" in summary
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == len(all_records()) - 1 and (runs["status"] == "failed").sum() == 1  # "other" filtered out


def test_figures_exist_in_png_and_pdf(built):
    _, out = built
    for name in ("compression", "density", "speedup", "latency"):
        for suffix in (".png", ".pdf"):
            path = out / "figures" / f"fashion_mnist_mlp_bn_acc_vs_{name}{suffix}"
            assert path.is_file() and path.stat().st_size > 1000, path
    png = (out / "figures" / "fashion_mnist_mlp_bn_acc_vs_compression.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width == 680 and 450 <= height <= 800  # 3.4 in at 200 dpi; legend may add height


def test_cli_prints_where_files_went(tmp_path, capsys):
    root = write_store(tmp_path / "results", [record("magnitude", "unstructured", 0.9, 0, 0.95)])
    out = tmp_path / "elsewhere"
    assert report.main(["--results", str(root), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "magnitude" in stdout and "95.00 @ 90%" in stdout  # the compact summary table
    assert f"tables     6 files (csv/md/tex) in {out / 'tables'}" in stdout
    assert f"figures    6 files (pdf/png) in {out / 'figures'}" in stdout
    assert (out / "summary.md").is_file() and not (root / "report").exists()


def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    assert report.main(["--results", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --results")
    root = write_store(tmp_path / "results", [record("magnitude", "unstructured", 0.9, 0, 0.95)])
    assert report.main(["--results", str(root), "--experiment", "nosuch*"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --experiment: nosuch* matches no record; experiments present: survey")


def test_stale_files_of_an_earlier_report_are_removed(tmp_path, monkeypatch):
    def fake_figures(df, fig_dir, styles=None):  # one empty file per (kind, view): rendering is tested elsewhere
        fig_dir.mkdir(parents=True, exist_ok=True)
        views = ["compression", "density", "speedup"] + (["latency"] if (df["kind"] == "structured").any() else [])
        paths = [fig_dir / f"fashion_mnist_mlp_bn_acc_vs_{v}{suffix}" for v in views for suffix in (".png", ".pdf")]
        for path in paths:
            path.write_bytes(b"")
        return paths

    monkeypatch.setattr(report, "build_figures", fake_figures)
    root = write_store(tmp_path / "results", [record("slimming", "structured", 0.5, 0, 0.95)])
    out = tmp_path / "report"
    first = report.generate_report(load_local(root), out)
    assert (out / "tables" / "fashion_mnist_mlp_bn_structured.md").is_file()
    mine = out / "tables" / "notes.md"
    mine.write_text("mine")
    df = load_local(root)
    df = df.assign(kind="unstructured")
    second = report.generate_report(df, out)
    assert not (out / "tables" / "fashion_mnist_mlp_bn_structured.md").exists()
    assert not (out / "figures" / "fashion_mnist_mlp_bn_acc_vs_latency.png").exists()
    assert mine.read_text() == "mine"  # never written by the report: left alone
    assert all(p.is_file() for group in second.values() for p in group)
    assert len(first["figures"]) == 8 and len(second["figures"]) == 6


class SummaryLike:
    """Mimics wandb's SummarySubDict: dict-like but not a dict, nested values wrapped too."""

    def __init__(self, data):
        self._data = data

    def keys(self):
        return self._data.keys()

    def items(self):
        return [(k, SummaryLike(v) if isinstance(v, dict) else v) for k, v in self._data.items()]

    def __getitem__(self, key):
        value = self._data[key]
        return SummaryLike(value) if isinstance(value, dict) else value


class FakeRun:
    def __init__(self, run_id, summary, config=None, job_type="magnitude", state="finished"):
        self.id, self.path, self.job_type, self.state = run_id, ["ent", "proj", run_id], job_type, state
        self.summary, self.config = SummaryLike(summary), config or {}


class FakeApi:
    def __init__(self, runs):
        self._runs, self.paths = runs, []

    def runs(self, path):
        self.paths.append(path)
        return list(self._runs)


def test_load_wandb_matches_load_local(tmp_path):
    records = all_records()
    root = write_store(tmp_path / "results", records)
    runs = []
    for i, rec in enumerate(reversed(records)):  # a different order than the store's
        summary = {**rec, "_step": 40, "_runtime": 3.2, "_wandb": {"runtime": 3}, "recover1/val_acc": 0.5}
        config = {"name": rec["experiment"], "seed": rec["seed"], "model": {"name": rec["model"]}}
        runs.append(FakeRun(f"run{i}", summary, config))
    runs.append(FakeRun("rep", {"report_summary": "..."}, job_type="report"))  # our own report run
    runs.append(FakeRun("live", {"_step": 3, "dense/val_acc": 0.4}, state="running"))  # no record yet
    api = FakeApi(runs)
    remote = load_wandb("ent", "proj", api=api)
    local = load_local(root)
    assert api.paths == ["ent/proj"]
    assert remote["source"].str.startswith("wandb:ent/proj/run").all()
    pd.testing.assert_frame_equal(remote.drop(columns="source"), local.drop(columns="source"))


def test_load_wandb_fills_missing_fields_from_config_and_keeps_crashed_runs():
    rec = record("magnitude", "unstructured", 0.9, 1, 0.95)
    del rec["experiment"], rec["model"]
    config = {"name": "survey", "model": {"name": "mlp_bn", "width": 3}, "method": {"name": "magnitude"}}
    crashed = FakeRun(
        "c", {"_step": 1}, {"experiment": "survey", "method": {"name": "snip"}, "seed": 4}, state="crashed"
    )
    df = load_wandb("ent", "proj", api=FakeApi([FakeRun("r", rec, config), crashed]))
    ok = df[df["status"] == "ok"].iloc[0]
    assert ok["experiment"] == "survey" and ok["model"] == "mlp_bn" and ok["method"] == "magnitude"
    failed = df[df["status"] == "failed"].iloc[0]
    assert failed["label"] == "snip" and failed["seed"] == 4 and "crashed" in failed["error"]


def test_broken_wandb_still_writes_the_report(tmp_path, monkeypatch, caplog):
    import wandb

    def broken_init(*args, **kwargs):
        raise RuntimeError("wandb service unreachable")

    monkeypatch.setattr(wandb, "init", broken_init)
    root = write_store(tmp_path / "results", [record("magnitude", "unstructured", 0.9, 0, 0.95)])
    with caplog.at_level(logging.WARNING):
        assert report.main(["--results", str(root), "--wandb"]) == 0
    assert (root / "report" / "summary.md").is_file()
    assert (root / "report" / "figures" / "fashion_mnist_mlp_bn_acc_vs_compression.png").is_file()
    assert any("W&B logging failed" in r.getMessage() and "unreachable" in r.getMessage() for r in caplog.records)


def test_style_map_is_fixed_and_distinct():
    labels = [*KNOWN_STYLES, "random (global)", "lottery (reinit)", "snip (fresh init)"]
    styles = style_map(labels)
    pairs = [(s.color, s.marker, s.linestyle) for label, s in styles.items()]
    assert len(set(pairs)) == len(pairs)  # every method looks different
    assert len({s.color for s in styles.values()}) >= 10 and len({s.marker for s in styles.values()}) >= 10
    few = style_map(["magnitude", "slimming", "random (global)"])
    assert few["magnitude"] == styles["magnitude"] and few["slimming"] == styles["slimming"]
    assert few["random (global)"] not in set(KNOWN_STYLES.values())
    capped = style_map(["scratch-B (thinet, cap 2×)", "scratch-E (thinet)"])  # a note keeps the method's style
    assert capped["scratch-B (thinet, cap 2×)"] == KNOWN_STYLES["scratch-B (thinet)"]
    both = style_map(["scratch-B (thinet, cap 2×)", "scratch-B (thinet)"])  # ... unless the plain label is there
    assert both["scratch-B (thinet, cap 2×)"] != both["scratch-B (thinet)"]


def test_wandb_logging_in_disabled_mode_goes_through_the_real_api(built, monkeypatch):
    _, out = built
    monkeypatch.setenv("WANDB_MODE", "disabled")
    outputs = {
        "tables": sorted((out / "tables").glob("*.csv")),
        "figures": sorted((out / "figures").glob("*.png")),
        "summary": [out / "summary.md"],
    }
    assert report.log_to_wandb(outputs, out, project="prunelab-test") is True


def test_only_failed_runs_still_gives_a_report(tmp_path, capsys):
    root = write_store(tmp_path / "results", [FAILED])
    assert report.main(["--results", str(root)]) == 0
    assert "1 failed run excluded:" in capsys.readouterr().out
    summary = (root / "report" / "summary.md").read_text()
    assert "RuntimeError: loss diverged" in summary and "Records: 1 (0 used, 1 excluded" in summary


def test_repeated_records_are_flagged(tmp_path):
    twice = [
        record("magnitude", "unstructured", 0.9, 0, 0.95),
        record("magnitude", "unstructured", 0.9, 0, 0.96, experiment="again"),
    ]
    root = write_store(tmp_path / "results", twice)
    report.generate_report(load_local(root), tmp_path / "out")
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "magnitude @ 90%, seed 0 (fashion_mnist / mlp_bn): 2 records (experiments: again, survey)" in summary


def test_cli_source_wandb(tmp_path, monkeypatch, capsys):
    import wandb

    monkeypatch.setattr(report, "build_figures", lambda df, fig_dir, styles=None: [])  # figures: tested above
    runs = [FakeRun(f"r{i}", rec) for i, rec in enumerate(all_records())]
    monkeypatch.setattr(wandb, "Api", lambda: FakeApi(runs))
    out = tmp_path / "report"
    assert (
        report.main(
            ["--source", "wandb", "--entity", "ent", "--project", "proj", "--experiment", "survey", "--out", str(out)]
        )
        == 0
    )
    rows = md_rows(out / "tables" / "fashion_mnist_mlp_bn_unstructured.md")
    assert rows["random"] == ["96.30 ± 0.20", "90.50 ± 0.71 (n=2)"]
    assert "Source: W&B project ent/proj" in (out / "summary.md").read_text()

    def unreachable():
        raise ConnectionError("api.wandb.ai unreachable")

    monkeypatch.setattr(wandb, "Api", unreachable)
    capsys.readouterr()
    assert report.main(["--source", "wandb", "--project", "proj", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --source wandb: could not read runs")


def test_dense_baseline_counts_a_dense_model_once_whatever_a_method_calls_its_stage(tmp_path):
    # lottery's level 0 is the dense stage under another name; the record's `dense_stage` says so
    dense = {**record("dense", "dense", 0.0, 0, DENSE[0]), "stage_hashes": {"dense": "d0"}, "dense_stage": "d0"}
    lottery = {**record("lottery", "unstructured", 0.9, 0, 0.97), "stage_hashes": {"level0": "d0"}, "dense_stage": "d0"}
    other = {
        **record("magnitude", "unstructured", 0.9, 0, 0.96),
        "stage_hashes": {"dense": "d1"},
        "dense_test_acc": 0.5,
    }  # another dense model of the same seed (e.g. another schedule; old records cannot tell): one seed, their mean
    usable = load_local(write_store(tmp_path, [dense, lottery, other]))
    base = dense_baseline(prepare(usable[usable["status"] == "ok"]))
    assert base.n == 1 and base.mean == pytest.approx((DENSE[0] + 0.5) / 2)


def test_every_method_default_label_has_a_fixed_style():
    # so a method looks the same in every report, whichever other methods share the figure
    from methods import registry

    labels = {name: cls(cls.Config()).label() for name, cls in registry().items() if name not in ("dense", "scratch")}
    labels["scratch"] = {"scratch-E (slimming)", "scratch-B (thinet, cap 2×)"}
    flat = {label for v in labels.values() for label in ([v] if isinstance(v, str) else v)}
    assert set(style_map(flat).values()) <= set(KNOWN_STYLES.values()), labels


def test_load_wandb_counts_an_experiment_once_however_many_runs_logged_it():
    """Runs made before run ids were experiment hashes: an identical re-run logged the very same record (no
    curves). With ``experiment_hash`` in the config, runs of one experiment count once, the ok one preferred."""
    rec = record("magnitude", "unstructured", 0.9, 0, 0.95)
    other_seed = record("magnitude", "unstructured", 0.9, 1, 0.95)
    failed = {**rec, "status": "failed", "error": "RuntimeError: boom"}
    runs = [
        FakeRun("a", rec),
        FakeRun("b", dict(rec)),
        FakeRun("c", other_seed),
        FakeRun("d", failed, {"experiment_hash": "h1"}),
        FakeRun("e", rec, {"experiment_hash": "h1"}),
        FakeRun("f", rec, {"experiment_hash": "h2"}),
    ]
    df = load_wandb("ent", "proj", api=FakeApi(runs))
    assert sorted(df["source"]) == ["wandb:ent/proj/a", "wandb:ent/proj/c", "wandb:ent/proj/e", "wandb:ent/proj/f"]
    assert (df["status"] == "ok").all()


# ------------------------------------------------------------------------ settings: what is averaged, what is bold

TRAIN = {"epochs": 6, "lr": 0.05}


def setting_record(label, sparsity, seed, acc, *, kind="unstructured", method=None, final_stage=None, **paths):
    """A record of the current format: ``setting`` (the experiment's identity without its seed, as
    runners.experiment.setting_spec writes it) and its hash; ``paths`` override dotted fields of the setting."""
    method = method or label.split(" ")[0]
    setting = {
        "model": {"name": "mlp_bn"},
        "dataset": {},
        "method": {"name": method, "sparsity": sparsity},
        "train": dict(TRAIN),
        "seeds": {},
    }
    for path, value in paths.items():
        node = setting
        *parents, leaf = path.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    rec = record(label, kind, sparsity, seed, acc)
    rec.update(setting=setting, setting_hash=hash_setting(setting), method=method, final_stage=final_stage)
    rec.update(dense_test_acc=None, stage_hashes={})  # the dense baselines: dense_record's
    return rec


def dense_record(seed, acc, **paths):
    rec = setting_record("dense", 0.0, seed, acc, kind="dense", **paths)
    digest = rec["setting_hash"]
    rec.update(dense_test_acc=acc, dense_stage=f"d{digest}{seed}", stage_hashes={"dense": f"d{digest}{seed}"})
    return rec


def pct(values, ddof=1) -> str:
    values = 100 * np.asarray(values, dtype=float)
    return f"{values.mean():.2f} ± {values.std(ddof=ddof):.2f}"


def test_the_record_carries_the_setting_without_the_seed(tmp_path):
    """``setting``: the experiment's spec without ``seed`` and the sweep name; equal hashes for the seeds of one
    setting, different for another config or an explicit ``seeds.init`` (a fixed init is another setting)."""
    from conftest import SYNTH, make_run

    from foundations.errors import UserError
    from foundations.store import Store
    from runners.experiment import record_failure, run_experiment
    from runners.identity import experiment_hash, experiment_spec, setting_spec

    dense = [*SYNTH, "method=dense", "train.epochs=1"]
    config = make_run(tmp_path, *dense)
    record = run_experiment(config, Store(config.paths.results))
    spec = experiment_spec(config)
    assert record["setting"] == {k: v for k, v in spec.items() if k not in ("seed", "experiment")}
    assert record["setting_hash"] == hash_setting(record["setting"])
    assert json.loads(json.dumps(record["setting"])) == record["setting"]  # plain JSON, as W&B and the store keep it
    failed = record_failure(config, Store(tmp_path / "other"), UserError("boom"))
    assert failed["setting"] == record["setting"] and failed["setting_hash"] == record["setting_hash"]

    def digest(*overrides):
        return hash_setting(setting_spec(experiment_spec(make_run(tmp_path, *dense, *overrides))))

    same = {digest(), digest("seed=1"), digest("seed=2", "name=another_sweep")}
    assert same == {record["setting_hash"]}
    others = [digest("train.epochs=2"), digest("dataset.num_train=100"), digest("seeds.init=7"), digest("threads=2")]
    assert len({record["setting_hash"], *others}) == 5
    # the records' own hashes do not depend on the new fields: the experiment hash is still the config's
    assert experiment_hash(config) == stage_hash("experiment", spec, {})
    assert (Path(config.paths.results) / "runs" / "experiment" / experiment_hash(config) / "result.json").is_file()


def test_two_configs_under_one_sweep_name_are_two_rows_naming_the_fields_they_differ_in(tmp_path):
    """The issue's case: a 2k-example 1-epoch run and a 20k-example 3-epoch one under one `name` were one cell."""
    small = {0: 0.72, 1: 0.74}  # dataset.num_train=2000, train.epochs=1
    large = {0: 0.86, 1: 0.87}  # dataset.num_train=20000, train.epochs=3
    records = [
        setting_record("magnitude", 0.5, s, a, dataset__num_train=2000, train__epochs=1) for s, a in small.items()
    ]
    records += [
        setting_record("magnitude", 0.5, s, a, dataset__num_train=20000, train__epochs=3) for s, a in large.items()
    ]
    records += [dense_record(s, 0.80 + s / 100, dataset__num_train=2000, train__epochs=1) for s in small]
    records += [dense_record(s, 0.88 + s / 100, dataset__num_train=20000, train__epochs=3) for s in large]
    root = write_store(tmp_path / "results", records)
    out = tmp_path / "report"
    report.generate_report(load_local(root), out)
    rows = md_rows(out / "tables" / "fashion_mnist_mlp_bn_unstructured.md")
    assert rows["magnitude [dataset.num_train=2000, train.epochs=1]"] == [pct(list(small.values()))]
    # bold: 13 and 14 pp better on both seeds (paired)
    assert rows["magnitude [dataset.num_train=20000, train.epochs=3]"] == [f"**{pct(list(large.values()))}**"]
    assert rows["dense [dataset.num_train=2000, train.epochs=1]"] == [pct([0.80, 0.81])]
    assert rows["dense [dataset.num_train=20000, train.epochs=3]"] == [pct([0.88, 0.89])]
    assert "magnitude" not in rows and "dense" not in rows
    csv = pd.read_csv(out / "tables" / "fashion_mnist_mlp_bn_unstructured.csv")
    assert sorted(csv.loc[csv["kind"] != "dense", "n"]) == [2, 2]
    # the sweep-end summary (runners/callbacks.py) prints the same rows
    from runners.callbacks import sweep_report

    text = sweep_report("survey", root)
    assert "magnitude [dataset.num_train=2000, train.epochs=1]" in text
    assert pct(list(large.values())) + " @ 50%" in text


def test_two_image_folders_never_share_a_cell(tmp_path):
    """Two folders (`dataset=folder`, different content digests) are two settings: two rows and two dense
    baselines, even for one seed, never one "mean ± std" cell."""
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    records = [
        setting_record("magnitude", 0.5, 0, 1.0, dataset__name="folder", dataset__content=a),
        setting_record("magnitude", 0.5, 0, 0.5, dataset__name="folder", dataset__content=b),
        dense_record(0, 1.0, dataset__name="folder", dataset__content=a),
        dense_record(0, 0.6, dataset__name="folder", dataset__content=b),
    ]
    for rec in records:
        rec["dataset"] = "folder"
    root = write_store(tmp_path / "results", records)
    tables = {t.name: t for t in build_tables(split_usable(load_local(root))[0])}
    table = tables["folder_mlp_bn_unstructured"]
    rows = {row[0].main: [cell.plain() for cell in row[1:]] for row in (*table.rows, *table.footer)}
    assert rows == {
        "magnitude [dataset.content=sha256:aaaaaaaaa…]": ["100.00"],
        "magnitude [dataset.content=sha256:bbbbbbbbb…]": ["50.00"],
        "dense [dataset.content=sha256:aaaaaaaaa…]": ["100.00"],
        "dense [dataset.content=sha256:bbbbbbbbb…]": ["60.00"],
    }


def test_one_seed_says_so_and_bolds_nothing(tmp_path):
    """The survey is one seed: no "mean ± std over seeds", no error bars, nothing bold (88.15 vs 88.89)."""
    records = [
        setting_record("random", 0.5, 0, 0.8815),
        setting_record("random", 0.75, 0, 0.8889),
        setting_record("magnitude", 0.5, 0, 0.8822),
        setting_record("magnitude", 0.75, 0, 0.5),  # far apart, still one seed
        dense_record(0, 0.89),
    ]
    root = write_store(tmp_path / "results", records)
    out = tmp_path / "report"
    report.generate_report(load_local(root), out)
    for name in ("unstructured", "compression"):
        md = (out / "tables" / f"fashion_mnist_mlp_bn_{name}.md").read_text()
        assert "one seed: no error bars" in md and "over seeds" not in md and "**" not in md and "±" not in md
    tex = (out / "tables" / "fashion_mnist_mlp_bn_unstructured.tex").read_text()
    assert r"\textbf" not in tex and "one seed: no error bars" in tex
    assert not pd.read_csv(out / "tables" / "fashion_mnist_mlp_bn_unstructured.csv")["best"].any()
    prepared = prepare(split_usable(load_local(root))[0])
    points = curve(prepared[prepared["kind"] != "dense"], numeric(prepared, "compression"))
    assert spread_note(points, dense_baselines(prepared)) == "one seed: no error bars"
    assert "one seed: no error bars" in report.compact_summary(prepared)


SEEDS3 = (0, 1, 2)


def bold_cells(records, tmp_path) -> dict[str, bool]:
    root = write_store(tmp_path / "results", records)
    table = next(t for t in build_tables(split_usable(load_local(root))[0]) if t.name.endswith("_unstructured"))
    return {row[0].main: row[1].bold for row in table.rows}


@pytest.mark.parametrize(
    "a,b,clear",
    [
        ((0.900, 0.920, 0.940), (0.890, 0.925, 0.930), False),  # paired differences +1.0, -0.5, +1.0 pp
        ((0.900, 0.920, 0.940), (0.890, 0.911, 0.929), True),  # +1.0, +0.9, +1.1 pp: the seeds agree
    ],
)
def test_bold_only_where_paired_seeds_tell_the_best_apart(tmp_path, a, b, clear):
    from scipy import stats as scipy_stats

    oracle = scipy_stats.ttest_rel(a, b).confidence_interval(0.95).low > 0  # the paired t interval, by scipy
    assert oracle == clear
    records = [setting_record("magnitude", 0.5, s, v) for s, v in zip(SEEDS3, a)]
    records += [setting_record("random", 0.5, s, v) for s, v in zip(SEEDS3, b)]
    assert bold_cells(records, tmp_path) == {"magnitude": clear, "random": False}


@pytest.mark.parametrize("gap,clear", [(0.008, False), (0.015, True)])
def test_bold_without_common_seeds_needs_a_gap_beyond_both_stds(tmp_path, gap, clear):
    spread = (-0.01, 0.0, 0.01)  # sample std 1 pp for both methods
    records = [setting_record("magnitude", 0.5, s, 0.9 + gap + d) for s, d in zip(SEEDS3, spread)]
    records += [setting_record("random", 0.5, s + 3, 0.9 + d) for s, d in zip(SEEDS3, spread)]
    assert bold_cells(records, tmp_path) == {"magnitude": clear, "random": False}


def test_clearly_better_is_never_true_with_one_seed():
    assert not clearly_better({"0": 0.99}, {"0": 0.10})
    assert not clearly_better({"0": 0.99, "1": 0.98}, {"2": 0.10})


def scratch_records(stage_of) -> list[dict]:
    """Scratch-E of slimming and of ThiNet at 30 % and 70 %, seeds 0 and 1; ``stage_of(source, sparsity, seed)``
    names the final stage (equal for both sources where their widths are equal)."""
    out = []
    for source in ("slimming", "thinet"):
        for sparsity in (0.3, 0.7):
            for seed in (0, 1):
                stage = stage_of(source, sparsity, seed)
                acc = 0.80 - sparsity / 10 + seed / 100 + (0.0 if stage.startswith("train/shared") else 0.05)
                out.append(
                    setting_record(
                        f"scratch-E ({source})",
                        sparsity,
                        seed,
                        acc,
                        kind="structured",
                        method="scratch",
                        final_stage=stage,
                        method__source=source,
                    )
                )
    return out


def test_one_training_under_two_labels_is_one_row_naming_both(tmp_path):
    records = scratch_records(lambda source, sparsity, seed: f"train/shared{sparsity}{seed}")
    records.append(setting_record("slimming", 0.3, 0, 0.79, kind="structured", final_stage="train/s"))
    records += [dense_record(seed, 0.81) for seed in (0, 1)]
    root = write_store(tmp_path / "results", records)
    out = tmp_path / "report"
    report.generate_report(load_local(root), out)
    rows = md_rows(out / "tables" / "fashion_mnist_mlp_bn_structured.md")
    assert set(rows) == {"Method", "scratch-E (slimming = thinet)", "slimming", "dense"}
    assert rows["scratch-E (slimming = thinet)"] == [pct([0.77, 0.78]), pct([0.73, 0.74])]  # n = 2 seeds, not 4
    caption = (out / "tables" / "fashion_mnist_mlp_bn_structured.md").read_text()
    assert "scratch-E (slimming) and scratch-E (thinet) are one training" in caption
    assert "same layer widths" in caption
    csv = pd.read_csv(out / "tables" / "fashion_mnist_mlp_bn_compression.csv")
    assert (csv["label"] == "scratch-E (slimming = thinet)").sum() == 2 and "scratch-E (thinet)" not in set(
        csv["label"]
    )
    prepared = prepare(split_usable(load_local(root))[0])
    structured = prepared[prepared["kind"] == "structured"]
    points = curve(structured, numeric(structured, "compression"))
    assert set(points["label"]) == {"scratch-E (slimming = thinet)", "slimming"} and points["n"].max() == 2


def test_trainings_shared_at_some_sparsities_only_stay_two_rows_with_a_note(tmp_path):
    records = scratch_records(
        lambda source, sparsity, seed: f"train/shared{sparsity}{seed}" if sparsity == 0.3 else f"train/{source}{seed}"
    )
    table = next(
        t for t in build_tables(split_usable(load_local(write_store(tmp_path, records)))[0]) if "structured" in t.name
    )
    assert [row[0].main for row in table.rows] == ["scratch-E (slimming)", "scratch-E (thinet)"]
    assert "scratch-E (slimming) and scratch-E (thinet) are one training at 30% " in table.caption


def test_old_records_without_a_setting_load_and_fall_back_to_the_method_config(tmp_path):
    """Records written before ``setting`` existed: grouped by label, sparsity and ``method_config``, said in the
    caption; a store mixing old and new records reports both."""
    old = [
        {**record("magnitude", "unstructured", 0.5, s, a), "method_config": {"name": "magnitude", "recovery": r}}
        for s, a, r in [(0, 0.90, {"epochs": 1}), (1, 0.91, {"epochs": 1}), (0, 0.95, {"epochs": 3})]
    ]
    assert all("setting" not in rec and "setting_hash" not in rec for rec in old)
    root = write_store(tmp_path / "results", [*old, setting_record("random", 0.5, 0, 0.5)])
    df = load_local(root)
    assert df["setting"].isna().sum() == 3 and df["setting_hash"].isna().sum() == 3
    out = tmp_path / "report"
    report.generate_report(df, out)
    md = (out / "tables" / "fashion_mnist_mlp_bn_unstructured.md").read_text()
    rows = md_rows(out / "tables" / "fashion_mnist_mlp_bn_unstructured.md")
    assert rows["magnitude [method.recovery.epochs=1]"] == [pct([0.90, 0.91])]
    assert rows["magnitude [method.recovery.epochs=3]"] == ["95.00 (n=1)"]
    assert rows["random"] == ["50.00 (n=1)"]
    assert "predate the record's setting" in md and "method config only" in md


def test_every_table_keeps_a_dense_baseline_named_only_where_dense_settings_differ(tmp_path):
    """SNIP prunes at initialization under its own init (no dense model): it does not rename the baseline the
    others started from, and its table still shows it."""
    records = [setting_record("magnitude", 0.5, s, 0.9) for s in (0, 1)]
    for rec in records:
        rec.update(dense_test_acc=0.95 + rec["seed"] / 100, dense_stage=f"dense{rec['seed']}")
    records += [setting_record("snip", 0.5, s, 0.8, model__init="variance_scaling") for s in (0, 1)]
    records += [setting_record("slimming", 0.3, s, 0.85, kind="structured", final_stage=f"s{s}") for s in (0, 1)]
    root = write_store(tmp_path / "results", records)
    tables = build_tables(split_usable(load_local(root))[0])
    assert [t.name.rsplit("_", 1)[-1] for t in tables] == ["unstructured", "structured", "compression"]
    for table in tables:
        dense = [row for row in (*table.rows, *table.footer) if row[0].main.startswith("dense")]
        assert [(row[0].main, row[-1].plain()) for row in dense] == [("dense", pct([0.95, 0.96]))], table.name


def test_load_wandb_reads_the_setting_as_the_store_does(tmp_path):
    records = [setting_record("magnitude", 0.5, s, 0.9, train__epochs=s + 1) for s in (0, 1)]
    root = write_store(tmp_path / "results", records)
    runs = [FakeRun(f"r{i}", {**rec, "_step": 3}) for i, rec in enumerate(records)]
    remote = load_wandb("ent", "proj", api=FakeApi(runs))
    local = load_local(root)
    pd.testing.assert_frame_equal(remote.drop(columns="source"), local.drop(columns="source"))
    assert json.loads(local["setting"][0])["train"]["epochs"] in (1, 2)


def test_the_lottery_ladder_figure_never_mixes_two_lottery_settings(tmp_path):
    """REPRODUCTION.md's ladder is drawn from the levels of the ticket's records: two lottery configurations under one
    experiment name (another rate) would interleave their levels, so the figure is left out."""
    from analysis.claims import CLAIMS_DIR, load_claim
    from analysis.reproduction import Context, lth_ladder_figure

    claim = load_claim(CLAIMS_DIR / "lth_ticket_matches_dense.yaml")
    spec = next(f for f in claim.figures if f["kind"] == "lth_ladder")
    context = Context(experiment="reproduce_smoke", tier="smoke", seeds=[0, 1])

    def ticket(seed, **paths):
        rec = setting_record("lottery", 0.8, seed, 0.9, **paths)
        levels = [{"density": 1.0, "test_acc": 0.9}, {"density": 0.5, "test_acc": 0.91}]
        return {**rec, "experiment": context.experiment, "outputs": {"levels": levels}, "dense_test_acc": 0.9}

    one = [ticket(0, method__rate=0.5), ticket(1, method__rate=0.5)]
    assert lth_ladder_figure(claim, spec, one, context, tmp_path / "one") is not None
    two = [ticket(0, method__rate=0.5), ticket(1, method__rate=0.2)]
    assert lth_ladder_figure(claim, spec, two, context, tmp_path / "two") is None
