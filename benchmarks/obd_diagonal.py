"""Benchmark (not a test): the cost of OBD's Hessian diagonal next to one plain training epoch, in one run.

    .venv/bin/python benchmarks/obd_diagonal.py

For LeNet-300-100 and LeNet-5 (Caffe) on Fashion-MNIST: the wall time of one epoch of foundations.training.loop.train (55k
examples, batch 128, no evaluation) and of methods.pipeline.scores.hessian.hessian_diagonal over 10,000 training examples for
each estimator, best of 2, interleaved so that all see the same machine load; printed as seconds and as epochs.
Hutchinson (100 Rademacher probes per chunk, i.e. 100 Hessian-vector products) is timed on 1,000 examples: its cost
is linear in the examples, and 10,000 take minutes on LeNet-5.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.train_loop import NoEval, interleaved_best
from datasets import build_dataset
from datasets.config import DatasetConfig
from foundations.errors import UserError
from foundations.training import (
    TrainConfig,
    train,
)
from methods.pipeline.scores.hessian import ESTIMATORS, hessian_diagonal
from models import build_model
from models.config import ModelConfig

SAMPLES = 10_000
SAMPLES_OF = {"hutchinson": 1_000}


def main():
    torch.set_num_threads(2)
    data = build_dataset(DatasetConfig())
    cfg = TrainConfig(epochs=1, batch_size=128, lr=0.05, weight_decay=5e-4)
    for name in ("lenet300", "lenet5"):
        model = build_model(ModelConfig(name=name), data.input_shape, 10, torch.Generator().manual_seed(0))
        params = {n: p for n, p in model.named_parameters() if n.endswith("weight")}

        def epoch(name=name):
            fresh = build_model(ModelConfig(name=name), data.input_shape, 10, torch.Generator().manual_seed(0))
            train(fresh, NoEval(data), cfg, data_seed=0, device=torch.device("cpu"), progress=False)

        def diagonal(estimator, model=model, params=params):
            return lambda: hessian_diagonal(
                model,
                params,
                data.train.batches(1000, shuffle=False),
                estimator,
                n_samples=SAMPLES_OF.get(estimator, SAMPLES),
            )

        supported, refused = [], {}
        for estimator in ESTIMATORS:  # a 10-example trial: some estimators refuse some architectures
            try:
                hessian_diagonal(model, params, data.train.batches(10), estimator, n_samples=10)
                supported.append(estimator)
            except UserError as err:
                refused[estimator] = str(err)
        times = interleaved_best([epoch, *[diagonal(e) for e in supported]], repeats=2)
        print(f"{name}: one training epoch {times[0]:.2f} s; Hessian diagonal over {SAMPLES:,} examples:")
        for estimator, seconds in zip(supported, times[1:]):
            n = SAMPLES_OF.get(estimator, SAMPLES)
            print(
                f"  {estimator:<17} {seconds:7.2f} s = {seconds / times[0]:5.2f} epochs"
                + (f"   (over {n:,} examples)" if n != SAMPLES else ""),
                flush=True,
            )
        for estimator, why in refused.items():
            print(f"  {estimator:<17} not available: {why}")


if __name__ == "__main__":
    main()
