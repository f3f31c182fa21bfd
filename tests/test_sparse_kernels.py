"""Sparse execution (runners/sparse.py), N:M selection (methods/pipeline/select.py: select_nm) and the weight-level
latency of the record.

Every sparse kernel's output is compared with the dense product of the *masked* weights computed here in float64
(``F.linear`` / ``F.conv2d``), on layers masked by ``torch.nn.utils.prune`` with the pruned entries of
``weight_orig`` left nonzero, so a kernel built from the unmasked weights is wrong by the pruned weights' size.
Tolerance for float32: |Δ| <= 1e-5 · (1 + max|y|) (float32 sums of <= 800 products in another order).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

import runners.sparse as sparse_module
from foundations.errors import UserError
from foundations.store import Store
from methods.pipeline.masks import folded, masked_weight
from methods.pipeline.select import nm_rows, select_nm
from models import build_model
from models.config import ModelConfig
from runners.experiment import run_experiment
from runners.identity import experiment_hash
from runners.jobs import check_command
from runners.sparse import SparseConv2d, SparseLinear, measure_sparse_latency, sparse_network
from tests.conftest import SYNTH, make_run

CPU_KERNELS = ("csr", "bsr", "coo")
LAYOUT = {"csr": torch.sparse_csr, "bsr": torch.sparse_bsr, "coo": torch.sparse_coo}


def close(y: torch.Tensor, reference: torch.Tensor) -> bool:
    y, reference = y.detach().double(), reference.detach()
    return float((y - reference).abs().max()) <= 1e-5 * (1 + float(reference.abs().max()))


def random_mask(shape, density: float, seed: int) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < density


def masked(module: nn.Module, density: float = 0.2, seed: int = 1) -> torch.Tensor:
    """Mask ``module.weight`` with torch's own pruning API (``weight_orig`` keeps its pruned values) and return
    the masked weight in float64, computed here."""
    with torch.no_grad():
        module.weight.add_(0.5 * torch.sign(module.weight))  # no weight near 0: the pruned ones must matter
    mask = random_mask(module.weight.shape, density, seed)
    prune.custom_from_mask(module, "weight", mask)
    assert bool((module.weight_orig[~mask] != 0).all())
    return (module.weight_orig.detach() * mask).double()


# ------------------------------------------------------------------------------------------------- layers
@pytest.mark.parametrize("kernel", CPU_KERNELS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch", [1, 7])
def test_a_sparse_linear_equals_the_masked_dense_product(kernel, bias, batch):
    torch.manual_seed(0)
    layer = nn.Linear(64, 24, bias=bias)
    weight = masked(layer)
    x = torch.randn(batch, 64)
    reference = F.linear(x.double(), weight, layer.bias.double() if bias else None)
    network, report = sparse_network(layer, kernel)
    assert isinstance(network, SparseLinear) and network.matrix.layout == LAYOUT[kernel]  # runs what it says
    assert report == {"": "bsr 8x8" if kernel == "bsr" else kernel}
    assert network.matrix._nnz() <= int((weight != 0).sum()) or kernel == "bsr"  # only survivors stored (CSR/COO)
    with torch.inference_mode():
        assert close(network(x), reference)
    with torch.no_grad():
        assert close(network(x), reference)


@pytest.mark.parametrize("kernel", CPU_KERNELS)
@pytest.mark.parametrize(
    "conv,size",
    [
        (dict(in_channels=3, out_channels=8, kernel_size=3, padding=1), 9),
        (dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=2, bias=False), 11),
        (dict(in_channels=2, out_channels=4, kernel_size=3, dilation=2, padding=(2, 1)), 10),
        (dict(in_channels=8, out_channels=16, kernel_size=1, stride=2, bias=False), 8),
        (dict(in_channels=4, out_channels=4, kernel_size=3, padding="valid"), 7),
    ],
)
@pytest.mark.parametrize("batch", [1, 3])
def test_a_sparse_conv_by_im2col_equals_the_masked_dense_convolution(kernel, conv, size, batch):
    torch.manual_seed(0)
    layer = nn.Conv2d(**conv)
    weight = masked(layer, density=0.3)
    x = torch.randn(batch, conv["in_channels"], size, size)
    bias = layer.bias.double() if layer.bias is not None else None
    reference = F.conv2d(x.double(), weight, bias, layer.stride, layer.padding, layer.dilation)
    network, report = sparse_network(layer, kernel)
    if report[""].startswith("dense: not supported"):  # BSR: no square block divides e.g. 6 x 24
        assert kernel == "bsr" and "square block" in report[""] and isinstance(network, nn.Conv2d)
        return
    assert isinstance(network, SparseConv2d) and report[""].endswith("(im2col)")
    with torch.inference_mode():
        y = network(x)
    assert y.shape == reference.shape and close(y, reference)


@pytest.mark.parametrize("name,shape", [("lenet300", (1, 28, 28)), ("mlp_bn", (1, 28, 28)), ("lenet5", (1, 28, 28))])
@pytest.mark.parametrize("kernel", CPU_KERNELS)
def test_a_whole_pruned_network_runs_sparse_with_the_masked_networks_outputs(name, shape, kernel):
    model = build_model(ModelConfig(name=name), shape, 10, torch.Generator().manual_seed(0)).eval()
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    masked_weights = {n: masked(m, density=0.1, seed=i) for i, (n, m) in enumerate(layers.items())}
    x = torch.randn(4, *shape)
    with torch.no_grad():  # the reference: every layer's float64 masked weights, loaded into a plain copy
        plain = build_model(ModelConfig(name=name), shape, 10, torch.Generator().manual_seed(0)).eval().double()
        plain.load_state_dict({k: v.double() for k, v in folded(model).state_dict().items()})
        for n, w in masked_weights.items():
            plain.get_submodule(n).weight.copy_(w)
        reference = plain(x.double())
    network, report = sparse_network(model, kernel)
    assert set(report) == set(layers)
    supported = [n for n, r in report.items() if not r.startswith("dense")]
    assert supported and all(isinstance(network.get_submodule(n), (SparseLinear, SparseConv2d)) for n in supported)
    if kernel != "bsr":
        assert supported == list(layers)  # CSR and COO run every layer of these networks
    with torch.inference_mode():
        assert close(network(x), reference)
        assert close(model(x), reference)  # and the masked model itself is left as it was


def test_unsupported_layers_say_so_and_strict_refuses_them():
    model = nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.Flatten(), nn.Linear(8 * 4 * 4, 10), nn.Linear(10, 10))
    masked(model[0])
    masked(model[2])  # model[3] keeps every weight
    x = torch.randn(2, 4, 6, 6)
    with torch.inference_mode():
        reference = model(x)
        network, report = sparse_network(model, "csr")
        assert close(network(x), reference.double())
    assert report == {
        "0": "dense: not supported (grouped convolution (groups=2))",
        "2": "csr",
        "3": "dense: not pruned",
    }
    assert isinstance(network[0], nn.Conv2d) and isinstance(network[2], SparseLinear)
    with pytest.raises(UserError, match="0: csr dense: not supported"):
        sparse_network(model, "csr", strict=True)
    _, report = sparse_network(model, "semi_structured")
    assert report["2"].startswith("dense: not supported (semi_structured: not supported on cpu")
    assert report["0"].startswith("dense: not supported")
    half = nn.Linear(16, 8).bfloat16()
    masked(half)
    _, report = sparse_network(half, "csr")  # MKL's sparse BLAS has no bfloat16
    assert report == {"": "dense: not supported (csr on cpu takes float32/float64 (MKL), not torch.bfloat16)"}
    assert sparse_network(half, "coo")[1] == {"": "coo"}
    for conv, why in (
        (nn.Conv2d(4, 4, 3, padding="same"), "padding='same'"),
        (nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), "padding_mode=reflect"),
    ):
        masked(conv)
        assert sparse_network(conv, "csr")[1] == {"": f"dense: not supported ({why})"}
    _, report = sparse_network(nn.Linear(15, 9), "bsr")  # nothing pruned
    assert report == {"": "dense: not pruned"}
    odd = nn.Linear(15, 9)
    masked(odd)
    assert sparse_network(odd, "bsr")[1][""].startswith("dense: not supported (bsr needs a square block dividing 9x15")
    with pytest.raises(UserError, match="latency.sparse_kernel"):
        sparse_network(odd, "csc")


def test_the_sparse_weights_are_the_masked_ones_of_a_masked_or_a_folded_model():
    layer = nn.Linear(12, 6)
    weight = masked(layer)
    assert torch.equal(masked_weight(layer).double(), weight)
    plain = folded(layer)
    assert torch.equal(masked_weight(plain).double(), weight)
    for source in (layer, plain):
        network, _ = sparse_network(source, "csr")
        assert torch.equal(network.matrix.to_dense().double(), weight)


# ------------------------------------------------------------------------------------------------- N:M
def nm_expected(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """The N largest of every M consecutive along the input, by loops over the weight's own indices: a Linear's
    row; a Conv2d's input channels at one (output, kernel row, kernel column)."""
    keep = torch.zeros_like(score, dtype=torch.bool)
    if score.dim() == 2:
        groups = [[(o, k) for k in range(g, g + m)] for o in range(score.shape[0]) for g in range(0, score.shape[1], m)]
    else:
        o_, c_, r_, s_ = score.shape
        groups = [
            [(o, c, r, s) for c in range(g, g + m)]
            for o, r, s in itertools.product(range(o_), range(r_), range(s_))
            for g in range(0, c_, m)
        ]
    for group in groups:
        best = sorted(group, key=lambda i: -float(score[i]))[:n]
        for index in best:
            keep[index] = True
    return keep


