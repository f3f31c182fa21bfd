import torch

from foundations.store import Store
from runners.experiment import Experiment, run_experiment
from tests.conftest import make_run

MLP_BN = ["dataset=synthetic", "model=mlp_bn", "model.widths=[40,20]", "train.epochs=1", "method.recovery.epochs=1"]


def test_l1_filter_keeps_the_largest_l1_rows_and_compacts(tmp_path):
    run = make_run(tmp_path, *MLP_BN, "method=l1_filter", "method.sparsity=0.5")
    record = run_experiment(run, Store(run.paths.results))
    exp = Experiment(run, Store(run.paths.results))
    dense = exp.model_from(exp.stage_at("train/" + record["stage_hashes"]["dense"]))
    plan = exp.stage_at("prune/" + record["stage_hashes"]["prune"]).plan().keep
    for layer, width in (("fc1", 40), ("fc2", 20)):
        norms = dict(dense.named_modules())[layer].weight.detach().abs().sum(1)
        expected = sorted(torch.argsort(norms, descending=True, stable=True)[: width // 2].tolist())
        assert plan[layer] == expected
    final = exp.model_from(exp.stage_at(record["final_stage"]))
    assert final.fc1.out_features == 20 and final.fc2.in_features == 20
    assert record["channel_sparsity"] == 0.5 and record["latency_ms"]["pruned"]["256"] > 0
    assert record["compression"] > 1.5


def test_random_channel_depends_only_on_the_prune_seed(tmp_path):
    plans = []
    for seed in (0, 0, 1):
        run = make_run(tmp_path / str(len(plans)), *MLP_BN, "method=random_channel", f"seeds.prune={seed}")
        record = run_experiment(run, Store(run.paths.results))
        plans.append(
            (
                tmp_path
                / str(len(plans))
                / "results"
                / "runs"
                / "prune"
                / record["stage_hashes"]["prune"]
                / "plan.json"
            ).read_text()
        )
    assert plans[0] == plans[1] != plans[2]


def test_l1_filter_skips_residual_tied_groups_unless_asked():
    from methods.l1_filter import L1Filter, L1FilterConfig
    from methods.pipeline.channels import prunable_channel_groups
    from models import build_model
    from models.config import ModelConfig

    model = build_model(ModelConfig(name="resnet", widths=[4, 4, 8]), (3, 8, 8), 4, torch.Generator().manual_seed(0))
    groups = prunable_channel_groups(model, torch.zeros(1, 3, 8, 8))
    tied = {g.name for g in groups if len(g.layers) > 1}
    assert tied  # the stem and every stage's summed convs
    skipped = L1Filter(L1FilterConfig()).pruned_groups(groups)
    assert {g.name for g in skipped} == {g.name for g in groups} - tied
    assert all(name.endswith("conv1") and name.startswith("layer") for name in (g.name for g in skipped))
    everything = L1Filter(L1FilterConfig(tied_groups="first_layer")).pruned_groups(groups)
    assert {g.name for g in everything} == {g.name for g in groups}
    assert L1Filter(L1FilterConfig(tied_groups="first_layer")).label() == "l1_filter (tied groups by first layer)"


def test_l1_filter_on_a_resnet_leaves_tied_channels_whole(tmp_path):
    run = make_run(
        tmp_path,
        "dataset=synthetic",
        "dataset.input_shape=[3,8,8]",
        "model=resnet",
        "model.widths=[4,4,8]",
        "train.epochs=1",
        "method=l1_filter",
        "method.sparsity=0.5",
        "method.recovery.epochs=1",
    )
    record = run_experiment(run, Store(run.paths.results))
    exp = Experiment(run, Store(run.paths.results))
    plan = exp.stage_at("prune/" + record["stage_hashes"]["prune"]).plan().keep
    assert plan and all(key.endswith("conv1") and key.startswith("layer") for key in plan)
    assert all(len(kept) == 2 for key, kept in plan.items() if key.startswith("layer1"))
