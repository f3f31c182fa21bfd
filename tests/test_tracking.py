"""W&B mirrors the store and never decides whether a run succeeds."""

import sys
import types

import pytest

from runners.experiment import run_experiment
from runners.store import Store
from runners.tracking import WandbTracker
from tests.conftest import SYNTH, make_run


class FakeRun:
    def __init__(self, fail_on=None):
        self.logged, self.summary, self.finished, self.fail_on = [], {}, False, fail_on

    def log(self, data, step=None):
        if self.fail_on == "log":
            raise ConnectionError("server unreachable")
        self.logged.append(data)

    def finish(self):
        self.finished = True


def fake_wandb(monkeypatch, run=None, init_error=None):
    module = types.SimpleNamespace()

    def init(**kwargs):
        module.kwargs = kwargs
        if init_error:
            raise init_error
        return run

    module.init = init
    module.Settings = lambda **kw: kw
    module.Table = lambda columns, data: ("table", columns, data)
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def tracker(tmp_path, mode="offline"):
    return WandbTracker(project="p", entity=None, mode=mode, run_dir=tmp_path, group="g", job_type="magnitude",
                        tags=["magnitude", "lenet300", "synthetic"], config={"a": 1})


def test_run_is_mirrored_with_group_tags_metrics_summary_and_table(tmp_path, monkeypatch):
    run = FakeRun()
    wandb = fake_wandb(monkeypatch, run)
    with tracker(tmp_path) as t:
        record = run_experiment(make_run(tmp_path, *SYNTH), Store(tmp_path / "results"), t)
        t.summary({"test_acc": record["test_acc"]})
        t.table("per_layer_density", ["tensor", "density"], [[k, v] for k, v in record["per_layer_density"].items()])
    assert wandb.kwargs["group"] == "g" and wandb.kwargs["job_type"] == "magnitude" and wandb.kwargs["mode"] == "offline"
    assert any("dense/val_acc" in row for row in run.logged)
    assert run.summary["test_acc"] == record["test_acc"] and run.finished


def test_online_without_key_falls_back_to_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    wandb = fake_wandb(monkeypatch, FakeRun())
    tracker(tmp_path, mode="online").close()
    assert wandb.kwargs["mode"] == "offline"


@pytest.mark.parametrize("failure", ["init", "log"])
def test_a_broken_wandb_never_fails_the_experiment(tmp_path, monkeypatch, failure):
    fake_wandb(monkeypatch, FakeRun(fail_on="log"), init_error=RuntimeError("boom") if failure == "init" else None)
    with tracker(tmp_path) as t:
        record = run_experiment(make_run(tmp_path, *SYNTH), Store(tmp_path / "results"), t)
        t.summary(record)
    assert record["status"] == "ok"


def test_real_wandb_offline_run_is_written_under_the_run_folder(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    with tracker(tmp_path) as t:
        t.log({"x": 1.0}, step=1)
        t.summary({"test_acc": 0.5})
    assert list((tmp_path / "wandb").glob("offline-run-*"))