@pytest.mark.parametrize("n,m,shape", [(2, 4, (6, 16)), (1, 4, (3, 8, 2, 3)), (2, 8, (4, 16, 3, 3)), (1, 2, (5, 6))])
def test_nm_selection_keeps_the_n_best_of_every_m_along_the_input(n, m, shape):
    score = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    mask = select_nm({"w": score}, {"w": torch.ones(shape, dtype=torch.bool)}, n, m)["w"]
    assert torch.equal(mask, nm_expected(score, n, m))
    assert bool((nm_rows(mask).reshape(-1, m).sum(dim=1) == n).all()) and mask.float().mean() == n / m


def test_nm_selection_never_revives_a_pruned_weight():
    score = torch.arange(8.0).reshape(1, 8)
    alive = torch.tensor([[True, False, False, False, True, True, False, True]])
    mask = select_nm({"w": score}, {"w": alive}, 1, 4)["w"]
    assert mask.tolist() == [[True, False, False, False, False, False, False, True]]
    with pytest.raises(UserError, match="fewer than 2 surviving"):
        select_nm({"w": score}, {"w": alive}, 2, 4)


TINY = [  # 16 -> 12 -> 8 -> 4: every layer's input a multiple of 4
    "dataset=synthetic",
    "dataset.input_shape=[1,4,4]",
    "dataset.num_train=200",
    "dataset.val_size=50",
    "dataset.num_test=50",
    "model=lenet300",
    "model.widths=[12,8]",
    "train.epochs=1",
    "train.batch_size=50",
    "latency.sparse_kernel=none",
]


