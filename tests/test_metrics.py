"""Parameter, multiply-add (nonzero-only counting for Scratch-B, as Liu et al. 2019's count_flops.py) and latency
metrics."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from models import build_model
from models.config import ModelConfig
from runners.metrics import count_flops, count_params, latency_setting, measure_latency_ms, processor

MNIST, CIFAR = (1, 28, 28), (3, 32, 32)


def build(name, depth=None, shape=MNIST, classes=10, **kw):
    return build_model(ModelConfig(name=name, depth=depth, **kw), shape, classes, torch.Generator().manual_seed(0))


def analytic_macs(model: nn.Module, shape) -> dict[str, int]:
    """MACs per Conv2d/Linear from forward hooks: output positions × weight entries per output (groups = 1)."""
    names = {m: n for n, m in model.named_modules()}
    out: dict[str, int] = {}

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            out[names[module]] = output[0].numel() * module.weight[0].numel()
        else:
            out[names[module]] = module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *shape))
    for handle in handles:
        handle.remove()
    return out


def test_lenet300_dense_macs_by_hand():
    flops = count_flops(build("lenet300"), MNIST)
    assert flops["flops_dense"] == flops["flops_effective"] == 784 * 300 + 300 * 100 + 100 * 10 == 266_200
    assert {n: v["macs"] for n, v in flops["per_layer"].items()} == {"fc1": 235_200, "fc2": 30_000, "fc3": 1_000}
    assert all(v["density"] == 1.0 for v in flops["per_layer"].values())


def test_lenet5_caffe_dense_macs_by_hand():
    flops = count_flops(build("lenet5"), MNIST)
    conv1 = 20 * 24 * 24 * 25  # 20 maps of 24×24, 5×5×1 each
    conv2 = 50 * 8 * 8 * 20 * 25  # 50 maps of 8×8 from 20 channels of 12×12
    assert {n: v["macs"] for n, v in flops["per_layer"].items()} == {
        "conv1": conv1,
        "conv2": conv2,
        "fc1": 800 * 500,
        "fc2": 500 * 10,
    }
    assert flops["flops_dense"] == 288_000 + 1_600_000 + 400_000 + 5_000 == 2_293_000


def test_mlp_bn_macs_by_hand_in_train_mode():
    model = build("mlp_bn").train()  # BatchNorm1d cannot run one example in train mode: counting must use eval
    running = model.bn1.running_mean.clone()
    flops = count_flops(model, MNIST)
    assert flops["flops_dense"] == 784 * 500 + 500 * 300 + 300 * 10 == 545_000
    assert model.training and model.bn1.training and torch.equal(model.bn1.running_mean, running)


@pytest.mark.parametrize(
    "name,depth,shape", [("conv_bn", None, MNIST), ("resnet", 20, CIFAR), ("vgg", 11, CIFAR), ("lenet5", None, CIFAR)]
)
def test_flop_counter_matches_analytic_count(name, depth, shape):
    model = build(name, depth, shape)
    flops = count_flops(model, shape)
    expected = analytic_macs(model, shape)
    assert {n: v["macs"] for n, v in flops["per_layer"].items()} == expected
    assert flops["flops_dense"] == sum(expected.values())


def test_vgg19_matches_slimming_flops():
    # Slimming Table 1 lists 7.97e8 FLOPs for the CIFAR-10 VGGNet; FLOPs there are 2 × multiply-adds.
    macs = count_flops(build("vgg", 19, CIFAR), CIFAR)["flops_dense"]
    assert 2 * macs == pytest.approx(7.97e8, rel=0.005)


def half_fc1_mask() -> torch.Tensor:
    mask = torch.zeros(300, 784, dtype=torch.bool)
    mask[:, ::2] = True
    return mask


def test_masks_scale_each_layer_by_its_density():
    model = build("lenet300")
    flops = count_flops(model, MNIST, masks={"fc1.weight": half_fc1_mask()})
    assert flops["per_layer"]["fc1"] == {"macs": 235_200, "density": 0.5}
    assert flops["flops_dense"] == 266_200
    assert flops["flops_effective"] == 235_200 // 2 + 30_000 + 1_000
    # the same from zeroed values (a folded model) and from an attached torch.nn.utils.prune mask
    with torch.no_grad():
        model.fc1.weight[~half_fc1_mask()] = 0
    assert count_flops(model, MNIST)["flops_effective"] == 148_600
    masked = build("lenet300")
    prune.custom_from_mask(masked.fc1, "weight", half_fc1_mask())
    assert count_flops(masked, MNIST)["flops_effective"] == 148_600


def test_conv_density_and_compacted_models():
    model = build("lenet5")
    mask = torch.zeros_like(model.conv2.weight, dtype=torch.bool)
    mask[:10] = True  # 10 of 50 filters: density 0.2
    flops = count_flops(model, MNIST, masks={"conv2.weight": mask})
    assert flops["flops_effective"] == 2_293_000 - 1_600_000 + 320_000
    narrow = build("lenet300", widths=[150, 100])  # a physically compacted fc1 simply has fewer MACs
    flops = count_flops(narrow, MNIST)
    assert flops["flops_dense"] == flops["flops_effective"] == 784 * 150 + 150 * 100 + 1_000


def test_count_params_values_and_masks():
    model = build("lenet300")
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                module.bias.fill_(0.1)  # biases start at 0; make every parameter nonzero first
    assert count_params(model) == {"params_total": 266_610, "params_nonzero": 266_610}
    assert count_params(model, {"fc1.weight": half_fc1_mask()})["params_nonzero"] == 266_610 - 117_600
    with torch.no_grad():
        model.fc3.weight[:5] = 0
    assert count_params(model)["params_nonzero"] == 266_610 - 500
    prune.custom_from_mask(model.fc1, "weight", half_fc1_mask())  # parameters become fc1.weight_orig + a mask buffer
    assert count_params(model) == {"params_total": 266_610, "params_nonzero": 266_610 - 500 - 117_600}
    with pytest.raises(ValueError, match="fc2.weight"):
        count_params(model, {"fc2.weight": torch.ones(3, 3, dtype=torch.bool)})


def test_latency_reports_positive_times_per_model_and_leaves_the_models_alone():
    model, other = build("conv_bn").train(), build("lenet5").eval()
    result = measure_latency_ms({"dense": model, "pruned": other}, MNIST, batch_sizes=(1, 16), min_run_time=0.05)
    assert set(result) == {"dense", "pruned"} and all(set(r) == {"1", "16"} for r in result.values())
    assert all(isinstance(v, float) and v > 0 for r in result.values() for v in r.values())
    assert model.training and all(m.training for m in model.modules()) and not other.training
    assert torch.all(model.bn1.running_mean == 0)


def forwards_seen(model: torch.nn.Module, tag: str, log: list) -> None:
    """Note (tag, input device, torch threads) at each forward of ``model``."""
    model.register_forward_pre_hook(lambda module, args: log.append((tag, args[0].device, torch.get_num_threads())))


def test_latency_times_the_models_in_turns():
    """A speed-up is a ratio of two latencies: the models' blocks alternate, so a burst of another process's work
    lands on both rather than on whichever model was being timed."""
    log: list = []
    a, b = build("lenet300"), build("lenet300")
    forwards_seen(a, "a", log)
    forwards_seen(b, "b", log)
    measure_latency_ms({"a": a, "b": b}, MNIST, batch_sizes=(1,), min_run_time=0.03)
    runs = [tag for i, (tag, *_) in enumerate(log) if i == 0 or log[i - 1][0] != tag]  # a a a b b a a ... -> a b a
    assert runs == ["a", "b"] * (len(runs) // 2)
    assert len(runs) >= 2 * (1 + 3)  # warm-up and sizing calls, then at least 3 blocks each, in turns


def test_latency_is_timed_on_the_jobs_own_threads_and_device():
    """A job running on 2 threads is timed on 2 (torch.utils.benchmark.Timer would default to ONE), as recorded."""
    log: list = []
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        model = build("lenet300")
        forwards_seen(model, "m", log)
        measure_latency_ms({"dense": model}, MNIST, batch_sizes=(1,), min_run_time=0.01)
        assert latency_setting(model) == {"device": "cpu", "processor": processor(torch.device("cpu")), "threads": 2}
    finally:
        torch.set_num_threads(before)
    assert log and {(device, threads) for _, device, threads in log} == {(torch.device("cpu"), 2)}


def test_latency_times_the_forward_not_the_timer():
    """A forward of 256 examples through LeNet-300-100 costs far more than one of a single example; a timer that
    measured its own overhead (or a stale block) would report about the same for both."""
    model = build("lenet300")
    result = measure_latency_ms({"dense": model}, MNIST, batch_sizes=(1, 256), min_run_time=0.05)["dense"]
    assert result["256"] > 5 * result["1"]


def test_latency_refuses_models_on_two_devices():
    model = build("lenet300")
    model.fc1.to("meta")
    with pytest.raises(ValueError, match="one device"):
        measure_latency_ms({"dense": build("lenet300"), "pruned": model}, MNIST)
