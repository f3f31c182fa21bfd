import pytest
import torch

from models import build_model
from models.config import ModelConfig
from runners.errors import UserError
from runners.metrics import count_flops, count_params

MNIST, CIFAR = (1, 28, 28), (3, 32, 32)


def first_layer(model):
    return next(m for m in model.modules() if isinstance(m, torch.nn.Linear))


@pytest.mark.parametrize("name,shape,params", [
    ("lenet300", MNIST, 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10),
    ("lenet5", MNIST, 520 + 25_050 + 400_500 + 5_010),
    ("mlp_bn", MNIST, 784 * 500 + 2 * 500 + 500 * 300 + 2 * 300 + 300 * 10 + 10),  # no bias before BN
])
def test_parameter_counts(name, shape, params):
    model = build_model(ModelConfig(name=name), shape, 10)
    assert count_params(model)["params_total"] == params
    assert model(torch.zeros(2, *shape)).shape == (2, 10)


def test_slimming_vgg19_size_and_resnet20():
    vgg = build_model(ModelConfig(name="vgg", depth=19), CIFAR, 10)
    assert abs(count_params(vgg)["params_total"] - 20.04e6) < 0.01e6  # slimming paper: 20.04M
    resnet = build_model(ModelConfig(name="resnet", depth=20), CIFAR, 10)
    assert resnet(torch.zeros(2, *CIFAR)).shape == (2, 10)


def test_mlp_composes_with_cifar_and_conv_refuses_tiny_inputs():
    assert build_model(ModelConfig(name="lenet300"), CIFAR, 10)(torch.zeros(1, *CIFAR)).shape == (1, 10)
    with pytest.raises(UserError, match="lenet5 needs"):
        build_model(ModelConfig(name="lenet5"), (1, 8, 8), 10)


def test_flops_by_hand():
    lenet300 = build_model(ModelConfig(name="lenet300"), MNIST, 10)
    assert count_flops(lenet300, MNIST)["flops_dense"] == 266_200
    lenet5 = build_model(ModelConfig(name="lenet5"), MNIST, 10)
    assert count_flops(lenet5, MNIST)["flops_dense"] == 20 * 24 * 24 * 25 + 50 * 8 * 8 * 20 * 25 + 800 * 500 + 500 * 10
    with torch.no_grad():
        first_layer(lenet300).weight[:, ::2] = 0  # half of fc1 removed
    assert count_flops(lenet300, MNIST)["flops_effective"] == 266_200 - 784 * 300 // 2


def test_init_is_seeded_and_variance_scaling_has_its_std():
    a = build_model(ModelConfig(name="lenet300", init="variance_scaling"), MNIST, 10, torch.Generator().manual_seed(1))
    b = build_model(ModelConfig(name="lenet300", init="variance_scaling"), MNIST, 10, torch.Generator().manual_seed(1))
    c = build_model(ModelConfig(name="lenet300", init="variance_scaling"), MNIST, 10, torch.Generator().manual_seed(2))
    wa, wb, wc = first_layer(a).weight, first_layer(b).weight, first_layer(c).weight
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert abs(wa.std().item() - (1 / 784) ** 0.5) < 0.05 * (1 / 784) ** 0.5  # truncated normal keeps std sqrt(1/fan_in)
    assert wa.abs().max() <= 2 * (1 / 784) ** 0.5 / 0.87962566103423978 + 1e-6


def test_bad_model_inputs():
    with pytest.raises(UserError, match="model.depth"):
        build_model(ModelConfig(name="vgg", depth=13), CIFAR, 10)
    with pytest.raises(UserError, match="model.init"):
        ModelConfig(init="zeros")