def run(tmp_path, *overrides):
    config = make_run(tmp_path, *TINY, *overrides)
    store = Store(config.paths.results)
    return run_experiment(config, store), store


@pytest.mark.parametrize("method", ["magnitude", "lottery"])
def test_an_nm_experiment_prunes_n_of_every_m_trained_weights_and_hashes_the_pattern(tmp_path, method):
    extra = ["method.recovery.epochs=1"] if method == "magnitude" else []
    record, store = run(tmp_path, f"method={method}", "method.sparsity=0.5", "method.pattern=2:4", *extra)
    masks = store.at(f"prune/{record['stage_hashes']['prune1']}").masks()
    source = "dense" if method == "magnitude" else "level0"
    trained = store.at(f"train/{record['stage_hashes'][source]}").weights("last")
    for name, mask in masks.items():
        assert torch.equal(mask, nm_expected(trained[name].abs(), 2, 4)), name
    assert record["per_layer_density"] == {n: 0.5 for n in masks} and record["target_sparsity"] == 0.5
    assert record["label"] == f"{method} (2:4)"
    if method == "lottery":
        assert [level["level"] for level in record["outputs"]["levels"]] == [1]
    # another pattern of the same sparsity: another prune stage, the same dense training
    other, _ = run(tmp_path, f"method={method}", "method.sparsity=0.5", "method.pattern=1:2", *extra)
    assert other["stage_hashes"]["prune1"] != record["stage_hashes"]["prune1"]
    assert other["stage_hashes"][source] == record["stage_hashes"][source]
    if method == "magnitude":
        plain, _ = run(tmp_path, "method=magnitude", "method.sparsity=0.5", *extra)
        assert plain["stage_hashes"]["prune1"] != record["stage_hashes"]["prune1"]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["method=magnitude", "method.pattern=2:4"], "method.sparsity: pattern 2:4 keeps exactly 2 of every 4"),
        (["method=magnitude", "method.pattern=3", "method.sparsity=0.5"], "method.pattern: must be unstructured"),
        (["method=snip", "method.pattern=2:4", "method.sparsity=0.5", "method.prunable.biases=true"], "prunable"),
        (["method=magnitude", "method.pattern=1:2", "method.sparsity=0.5", "method.rounds=2"], "method.rounds"),
        (
            [
                "method=random",
                "method.pattern=1:2",
                "method.sparsity=0.5",
                "method.variant=shuffle",
                "+method.source.name=snip",
            ],
            "method.pattern",
        ),
        (["method=lottery", "method.pattern=1:2", "method.sparsity=0.5", "method.control=shuffle"], "method.control"),
    ],
)
def test_nm_settings_it_cannot_honour_are_refused_in_one_line(tmp_path, overrides, message):
    with pytest.raises(UserError, match=message):
        make_run(tmp_path, *TINY, *overrides)


