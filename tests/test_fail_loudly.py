"""Fail loudly and lose nothing: every bad input is one line naming the field and the fix, exit 2, nothing in the
store; a diverging run is recorded as failed (exit 1) and a sweep goes on; a full disk leaves a consistent store."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_cli import ROOT, cli
from tests.test_sweeps import job_records, multirun

DIVERGED = re.compile(r"diverged at iteration (\d+) \(loss=(nan|inf)\)")


def one_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def store_files(tmp_path) -> list[Path]:
    return [p for p in (tmp_path / "results").rglob("*") if p.is_file()] if (tmp_path / "results").exists() else []


@pytest.mark.parametrize(
    "args,expected",
    [
        (["seeds.init=-1"], "seeds.init: must be a non-negative integer"),
        (["seeds.data=-2"], "seeds.data: must be a non-negative integer"),
        (["seeds.prune=-3"], "seeds.prune: must be a non-negative integer"),
        (["dataset.val_size=0"], "dataset.val_size: 0 leaves no validation split"),
        (["dataset.val_size=0", "train.selection=val_loss"], "dataset.val_size: 0 leaves no validation split"),
        # models that cannot take the dataset's input
        (["dataset=digits", "model=lenet5"], "model lenet5 needs inputs of at least 16x16"),
        (
            ["model=vgg", "model.depth=11", "dataset.input_shape=[1,28,28]"],
            "model vgg11 needs inputs of at least 32x32",
        ),
        (["model=conv_bn", "model.widths=[4,4,4,4]"], "model conv_bn needs inputs of at least 16x16"),
    ],
)
def test_validation_refuses_with_one_line_naming_the_field(tmp_path, args, expected):
    from foundations.errors import UserError
    from tests.conftest import make_run

    with pytest.raises(UserError) as caught:
        make_run(tmp_path, "dataset=synthetic", *args)
    assert str(caught.value).startswith(expected) and "\n" not in str(caught.value)


def test_a_model_that_cannot_take_the_input_stops_before_any_stage(tmp_path):
    result = cli(tmp_path, "dataset=digits", "model=lenet5")
    assert result.returncode == 2
    assert one_line(result).startswith("error: model lenet5 needs inputs of at least 16x16; the dataset gives 1x8x8")
    assert store_files(tmp_path) == []  # the old code wrote four files (experiment and init folders) first


@pytest.mark.parametrize(
    "arg,expected",
    [
        ("modle=lenet5", "modle: no such config group or key (did you mean model?)"),
        ("tarin.lr=0.1", "tarin.lr: no such config group or key (did you mean train?)"),
        ("levle=1", "levle: no such config group or key (did you mean level?)"),
        ("model=lenet55", "model=lenet55: no such option (did you mean lenet5?)"),
    ],
)
def test_misspelled_group_or_key_names_the_closest(arg, expected):
    from foundations.errors import UserError
    from runners.train import check_group_choices, check_top_level_keys

    argv = ["+experiment=survey_mlp", arg]
    with pytest.raises(UserError) as caught:
        check_group_choices(argv)
        check_top_level_keys(argv)
    assert str(caught.value).startswith(expected)
    check_top_level_keys(
        [
            "+experiment=survey_mlp",
            "level=1",
            "survey.dense_epochs=2",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "+experiment/arm=snip",
            "~seeds.init",
            "+anything=1",
        ]
    )


def test_misspelled_group_is_one_line_exit_2(tmp_path):
    result = cli(tmp_path, "dataset=synthetic", "modle=lenet5")
    assert result.returncode == 2  # Hydra's own: six lines and exit 1
    assert one_line(result).startswith("error: modle: no such config group or key (did you mean model?)")


@pytest.mark.parametrize(
    "argv",
    [
        ["model=vgg", "model.depth=11"],
        ["+experiment=han_lenet", "method.quality=2"],
        ["+experiment=survey_mlp", "+experiment/arm=snip", "method.batches=2"],
    ],
)
def test_field_overrides_are_checked_against_the_option_the_command_composes(argv):
    from runners.train import check_override_types

    check_override_types(argv)  # the old pre-check judged these against lenet300 / dense and refused them


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_line_before_anything_is_written(tmp_path):
    from foundations.errors import UserError
    from tests.conftest import make_run

    with pytest.raises(UserError, match=r"^device: cuda:1 requested but torch finds no CUDA device"):
        make_run(tmp_path, "dataset=synthetic", "device=cuda:1")
    result = cli(tmp_path, "dataset=synthetic", "device=cuda")
    assert result.returncode == 2
    assert one_line(result).startswith("error: device: cuda requested but torch finds no CUDA device")
    assert store_files(tmp_path) == []  # the old code left nine files and a 100-line traceback


def test_val_size_zero_is_allowed_when_the_last_checkpoint_is_reported(tmp_path):
    from foundations.store import Store
    from runners.experiment import run_experiment
    from tests.conftest import SYNTH, make_run

    run = make_run(tmp_path, *SYNTH, "dataset.val_size=0", "train.selection=last")
    record = run_experiment(run, Store(run.paths.results))
    assert (
        record["status"] == "ok" and record["selected_iteration"] == 2 * 32
    )  # all 2,000 examples train: 32 batches of 64, 2 epochs
    assert record["early_stop_iteration"] is None  # no validation split: no early-stopping point to report


def test_results_path_that_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    result = cli(tmp_path, "dataset=synthetic", f"paths.results={tmp_path}/afile/results")
    assert result.returncode == 2
    assert one_line(result) == (
        f"error: paths.results: {tmp_path}/afile is a file, not a folder; point paths.results "
        f"at a folder (created if missing)"
    )
    assert (tmp_path / "afile").read_text() == "not a folder"


# ------------------------------------------------------------------------------ read-only and full file systems
def in_namespace(script: str, timeout=300) -> subprocess.CompletedProcess:
    """``script`` in a private mount namespace (unshare -rm), where tmpfs mounts of any size or mode need no root
    and vanish afterwards; skipped where user namespaces are unavailable."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("unshare -rm (user + mount namespaces) is unavailable here")
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def cli_line(tmp_path, results: Path, *args: str) -> str:
    return shlex.join(
        [
            sys.executable,
            "-m",
            "runners.train",
            "logger=none",
            "progress=false",
            f"paths.results={results}",
            f"hydra.run.dir={tmp_path}/out",
            "dataset=synthetic",
            *args,
        ]
    )


