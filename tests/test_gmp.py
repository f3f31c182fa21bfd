"""Gradual magnitude pruning (Zhu & Gupta 2017) through the real pipeline, against answers computed here.

The tests watch the training from outside the method: a global forward pre-hook sees the weights every training
forward uses, a global optimizer post-step hook sees the weights after every step. From those alone they recompute
what eq. 1 and the magnitude criterion demand (the schedule written out here, the kept sets by ``torch.topk``) and
compare; a killed and resumed stage must end bitwise where an uninterrupted one does.
"""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from foundations.errors import UserError
from foundations.store import Store
from foundations.training import Hooks, TrainConfig, train
from runners.experiment import run_experiment
from runners.tracking import Tracker
from tests.conftest import make_run

# mlp_bn 64 -> 30 -> 20 -> 4 on 8x8 synthetic images: 320 training examples in batches of 32, 10 steps per epoch.
SIZES = {"fc1.weight": (30, 64), "fc2.weight": (20, 30), "fc3.weight": (4, 20)}
N = sum(a * b for a, b in SIZES.values())
SETUP = [
    "dataset=synthetic",
    "dataset.input_shape=[1,8,8]",
    "dataset.num_train=420",
    "dataset.val_size=100",
    "dataset.num_test=100",
    "model=mlp_bn",
    "model.widths=[30,20]",
    "train.epochs=3",
    "train.batch_size=32",
    "train.momentum=0.9",
    "train.weight_decay=5e-3",
    "method=gmp",
    "method.sparsity=0.9",
    "method.initial_sparsity=0.1",
    "method.start=0.2",
    "method.end=0.8",
    "method.frequency=3",
]
STEPS_PER_EPOCH = 10


def experiment(tmp_path, *overrides, tracker=None):
    config = make_run(tmp_path, *SETUP, *overrides)
    store = Store(config.paths.results)
    return run_experiment(config, store, tracker), store