def test_the_command_line_pre_check_reads_a_pattern_as_hydra_does_and_with_the_groups_other_overrides(tmp_path):
    results = f"paths.results={tmp_path}/results"
    check_command(["method=magnitude", "method.pattern=2:4", "method.sparsity=0.5", results])
    check_command(["method=lottery", "method.scope=layerwise", "method.output_rate=0.1", results])
    with pytest.raises(UserError, match="method.sparsity: pattern 2:4 keeps exactly 2 of every 4"):
        check_command(["method=magnitude", "method.pattern=2:4", results])
    with pytest.raises(UserError, match=r"got '124'\); quote it in YAML"):
        check_command(["method=magnitude", "method.pattern=124", "method.sparsity=0.5", results])
    with pytest.raises(UserError, match="train.epochs"):
        check_command(["train.epochs=abc", results])


def test_a_layer_whose_input_does_not_tile_into_groups_is_refused_before_any_stage(tmp_path):
    with pytest.raises(UserError, match=r"fc2.weight has 12 inputs, not a multiple of 8.*exclude=\[fc2\]"):
        run(tmp_path, "method=magnitude", "method.pattern=1:8", "method.sparsity=0.875")
    assert not (tmp_path / "results" / "runs" / "train").exists()


# ------------------------------------------------------------------------------------------------- the record
FAST = ["latency.batch_sizes=[1,8]", "latency.run_time=0.03"]


def test_a_weight_level_record_times_dense_masked_and_sparse_and_names_each_layers_kernel(tmp_path):
    args = [*SYNTH, "method=magnitude", "method.sparsity=0.9", "method.recovery.epochs=1", *FAST]
    config = make_run(tmp_path, *args)
    record = run_experiment(config, Store(config.paths.results))
    assert set(record["latency_ms"]) == {"dense", "masked", "sparse"}
    assert all(set(v) == {"1", "8"} and all(ms > 0 for ms in v.values()) for v in record["latency_ms"].values())
    assert record["latency_kernels"] == {"fc1": "csr", "fc2": "csr", "fc3": "csr"}
    assert record["latency_device"] == "cpu" and record["latency_threads"] == 1
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():  # what the report names as the machine: the CPU's model name
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        assert record["latency_processor"] == names[0]
    off = make_run(tmp_path / "off", *args, "latency.sparse_kernel=none")
    assert experiment_hash(off) == experiment_hash(config)  # it changes no result: hashed nowhere
    unmeasured = run_experiment(off, Store(off.paths.results))
    assert unmeasured["latency_ms"] is None and unmeasured["latency_kernels"] is None
    assert unmeasured["stage_hashes"] == record["stage_hashes"]
    gpu_only = make_run(tmp_path / "gpu", *args, "latency.sparse_kernel=semi_structured")
    kernels = run_experiment(gpu_only, Store(gpu_only.paths.results))["latency_kernels"]
    assert set(kernels) == {"fc1", "fc2", "fc3"} and all("not supported on cpu" in k for k in kernels.values())
    with pytest.raises(UserError, match="latency.sparse_kernel"):
        make_run(tmp_path, *args, "latency.sparse_kernel=csc")


def test_the_sparse_latency_times_the_sparse_network_with_the_records_timer(monkeypatch):
    seen = {}

    def timer(models, input_shape, batch_sizes, min_run_time):
        seen.update(models)
        return {name: {str(b): 1.0 for b in batch_sizes} for name in models}

    monkeypatch.setattr(sparse_module, "measure_latency_ms", timer)
    model = build_model(ModelConfig(name="lenet300"), (1, 28, 28), 10, torch.Generator().manual_seed(0))
    for layer in (model.fc1, model.fc2):
        masked(layer)
    dense = build_model(ModelConfig(name="lenet300"), (1, 28, 28), 10, torch.Generator().manual_seed(0))
    result = measure_sparse_latency(model, dense, (1, 28, 28), kernel="coo", batch_sizes=(2,))
    assert result.kernels == {"fc1": "coo", "fc2": "coo", "fc3": "dense: not pruned"}
    assert seen["dense"] is dense and seen["masked"] is model
    assert isinstance(seen["sparse"].fc1, SparseLinear) and isinstance(seen["sparse"].fc3, nn.Linear)
    assert result.latency_ms == {"dense": {"2": 1.0}, "masked": {"2": 1.0}, "sparse": {"2": 1.0}}
