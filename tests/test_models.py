"""Architectures (LeNets, slimming's MLP and VGG, CIFAR ResNet), the ModelConfig schema, seeded initialization,
torch-pruning compatibility."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch_pruning as tp
from omegaconf import OmegaConf
from torch import nn
from torch.nn.utils import prune

from foundations.errors import UserError
from models import build_model, min_input_size
from models.config import ModelConfig, model_config
from models.init import TF_TRUNCATED_NORMAL_STD, initialize

MNIST, CIFAR = (1, 28, 28), (3, 32, 32)
CONF = Path(__file__).resolve().parents[1] / "conf" / "model"

CASES = [  # (name, depth, input shape)
    ("lenet300", None, MNIST),
    ("lenet5", None, MNIST),
    ("mlp_bn", None, MNIST),
    ("conv_bn", None, MNIST),
    ("vgg", 11, CIFAR),
    ("vgg", 16, CIFAR),
    ("vgg", 19, CIFAR),
    ("resnet", 20, CIFAR),
    ("resnet", 32, CIFAR),
    ("resnet", 56, CIFAR),
]


def build(name, depth=None, shape=MNIST, classes=10, seed=0, **kw):
    return build_model(ModelConfig(name=name, depth=depth, **kw), shape, classes, torch.Generator().manual_seed(seed))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,depth,shape", CASES)
def test_forward_shape(name, depth, shape):
    model = build(name, depth, shape, classes=7)
    assert model(torch.randn(3, *shape)).shape == (3, 7)


def test_reference_parameter_counts():
    assert n_params(build("lenet300")) == 266_610  # 266,200 weights + 410 biases
    assert n_params(build("lenet5")) == 520 + 25_050 + 400_500 + 5_010 == 431_080
    # Linear without bias (BN follows) + BN γ, β per hidden unit; classifier with bias.
    assert n_params(build("mlp_bn")) == 784 * 500 + 2 * 500 + 500 * 300 + 2 * 300 + 300 * 10 + 10 == 546_610
    assert abs(n_params(build("vgg", 19, CIFAR)) - 20.04e6) <= 0.01e6  # slimming's VGGNet, 20.04M
    stem = 3 * 16 * 9 + 32
    block = lambda cin, cout: cin * cout * 9 + cout * cout * 9 + 4 * cout  # noqa: E731
    projection = lambda cin, cout: cin * cout + 2 * cout  # noqa: E731  (option B: 1x1 conv + BN)
    resnet20 = (
        stem
        + 3 * block(16, 16)
        + block(16, 32)
        + projection(16, 32)
        + 2 * block(32, 32)
        + block(32, 64)
        + projection(32, 64)
        + 2 * block(64, 64)
        + 64 * 10
        + 10
    )
    assert n_params(build("resnet", 20, CIFAR)) == resnet20 == 272_474


def test_layer_names_and_structure():
    assert [n for n, _ in build("lenet300").named_parameters()] == [
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
        "fc2.bias",
        "fc3.weight",
        "fc3.bias",
    ]
    assert [n for n, _ in build("lenet5").named_parameters()] == [
        "conv1.weight",
        "conv1.bias",
        "conv2.weight",
        "conv2.bias",
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
        "fc2.bias",
    ]
    assert [n for n, _ in build("mlp_bn").named_parameters()] == [
        "fc1.weight",
        "bn1.weight",
        "bn1.bias",
        "fc2.weight",
        "bn2.weight",
        "bn2.bias",
        "fc3.weight",
        "fc3.bias",
    ]
    vgg = build("vgg", 19, CIFAR)
    convs = [m for m in vgg.modules() if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in convs] == [64, 64, 128, 128] + [256] * 4 + [512] * 8
    assert all(m.bias is None and m.kernel_size == (3, 3) for m in convs)
    assert vgg.fc.in_features == 512
    resnet = build("resnet", 20, CIFAR)
    assert resnet.layer2[0].shortcut.conv.kernel_size == (1, 1) and resnet.layer1[0].shortcut is None


def test_lenet5_has_no_relu_after_convolutions():
    model = build("lenet5").eval()
    x = torch.randn(2, *MNIST)
    seen = {}
    model.conv2.register_forward_hook(lambda m, i, o: seen.update(conv2_in=i[0]))
    model(x)
    expected = nn.functional.max_pool2d(model.conv1(x), 2)  # negatives survive: no ReLU in between
    assert torch.equal(seen["conv2_in"], expected) and (expected < 0).any()


@pytest.mark.parametrize("name,depth,shape", [c for c in CASES if c[1] not in (16, 32, 56)])
def test_modules_declared_in_forward_order(name, depth, shape):
    model = build(name, depth, shape).eval()
    order = []
    kinds = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)
    names = {m: n for n, m in model.named_modules()}
    for module in model.modules():
        if isinstance(module, kinds):
            module.register_forward_hook(lambda m, i, o: order.append(names[m]))
    model(torch.randn(2, *shape))
    declared = [n for n, m in model.named_modules() if isinstance(m, kinds)]
    if name == "resnet":  # the projection shortcut runs on the block input, declared after the main branch
        assert sorted(order) == sorted(declared)
    else:
        assert order == declared
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert order[-1] == linears[-1]  # the classifier is the last Linear


def test_mlp_flattens_any_input_and_conv_models_adapt_channels():
    model = build("lenet300", shape=CIFAR)
    assert model.fc1.in_features == 3 * 32 * 32
    assert model(torch.randn(2, *CIFAR)).shape == (2, 10)
    lenet5 = build("lenet5", shape=CIFAR)
    assert lenet5.conv1.in_channels == 3 and lenet5.fc1.in_features == 50 * 5 * 5
    assert build("conv_bn", shape=CIFAR)(torch.randn(2, *CIFAR)).shape == (2, 10)
    assert build("resnet", 20, shape=MNIST)(torch.randn(2, *MNIST)).shape == (2, 10)
    assert build("lenet300", shape=(1, 8, 8), classes=4).fc1.in_features == 64


def test_impossible_inputs_are_refused_in_one_line():
    with pytest.raises(UserError, match=r"^model vgg16 needs inputs of at least 32x32; the dataset gives 1x28x28"):
        build("vgg", 16, MNIST)
    with pytest.raises(UserError, match=r"^model lenet5 needs inputs of at least 16x16") as err:
        build("lenet5", shape=(1, 8, 8))
    assert "\n" not in str(err.value)
    assert min_input_size(ModelConfig(name="conv_bn", widths=[8, 8])) == 4
    build("conv_bn", shape=(1, 4, 4), widths=[8, 8])  # exactly the minimum works


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"name": "vgg", "depth": 13}, "model.depth: vgg supports 11, 16, 19 (got 13)"),
        ({"name": "resnet", "depth": 21}, "model.depth: resnet supports 20, 32, 44, 56, 110 (got 21)"),
        ({"name": "lenet300", "depth": 3}, "model.depth: lenet300 has no depth option"),
        (
            {"name": "alexnet"},
            "model.name: unknown model 'alexnet'; choose one of lenet300, mlp_bn, lenet5, conv_bn, vgg",
        ),
        ({"name": "lenet300", "init": "he"}, "model.init: must be one of kaiming_normal"),
        ({"name": "lenet5", "widths": [20, 50]}, "model.widths: lenet5 takes 3 widths"),
        ({"name": "vgg", "depth": 11, "widths": [64] * 9}, "model.widths: vgg takes 8 widths"),
        ({"name": "conv_bn", "widths": [16, 0]}, "model.widths: must be a non-empty list of positive integers"),
        ({"name": "lenet5", "batchnorm": True}, "model.batchnorm: lenet5 is only defined with batchnorm=False"),
    ],
)
def test_config_errors_name_the_field(kwargs, message):
    with pytest.raises(UserError) as err:
        ModelConfig(**kwargs)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_options_change_the_architecture():
    assert n_params(build("lenet300", widths=[100])) == 784 * 100 + 100 + 100 * 10 + 10
    assert n_params(build("lenet300", batchnorm=True)) == 784 * 300 + 600 + 300 * 100 + 200 + 1010
    plain_vgg = build("vgg", 11, CIFAR, batchnorm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain_vgg.modules()) and plain_vgg.conv1.bias is not None
    assert build("vgg", 11, CIFAR, widths=[8] * 8).fc.in_features == 8
    assert build("resnet", 20, CIFAR, widths=[8, 16, 32]).fc.in_features == 32
    assert ModelConfig(name="vgg", depth=19).tag == "vgg19" and ModelConfig(name="resnet").tag == "resnet20"
    assert ModelConfig(name="vgg").tag == "vgg19" and ModelConfig(name="mlp_bn").tag == "mlp_bn"


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_model_yaml_files_are_valid_configs(path):
    node = OmegaConf.load(path)
    node.pop("defaults", None)
    node.update(
        {
            "torchvision": {"arch": "mobilenet_v2"},
            "target": {"_target_": "torchvision.models.mobilenet_v2", "num_classes": 10},
        }.get(path.stem, {})
    )
    cfg = model_config(node)
    assert cfg.name == path.stem
    shape = CIFAR if cfg.name in ("vgg", "resnet", "target") else MNIST
    assert build_model(cfg, shape, 10, torch.Generator().manual_seed(0))(torch.randn(2, *shape)).shape == (2, 10)


# ------------------------------------------------------------------------------------------------- initialization
SCHEMES = ["kaiming_normal", "glorot_normal", "variance_scaling", "lecun_normal", "pytorch"]


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_init_is_deterministic_in_the_generator(scheme):
    for name, depth, shape in [("lenet5", None, MNIST), ("resnet", 20, CIFAR), ("mlp_bn", None, MNIST)]:
        a = build(name, depth, shape, seed=1, init=scheme)
        b = build(name, depth, shape, seed=1, init=scheme)
        c = build(name, depth, shape, seed=2, init=scheme)
        assert same_weights(a, b)
        assert not torch.equal(
            a.state_dict()["conv1.weight" if name != "mlp_bn" else "fc1.weight"],
            c.state_dict()["conv1.weight" if name != "mlp_bn" else "fc1.weight"],
        )
    # the global RNG does not leak into a seeded build
    torch.manual_seed(123)
    d = build("lenet5", seed=1, init=scheme)
    torch.manual_seed(456)
    assert same_weights(d, build("lenet5", seed=1, init=scheme))


def test_init_statistics_on_a_big_layer():
    layer = nn.Sequential(nn.Linear(2000, 1000))
    fan_in, fan_out = 2000, 1000
    expected = {
        "kaiming_normal": math.sqrt(2 / fan_in),
        "glorot_normal": math.sqrt(2 / (fan_in + fan_out)),
        "variance_scaling": math.sqrt(1 / fan_in),
        "lecun_normal": math.sqrt(1 / fan_in),
        "pytorch": 1 / math.sqrt(fan_in) / math.sqrt(3),
    }
    for scheme, std in expected.items():
        initialize(layer, scheme, torch.Generator().manual_seed(0))
        w = layer[0].weight.detach()
        assert abs(w.mean().item()) < 0.01 * std * 10
        assert w.std().item() == pytest.approx(std, rel=0.01), scheme
        if scheme == "variance_scaling":  # truncated at 2 stddev of the underlying normal
            assert w.abs().max().item() <= 2 * math.sqrt(1 / fan_in) / TF_TRUNCATED_NORMAL_STD + 1e-7
        if scheme == "lecun_normal":  # untruncated: values beyond the truncation point occur
            assert w.abs().max().item() > 2 * math.sqrt(1 / fan_in) / TF_TRUNCATED_NORMAL_STD
        if scheme == "pytorch":
            assert w.abs().max().item() <= 1 / math.sqrt(fan_in)
            assert layer[0].bias.abs().max().item() <= 1 / math.sqrt(fan_in) and layer[0].bias.abs().sum() > 0
        else:
            assert torch.count_nonzero(layer[0].bias) == 0
    conv = nn.Sequential(nn.Conv2d(64, 128, 3))  # fan_in = 64·3·3
    initialize(conv, "kaiming_normal", torch.Generator().manual_seed(0))
    assert conv[0].weight.std().item() == pytest.approx(math.sqrt(2 / 576), rel=0.02)


def test_batchnorm_init_and_recorded_bn_weight():
    model = build("conv_bn", bn_weight_init=0.5)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.all(module.weight == 0.5) and torch.all(module.bias == 0)
            assert torch.all(module.running_mean == 0) and torch.all(module.running_var == 1)
    with torch.no_grad():
        model.bn1.weight.fill_(3.0)
        model.bn1.running_mean.fill_(1.0)
    initialize(model, "kaiming_normal", torch.Generator().manual_seed(0))  # no bn argument: reuses the recorded 0.5
    assert torch.all(model.bn1.weight == 0.5) and torch.all(model.bn1.running_mean == 0)
    assert torch.all(build("mlp_bn", init="pytorch").bn1.weight == 1.0)


def test_init_of_a_masked_model_keeps_pruned_weights_zero():
    model = build("lenet300")
    mask = torch.rand(300, 784, generator=torch.Generator().manual_seed(0)) > 0.5
    prune.custom_from_mask(model.fc1, "weight", mask)
    before = model.fc1.weight_orig.detach().clone()
    initialize(model, "glorot_normal", torch.Generator().manual_seed(5))
    assert not torch.equal(before, model.fc1.weight_orig)
    assert torch.all(model.fc1.weight_orig[~mask] == 0) and torch.all(model.fc1.weight_orig[mask] != 0)


# ------------------------------------------------------------------------------------------------- torch-pruning
@pytest.mark.parametrize("name,depth,shape", [c for c in CASES if c[1] not in (16, 32, 56)])
def test_torch_pruning_dependency_graph_and_channel_surgery(name, depth, shape):
    model = build(name, depth, shape).eval()
    x = torch.randn(2, *shape)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    assert len(list(graph.get_all_groups(root_module_types=[nn.Conv2d, nn.Linear]))) >= 2
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    pruner = tp.pruner.MagnitudePruner(
        model, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=0.5, ignored_layers=[head]
    )
    total = n_params(model)
    pruner.step()
    assert n_params(model) < 0.6 * total
    assert model(x).shape == (2, 10)
