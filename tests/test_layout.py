"""Channels-last training of conv nets: deterministic, NCHW's numbers up to summation order, hashed for conv only."""

from __future__ import annotations

import pytest
import torch

from datasets import build_dataset
from foundations.training import Hooks, TrainConfig, channels_last, train
from models import build_model
from models.config import ModelConfig
from runners.experiment import run_experiment
from runners.store import Store
from tests.conftest import make_run

CPU = torch.device("cpu")


def _fit(model_name: str, layout, seen: list | None = None):
    data = build_dataset({"name": "synthetic", "num_train": 600, "val_size": 100, "input_shape": [3, 8, 8]})
    model = build_model(
        ModelConfig(name=model_name), data.input_shape, data.num_classes, torch.Generator().manual_seed(0)
    )

    def layout_seen(model):  # the layout the step really ran in: the first convolution's weight and its gradient
        weight = next(p for p in model.parameters() if p.dim() == 4)
        seen.append(
            (
                weight.is_contiguous(memory_format=torch.channels_last),
                weight.grad.is_contiguous(memory_format=torch.channels_last),
            )
        )

    outcome = train(
        model,
        data,
        TrainConfig(epochs=2, batch_size=50, lr=0.05, channels_last=layout),
        data_seed=0,
        device=CPU,
        progress=False,
        hooks=Hooks(before_step=[layout_seen] if seen is not None else []),
    )
    return model, outcome


def test_the_default_layout_is_channels_last_for_conv_nets_on_the_cpu_only():
    assert channels_last(None, True, CPU) is True
    assert channels_last(None, True, torch.device("cuda")) is False
    assert channels_last(False, True, CPU) is False
    assert channels_last(True, False, CPU) is None  # no 2-d convolution: nothing to choose, nothing hashed


def test_channels_last_is_deterministic_and_nchw_up_to_rounding():
    seen: list = []
    model, nhwc = _fit("conv_bn", None, seen)
    _, again = _fit("conv_bn", None)
    _, nchw = _fit("conv_bn", False)
    assert seen and all(weight and grad for weight, grad in seen)
    assert all(torch.equal(nhwc.selected_state[k], again.selected_state[k]) for k in nhwc.selected_state)
    assert nhwc.metrics == again.metrics
    for key, value in nchw.selected_state.items():
        assert torch.allclose(nhwc.selected_state[key].float(), value.float(), atol=1e-3), key
    # what later stages and the stored files see is NCHW again (safetensors refuses other strides)
    assert all(t.is_contiguous() for t in nhwc.selected_state.values())
    assert all(p.is_contiguous() for p in model.parameters())


@pytest.mark.parametrize("model_name, changes", [("conv_bn", True), ("mlp_bn", False)])
def test_the_resolved_layout_is_in_the_train_hash_of_conv_nets_only(tmp_path, model_name, changes):
    tiny = [
        "dataset=synthetic",
        "dataset.num_train=200",
        "dataset.val_size=50",
        "dataset.num_test=50",
        f"model={model_name}",
        "train.epochs=1",
        "train.batch_size=50",
    ]

    def dense_hash(*overrides: str) -> str:
        config = make_run(tmp_path, *tiny, *overrides)
        return run_experiment(config, Store(config.paths.results))["stage_hashes"]["dense"]

    default = dense_hash()
    assert dense_hash("train.channels_last=true") == default  # the default, said out loud: the same stage
    assert (dense_hash("train.channels_last=false") != default) is changes
