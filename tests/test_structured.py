
import torch

from runners.experiment import Experiment, run_experiment
from runners.store import Store
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
        plans.append((tmp_path / str(len(plans)) / "results" / "runs" / "prune" / record["stage_hashes"]["prune"] / "plan.json").read_text())
    assert plans[0] == plans[1] != plans[2]
