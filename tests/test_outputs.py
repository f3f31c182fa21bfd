"""The contracts between methods and the runner: a method's own outputs, typed stage results, the record's read
aliases, the method identity in every hash, the one mask format.

- A method written as one module and one YAML, with an output of its own, reaches the record, the report's CSV and
  its W&B run with no other file touched (run in a copy of the repository, through the command line).
- A record written before ``outputs`` existed (a real one, from the store of commit 1b9fa9d) reads back with its
  method's fields under ``outputs``, for the report and the claims alike.
- Every stored stage result reads back into its type and writes out to exactly the JSON it was read from.
- Nothing outside the codecs reads a stage result by its keys.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import pytest
import torch
from torch import nn

from analysis.claims import record_value
from analysis.records import load_local, read_records, record_from_wandb
from foundations.checks import moved_default, nondefault
from foundations.record import RECORD_FIELDS, ExperimentRecord
from foundations.store import STORE_FIELDS, Store
from methods import registry
from methods.pipeline.api import MethodConfig
from methods.pipeline.masks import Prunable, apply_masks, current_masks, folded, folded_state, prunable_names
from methods.pipeline.results import decode
from methods.pipeline.structured import ChannelFacts
from methods.thinet import LayerFacts
from runners.experiment import run_experiment
from runners.metrics import count_params
from tests.conftest import SYNTH, make_run
from tests.mutations import copy_repo
from tests.wandb_offline import offline_runs

ROOT = Path(__file__).resolve().parent.parent
OLD_RECORD = ROOT / "tests" / "data" / "record_1b9fa9d_obd.json"  # written by `runners.reproduce --tier smoke`

TOY = '''"""Toy: the lowest half of |w| in every layer of the dense model removed, then a fine-tune; reports how many
weights it removed (its own output, which no other file knows)."""

from dataclasses import dataclass, field

from methods.pipeline.api import Method, MethodConfig
from methods.pipeline.recover import Recovery, recovery_config
from methods.pipeline.scores import magnitude_scores
from methods.pipeline.select import select


@dataclass
class ToyConfig(MethodConfig):
    name: str = "toy"
    sparsity: float = 0.5
    recovery: Recovery = field(default_factory=lambda: Recovery(epochs=1))


@dataclass
class ToyOutputs:
    removed_weights: int


class Toy(Method):
    name = "toy"
    Config = ToyConfig
    Outputs = ToyOutputs

    def chain(self, stages):
        dense = stages.dense_stage()
        keep = 1 - self.cfg.sparsity

        def prune(model, alive):
            scores = magnitude_scores(model, alive)
            masks = select(scores, alive, scope="layerwise", layer_targets=dict.fromkeys(alive, keep), global_target=keep)
            return masks, {}

        pruned = stages.mask_stage("prune", dense, {"sparsity": self.cfg.sparsity}, prune)
        final = stages.train_stage("recover", pruned, recovery_config(self.cfg.recovery, stages.train_config))
        removed = sum(int((~mask).sum()) for mask in pruned.masks().values())
        return stages.finish(final, pruned=pruned, dense=dense, outputs=ToyOutputs(removed_weights=removed))


METHOD = Toy
'''
TOY_YAML = "defaults:\n  - /schema/method/toy@_here_\n  - _self_\n"


@pytest.mark.slow  # ~1 min: a copy of the repository, one training through the CLI with W&B offline, the report
def test_a_new_method_is_one_module_and_one_yaml_and_its_output_reaches_record_csv_and_wandb(tmp_path):
    repo = copy_repo(tmp_path)
    (repo / "methods" / "toy.py").write_text(TOY)
    (repo / "conf" / "method" / "toy.yaml").write_text(TOY_YAML)
    store, out = tmp_path / "store", tmp_path / "job"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONPATH": str(repo)}
    train = [*SYNTH, "train.epochs=1", "method=toy", "logger=wandb", "logger.artifacts=false", "progress=false"]
    command = [sys.executable, "-m", "runners.train", *train, f"paths.results={store}", f"hydra.run.dir={out}"]
    done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    # lenet300 on the synthetic 1x8x8 images of 4 classes: 64x300, 300x100, 100x4 weights, half of each removed
    removed = (64 * 300 + 300 * 100 + 100 * 4) // 2
    (record,) = [r for r, _ in read_records(store)[0]]
    assert record["outputs"] == {"removed_weights": removed} and record["method"] == "toy"
    assert record["density"] == pytest.approx(0.5)
    # the method's identity is in the experiment's hash without any declaration of its own
    assert record["setting"]["method"] == {"name": "toy", "sparsity": 0.5}
    report = subprocess.run(
        [sys.executable, "-m", "analysis.report", "--results", str(store), "--out", str(tmp_path / "report")],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert report.returncode == 0, report.stderr[-2000:]
    import pandas as pd

    csv = pd.read_csv(tmp_path / "report" / "runs.csv")
    assert csv["outputs.removed_weights"].tolist() == [removed]
    (run,) = offline_runs(out / "wandb")
    assert run.summary["outputs"] == {"removed_weights": removed} and run.job_type == "toy"
    # the same record read back from the W&B summary
    assert record_from_wandb(run.summary, run.config)["outputs"] == {"removed_weights": removed}


def test_an_old_flat_record_reads_with_its_method_fields_as_outputs(tmp_path):
    stored = json.loads(OLD_RECORD.read_text())
    assert "outputs" not in stored and stored["rounds"][0]["round"] == 1  # the old format, as it was written
    record = ExperimentRecord.from_dict(stored)
    assert record.outputs == {"rounds": stored["rounds"], "layer_collapse": False}  # the other methods' Nones dropped
    assert record.test_acc == stored["test_acc"] and record.experiment == "reproduce_smoke"
    assert record.channel_sparsity is None and record.final_stage == stored["final_stage"]
    # in a store: the report's frame and the claims see outputs.<field>
    folder = tmp_path / "store" / "runs" / "experiment" / stored["hash"]
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(OLD_RECORD.read_text())
    (read,) = [r for r, _ in read_records(tmp_path / "store")[0]]
    assert not set(STORE_FIELDS) & set(read)
    measured = stored["rounds"][-1]["measured_loss_increase"]
    assert record_value(read, "outputs.rounds.-1.measured_loss_increase") == measured
    df = load_local(tmp_path / "store")
    assert df["outputs.layer_collapse"].tolist() == [False] and "rounds" not in df.columns
    # a record written now reads back unchanged
    again = record.to_dict()
    assert ExperimentRecord.from_dict(again).to_dict() == again


def test_a_w_and_b_summary_of_an_old_run_reads_as_a_record_of_this_version():
    summary = {k: v for k, v in json.loads(OLD_RECORD.read_text()).items() if k not in STORE_FIELDS}
    read = record_from_wandb(summary, {"experiment_hash": "x", "name": "reproduce_smoke"})
    assert read["outputs"]["rounds"] == summary["rounds"] and "levels" not in read["outputs"]


def test_every_stored_stage_result_writes_back_the_json_it_was_read_from(tmp_path):
    store = Store(tmp_path / "results")
    run_experiment(make_run(tmp_path, *SYNTH, "method=magnitude", "method.recovery.epochs=1"), store)
    structured = ["dataset=synthetic", "model=mlp_bn", "model.widths=[12,8]", "train.epochs=1"]
    run_experiment(make_run(tmp_path, *structured, "method=l1_filter", "method.recovery.epochs=1"), store)
    thinet = [*structured, "method=thinet", "method.n_images=64", "method.layer_fine_tune_iterations=2"]
    record = run_experiment(make_run(tmp_path, *thinet, "method.recovery.epochs=1"), store)
    # ThiNet's fine-tune after layer k is a train stage with the data order the code before it used inside the
    # method: seeds.data + 1000 · k (k from 1), so its numbers are those of the earlier version
    tunes = {n: h for n, h in record["stage_hashes"].items() if n.startswith("fine_tune")}
    assert sorted(tunes) == ["fine_tune1"]  # two prunable layers of mlp_bn: a fine-tune between them
    for name, digest in tunes.items():
        k = int(name.removeprefix("fine_tune"))
        assert store.at(f"train/{digest}").config()["spec"]["data_seed"] == record["seeds"]["data"] + 1000 * k
    seen = set()
    for folder in sorted((tmp_path / "results" / "runs").glob("*/*")):
        if folder.parent.name == "experiment" or not folder.is_dir():
            continue
        stage = store.at(f"{folder.parent.name}/{folder.name}")
        stored = {k: v for k, v in stage.result_json.items() if k not in (*STORE_FIELDS, "wall_time_s")}
        facts = LayerFacts if "layer" in stored else ChannelFacts
        result = decode(stage.kind, stored, has_plan=stage.has_plan(), facts=facts)
        assert result.to_json() == stored, stage.ref
        seen.add((stage.kind, type(result).__name__))
    assert seen == {
        ("init", "InitResult"),
        ("train", "TrainResult"),
        ("prune", "MaskResult"),
        ("prune", "PlanResult"),
    }


PACKAGES = ("foundations", "datasets", "models", "methods", "runners", "analysis")
# the codecs: where a stored result is read by its keys (and the store's own bookkeeping)
CODECS = {"methods/pipeline/results.py", "foundations/store.py", "foundations/record.py"}


def _subscripts(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, attribute) of every ``<x>.result[...]``, ``<x>.result.get(...)``, ``<x>.result_json[...]`` and
    ``<x>.result_json.get(...)`` in a module, and of the same on a bare name ``result``."""
    found = []
    for node in ast.walk(tree):
        target = node.value if isinstance(node, ast.Subscript) else None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            target = node.func.value
        if isinstance(target, ast.Attribute) and target.attr in ("result", "result_json"):
            found.append((node.lineno, target.attr))
        if isinstance(target, ast.Name) and target.id == "result":
            found.append((node.lineno, target.id))
    return found


