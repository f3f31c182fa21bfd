import json
import logging
import multiprocessing as mp
import re
import threading
import time
from dataclasses import dataclass

import pytest
import torch
from filelock import FileLock

from foundations.checks import nondefault
from foundations.hashing import stage_hash
from foundations.store import Store
from foundations.training import TrainConfig, train
from runners.experiment import run_experiment
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


def test_a_resumed_stage_says_so_in_the_log(tmp_path, caplog):
    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(Interrupt):
        _train(tmp_path, checkpoint, fail_at=3)  # killed in epoch 3: epoch 2's checkpoint
    with caplog.at_level(logging.INFO, logger="prunelab"):
        _train(tmp_path, checkpoint)
    lines = [r.getMessage() for r in caplog.records]
    per_epoch = 1800 // 64 + 1  # synthetic: 2000 images, 200 for validation, batches of 64 (the last one short)
    assert lines[0] == f"resumed train at epoch 2/4 (iteration {2 * per_epoch}) from {checkpoint}"
    assert [line.split(",")[0] for line in lines[1:]] == ["train: epoch 3/4", "train: epoch 4/4"]


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-64])


def _corrupt_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "prunelab" and " is corrupt " in r.getMessage()]


def test_corrupt_weights_are_detected_moved_aside_and_recomputed(tmp_path, caplog):
    run = make_run(tmp_path, *SYNTH)
    first = run_experiment(run, Store(run.paths.results))
    dense = first["stage_hashes"]["dense"]
    dense_dir = tmp_path / "results" / "runs" / "train" / dense
    original = (dense_dir / "model.safetensors").read_bytes()
    _truncate(dense_dir / "model.safetensors")
    # the record's final stage is the dense stage: the record is made again, the dense stage recomputed
    store = Store(run.paths.results)
    with caplog.at_level(logging.INFO, logger="prunelab"):
        again = run_experiment(run, store)
    assert _corrupt_lines(caplog) == [
        f"stage train/{dense} is corrupt (model.safetensors failed its checksum): moved to "
        f"{tmp_path / 'results' / 'corrupt' / 'train' / dense}.1; it is recomputed when needed"
    ]
    assert f"train/{dense}" in store.computed
    assert again["test_acc"] == first["test_acc"] and again["stage_hashes"] == first["stage_hashes"]
    assert (dense_dir / "model.safetensors").read_bytes() == original
    assert (tmp_path / "results" / "corrupt" / "train" / f"{dense}.1" / "model.safetensors").read_bytes() != original


def test_a_corrupt_shared_stage_is_moved_aside_and_its_next_consumer_recomputes_it_bitwise(tmp_path):
    """The dense stage of a finished magnitude experiment is damaged. The same command again: one warning line, the
    folder moved out of runs/, the record reused (its final stage is intact). A fine-tune at another sparsity then
    needs the dense stage: it is recomputed, bitwise the first one."""
    from tests.test_cli import cli

    args = [*SYNTH, "method=magnitude", "method.sparsity=0.8", "method.recovery.epochs=1"]
    run = make_run(tmp_path, *args)
    first = run_experiment(run, Store(run.paths.results))
    dense = first["stage_hashes"]["dense"]
    runs = tmp_path / "results" / "runs"
    weights, metrics = (runs / "train" / dense / name for name in ("model.safetensors", "metrics.jsonl"))
    original, rows = weights.read_bytes(), metrics.read_text()
    _truncate(weights)

    again = cli(tmp_path, *args)
    assert again.returncode == 0, again.stderr
    warned = [line for line in (again.stdout + again.stderr).splitlines() if "WARNING" in line or "is corrupt" in line]
    aside = tmp_path / "results" / "corrupt" / "train" / f"{dense}.1"
    assert len(warned) == 1 and f"stage train/{dense} is corrupt (model.safetensors" in warned[0], warned
    assert str(aside) in warned[0] and "WARNING" in warned[0]
    assert not (runs / "train" / dense).exists() and (aside / "result.json").exists()
    copy = json.loads((tmp_path / "out" / "result.json").read_text())
    assert {k: v for k, v in copy.items() if k != "store"} == first  # the record, reused (the copy names its store)
    log = (tmp_path / "out" / "train.log").read_text()
    assert warned[0] in log and "nothing to compute" in log

    store = Store(run.paths.results)
    other = run_experiment(make_run(tmp_path, *SYNTH, "method=magnitude", "method.sparsity=0.5"), store)
    assert other["stage_hashes"]["dense"] == dense and f"train/{dense}" in store.computed
    assert weights.read_bytes() == original and metrics.read_text() == rows
    assert other["dense_test_acc"] == first["dense_test_acc"]
    assert not (tmp_path / "results" / "corrupt" / "train" / f"{dense}.2").exists()


