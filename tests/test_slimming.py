"""Network slimming (Liu et al. 2017): the λ·sign(γ) subgradient, γ = 0.5 init, the global |γ| threshold with its
floor, bad input, and the pipeline end to end (one and two passes), each against an independently computed answer."""

import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from foundations.store import Store
from methods.pipeline.channels import prunable_channel_groups, select_channels
from methods.pipeline.scores.filters import bn_scale_scores
from methods.slimming import sparsity_hook
from models import build_model
from runners.experiment import Experiment, run_experiment
from tests.conftest import make_run

ROOT = Path(__file__).resolve().parent.parent
MLP_BN = [
    "dataset=synthetic",
    "model=mlp_bn",
    "model.widths=[40,20]",
    "train.epochs=1",
    "train.batch_size=64",
    "method=slimming",
    "method.recovery.epochs=1",
]


def gammas(model):
    return [m.weight.detach().clone() for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def tiny_mlp_bn(tmp_path, widths="[6,4]"):
    run = make_run(tmp_path, "dataset=synthetic", "model=mlp_bn", f"model.widths={widths}")
    return build_model(run.model, (1, 8, 8), 4, generator=torch.Generator().manual_seed(0))


def test_hook_adds_exactly_lambda_sign_gamma(tmp_path):
    model = tiny_mlp_bn(tmp_path)
    with torch.no_grad():
        model.bn1.weight.copy_(torch.tensor([0.5, -0.3, 0.0, 2.0, -1e-6, 0.1]))
    x, y = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.arange(16) % 4

    def grads(hook):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        if hook is not None:
            hook(model)
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain, hooked = grads(None), grads(sparsity_hook(0.25))
    expected_sign = {
        "bn1.weight": torch.tensor([1.0, -1.0, 0.0, 1.0, -1.0, 1.0]),
        "bn2.weight": torch.ones(4),
    }  # bn2's γ are the init value 1.0
    for name in plain:
        want = plain[name] + 0.25 * expected_sign[name] if name in expected_sign else plain[name]
        assert torch.equal(hooked[name], want), name


def test_sparsity_training_drives_gammas_to_zero(tmp_path):
    small = []
    for lam in (0.0, 0.05):
        run = make_run(
            tmp_path / str(lam),
            "dataset=synthetic",
            "model=mlp_bn",
            "model.widths=[40,20]",
            "train.epochs=6",
            "train.batch_size=32",
            "method=slimming",
            f"method.lam={lam}",
        )
        exp = Experiment(run, Store(run.paths.results))
        stage = exp.method.pruning_start(exp, None)  # the sparsity training (slimming needs no dense stage)
        g = torch.cat(gammas(exp.model_from(stage, "last"))).abs()
        small.append(float((g < 1e-2).float().mean()))
    assert small[0] < 0.1 and small[1] > small[0] + 0.3, small


def test_global_threshold_init_and_end_to_end(tmp_path):
    run = make_run(tmp_path, *MLP_BN, "method.sparsity=0.4")
    store = Store(run.paths.results)
    record = run_experiment(run, store)
    exp = Experiment(run, store)
    hashes = record["stage_hashes"]

    # γ init: the sparsity stage starts from the dense init with every γ = 0.5; the plain init keeps γ = 1.
    init = exp.stage_at("init/" + hashes["slimming_init"])
    plain_init = exp.stage_at("init/" + hashes["init"])
    assert all(torch.all(g == 0.5) for g in gammas(exp.model_from(init)))
    assert all(torch.all(g == 1.0) for g in gammas(exp.model_from(plain_init)))
    assert exp.model_from(init).fc1.weight.equal(exp.model_from(plain_init).fc1.weight)
    sparse_cfg = (store.stage_dir("train", hashes["sparsity"]) / "config.yaml").read_text()
    assert hashes["slimming_init"] in sparse_cfg and hashes["sparsity"] != hashes["dense"]

    # Global threshold: exactly round(0.4 · 60) = 24 channels go, the kept ones are the 36 largest |γ| overall.
    sparse = exp.model_from(exp.stage_at("train/" + hashes["sparsity"]))
    g1, g2 = (g.abs() for g in gammas(sparse))
    everything = torch.cat([g1, g2])
    ranked = torch.sort(everything, descending=True).indices
    order = ranked[:36]
    assert everything[order].min() > everything[ranked[36:]].max()  # no tie at the threshold
    want = {
        "fc1": sorted(i for i in order.tolist() if i < 40),
        "fc2": sorted(i - 40 for i in order.tolist() if i >= 40),
    }
    assert want["fc1"] and want["fc2"]  # the floor does not apply here
    plan = exp.stage_at("prune/" + hashes["prune"]).plan()
    assert plan.keep == want
    assert sum(len(v) for v in plan.keep.values()) == 60 - round(0.4 * 60)

    # End to end: compacted final model with the plan's widths, smaller and timed.
    final = exp.model_from(exp.stage_at(record["final_stage"]))
    assert final.fc1.out_features == len(want["fc1"]) and final.fc2.in_features == len(want["fc1"])
    assert final.fc2.out_features == len(want["fc2"]) and final.fc3.in_features == len(want["fc2"])
    assert record["channel_sparsity"] == 24 / 60 and record["compression"] > 1
    assert record["latency_ms"]["pruned"]["1"] > 0
    dense = exp.stage_at("train/" + hashes["dense"])
    assert record["dense_test_acc"] == dense.result.selected.test_acc
    sparse_stage = exp.stage_at("train/" + hashes["sparsity"])
    assert record["outputs"]["sparsity_trained_test_acc"] == sparse_stage.result.selected.test_acc


def test_floor_keeps_one_channel_in_a_layer_of_tiny_gammas(tmp_path):
    run = make_run(
        tmp_path, "dataset=synthetic", "model=mlp_bn", "model.widths=[10,10]", "method=slimming", "method.sparsity=0.5"
    )
    exp = Experiment(run, Store(run.paths.results))
    model = exp.base_model().eval()
    with torch.no_grad():
        model.bn1.weight.copy_(torch.linspace(1e-4, 1e-3, 10))  # all below every γ of bn2
        model.bn2.weight.copy_(torch.linspace(0.1, 1.0, 10))
    groups = prunable_channel_groups(model, exp.example_input)
    plan = select_channels(bn_scale_scores(model, groups), groups, 0.5, scope="global", min_keep_fraction=0.0)
    # 10 of 20 channels go: the 9 smallest of bn1 (its largest survives the floor) and then bn2's smallest.
    assert plan.keep == {"fc1": [9], "fc2": list(range(1, 10))}


def test_two_passes_prune_twice_and_compose_the_plans(tmp_path):
    run = make_run(tmp_path, *MLP_BN, "method.passes=2", "method.sparsity=0.5")
    store = Store(run.paths.results)
    record = run_experiment(run, store)
    exp = Experiment(run, store)
    hashes = record["stage_hashes"]
    first = exp.stage_at("prune/" + hashes["prune"]).plan()
    second = exp.stage_at("prune/" + hashes["prune_2"]).plan()
    assert sum(map(len, first.keep.values())) == 30 and sum(map(len, second.keep.values())) == 15
    # The second pass ranks the |γ| of the compacted, sparsity-fine-tuned model of pass 1.
    tuned = exp.model_from(exp.stage_at("train/" + hashes["sparsity_2"]))
    g = torch.cat([x.abs() for x in gammas(tuned)])
    base_index = first.keep["fc1"] + [40 + i for i in first.keep["fc2"]]
    top = torch.sort(g, descending=True).indices[:15].tolist()
    kept = sorted(base_index[i] for i in top)
    assert second.keep == {"fc1": [i for i in kept if i < 40], "fc2": [i - 40 for i in kept if i >= 40]}
    assert all(set(second.keep[k]) <= set(first.keep[k]) for k in first.keep)
    final = exp.model_from(exp.stage_at(record["final_stage"]))
    assert (final.fc1.out_features, final.fc2.out_features) == (len(second.keep["fc1"]), len(second.keep["fc2"]))
    assert record["channel_sparsity"] == 0.75 and record["outputs"]["channel_sparsity_per_pass"] == [0.5, 0.5]


def test_model_without_batchnorm_is_one_line_exit_2_and_writes_nothing(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "runners.train",
            "model=lenet300",
            "method=slimming",
            "dataset=synthetic",
            "logger=none",
            "progress=false",
            f"paths.results={tmp_path}/results",
            f"hydra.run.dir={tmp_path}/out",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "BatchNorm" in lines[0] and "mlp_bn" in lines[0], result.stderr
    assert not (tmp_path / "results" / "runs").exists()