def test_no_stage_result_is_read_by_its_keys_outside_its_codec():
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative in CODECS:
                continue
            text = path.read_text()
            offenders += [f"{relative}:{line}" for line, _ in _subscripts(ast.parse(text))]
            offenders += [f"{relative}: result[" for _ in range(text.count('result["'))]
    assert offenders == []


def test_the_check_finds_a_read_by_key():
    assert _subscripts(ast.parse('x = stage.result["selected"]\ny = stage.result_json.get("a")')) == [
        (1, "result"),
        (2, "result_json"),
    ]


def test_the_record_has_no_field_of_one_method():
    for name, method in registry().items():
        own = {f.name for f in fields(method.Outputs)}
        assert not own & set(RECORD_FIELDS), (name, own & set(RECORD_FIELDS))
    # what the methods report of their own before outputs existed is no record field any more
    flat = json.loads(OLD_RECORD.read_text())
    legacy = {"rounds", "levels", "layer_collapse", "thinet_reconstruction", "scratch_flops", "budget", "source"}
    assert legacy <= set(flat) and not legacy & set(RECORD_FIELDS)


def test_a_method_config_hashes_its_name_and_sparsity_without_declaring_it():
    @dataclass
    class NewConfig(MethodConfig):
        name: str = "new"
        sparsity: float = 0.7
        strength: float = 1.0

    assert nondefault(NewConfig()) == {"name": "new", "sparsity": 0.7}
    assert nondefault(NewConfig(strength=2.0)) == {"name": "new", "sparsity": 0.7, "strength": 2.0}
    assert nondefault(MethodConfig()) == {}  # dense: nothing

    @dataclass
    class Legacy(MethodConfig):  # a method whose hashes were taken against its own defaults (slimming)
        name: str = moved_default("legacy", hashed_as="legacy")

    assert nondefault(Legacy()) == {}


def test_the_mask_format_names_a_root_parameter_as_named_parameters_does():
    model = nn.Linear(6, 4)
    names = prunable_names(nn.Sequential(model), Prunable())
    assert names == ["0.weight"]
    masks = {"weight": torch.arange(24).reshape(4, 6) % 3 != 0}
    apply_masks(model, masks)
    assert list(current_masks(model)) == [n for n, _ in nn.Linear(6, 4).named_parameters() if n == "weight"]
    assert count_params(model)["params_nonzero"] == 16 + 4  # the masked weight's survivors and the bias
    plain = folded_state(model.state_dict())
    assert set(plain) == {"weight", "bias"} and torch.equal(plain["weight"], folded(model).weight)
    assert torch.equal(plain["weight"] != 0, masks["weight"] & (model.weight_orig != 0))