def test_a_corrupt_record_is_moved_where_no_reader_counts_it(tmp_path, caplog):
    from analysis.records import load_local

    run = make_run(tmp_path, *SYNTH)
    first = run_experiment(run, Store(run.paths.results))
    record = next((tmp_path / "results" / "runs" / "experiment").glob("*/result.json"))
    record.write_text(record.read_text()[:100])  # cut mid-write by something other than the store
    assert len(load_local(tmp_path / "results").attrs["unreadable"]) == 1
    store = Store(run.paths.results)
    with caplog.at_level(logging.WARNING, logger="prunelab"):
        again = run_experiment(run, store)
    assert len(_corrupt_lines(caplog)) == 1 and "result.json is unreadable" in _corrupt_lines(caplog)[0]
    assert store.computed == [f"experiment/{record.parent.name}"]  # its stages are intact: only the record
    assert again["test_acc"] == first["test_acc"]
    assert (tmp_path / "results" / "corrupt" / "experiment" / f"{record.parent.name}.1" / "result.json").exists()
    df = load_local(tmp_path / "results")
    assert len(df) == 1 and df.attrs["unreadable"] == []


def _blocked_at_the_lock(store, monkeypatch):
    """Each call that finds a stage corrupt without the lock signals, then waits for the lock the test holds."""
    arrived = []
    real = Store._lock

    def lock(self, kind, digest):
        arrived.append(threading.current_thread().name)
        return real(self, kind, digest)

    monkeypatch.setattr(Store, "_lock", lock)
    return arrived


def _wait_for(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_what_looked_corrupt_is_checked_again_under_the_lock_before_anything_moves(tmp_path, monkeypatch, caplog):
    """Two readers find a stage corrupt at once: one moves it (one warning). A reader that found it corrupt while a
    job held its lock and repaired it (a stage being recomputed) moves nothing."""
    run = make_run(tmp_path, *SYNTH)
    first = run_experiment(run, Store(run.paths.results))
    ref = f"train/{first['stage_hashes']['dense']}"
    store = Store(run.paths.results)
    weights = tmp_path / "results" / "runs" / ref / "model.safetensors"
    original = weights.read_bytes()
    arrived = _blocked_at_the_lock(store, monkeypatch)
    found: dict = {}

    def reader(name):
        found[name] = store.get(ref)

    for repair in (True, False):
        arrived.clear()
        found.clear()
        _truncate(weights)
        lock = FileLock(str(tmp_path / "results" / "runs" / "train" / f".{ref.split('/')[1]}.lock"))
        with caplog.at_level(logging.WARNING, logger="prunelab"):
            with lock:
                threads = [threading.Thread(target=reader, args=(f"r{i}",), name=f"r{i}") for i in range(2)]
                for thread in threads:
                    thread.start()
                _wait_for(lambda: len(arrived) == 2)  # both saw the damage and wait for the lock
                if repair:
                    weights.write_bytes(original)
            for thread in threads:
                thread.join(timeout=30)
        if repair:
            assert all(stage is not None for stage in found.values()) and len(found) == 2
            assert _corrupt_lines(caplog) == [] and not (tmp_path / "results" / "corrupt").exists()
        else:
            assert found == {"r0": None, "r1": None}
            assert len(_corrupt_lines(caplog)) == 1
            assert sorted(p.name for p in (tmp_path / "results" / "corrupt" / "train").iterdir()) == [
                f"{ref.split('/')[1]}.1"
            ]
            assert not (tmp_path / "results" / "runs" / ref).exists()


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
    # the job's log (Hydra's train.log, both runs appended to it): the resume, then only the epochs after it
    log = (killed / "out" / "train.log").read_text()
    resumed = re.findall(r"resumed dense:dense at epoch (\d+)/12 \(iteration (\d+)\) from \S+checkpoint.pt", log)
    assert len(resumed) == 1, log
    epoch = int(resumed[0][0])
    after = log.split("resumed dense:dense")[1]
    assert re.findall(r"dense:dense: epoch (\d+)/12,", after) == [str(e) for e in range(epoch + 1, 13)]
    assert "resumed" not in (tmp_path / "straight" / "out" / "train.log").read_text()
