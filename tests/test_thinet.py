"""ThiNet (methods/thinet.py) against answers computed independently of its selection code."""

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from foundations.errors import UserError
from foundations.store import Store
from methods.pipeline.channels import prunable_channel_groups
from methods.pipeline.channels.plan import compose
from methods.pipeline.masks import folded
from methods.thinet import layer_pairs, prune_layer
from runners.experiment import Experiment, run_experiment
from tests.conftest import make_run
from tests.test_cli import cli

MLP = ["dataset=synthetic", "model=mlp_bn", "model.widths=[16,8]"]
CONV = ["dataset=synthetic", "model=conv_bn", "model.widths=[8,8]"]
FAST = [
    "train.epochs=1",
    "train.batch_size=64",
    "method=thinet",
    "method.n_images=200",
    "method.recovery.epochs=1",
    "method.layer_fine_tune_iterations=5",
]


def _experiment(tmp_path, *overrides):
    run = make_run(tmp_path, *overrides)
    return run, Experiment(run, Store(run.paths.results))


def _prune(exp, model, cfg, seed=0):
    """ThiNet's layers pruned one after the other in memory (no fine-tune), as its plan stages chain them."""
    pairs = layer_pairs(model, prunable_channel_groups(model, exp.example_input), cfg.layers)
    sample = exp.data.train.subset(cfg.n_images, seed=seed)
    draws, current, plan, facts = torch.Generator().manual_seed(seed), folded(model).eval(), None, []
    for group, consumer in pairs:
        step, current, found = prune_layer(
            current, group, consumer, sample, cfg, generator=draws, example_input=exp.example_input
        )
        plan = compose(plan, step)
        facts.append(found)
    return plan, current, facts


