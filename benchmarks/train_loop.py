"""Benchmark (not a test): framework overhead and stage reuse, measured in one run on this machine.

    .venv/bin/python benchmarks/train_loop.py

1. Epoch time of foundations.training.loop.train vs a minimal hand-written PyTorch loop (same model, data, batch size, optimizer;
   both without evaluation so only the loop is compared). Target ratio <= 1.05.
2. Wall time of a 4-experiment mini-sweep (dense + magnitude at 3 sparsities) with an empty store vs re-run.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datasets import build_dataset
from datasets.config import DatasetConfig
from foundations.seeds import epoch_seed
from foundations.store import Store
from foundations.training import TrainConfig, train
from models import build_model
from models.config import ModelConfig
from runners.config import register_schemas, validate
from runners.experiment import run_experiment


def hand_loop(model, data, cfg, nhwc: bool = False):
    """The minimal PyTorch loop: one epoch, or ``cfg.iterations`` steps of it when set; ``nhwc``: model and batches
    channels-last, the layout train() runs a conv net in on the CPU."""
    layout = torch.channels_last if nhwc else torch.contiguous_format
    model.to(memory_format=layout)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    model.train()
    steps = data.train.batches(cfg.batch_size, shuffle=True, seed=epoch_seed(0, 0))
    for _, (x, y) in zip(range(cfg.iterations or data.train.num_batches(cfg.batch_size)), steps):
        if nhwc:
            x = x.contiguous(memory_format=layout)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()


def interleaved(fns, repeats=3):
    """Every wall time of each function, alternating them (A, B, A, B, ...) so that all see the same machine load."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return times


def interleaved_best(fns, repeats=3):
    """Best-of-n wall time of each function, measured interleaved."""
    return [min(bucket) for bucket in interleaved(fns, repeats)]


class NoEval:
    """The data bundle with empty validation/test splits, so train() measures the loop alone."""

    def __init__(self, data):
        self.train = data.train
        self.val = self.test = data.val.subset(1, 0)


def main():
    torch.set_num_threads(2)
    data = build_dataset(DatasetConfig())
    cfg = TrainConfig(epochs=1, batch_size=128, lr=0.05, weight_decay=5e-4)
    fresh = lambda: build_model(ModelConfig(name="lenet300"), data.input_shape, 10, torch.Generator().manual_seed(0))  # noqa: E731
    ours, hand = interleaved_best(
        [
            lambda: train(fresh(), NoEval(data), cfg, data_seed=0, device=torch.device("cpu"), progress=False),
            lambda: hand_loop(fresh(), data, cfg),
        ]
    )
    print(
        f"epoch time, LeNet-300-100 on Fashion-MNIST (55k, batch 128): framework {ours:.2f} s, "
        f"hand-written {hand:.2f} s, ratio {ours / hand:.3f} (target <= 1.05)"
    )

    register_schemas()
    conf = str(Path(__file__).resolve().parent.parent / "conf")
    with tempfile.TemporaryDirectory() as root, initialize_config_dir(config_dir=conf, version_base="1.3"):
        runs = [
            validate(
                compose(
                    "config",
                    overrides=[
                        "logger=none",
                        "progress=false",
                        f"paths.results={root}",
                        "train.epochs=2",
                        "dataset.train_limit=20000",
                        *extra,
                    ],
                )
            )
            for extra in (
                [],
                *[["method=magnitude", f"method.sparsity={s}", "method.recovery.epochs=1"] for s in (0.5, 0.8, 0.9)],
            )
        ]
        timings = []
        for _ in range(2):
            start = time.perf_counter()
            for run in runs:
                run_experiment(run, Store(root))
            timings.append(time.perf_counter() - start)
    print(
        f"4-experiment mini-sweep: empty store {timings[0]:.1f} s, re-run with stage reuse {timings[1]:.2f} s "
        f"({timings[0] / timings[1]:.0f}x)"
    )


if __name__ == "__main__":
    main()