def eq1(t: int, s_i: float, s_f: float, t0: int, n: int, dt: int) -> float:
    """Zhu & Gupta's eq. 1, held between updates: the sparsity in force after t steps."""
    if t < t0:
        return 0.0
    k = min((t - t0) // dt, n)  # updates after the first one
    return s_f - (s_f - s_i) * (1 - k / n) ** 3


def kept_counts(sparsity: float, scope: str) -> dict[str, int]:
    """How many weights each tensor keeps (layerwise), or the total under the key "all" (global)."""
    if scope == "global":
        return {"all": round((1 - sparsity) * N)}
    return {name: round((1 - sparsity) * a * b) for name, (a, b) in SIZES.items()}


class Watch:
    """What training does, seen from outside: the weights of the prunable Linears at every training forward (as
    the forward uses them) with their mask buffers, and the weights after every optimizer step."""

    def __init__(self):
        self.forwards: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = []
        self.after_step: list[dict[str, torch.Tensor]] = []

    def forward(self, module, _inputs):
        if not (isinstance(module, nn.Linear) and hasattr(module, "weight_mask") and module.training):
            return
        name = {shape: n for n, shape in SIZES.items()}[tuple(module.weight.shape)]
        if name == "fc1.weight":
            self.forwards.append({})
        self.forwards[-1][name] = (module.weight.detach().clone(), module.weight_mask.detach().bool().clone())

    def step(self, optimizer, _args, _kwargs):
        params = [p for group in optimizer.param_groups for p in group["params"] if p.dim() == 2]
        by_shape = {tuple(p.shape): p for p in params}
        self.after_step.append({n: by_shape[shape].detach().clone() for n, shape in SIZES.items()})

    def __enter__(self):
        self.handles = [
            nn.modules.module.register_module_forward_pre_hook(self.forward),
            register_optimizer_step_post_hook(self.step),
        ]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def top_k(weights: dict[str, torch.Tensor], alive: dict[str, torch.Tensor], counts: dict[str, int]) -> dict:
    """The masks keeping the largest |w| among ``alive`` (torch.topk): per tensor, or over all of them ("all")."""
    groups = [list(weights)] if "all" in counts else [[name] for name in weights]
    out = {}
    for names in groups:
        flat = torch.cat([torch.where(alive[n], weights[n].abs(), -1.0).flatten() for n in names])
        keep = torch.zeros(flat.numel(), dtype=torch.bool)
        keep[torch.topk(flat, counts["all"] if "all" in counts else counts[names[0]]).indices] = True
        for n, part in zip(names, keep.split([weights[n].numel() for n in names])):
            out[n] = part.view_as(weights[n])
    return out


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_every_forward_uses_the_masks_of_eq_1_chosen_by_magnitude_and_ends_exactly_on_the_target(tmp_path, scope):
    """SGD with momentum 0.9 and weight decay. At every training forward the weights used are zero wherever the
    mask is off; the number of zeros is what eq. 1 (written out here) demands for the steps taken so far; the
    masks only shrink; at every update the masks are the largest |w| (torch.topk) of the weights after that step,
    among those alive. The record reports exactly the target, from a checkpoint evaluated after the last update."""
    with Watch() as watch:
        record, store = experiment(tmp_path, f"method.scope={scope}")
    total = 3 * STEPS_PER_EPOCH
    assert len(watch.forwards) == len(watch.after_step) == total  # one forward and one step per iteration
    t0, last, dt = round(0.2 * total), round(0.8 * total), 3
    n = (last - t0) // dt
    assert (t0, n) == (6, 6)  # updates after steps 6, 9, ..., 24 of 30
    previous = {name: torch.ones(shape, dtype=torch.bool) for name, shape in SIZES.items()}
    for t, seen in enumerate(watch.forwards):  # the forward of iteration t runs after t steps
        weights = {name: w for name, (w, _) in seen.items()}
        masks = {name: m for name, (_, m) in seen.items()}
        for name in SIZES:
            assert torch.all(weights[name][~masks[name]] == 0), (t, name)  # pruned entries exactly zero
            assert torch.all(masks[name] <= previous[name]), (t, name)  # nested
        want = kept_counts(eq1(t, 0.1, 0.9, t0, n, dt), scope)
        nonzero = {name: int((w != 0).sum()) for name, w in weights.items()}
        got = {"all": sum(nonzero.values())} if scope == "global" else nonzero
        assert got == want, t
        if not same(masks, previous):
            assert t in range(t0, t0 + n * dt + 1, dt), t
            after = watch.after_step[t - 1]  # the weights after step t, before the update
            expected = top_k(after, previous, want)
            assert same(masks, expected), t
        previous = masks
    assert sum(int(m.sum()) for m in previous.values()) == sum(kept_counts(0.9, scope).values())
    # the record and the stored stage: exactly the target, weights zero exactly where the masks are off
    stage = store.at(record["final_stage"])
    masks = stage.masks()
    assert {n: int(m.sum()) for n, m in masks.items()} == {n: int(previous[n].sum()) for n in SIZES} and sum(
        int(m.sum()) for m in masks.values()
    ) == round(0.1 * N)
    assert record["density"] == round(0.1 * N) / N and record["target_sparsity"] == 0.9
    assert record["selected_iteration"] >= t0 + n * dt
    selected = stage.weights("selected")
    assert all(torch.equal(selected[name] != 0, masks[name]) for name in SIZES)
    assert record["outputs"]["pruning_schedule"]["end_step"] == 24 and record["label"] == (
        "gmp" if scope == "layerwise" else "gmp (global)"
    )
    assert record["stage_hashes"].keys() == {"init", "gmp"} and record["dense_test_acc"] is None


def test_from_the_dense_model_it_prunes_the_dense_last_iterate_during_retraining(tmp_path):
    """train_from=dense: the GMP stage starts from the dense stage's last weights; with start=0 and s_i=0.5 the first
    update (before any step) keeps the top half of those weights by |w| in every layer."""
    with Watch() as watch:
        record, store = experiment(
            tmp_path,
            "method.train_from=dense",
            "method.start=0",
            "method.initial_sparsity=0.5",
            "method.training.epochs=2",
        )
    dense = store.at(f"train/{record['stage_hashes']['dense']}")
    gmp = store.at(record["final_stage"])
    assert gmp.result_json["parents"]["start"] == dense.hash and record["dense_stage"] == dense.hash
    assert len(watch.forwards) == 2 * STEPS_PER_EPOCH  # GMP's own 2 epochs (the dense stage has no masks)
    last = dense.weights("last")
    first = {name: m for name, (_, m) in watch.forwards[0].items()}
    full = {name: torch.ones(shape, dtype=torch.bool) for name, shape in SIZES.items()}
    expected = top_k({name: last[name] for name in SIZES}, full, kept_counts(0.5, "layerwise"))
    assert same(first, expected)
    assert record["density"] == sum(round(0.1 * a * b) for a, b in SIZES.values()) / N
    assert record["label"] == "gmp (from dense)"


class Interrupt(Exception):
    pass


class KillAt(Tracker):
    """Stops the GMP stage at its evaluation of epoch ``epoch``: what a kill between two checkpoints leaves."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def log_stage(self, stage, rows, *, reused=False):
        if stage == "gmp" and any(row["epoch"] >= self.epoch for row in rows):
            raise Interrupt


def stage_files(store: Store, record: dict) -> dict[str, bytes]:
    folder = store.stage_dir("train", record["stage_hashes"]["gmp"])
    names = ("model.safetensors", "last.safetensors", "masks.safetensors", "metrics.jsonl")
    return {name: (folder / name).read_bytes() for name in names}


def test_a_stage_killed_mid_schedule_resumes_to_bitwise_the_same_weights_and_masks(tmp_path, caplog):
    """Killed during epoch 2 (updates at 6, 9, ..., 24): the checkpoint of epoch 1 (iteration 10, masks of the
    update at 9) is all that is left; the re-run resumes there, recomputes the update steps from iteration 10 and
    ends with the files of an uninterrupted run."""
    straight, straight_store = experiment(tmp_path / "straight")
    with pytest.raises(Interrupt):
        experiment(tmp_path / "killed", tracker=KillAt(epoch=2))
    checkpoint = next((tmp_path / "killed" / "results" / "runs" / "train").glob("*/checkpoint.pt"))
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["iteration"] == 10 and 0 < int(saved["model"]["fc1.weight_mask"].sum()) < 30 * 64
    with caplog.at_level(logging.INFO, logger="prunelab"):
        resumed, resumed_store = experiment(tmp_path / "killed")
    assert any("resumed gmp:gmp at epoch 1/3 (iteration 10)" in r.getMessage() for r in caplog.records)
    assert stage_files(resumed_store, resumed) == stage_files(straight_store, straight)
    assert resumed["density"] == straight["density"] == round(0.1 * N) / N


def test_the_loop_shows_each_iteration_once_across_a_resume(tmp_path):
    """``Hooks.at_iteration`` sees t = 0 (before the first step), then every t after a step; a run resumed from
    its checkpoint continues at the checkpoint's iteration, never repeating or restarting the count. A run started
    at iteration k (lottery rewinding) starts its count at k."""
    from datasets import build_dataset
    from datasets.config import SyntheticConfig

    data = build_dataset(SyntheticConfig(name="synthetic", num_train=300, val_size=44, num_test=50))
    cfg = TrainConfig(epochs=3, batch_size=32)  # 8 steps per epoch

    def run(seen, checkpoint=None, stop=None, start_iteration=0):
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))

        def at(_model, _opt, t):
            seen.append(t)
            if stop is not None and t == stop:
                raise Interrupt

        return train(
            model,
            data,
            cfg,
            data_seed=0,
            device=torch.device("cpu"),
            hooks=Hooks(at_iteration=[at]),
            checkpoint=checkpoint,
            start_iteration=start_iteration,
            progress=False,
        )

    seen: list[int] = []
    run(seen)
    assert seen == list(range(25))
    seen = []
    with pytest.raises(Interrupt):
        run(seen, tmp_path / "checkpoint.pt", stop=13)  # in epoch 2: the checkpoint of iteration 8 stays
    run(seen, tmp_path / "checkpoint.pt")
    assert seen == list(range(14)) + list(range(9, 25))
    seen = []
    run(seen, start_iteration=5)
    assert seen == list(range(5, 25))


def test_a_window_without_room_for_one_update_is_refused_before_any_stage(tmp_path):
    with pytest.raises(UserError, match=r"^method.frequency: the pruning window .* of 30 steps: steps 6-24\) is"):
        experiment(tmp_path, "method.frequency=19")
    assert not (tmp_path / "results" / "runs").exists()
    with pytest.raises(UserError, match=r"^method.end:"):
        make_run(tmp_path, *SETUP, "method.end=0.2")
    with pytest.raises(UserError, match=r"^method.initial_sparsity:"):
        make_run(tmp_path, *SETUP, "method.initial_sparsity=0.95")
    with pytest.raises(UserError, match=r"^method.scope:"):
        make_run(tmp_path, *SETUP, "method.scope=layerwise_std")


@pytest.mark.slow
def test_kill_9_of_a_gmp_job_mid_schedule_then_rerun_matches_an_uninterrupted_run(tmp_path):
    """A literal SIGKILL of the CLI once the GMP stage's first per-epoch checkpoint exists (masks already pruned:
    updates every 50 steps from 5 % of the run); the re-run resumes from it and the stage's weights, masks and
    metrics are byte for byte those of a run never killed."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    args = [
        "method=gmp",
        "method.start=0.05",
        "method.frequency=50",
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
    saved = torch.load(stage / "checkpoint.pt", weights_only=True)
    assert not torch.all(saved["model"]["fc1.weight_mask"]), "no mask update before the kill"

    for store in (killed, tmp_path / "straight"):
        subprocess.run(command(store), cwd=root, env=env, check=True, capture_output=True, timeout=600)
    straight = tmp_path / "straight" / "runs" / "train" / stage.name
    for name in ("model.safetensors", "last.safetensors", "masks.safetensors", "metrics.jsonl"):
        assert (stage / name).read_bytes() == (straight / name).read_bytes(), name
    assert "resumed gmp:gmp at epoch" in (killed / "out" / "train.log").read_text()
