"""Every method of the project on torchvision ResNet-18 and MobileNetV2 (small-input stem, 8x8 synthetic images,
1 epoch of 2 iterations): each finishes with a record, and the structured ones compact physically, the compacted
network computing what the channel-masked one computes."""

import pytest
import torch

from foundations.store import Store
from methods import registry
from methods.pipeline.channels import compact, mask_channels
from methods.pipeline.masks import folded
from runners.experiment import Experiment, run_experiment
from tests.conftest import make_run

ARCHS = {"resnet18": [], "mobilenet_v2": ["+model.kwargs.width_mult=0.25"]}
DATA = [
    "dataset=synthetic",
    "dataset.input_shape=[3,8,8]",
    "dataset.num_train=80",
    "dataset.num_test=16",
    "dataset.val_size=16",
    "train.epochs=1",
    "train.batch_size=32",
    "device=cpu",
]
ONE = ["method.recovery.epochs=1"]
SETTINGS = {
    "dense": [],
    "magnitude": ONE,
    "random": ONE,
    "obd": [*ONE, "method.samples=16"],
    "snip": ["method.batch_size=16"],
    "grasp": ["method.samples_per_class=4"],
    "synflow": ["method.iterations=3"],
    "lottery": ["method.sparsity=0.36"],
    "gmp": ["method.frequency=1"],  # 2 steps: updates after steps 0 and 1
    "l1_filter": ONE,
    "random_channel": ONE,
    "slimming": ONE,
    "thinet": [*ONE, "method.n_images=16", "method.locations_per_image=2", "method.layer_fine_tune_iterations=1"],
    "scratch": ["method.source=l1_filter", "+method.source_overrides.recovery.epochs=1"],
}
STRUCTURED = ("l1_filter", "random_channel", "slimming", "thinet")


def test_the_list_covers_every_method():
    assert sorted(SETTINGS) == sorted(registry())


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return {arch: tmp_path_factory.mktemp(arch) for arch in ARCHS}  # one store per model: the dense stage is shared


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("method", list(SETTINGS))
def test_method_runs_on_torchvision(stores, arch, method):
    run = make_run(
        stores[arch],
        *DATA,
        "model=torchvision",
        f"model.arch={arch}",
        "model.small_input=true",
        *ARCHS[arch],
        f"method={method}",
        *SETTINGS[method],
    )
    store = Store(run.paths.results)
    record = run_experiment(run, store)
    assert record["status"] == "ok" and record["model"] == f"{arch}-small"
    assert 0 <= record["test_acc"] <= 1
    if method == "dense":
        assert record["density"] == 1.0
    elif method in STRUCTURED or method == "scratch":
        assert record["channel_sparsity"] == pytest.approx(0.5, abs=0.1)
        assert record["params_nonzero"] < 0.85 * record["params_total"]
    else:
        assert record["density"] == pytest.approx(1 - run.method.sparsity, abs=1e-3)
    if method in STRUCTURED:
        check_compaction(run, store, record)


def check_compaction(run, store, record):
    """The prune stage's plan applied to the model it pruned: the compacted copy and the channel-masked copy give
    the same outputs (eval mode); for the methods that only cut (no ThiNet rescaling) the stored pruned network
    is that compacted copy."""
    exp = Experiment(run, store)
    hashes = record["stage_hashes"]
    if record["method"] == "thinet":  # a plan stage per layer: the last one's plan covers them all, over the dense
        last = max((k for k in hashes if k.startswith("prune")), key=lambda k: int(k[len("prune") :]))
        pruned, source_ref = exp.stage_at(f"prune/{hashes[last]}"), f"train/{hashes['dense']}"
    else:
        pruned = exp.stage_at(f"prune/{hashes['prune']}")
        source_ref = f"train/{pruned.stored.result_json['parents']['source']}"
    source = folded(exp.model_from(exp.stage_at(source_ref))).eval()
    plan = pruned.plan()
    x = torch.randn(6, *exp.data.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        masked = mask_channels(source, plan).eval()(x)
        small = compact(source, plan, x).eval()
        assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in source.parameters())
        assert torch.allclose(small(x), masked, atol=1e-5, rtol=1e-4), (small(x) - masked).abs().max()
        if record["method"] != "thinet":
            stored = exp.model_from(pruned).eval()(x)
            assert torch.allclose(stored, masked, atol=1e-5, rtol=1e-4)
