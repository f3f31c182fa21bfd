"""A job's log file (Hydra's ``<run dir>/train.log``): one line per evaluation, one per stage, none of them on the
console; the summary says where the final stage's curves are."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.test_cli import cli

EVAL = re.compile(
    r"\[prunelab\.progress\]\[INFO\] - magnitude:(\w+): epoch (\d+)/(\d+), iteration (\d+), train loss ([\d.]+), "
    r"val acc ([\d.]+), test acc ([\d.]+), lr ([\d.e+-]+), [\d.]+ s$"
)
ARGS = ["dataset=synthetic", "method=magnitude", "method.sparsity=0.8", "train.epochs=3", "method.recovery.epochs=2"]


def _rows(results: Path, digest: str) -> list[dict]:
    text = (results / "runs" / "train" / digest / "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_the_job_log_has_a_line_per_evaluation_and_per_stage_and_the_console_has_none(tmp_path):
    result = cli(tmp_path, *ARGS)
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "out" / "result.json").read_text())
    lines = (tmp_path / "out" / "train.log").read_text().splitlines()
    evals = [EVAL.search(line) for line in lines if "epoch" in line]
    assert all(evals), lines
    results = tmp_path / "results"
    expected = [
        (stage, row)
        for stage in ("dense", "recover1")
        for row in _rows(results, record["stage_hashes"][stage])  # the stage's stored evaluations, in order
    ]
    assert len(evals) == len(expected) == 3 + 2
    for match, (stage, row) in zip(evals, expected):
        name, epoch, total, iteration, loss, val, test, lr = match.groups()
        assert name == stage and int(epoch) == row["epoch"] and int(total) == (3 if stage == "dense" else 2)
        assert int(iteration) == row["iteration"] and float(loss) == round(row["train_loss"], 4)
        assert float(val) == round(row["val_acc"], 4) and float(test) == round(row["test_acc"], 4)
        assert float(lr) == float(f"{row['lr']:.4g}")
    stages = [line.split(" - ", 1)[1] for line in lines if " - stage " in line]
    assert [s.split(" ")[1] for s in stages] == ["init", "dense", "prune1", "recover1"]
    for line in stages:
        name = line.split(" ")[1]
        kind = "prune" if name.startswith("prune") else "init" if name == "init" else "train"
        assert f"({kind}/{record['stage_hashes'][name]}): computed in " in line
    assert "epoch" not in result.stdout and " - stage " not in result.stdout  # the file only
    final = results / "runs" / "train" / record["stage_hashes"]["recover1"] / "metrics.jsonl"
    assert record["final_stage"] == f"train/{record['stage_hashes']['recover1']}"
    assert f"  metrics: {final}\n" in result.stdout and final.exists()

    again = cli(tmp_path, *ARGS, f"hydra.run.dir={tmp_path}/again")
    assert again.returncode == 0, again.stderr
    log = (tmp_path / "again" / "train.log").read_text()
    (folder,) = (results / "runs" / "experiment").glob("*/result.json")
    assert f"record experiment/{folder.parent.name}: in the store" in log
    assert "epoch" not in log and " - stage " not in log  # nothing trained, no stage touched