@pytest.mark.parametrize("selection", ["greedy_remove", "greedy_keep"])
@pytest.mark.parametrize("arch,layer,consumer", [(MLP, "fc1", "fc2"), (CONV, "conv1", "conv2")])
def test_planted_zero_input_channels_of_the_next_layer_are_the_ones_removed(tmp_path, arch, layer, consumer, selection):
    run, exp = _experiment(
        tmp_path,
        *arch,
        "method=thinet",
        "method.sparsity=0.5",
        f"method.layers=[{layer}]",
        f"method.selection={selection}",
    )
    model = exp.base_model().eval()
    width = dict(model.named_modules())[layer].weight.shape[0]
    planted = [1, 3, 4, 6, 9, 10, 12, 15][: width // 2]
    with torch.no_grad():
        model.get_submodule(consumer).weight[:, planted] = 0
    plan, pruned, _ = _prune(exp, model, run.method)
    assert plan.keep == {layer: [c for c in range(width) if c not in planted]}
    # Removed channels contributed exactly nothing and the rescale of the rest is 1: the function is unchanged.
    x, _ = next(exp.data.test.batches(100))
    with torch.no_grad():
        torch.testing.assert_close(pruned.eval()(x), model(x), atol=1e-4, rtol=1e-4)


def _expected_keep(width, sparsity, floor):
    return width - min(round(sparsity * width), width - max(1, math.ceil(floor * width - 1e-9)))


def _capture_build(monkeypatch):
    """Keep the model the last prune stage's build() returned."""
    built = {}
    original = Experiment.plan_stage

    def plan_stage(self, name, source, spec, build, facts, **kw):
        def wrapped(model):
            step = build(model)
            built["model"] = step.model
            return step

        return original(self, name, source, spec, wrapped, facts, **kw)

    monkeypatch.setattr(Experiment, "plan_stage", plan_stage)
    return built


@pytest.mark.parametrize(
    "arch,sparsity,floor,layers",
    [
        (MLP, 0.75, 0.5, {"fc1": ("fc2", 16), "fc2": ("fc3", 8)}),
        (CONV, 0.5, 0.0, {"conv1": ("conv2", 8), "conv2": ("fc", 8)}),
    ],
)
def test_end_to_end_plan_widths_and_record(tmp_path, monkeypatch, arch, sparsity, floor, layers):
    built = _capture_build(monkeypatch)
    run, exp = _experiment(tmp_path, *arch, *FAST, f"method.sparsity={sparsity}", f"method.min_keep_fraction={floor}")
    record = run_experiment(run, Store(run.paths.results))
    prune = exp.stage_at("prune/" + record["stage_hashes"][f"prune{len(layers)}"])  # the last layer's
    plan = prune.plan().keep
    expected = {name: _expected_keep(width, sparsity, floor) for name, (_, width) in layers.items()}
    assert {k: len(v) for k, v in plan.items()} == expected
    assert all(v == sorted(set(v)) and v[0] >= 0 and v[-1] < layers[k][1] for k, v in plan.items())
    total = sum(width for _, width in layers.values())
    assert record["channel_sparsity"] == pytest.approx((total - sum(expected.values())) / total)
    assert set(record["outputs"]["thinet_selection_seconds"]) == set(layers)
    assert all(s > 0 for s in record["outputs"]["thinet_selection_seconds"].values())
    assert record["latency_ms"]["pruned"]["1"] > 0 and record["compression"] > 1
    final = dict(exp.model_from(exp.stage_at(record["final_stage"])).named_modules())
    base = dict(exp.base_model().named_modules())
    for name, (consumer, width) in layers.items():
        per_channel = base[consumer].weight.shape[1] // width  # a Linear after a flatten: features per channel
        assert final[name].weight.shape[0] == expected[name]
        assert final[consumer].weight.shape[1] == expected[name] * per_channel
        assert final["bn" + name[-1]].num_features == expected[name]  # fc1/conv1 -> bn1 in mlp_bn and conv_bn
    # The stored prune stage rebuilds (compact(base, plan) + weights) to exactly the model build() returned.
    reloaded = exp.model_from(prune).cpu().eval()
    x, _ = next(exp.data.test.batches(64))
    with torch.no_grad():
        assert torch.equal(reloaded(x), built["model"].cpu().eval()(x))


@pytest.mark.parametrize("arch,layer,consumer", [(MLP, "fc1", "fc2"), (CONV, "conv1", "conv2")])
def test_rescaling_lowers_the_next_layers_error_on_held_out_images(tmp_path, arch, layer, consumer):
    run, exp = _experiment(
        tmp_path,
        *arch,
        "train.epochs=1",
        "train.batch_size=64",
        "method=thinet",
        "method.sparsity=0.5",
        f"method.layers=[{layer}]",
        "method.n_images=300",
    )
    dense = exp.model_from(exp.dense_stage()).cpu().eval()
    x, _ = next(exp.data.val.batches(200))  # validation images: never in the training subset ThiNet samples

    def next_layer_output(model):
        out = []
        handle = model.get_submodule(consumer).register_forward_hook(lambda m, i, o: out.append(o))
        with torch.no_grad():
            model.eval()(x)
        handle.remove()
        return out[0]

    reference = next_layer_output(dense)
    errors, plans = {}, {}
    for rescale in (True, False):
        plan, pruned, _ = _prune(exp, dense, replace(run.method, rescale=rescale))
        errors[rescale] = float(((next_layer_output(pruned) - reference) ** 2).sum())
        plans[rescale] = plan.keep
    assert plans[True] == plans[False]
    assert 0 < errors[True] <= errors[False]


def test_same_config_and_seed_give_the_same_plan(tmp_path):
    texts = []
    for sub in ("a", "b"):
        run, exp = _experiment(tmp_path / sub, *MLP, *FAST)
        record = run_experiment(run, Store(run.paths.results))
        texts.append(exp.stage_at("prune/" + record["stage_hashes"]["prune2"]).plan().to_json())
    assert texts[0] == texts[1]


def test_a_model_without_a_layer_pair_is_refused_before_any_stage(tmp_path, monkeypatch):
    """No model config builds a one-weight-layer net (model.widths must be non-empty), so a hand-built one."""
    run = make_run(tmp_path, *MLP, *FAST)
    monkeypatch.setattr(Experiment, "base_model", lambda self, seed=None: nn.Sequential(nn.Flatten(), nn.Linear(64, 4)))
    with pytest.raises(UserError) as err:
        run_experiment(run, Store(run.paths.results))
    assert "no prunable layer pair" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "results" / "runs").exists()


def test_cli_unknown_layer_is_one_line_exit_2(tmp_path):
    result = cli(tmp_path, *MLP, "method=thinet", "method.layers=[nosuch]")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "method.layers" in lines[0], result.stderr
    assert not (tmp_path / "results" / "runs").exists()
