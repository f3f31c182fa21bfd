"""Your own model: ``model=torchvision``, ``model=target`` (any callable), ``model.checkpoint``."""

import hashlib
import pickle

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from foundations.errors import UserError
from models import build_model, identity, load_checkpoint, model_config

CIFAR = (3, 32, 32)


def tv(arch, shape=CIFAR, classes=10, seed=0, **kw):
    return build_model(
        model_config({"name": "torchvision", "arch": arch, **kw}), shape, classes, torch.Generator().manual_seed(seed)
    )


def spatial(model: nn.Module, layer: str, shape) -> tuple[int, int]:
    seen = {}
    model.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.update(hw=tuple(o.shape[-2:])))
    model.eval()(torch.zeros(1, *shape))
    return seen["hw"]


def same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------------ torchvision
def test_torchvision_native_init_is_the_constructor_seeded_from_the_generator():
    state = torch.get_rng_state()
    model = tv("resnet18", seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is forked, not consumed
    seed = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(3)))
    torch.manual_seed(seed)
    reference = torchvision.models.resnet18(num_classes=10)
    assert same(model, reference)
    assert same(tv("resnet18", seed=3), model) and not same(tv("resnet18", seed=4), model)
    assert model.fc.out_features == 10


def test_small_input_is_the_cifar_stem_and_only_on_request():
    plain, small = tv("resnet18"), tv("resnet18", small_input=True)
    assert plain.conv1.kernel_size == (7, 7) and isinstance(plain.maxpool, nn.MaxPool2d)
    assert (small.conv1.kernel_size, small.conv1.stride, small.conv1.padding) == ((3, 3), (1, 1), (1, 1))
    assert isinstance(small.maxpool, nn.Identity)
    # 32 px: the ImageNet stem divides by 4 before layer1 (→ 8) and layer4 sees 1x1; the CIFAR stem keeps 32 → 4x4
    assert spatial(plain, "layer1", CIFAR) == (8, 8) and spatial(plain, "layer4", CIFAR) == (1, 1)
    assert spatial(small, "layer1", CIFAR) == (32, 32) and spatial(small, "layer4", CIFAR) == (4, 4)
    mobile = tv("mobilenet_v2", small_input=True, kwargs={"width_mult": 0.25})
    assert mobile.features[0][0].stride == (1, 1) and tv("mobilenet_v2").features[0][0].stride == (2, 2)
    assert spatial(mobile, "features", CIFAR) == (2, 2)  # 32 / 16 (the four remaining stride-2 stages)
    with pytest.raises(UserError, match=r"^model\.small_input: no small-input adaptation is defined for vgg11_bn"):
        tv("vgg11_bn", small_input=True)


def test_torchvision_takes_the_datasets_channels_and_kwargs():
    grey = tv("resnet18", shape=(1, 28, 28), small_input=True)
    assert grey.conv1.in_channels == 1 and grey(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(tv("mobilenet_v2", kwargs={"width_mult": 0.5})) < n(tv("mobilenet_v2")) / 2
    with pytest.raises(
        UserError,
        match=r"^model\.arch: 'resnet81' is not a torchvision classification model; did "
        r"you mean resnet18",
    ):
        tv("resnet81")
    with pytest.raises(UserError, match=r"^model\.kwargs\.num_classes: set by prunelab"):
        tv("resnet18", kwargs={"num_classes": 3})
    with pytest.raises(UserError, match=r"^model\.kwargs: torchvision mobilenet_v2 refused"):
        tv("mobilenet_v2", kwargs={"depth": 3})
    with pytest.raises(UserError, match=r"^model vgg11: a forward pass on a batch of 3x4x4 inputs failed"):
        tv("vgg11", shape=(3, 4, 4))
    with pytest.raises(UserError, match=r"^model\.arch: .*missing mandatory value"):
        model_config({"name": "torchvision"})


def test_prunelab_init_and_bn_scale_on_a_torchvision_model():
    model = tv("resnet18", init="kaiming_normal", bn_weight_init=0.5)
    assert model.bn1.weight.detach().unique().tolist() == [0.5] and model.bn_weight_init == 0.5
    fan_in = 64 * 3 * 3
    assert abs(model.layer1[0].conv1.weight.std().item() - (2 / fan_in) ** 0.5) < 0.005  # He normal, fan_in


# ------------------------------------------------------------------------------------------------ target
class TinyNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, hidden: int = 4, input_shape=None):
        super().__init__()
        self.seen_shape = input_shape
        self.conv = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.bn = nn.BatchNorm2d(hidden)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def only_kwargs(**kwargs):
    return TinyNet(3, 1000)


def not_a_module(num_classes):
    return "a string"


def target(path, shape=CIFAR, classes=5, seed=0, **kw):
    return build_model(
        model_config({"name": "target", "_target_": path, **kw}), shape, classes, torch.Generator().manual_seed(seed)
    )


def test_target_gets_the_config_fields_and_the_offered_arguments():
    model = target("tests.test_own_model.TinyNet", shape=(2, 9, 9), hidden=6)
    assert (model.conv.in_channels, model.conv.out_channels, model.fc.out_features) == (2, 6, 5)
    assert model.seen_shape == (2, 9, 9)
    assert same(model, target("tests.test_own_model.TinyNet", shape=(2, 9, 9), hidden=6))
    assert not same(model, target("tests.test_own_model.TinyNet", shape=(2, 9, 9), hidden=6, seed=1))
    resnet = target("torchvision.models.resnet18", num_classes=5)  # the example: **kwargs take it
    assert resnet.fc.out_features == 5


