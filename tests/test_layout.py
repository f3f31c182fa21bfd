"""Channels-last training of conv nets: deterministic, NCHW's numbers up to summation order, hashed for conv only,
and never for a conv whose channels-last backward corrupts memory on the CPU (benchmarks/layout_probe.py).

Whatever could crash runs in a child process (the probe's, or pytest's / the CLI's), so that a wrong rule fails a
test rather than killing the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks.layout_probe import Case, fork_server, run_chunk
from datasets import build_dataset
from foundations.errors import UserError
from foundations.store import Store
from foundations.training import (
    ConvGeometry,
    Hooks,
    TrainConfig,
    channels_last,
    conv_geometries,
    nhwc_safe,
    train,
    with_shapes,
)
from methods.pipeline.channels import compact
from methods.pipeline.channels.plan import ChannelPlan, prunable_channel_groups
from models import build_model
from models.config import ModelConfig
from runners.experiment import run_experiment
from tests.conftest import make_run

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parent.parent


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


def _conv(cin: int, cout: int, kernel: int, stride: int, groups: int = 1, dilation: int = 1) -> ConvGeometry:
    return ConvGeometry.of(nn.Conv2d(cin, cout, kernel, stride=stride, groups=groups, dilation=dilation))


SAFE = {"conv": _conv(16, 32, 3, 1)}
UNSAFE = {"conv1": _conv(3, 4, 3, 1), "shortcut": _conv(4, 4, 1, 2)}


def test_the_default_layout_is_channels_last_for_conv_nets_on_the_cpu_only():
    assert channels_last(None, SAFE, CPU) is True
    assert channels_last(None, SAFE, torch.device("cuda")) is False
    assert channels_last(False, SAFE, CPU) is False
    assert channels_last(True, {}, CPU) is None  # no 2-d convolution: nothing to choose, nothing hashed


def test_a_network_with_an_unsafe_conv_trains_contiguous_and_an_explicit_request_is_refused():
    assert channels_last(None, UNSAFE, CPU) is False
    assert channels_last(False, UNSAFE, CPU) is False
    with pytest.raises(UserError, match=r"^train.channels_last: true, but conv shortcut \(4->4, 1x1, stride 2x2\)"):
        channels_last(True, UNSAFE, CPU)
    assert channels_last(True, UNSAFE, torch.device("cuda")) is True  # oneDNN's bug: the CPU's kernels only


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


# ------------------------------------------------------------------------------------------------ the rule
# What benchmarks/layout_probe.py saw crash or return wrong weight gradients on this machine (AMD EPYC, AVX2, torch
# 2.14.1, oneDNN 3.12; docs/speed.md), as (in, out, kernel, stride, groups): stride 2 on 8x8 inputs, 1 or 2 threads;
# stride 3 on 15x15 inputs.
OUT = (*range(1, 17), 24, 32, 64)
PROBED_FAILURES = [
    *[(cin, cout, 1, 2, 1) for cin in range(2, 7) for cout in OUT],
    *[(7, cout, 1, 2, 1) for cout in (12, 13, 32)],
    *[(c, c, 1, 3, 1) for c in range(2, 8)],
]


@pytest.mark.parametrize("cin, cout, kernel, stride, groups", PROBED_FAILURES)
def test_the_rule_refuses_every_geometry_the_probe_saw_fail(cin, cout, kernel, stride, groups):
    assert not nhwc_safe(_conv(cin, cout, kernel, stride, groups))


@pytest.mark.parametrize(
    "name, shape, widths",
    [
        ("conv_bn", (1, 28, 28), None),
        ("lenet5", (1, 28, 28), None),
        ("vgg", (3, 32, 32), None),
        ("resnet", (3, 32, 32), None),
        ("resnet", (3, 8, 8), [8, 8, 16]),  # the dense network of the Scratch command below
    ],
)
def test_conv_nets_at_their_default_widths_keep_channels_last_so_their_hashes_stay(name, shape, widths):
    model = build_model(ModelConfig(name=name, widths=widths), shape, 10, torch.Generator().manual_seed(0))
    assert all(nhwc_safe(conv) for conv in conv_geometries(model).values())
    assert channels_last(None, conv_geometries(model), CPU) is True


def _narrow_allowed_cases() -> list[Case]:
    cases = []
    for cin in (1, 2, 3, 4, 5, 7, 8, 12, 16):
        for cout in (1, 4, 8):
            for kernel, stride, padding in ((1, 1, 0), (1, 2, 0), (1, 3, 0), (3, 1, 1), (3, 2, 1)):
                for threads in (1, 2):
                    cases.append(Case(cin, cout, kernel, stride, padding=padding, threads=threads))
    cases += [Case(c, c, 3, s, groups=c, padding=1) for c in (2, 4, 8) for s in (1, 2)]  # depthwise
    return [c for c in cases if nhwc_safe(_conv(c.in_channels, c.out_channels, c.kernel, c.stride, c.groups))]


@pytest.mark.slow
def test_narrow_convs_the_rule_allows_give_the_contiguous_gradients_in_a_child_process():
    """Silent corruption in an allowed shape would show here as a crash of the child or a gradient off by more than
    1e-4 of its largest entry (float32 summation-order differences are ~1e-6; the corrupted ones are ~0.5)."""
    cases = _narrow_allowed_cases()
    assert len(cases) > 50  # the rule leaves narrow convs to test
    context = fork_server(malloc_check=False)
    results = [r for t in (1, 2) for r in run_chunk(context, [c for c in cases if c.threads == t], t, 5, 0)]
    crashed = [(r["case"], r["crash"]) for r in results if r["crash"]]
    assert not crashed
    off = [(r["case"], r["diffs"]) for r in results if max(r["diffs"].values()) > 1e-4]
    assert not off


def test_the_geometry_of_a_compacted_network_is_read_from_its_weight_shapes():
    base = build_model(ModelConfig(name="resnet", widths=[8, 8, 16]), (3, 8, 8), 10, torch.Generator().manual_seed(0))
    example = torch.zeros(1, 3, 8, 8)
    groups = prunable_channel_groups(base, example)
    plan = ChannelPlan.for_groups(groups, {g.name: list(range(g.num_channels // 2)) for g in groups})
    small = compact(base, plan, example)
    shapes = {k: tuple(v.shape) for k, v in small.state_dict().items()}
    assert with_shapes(conv_geometries(base), shapes) == conv_geometries(small)
    assert conv_geometries(small)["layer2.0.shortcut.conv"] == _conv(4, 4, 1, 2)  # the one the Scratch run trains
    # a depthwise conv stays depthwise with its channels; a missing weight means: build the model
    depthwise = {"dw": _conv(8, 8, 3, 1, groups=8)}
    assert with_shapes(depthwise, {"dw.weight": (3, 1, 3, 3)}) == {"dw": _conv(3, 3, 3, 1, groups=3)}
    assert with_shapes(depthwise, {}) is None


L1_RESNET = [
    "dataset=synthetic",
    "dataset.input_shape=[3,8,8]",
    "dataset.num_train=300",
    "dataset.val_size=100",
    "dataset.num_test=100",
    "model=resnet",
    "model.widths=[8,8,16]",
    "train.epochs=1",
    "method=l1_filter",
    "method.tied_groups=first_layer",
    "method.sparsity=0.5",
    "method.recovery.epochs=1",
]


def _train_layout(store: Store, record: dict, stage: str) -> bool:
    return store.at(f"train/{record['stage_hashes'][stage]}").config()["spec"]["train"].get("channels_last")


@pytest.mark.slow
def test_the_train_stage_resolves_the_layout_on_the_network_it_trains(tmp_path):
    """Dense resnet [8, 8, 16]: every conv safe, channels-last. L1-pruned to half its channels, its shortcut is a 4->4
    1x1 stride-2 conv: the recovery trains contiguous (the hash says so), and the run does not crash."""
    run = make_run(tmp_path, *L1_RESNET)
    store = Store(run.paths.results)
    record = run_experiment(run, store)
    assert _train_layout(store, record, "dense") is True
    assert _train_layout(store, record, "recover") is False
    explicit = make_run(tmp_path, *L1_RESNET, "train.channels_last=true")
    with pytest.raises(UserError, match=r"^train.channels_last: true, but conv layer2.0.shortcut.conv \(4->4, 1x1"):
        run_experiment(explicit, store)


# ------------------------------------------------------------------------------------------------ the two reports
def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}


@pytest.mark.slow
def test_the_l1_filter_resnet_test_that_crashed_passes_in_a_child_process():
    node = "tests/test_structured.py::test_l1_filter_on_a_resnet_leaves_tied_channels_whole"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", node],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


@pytest.mark.slow
def test_scratch_of_an_l1_pruned_resnet_with_a_4_channel_shortcut_runs_through_the_cli(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "runners.train",
            "model=resnet",
            "model.widths=[8,8,16]",
            "method=scratch",
            "method.source=l1_filter",
            "+method.source_overrides={tied_groups: first_layer, recovery: {epochs: 1}}",
            "method.sparsity=0.5",
            "dataset=synthetic",
            "dataset.input_shape=[3,8,8]",
            "dataset.num_train=400",
            "dataset.val_size=100",
            "dataset.num_test=100",
            "train.epochs=1",
            "logger=none",
            "progress=false",
            f"paths.results={tmp_path}/results",
            f"hydra.run.dir={tmp_path}/out",
        ],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