def test_read_only_results_folder(tmp_path):
    mount = tmp_path / "ro"
    mount.mkdir()
    result = in_namespace(f"mount -t tmpfs -o ro tmpfs {mount} && {cli_line(tmp_path, mount / 'results')}")
    assert result.returncode == 2, result.stderr
    assert one_line(result) == (
        f"error: paths.results: {mount} is not writable (read-only folder or file system); "
        f"point paths.results at a writable folder"
    )


@pytest.mark.slow
def test_disk_full_while_writing_a_stage_is_one_line_and_the_store_stays_consistent(tmp_path):
    """A 300 kB disk: the init stage (200 kB of LeNet-300-100 weights) fits, the dense stage's first checkpoint does
    not. One line, exit 2; every stage on the disk either verifies or is incomplete; the same command on a disk with
    room reuses the finished init stage."""
    from foundations.store import Store

    disk, kept = tmp_path / "disk", tmp_path / "kept"
    disk.mkdir()
    args = ("train.epochs=2", "train.batch_size=64")
    result = in_namespace(
        f"mount -t tmpfs -o size=300k tmpfs {disk} && {cli_line(tmp_path, disk / 'results', *args)}; "
        f"code=$?; cp -a {disk}/results {kept}; exit $code"
    )
    assert result.returncode == 2, result.stderr[-3000:]
    line = one_line(result)
    assert (
        line.startswith("error: paths.results: no space left on device writing ")
        and "paths.results at another disk" in line
    )
    folders = [p for p in (kept / "runs").glob("*/*") if p.is_dir()]
    finished = [p for p in folders if (p / "result.json").exists()]
    assert [p.parent.name for p in finished] == ["init"]
    assert all(Store._check(p)[0] is not None for p in finished)
    assert not [p for p in kept.rglob(".*.tmp")]  # no half-written temp file left behind
    again = subprocess.run(
        shlex.split(cli_line(tmp_path, kept, *args)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_MODE": "disabled"},
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    record = json.loads((tmp_path / "out" / "result.json").read_text())
    assert record["status"] == "ok" and record["stages_reused"] == {"init": True, "dense": False}


# ------------------------------------------------------------------------------------------------- divergence
def test_divergence_is_recorded_as_failed_and_a_single_run_exits_1(tmp_path):
    result = cli(tmp_path, "dataset=synthetic", "train.lr=1e6", "train.epochs=1", "train.batch_size=64")
    assert result.returncode == 1, result.stderr
    line = one_line(result)
    assert DIVERGED.search(line) and "lower the learning rate" in line, line
    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "runs" / "experiment").glob("*/result.json")]
    assert len(records) == 1 and records[0]["status"] == "failed"
    assert DIVERGED.search(records[0]["error"]).group(0) == DIVERGED.search(line).group(0)
    dense = [p for p in (tmp_path / "results" / "runs" / "train").glob("*") if p.is_dir()]
    assert len(dense) == 1 and not (dense[0] / "result.json").exists()  # the diverged stage never completes