@pytest.mark.parametrize(
    "path,kw,message",
    [
        (
            "tests.test_own_model.only_kwargs",
            {},
            r"^model tests\.test_own_model\.only_kwargs: must return logits of shape "
            r"\(batch, 5\) .* \(got \(2, 1000\)\); set its class count",
        ),
        (
            "tests.test_own_model.not_a_module",
            {},
            r"^model tests\.test_own_model\.not_a_module: the callable returned str",
        ),
        ("tests.test_own_model.NoSuch", {}, r"^model\._target_: cannot import tests\.test_own_model\.NoSuch"),
        (
            "tests.test_own_model.TinyNet",
            {"depth": 3},
            r"^model\._target_: calling tests\.test_own_model\.TinyNet failed",
        ),
        ("tests.test_own_model.TinyNet", {"init": "he"}, r"^model\.init: must be native"),
    ],
)
def test_target_errors_are_one_line(path, kw, message):
    with pytest.raises(UserError, match=message) as err:
        target(path, **kw)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------ checkpoints
def trained_state(model: nn.Module) -> dict:
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(torch.full_like(p, 0.01 * i))
        model.bn.running_mean.fill_(0.3)
    return model.state_dict()


@pytest.mark.parametrize(
    "suffix,wrap", [(".pt", None), (".pth", "state_dict"), (".safetensors", None), (".pt", "module.")]
)
def test_checkpoint_formats_load_exactly(tmp_path, suffix, wrap):
    source = target("tests.test_own_model.TinyNet")
    state = trained_state(source)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif wrap == "module.":
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    else:
        torch.save({wrap: state, "epoch": 3} if wrap else state, path)
    fresh = target("tests.test_own_model.TinyNet", seed=5, checkpoint=str(path))
    assert not same(fresh, source)  # building does not load: the dense stage does
    assert same(load_checkpoint(fresh, path), source)


def test_checkpoint_refusals(tmp_path):
    model = target("tests.test_own_model.TinyNet")
    pickled = tmp_path / "module.pt"
    torch.save(model, pickled)  # a whole pickled module: weights_only refuses to run its code
    with pytest.raises(
        UserError,
        match=r"^model\.checkpoint: .*module\.pt is not a state dict torch\.load\("
        r"weights_only=True\)",
    ):
        load_checkpoint(model, pickled)
    other = tmp_path / "other.pt"
    torch.save(target("tests.test_own_model.TinyNet", classes=3, hidden=4).state_dict(), other)
    with pytest.raises(
        UserError,
        match=r"^model\.checkpoint: .*other\.pt does not fit the model \(shape: fc\.weight "
        r"\(3, 4\) vs the model's \(5, 4\)",
    ):
        load_checkpoint(model, other)
    extra = tmp_path / "extra.pt"
    torch.save({**model.state_dict(), "head.weight": torch.zeros(1)}, extra)
    with pytest.raises(UserError, match=r"does not fit the model \(unexpected: head\.weight\)"):
        load_checkpoint(model, extra)
    with pytest.raises(UserError, match=r"^model\.checkpoint: no such file"):
        model_config({"name": "lenet300", "checkpoint": str(tmp_path / "absent.pt")})
    (tmp_path / "w.ckpt").write_bytes(pickle.dumps({}))
    with pytest.raises(
        UserError,
        match=r"^model\.checkpoint: .*w\.ckpt must be a state dict saved as \.pt, \.pth, "
        r"\.safetensors",
    ):
        model_config({"name": "lenet300", "checkpoint": str(tmp_path / "w.ckpt")})


def test_identity_names_the_checkpoint_by_its_sha256(tmp_path):
    model = target("tests.test_own_model.TinyNet")
    (tmp_path / "a").mkdir()
    torch.save(model.state_dict(), tmp_path / "a" / "w.pt")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "w.pt").write_bytes((tmp_path / "a" / "w.pt").read_bytes())
    cfg = {"name": "torchvision", "arch": "resnet18"}
    first = identity({**cfg, "checkpoint": str(tmp_path / "a" / "w.pt")})
    digest = hashlib.sha256((tmp_path / "a" / "w.pt").read_bytes()).hexdigest()
    assert first == {"name": "torchvision", "arch": "resnet18", "checkpoint": f"sha256:{digest}"}
    assert identity({**cfg, "checkpoint": str(tmp_path / "b" / "w.pt")}) == first  # moved: the same experiment
    trained_state(model)
    torch.save(model.state_dict(), tmp_path / "b" / "w.pt")
    assert identity({**cfg, "checkpoint": str(tmp_path / "b" / "w.pt")}) != first  # changed: another one
    assert identity(cfg) == {"name": "torchvision", "arch": "resnet18"}
    assert identity({"name": "lenet300"}) == {}  # the built-ins' hashes did not move


def test_builtin_models_refuse_native_init_and_list_the_new_kinds():
    with pytest.raises(UserError, match=r"^model\.init: native is the constructor's own"):
        model_config({"name": "lenet300", "init": "native"})
    with pytest.raises(UserError, match=r"choose one of lenet300, .*, torchvision, target"):
        model_config({"name": "alexnet"})
