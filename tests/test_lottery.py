import pytest
import torch

from foundations.errors import UserError
from foundations.store import Store
from runners.experiment import run_experiment
from tests.conftest import SYNTH, make_run

LOTTERY = [*SYNTH, "method=lottery", "train.epochs=1"]


def test_higher_target_reuses_every_earlier_level(tmp_path):
    first = run_experiment(make_run(tmp_path, *LOTTERY, "method.sparsity=0.5"), Store(tmp_path / "results"))
    store = Store(tmp_path / "results")
    second = run_experiment(make_run(tmp_path, *LOTTERY, "method.sparsity=0.7"), store)
    shared = [name for name in first["stage_hashes"] if name.startswith(("prune", "level"))][
        :-2
    ]  # all but the adjusted last level
    assert shared and all(second["stage_hashes"][n] == first["stage_hashes"][n] for n in shared)
    assert all(second["stages_reused"][n] for n in shared)
    assert abs(second["density"] - 0.3) < 1e-3 and abs(first["density"] - 0.5) < 1e-3
    assert [lvl["level"] for lvl in second["outputs"]["levels"]] == list(range(1, len(second["outputs"]["levels"]) + 1))


@pytest.mark.parametrize("k", [0, 5])
def test_levels_restart_from_the_init_or_the_independently_reproduced_iteration_k(tmp_path, k):
    import yaml

    from foundations.training import TrainConfig, train
    from runners.experiment import Experiment

    args = [*LOTTERY, "train.schedule=constant", "method.sparsity=0.36", f"method.rewind_iteration={k}"]
    record = run_experiment(make_run(tmp_path, *args), Store(tmp_path / "results"))
    runs, hashes = tmp_path / "results" / "runs", record["stage_hashes"]
    last = yaml.safe_load(
        (runs / "train" / hashes[f"level{len(record['outputs']['levels'])}"] / "config.yaml").read_text()
    )
    if k == 0:
        assert last["parents"]["start"] == hashes["init"] and last["spec"]["start_iteration"] == 0
        return
    assert last["parents"]["start"] == hashes["level0"]
    assert last["spec"]["file"] == f"snapshot_{k}.safetensors" and last["spec"]["start_iteration"] == k
    # independent answer: k plain iterations from the saved init reproduce the rewind point bit for bit
    exp = Experiment(make_run(tmp_path, *args), Store(tmp_path / "results"))
    model = exp.model_from(exp.stage_at("init/" + hashes["init"]))
    cfg = exp.train_config
    train(
        model,
        exp.data,
        TrainConfig(**{**vars(cfg), "iterations": k, "eval_every": k}),
        data_seed=exp.seed("data"),
        device=exp.device,
        progress=False,
    )
    snapshot = exp.stage_at("train/" + hashes["level0"]).weights(k)
    assert all(torch.equal(model.state_dict()[n], snapshot[n]) for n in snapshot)


def test_rewinding_beyond_training_is_refused_before_anything_is_written(tmp_path):
    run = make_run(tmp_path, *LOTTERY, "method.rewind_iteration=100000")
    with pytest.raises(UserError, match="method.rewind_iteration"):
        run_experiment(run, Store(tmp_path / "results"))
    assert not (tmp_path / "results" / "runs").exists()