def test_a_diverging_job_fails_and_the_sweep_goes_on(tmp_path):
    proc = multirun(tmp_path, "dataset=synthetic", "train.lr=1e6,0.1", "train.epochs=1", "train.batch_size=64")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = job_records(tmp_path)
    assert jobs["0"]["status"] == "failed" and DIVERGED.search(jobs["0"]["error"])
    assert jobs["1"]["status"] == "ok" and jobs["1"]["test_acc"] > 0.9


def _loop(tmp_path, break_at: int, *, epochs=2, checkpoint=None):
    """Train LeNet-300-100 on synthetic data; after optimizer step ``break_at`` (1-based) one weight becomes NaN."""
    from datasets import build_dataset
    from datasets.config import DatasetConfig
    from foundations.training import Hooks, TrainConfig, train
    from models import build_model
    from models.config import ModelConfig

    data = build_dataset(DatasetConfig(name="synthetic", val_size=200))
    model = build_model(
        ModelConfig(name="lenet300"), data.input_shape, data.num_classes, torch.Generator().manual_seed(0)
    )
    steps = []

    def poison(model, optimizer):
        steps.append(1)
        if len(steps) == break_at:
            with torch.no_grad():
                model.fc1.weight[0, 0] = float("nan")

    cfg = TrainConfig(epochs=epochs, batch_size=64)
    return train(
        model,
        data,
        cfg,
        data_seed=0,
        device=torch.device("cpu"),
        hooks=Hooks(after_step=[poison]),
        checkpoint=checkpoint,
        progress=False,
    )


def test_the_loop_stops_at_the_first_non_finite_loss(tmp_path):
    from foundations.training import Diverged

    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(Diverged, match=r"^diverged at iteration 41 \(loss=nan\)$") as caught:
        _loop(tmp_path, 40, checkpoint=checkpoint)  # weights broken by step 40: the loss of step 41 is NaN
    assert caught.value.iteration == 41
    # the epoch-1 checkpoint (iteration 29, before the damage) is the last one written: never a diverged state
    assert torch.load(checkpoint, weights_only=True)["iteration"] == 29


def test_the_loop_checks_the_weights_the_last_step_leaves(tmp_path):
    from foundations.training import Diverged

    with pytest.raises(Diverged, match=r"^diverged at iteration 58 \(loss=[0-9.e-]+, non-finite weights\)$"):
        _loop(tmp_path, 58)  # 2 epochs x 29 batches: the last step breaks the weights after the last loss


# ------------------------------------------------------------------------------------------- declared shapes
def test_declared_input_shapes_are_what_the_loaders_give(tmp_path):
    from datasets import INPUT_SHAPES, build_dataset, input_shape
    from datasets.config import dataset_config
    from tests.test_datasets import write_cifar, write_mnist_like

    write_mnist_like(tmp_path / "idx")
    write_cifar(tmp_path / "cifar", "cifar10")
    write_cifar(tmp_path / "cifar", "cifar100")
    configs = [
        dataset_config(name="synthetic", input_shape=[3, 5, 7], val_size=10),
        dataset_config(name="digits", val_size=10),
        dataset_config(name="mnist_5k", val_size=10),
        dataset_config(name="fashion_mnist", data_dir=str(tmp_path / "idx"), val_size=10),
        dataset_config(name="mnist", data_dir=str(tmp_path / "idx"), val_size=10),
        dataset_config(name="cifar10", data_dir=str(tmp_path / "cifar"), val_size=10),
        dataset_config(name="cifar100", data_dir=str(tmp_path / "cifar"), val_size=10),
    ]
    assert {c.name for c in configs} == set(INPUT_SHAPES) | {"synthetic"}
    for cfg in configs:
        assert build_dataset(cfg).input_shape == input_shape(cfg), cfg.name


def test_idx_files_of_another_image_size_are_refused(tmp_path):
    from datasets import build_dataset
    from datasets.config import dataset_config
    from foundations.errors import UserError
    from tests.test_datasets import IDX_FILES, tagged_images, write_idx

    for stem, array in zip(
        IDX_FILES,
        [tagged_images(30, size=32), torch.zeros(30).numpy(), tagged_images(10, size=32), torch.zeros(10).numpy()],
    ):
        write_idx(tmp_path / f"{stem}.gz", array)
    with pytest.raises(UserError, match="holds 32x32 images; MNIST is 28x28"):
        build_dataset(dataset_config(name="mnist", data_dir=str(tmp_path), val_size=10))
