import json
import multiprocessing as mp
from dataclasses import dataclass

import pytest
import torch

from foundations.checks import nondefault
from foundations.hashing import stage_hash
from foundations.training import TrainConfig, train
from runners.experiment import run_experiment
from runners.store import Store
from tests.conftest import SYNTH, make_run


def test_hashes_are_pinned_and_ignore_new_defaulted_fields():
    assert stage_hash("train", {"train": {"lr": 0.1}}, {"start": "abc"}) == "9550574b033e4284"
    assert stage_hash("init", {}, {}) == "f000a1bb17e209d6"

    @dataclass
    class Old:
        lr: float = 0.1
        epochs: int = 10

    @dataclass
    class New(Old):
        added_later: bool = False  # a field added with a default must not move existing hashes

    assert nondefault(Old(lr=0.2)) == nondefault(New(lr=0.2)) == {"lr": 0.2}
    assert nondefault(TrainConfig()) == {}


def test_second_identical_run_computes_nothing_and_other_methods_share_the_dense_stage(tmp_path):
    run = make_run(tmp_path, *SYNTH)
    store = Store(run.paths.results)
    first = run_experiment(run, store)
    assert store.computed  # init, dense, experiment
    again = Store(run.paths.results)
    assert run_experiment(run, again) == first and again.computed == []
    pruned = make_run(tmp_path, *SYNTH, "method=magnitude", "method.recovery.epochs=1")
    third = Store(run.paths.results)
    record = run_experiment(pruned, third)
    assert record["stage_hashes"]["dense"] == first["stage_hashes"]["dense"]
    assert not any(entry.startswith("train/" + first["stage_hashes"]["dense"]) for entry in third.computed)
    for key in [
        "density",
        "compression",
        "flops_dense",
        "flops_effective",
        "test_acc_before_recovery",
        "dense_test_acc",
        "params_total",
        "params_nonzero",
        "sparsity_all_params",
        "speedup_theoretical",
        "val_acc",
        "test_acc",
    ]:
        assert record[key] is not None, key
    assert abs(record["density"] - 0.1) < 1e-3


class Interrupt(Exception):
    pass


def _train(tmp_path, checkpoint, fail_at=None, model_name="lenet300"):
    from datasets import build_dataset
    from datasets.config import DatasetConfig
    from models import build_model
    from models.config import ModelConfig

    torch.manual_seed(0)
    data = build_dataset(DatasetConfig(name="synthetic", val_size=200))
    model = build_model(
        ModelConfig(name=model_name), data.input_shape, data.num_classes, torch.Generator().manual_seed(0)
    )

    def on_eval(row):
        if fail_at is not None and row["epoch"] >= fail_at:
            raise Interrupt

    cfg = TrainConfig(epochs=4, batch_size=64, schedule="cosine")
    return train(
        model,
        data,
        cfg,
        data_seed=0,
        device=torch.device("cpu"),
        checkpoint=checkpoint,
        on_eval=on_eval,
        progress=False,
    )


@pytest.mark.parametrize("model_name", ["lenet300", "conv_bn"])  # conv_bn trains channels-last on the CPU
def test_resume_after_interruption_gives_identical_numbers(tmp_path, model_name):
    straight = _train(tmp_path, None, model_name=model_name)
    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(Interrupt):
        _train(tmp_path, checkpoint, fail_at=3, model_name=model_name)  # killed in epoch 3: epoch 2's checkpoint
    assert checkpoint.exists()
    resumed = _train(tmp_path, checkpoint, model_name=model_name)
    assert resumed.metrics == straight.metrics
    assert all(torch.equal(resumed.selected_state[k], straight.selected_state[k]) for k in straight.selected_state)


def test_corrupt_weights_are_detected_and_recomputed(tmp_path):
    run = make_run(tmp_path, *SYNTH)
    first = run_experiment(run, Store(run.paths.results))
    dense_dir = tmp_path / "results" / "runs" / "train" / first["stage_hashes"]["dense"]
    weights = dense_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])  # truncated
    experiment_dir = tmp_path / "results" / "runs" / "experiment"
    for result in experiment_dir.glob("*/result.json"):
        result.unlink()  # force the experiment to look at its stages again
    store = Store(run.paths.results)
    with pytest.warns(UserWarning, match="checksum"):
        again = run_experiment(run, store)
    assert f"train/{first['stage_hashes']['dense']}" in store.computed
    assert again["test_acc"] == first["test_acc"]


def _needs_dense(results, out):
    import pathlib

    from runners.experiment import run_experiment as run_it
    from tests.conftest import SYNTH as synth
    from tests.conftest import make_run as make

    run = make(pathlib.Path(results), *synth)
    store = Store(run.paths.results)
    run_it(run, store)
    out.put(store.computed)


def test_two_concurrent_jobs_train_the_shared_stage_once(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    jobs = [ctx.Process(target=_needs_dense, args=(str(tmp_path), queue)) for _ in range(2)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=240)
    computed = [queue.get(timeout=5) for _ in jobs]
    trained = [entry for entries in computed for entry in entries if entry.startswith("train/")]
    assert len(trained) == 1, computed
    assert json.loads(next((tmp_path / "results" / "runs" / "train").glob("*/result.json")).read_text())["selected"]


def test_kill_9_mid_training_then_rerun_matches_an_uninterrupted_run(tmp_path):
    """A literal SIGKILL of the CLI once the first per-epoch checkpoint exists; the re-run resumes from it."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    args = [
        "dataset=synthetic",
        "dataset.num_train=20000",
        "model=lenet300",
        "train.epochs=12",
        "train.batch_size=32",
        "logger=none",
        "progress=false",
        "threads=1",
    ]

    def command(store):
        return [sys.executable, "-m", "runners.train", *args, f"paths.results={store}", f"hydra.run.dir={store}/out"]

    env = {**os.environ, "WANDB_MODE": "disabled"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(killed), cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((killed / "runs" / "train").glob("*/checkpoint.pt")) and time.monotonic() < deadline:
        assert proc.poll() is None, "training ended before its first checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stage = next((killed / "runs" / "train").glob("*/checkpoint.pt")).parent
    assert not (stage / "result.json").exists(), "the run finished before the kill; lengthen it"

    for store in (killed, tmp_path / "straight"):
        subprocess.run(command(store), cwd=root, env=env, check=True, capture_output=True, timeout=600)
    straight_stage = tmp_path / "straight" / "runs" / "train" / stage.name
    assert (stage / "metrics.jsonl").read_text() == (straight_stage / "metrics.jsonl").read_text()
    assert (stage / "model.safetensors").read_bytes() == (straight_stage / "model.safetensors").read_bytes()
