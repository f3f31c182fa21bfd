"""The entry point as a user runs it: bad input gives one line and exit 2 with nothing written; real training."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import needs_fmnist

ROOT = Path(__file__).resolve().parent.parent


def cli(tmp_path, *args, timeout=300):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "runners.train",
            "logger=none",
            "progress=false",
            f"paths.results={tmp_path}/results",
            f"hydra.run.dir={tmp_path}/out",
            *args,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "args,field",
    [
        (["train.lr=abc"], "train.lr"),
        (["train.epochs=-1"], "train.epochs"),
        (["model=nosuch"], "model=nosuch"),
        (["method=magnitude", "method.sparsity=1.5"], "method.sparsity"),
        (["method=magnitude", "method.rounds=0"], "method.rounds"),
        (["method=snip", "method.batch_size=0"], "method.batch_size"),
        (["method=obd", "method.estimator=exact"], "method.estimator"),
        (["dataset=fashion_mnist", "dataset.data_dir=/nonexistent"], "fashion_mnist"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, field):
    result = cli(tmp_path, "dataset=synthetic", *args)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and field in lines[0], result.stderr
    assert not (tmp_path / "results" / "runs").exists()


def test_synthetic_run_writes_a_record(tmp_path):
    result = cli(
        tmp_path,
        "dataset=synthetic",
        "method=magnitude",
        "method.sparsity=0.8",
        "train.epochs=2",
        "method.recovery.epochs=1",
    )
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "out" / "result.json").read_text())
    assert record["status"] == "ok" and abs(record["density"] - 0.2) < 1e-3


@needs_fmnist
@pytest.mark.slow
def test_fashion_mnist_training_is_accurate_and_deterministic(tmp_path):
    """LeNet-300-100, 2 epochs on 20k Fashion-MNIST images, twice in separate stores: identical metrics, > 83 %."""
    args = ["train.epochs=2", "dataset.train_limit=20000"]
    first = cli(tmp_path / "a", *args)
    second = cli(tmp_path / "b", *args)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    a = json.loads((tmp_path / "a" / "out" / "result.json").read_text())
    b = json.loads((tmp_path / "b" / "out" / "result.json").read_text())
    assert a["test_acc"] > 0.83 and a["test_acc"] == b["test_acc"]
    metrics = [
        sorted((tmp_path / d / "results" / "runs" / "train").glob("*/metrics.jsonl"))[0].read_text() for d in "ab"
    ]
    assert metrics[0] == metrics[1]
