"""W&B mirrors the store and never decides whether a run succeeds. The real-W&B tests run `runners.train` as a user
does, in offline mode, and read the offline runs back from their transaction logs (tests/wandb_offline.py)."""

import glob
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pandas as pd
import pytest

from foundations.errors import UserError
from foundations.record import STORE_FIELDS
from foundations.store import Store
from runners.config import LoggerConfig
from runners.experiment import run_experiment
from runners.tracking import RunIdentity, WandbTracker
from tests.conftest import SYNTH, make_run
from tests.wandb_offline import offline_runs, read_run

ROOT = Path(__file__).resolve().parent.parent
FIELDS = {
    "label": "random (global)",
    "method": "random",
    "kind": "unstructured",
    "model": "mlp_bn",
    "dataset": "fashion_mnist",
    "experiment": "survey_mlp",
    "sparsity": 0.9,
    "seed": 2,
}


class FakeRun:
    def __init__(self, fail_on=None):
        self.logged, self.summary, self.finished, self.fail_on = [], {}, None, fail_on
        self.tags, self.artifacts, self.metrics = (), [], []

    def log(self, data, step=None):
        if self.fail_on == "log":
            raise ConnectionError("server unreachable")
        self.logged.append(data)

    def define_metric(self, name, **kwargs):
        self.metrics.append((name, kwargs))

    def log_artifact(self, artifact, aliases):
        self.artifacts.append((artifact, aliases))

    def finish(self, exit_code=0):
        self.finished = exit_code


class FakeArtifact:
    def __init__(self, name, type, metadata):
        self.name, self.type, self.metadata, self.refs, self.files = name, type, metadata, [], []

    def add_reference(self, uri, name=None):
        self.refs.append((uri, name))

    def add_file(self, path, name=None):
        self.files.append((path, name))


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
    module.Artifact = FakeArtifact
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


IDENTITY = RunIdentity.of("{label} @ {sparsity:g} s{seed}", "0123456789abcdef", FIELDS)


def tracker(tmp_path, mode="offline", **kwargs):
    return WandbTracker(
        project="p", entity=None, mode=mode, run_dir=tmp_path, identity=IDENTITY, config={"a": 1}, **kwargs
    )


def test_identity_names_tags_groups_and_ids_the_run():
    assert IDENTITY.name == "random (global) @ 0.9 s2"
    assert IDENTITY.tags == [
        "random",
        "random (global)",
        "kind:unstructured",
        "model:mlp_bn",
        "dataset:fashion_mnist",
        "target:0.90",
        "seed:2",
    ]
    assert (IDENTITY.id, IDENTITY.group, IDENTITY.job_type) == ("0123456789abcdef", "survey_mlp", "random")
    assert RunIdentity.of("{method}-{model}-{seed:03d}", "x", FIELDS).name == "random-mlp_bn-002"


def test_a_bad_run_name_stops_at_validation():
    with pytest.raises(UserError, match=r"^logger.run_name: '\{lable\} s\{seed\}' cannot be formatted"):
        LoggerConfig(run_name="{lable} s{seed}")


def test_run_is_mirrored_with_identity_stage_curves_summary_and_artifact(tmp_path, monkeypatch):
    run = FakeRun()
    wandb = fake_wandb(monkeypatch, run)
    store_file = tmp_path / "model.safetensors"
    store_file.write_bytes(b"weights")
    with tracker(tmp_path) as t:
        record = run_experiment(make_run(tmp_path, *SYNTH), Store(tmp_path / "results"), t)
        t.log_stage("dense", [{"iteration": 10, "val_acc": 0.5}, {"iteration": 20, "val_acc": 0.6}], reused=True)
        t.summary({**record, "files": {"a": "b"}, "hash": "h", "parents": {}, "stage_kind": "experiment"})
        t.artifact("random_global-mlp_bn-fashion_mnist", [store_file], alias="feedface")
    kwargs = wandb.kwargs
    assert (kwargs["id"], kwargs["resume"], kwargs["name"]) == ("0123456789abcdef", "allow", IDENTITY.name)
    assert (kwargs["group"], kwargs["job_type"], kwargs["tags"]) == ("survey_mlp", "random", IDENTITY.tags)
    assert ("dense/*", {"step_metric": "dense/iteration"}) in run.metrics
    assert {"dense/iteration": 20, "dense/val_acc": 0.6, "dense/reused": 1} in run.logged
    assert run.summary["test_acc"] == record["test_acc"] and not set(STORE_FIELDS) & set(run.summary)
    ((artifact, aliases),) = run.artifacts
    assert artifact.type == "model" and aliases == ["feedface"]
    assert artifact.refs == [(f"file://{store_file.resolve()}", "model.safetensors")] and not artifact.files
    assert run.finished == 0


def test_artifacts_can_be_copied_or_switched_off(tmp_path, monkeypatch):
    store_file = tmp_path / "plan.json"
    store_file.write_text("{}")
    for kwargs, expected in (({"reference_artifacts": False}, 1), ({"artifacts": False}, 0)):
        run = FakeRun()
        fake_wandb(monkeypatch, run)
        with tracker(tmp_path, **kwargs) as t:
            t.artifact("a", [store_file], alias="feedface")
        assert len(run.artifacts) == expected
        if expected:
            assert run.artifacts[0][0].files == [(str(store_file), "plan.json")] and not run.artifacts[0][0].refs


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
        t.log_stage("dense", [{"iteration": 1}])
        t.summary(record)
    assert record["status"] == "ok"


def test_progress_bars_draw_only_on_a_terminal(monkeypatch):
    import io

    from foundations.progress import progress_bar

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for stream, enabled, drawn in ((io.StringIO(), True, False), (Terminal(), True, True), (Terminal(), False, False)):
        monkeypatch.setattr(sys, "stderr", stream)
        for _ in progress_bar(range(3), enabled=enabled, desc="bar"):
            pass
        assert ("bar" in stream.getvalue()) == drawn


# ------------------------------------------------------------------------------------------ real W&B, offline


def wandb_env(tmp_path) -> dict:
    """Offline W&B whose own files (settings, cache, artifact staging) stay in tmp_path."""
    home = tmp_path / "wandb-home"
    return {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "PYTHONPATH": str(ROOT),
        "WANDB_CONFIG_DIR": str(home / "config"),
        "WANDB_CACHE_DIR": str(home / "cache"),
        "WANDB_DATA_DIR": str(home / "data"),
        "WANDB_ARTIFACT_DIR": str(home / "artifacts"),
    }


def train(cwd: Path, *args: str, multirun: bool = False, logger: str = "wandb") -> subprocess.CompletedProcess:
    """``python -m runners.train`` in ``cwd``, so that outputs/ and multirun/ land where a user's would."""
    cwd.mkdir(parents=True, exist_ok=True)
    flags = ["-m"] if multirun else []
    proc = subprocess.run(
        [sys.executable, "-m", "runners.train", *flags, f"logger={logger}", "threads=1", *args],
        cwd=cwd,
        env=wandb_env(cwd),
        capture_output=True,
        timeout=300,
    )
    # decoded by hand: text=True would turn a progress bar's carriage returns into newlines
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


TINY = ["name=tiny", *SYNTH, "method=dense,magnitude,lottery", "method.sparsity=0.8"]
JOBS = 3


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A real three-job multirun (dense, magnitude, lottery) in its own folder, then the same command again."""
    cwd = tmp_path_factory.mktemp("sweep")
    first = train(cwd, *TINY, multirun=True)
    assert first.returncode == 0, first.stderr[-3000:]
    folders = sorted(cwd.rglob("offline-run-*"))
    second = train(cwd, *TINY, multirun=True)
    assert second.returncode == 0, second.stderr[-3000:]
    return cwd, folders, first, second


def store_record(cwd: Path, digest: str) -> dict:
    return json.loads((cwd / "results" / "runs" / "experiment" / digest / "result.json").read_text())


@pytest.mark.slow
def test_each_job_is_one_named_tagged_grouped_run_with_a_clean_summary(sweep):
    cwd, folders, first, _ = sweep
    runs = {run.job_type: run for run in map(read_run, folders)}
    assert sorted(runs) == ["dense", "lottery", "magnitude"]
    mag = runs["magnitude"]
    assert mag.name == "magnitude @ 0.8 s0" and runs["dense"].name == "dense @ 0 s0"
    assert mag.group == "tiny" and runs["dense"].group == "tiny"
    assert set(mag.tags) == {
        "magnitude",
        "kind:unstructured",
        "model:lenet300",
        "dataset:synthetic",
        "target:0.80",
        "seed:0",
        "achieved:0.80",
    }
    assert "method=magnitude" in mag.config["hydra_overrides"] and mag.config["method"]["name"] == "magnitude"
    for run in runs.values():
        record = store_record(cwd, run.id)  # the run id is the experiment's folder in the store
        assert run.config["experiment_hash"] == run.id and run.exit_code == 0
        assert not set(STORE_FIELDS) & set(run.summary)
        assert {k: run.summary[k] for k in record if k not in STORE_FIELDS} == {
            k: v for k, v in record.items() if k not in STORE_FIELDS
        }
    steps = mag.curve("recover1/iteration")
    assert len(mag.curve("recover1/val_acc")) == len(steps) > 0 and steps == sorted(steps)


@pytest.mark.slow
def test_the_final_stage_is_a_model_artifact_referencing_the_store(sweep):
    cwd, folders, _, _ = sweep
    for run in map(read_run, folders):
        record = store_record(cwd, run.id)
        final = record["final_stage"].split("/")[1]
        (model,) = [a for a in run.artifacts if a["type"] == "model"]
        assert final in model["aliases"] and model["metadata"]["test_acc"] == record["test_acc"]
        expected = {"model.safetensors"} | ({"masks.safetensors"} if run.job_type != "dense" else set())
        assert set(model["entries"]) == expected
        for name, ref in model["entries"].items():
            assert ref == f"file://{cwd / 'results' / 'runs' / 'train' / final / name}"


@pytest.mark.slow
def test_a_second_identical_sweep_adds_no_run(sweep):
    cwd, folders, _, second = sweep
    assert sorted(cwd.rglob("offline-run-*")) == folders
    assert (second.stdout + second.stderr).count("is already in the store and in W&B: no new W&B run") == JOBS


@pytest.mark.slow
def test_a_sweep_logged_to_a_file_holds_lines_not_progress_bar_frames(sweep):
    _, _, first, _ = sweep
    log = first.stdout + first.stderr
    # tqdm writes frames with \r, or one line per frame when it thinks the stream is a terminal: neither may be here
    assert "\r" not in log and not re.search(r"\d+%\|", log), log
    assert len(log.splitlines()) < 40 * JOBS, log  # a job's summary is ~20 lines; per-batch lines would be hundreds
    assert log.count("sweep: ") == JOBS and log.count("test_acc=") == JOBS  # a progress line and a summary per job


def readme_sync_globs() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [m.group(1) for m in re.finditer(r"^wandb sync (\S+)", text, flags=re.M)]


@pytest.mark.slow
def test_the_readme_sync_commands_find_every_offline_run(sweep, tmp_path):
    cwd, folders, _, _ = sweep
    single = train(tmp_path / "single", "name=one", *SYNTH)
    assert single.returncode == 0, single.stderr[-3000:]
    globs = readme_sync_globs()
    assert len(globs) >= 2, globs
    for where, expected in (
        (cwd, folders),
        (tmp_path / "single", sorted((tmp_path / "single").rglob("offline-run-*"))),
    ):
        matched = sorted({Path(where, p) for g in globs for p in glob.glob(g, root_dir=where)})
        assert matched == expected and len(expected) == (JOBS if where == cwd else 1)
    # and wandb itself accepts them: a dry run lists the transaction log of every job
    cmd = next(g for g in globs if g.startswith("multirun/"))
    dry = subprocess.run(
        f"{Path(sys.executable).parent / 'wandb'} sync --dry-run {cmd}",
        shell=True,
        cwd=cwd,
        env=wandb_env(cwd),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert f"Would sync {len(folders)} run(s)" in dry.stdout + dry.stderr, dry.stdout + dry.stderr


def test_bad_input_after_the_run_opened_leaves_no_run(tmp_path):
    result = train(tmp_path, *SYNTH[1:], "dataset=fashion_mnist", "dataset.data_dir=/nonexistent")
    assert result.returncode == 2 and "fashion_mnist" in result.stderr
    assert not list(tmp_path.rglob("offline-run-*"))


class ApiRun:
    """What ``wandb.Api().runs()`` yields, filled from a synced offline run."""

    def __init__(self, run, run_id=None):
        self.id = run_id or run.id
        self.path, self.job_type, self.state = ["ent", "proj", self.id], run.job_type, "finished"
        self.summary, self.config = run.summary, run.config


@pytest.mark.slow
def test_source_wandb_reads_back_the_stores_records_once_per_experiment(sweep):
    from analysis.records import load_local, load_wandb

    cwd, folders, _, _ = sweep
    runs = [read_run(p) for p in folders]
    api = types.SimpleNamespace(runs=lambda path: [ApiRun(r) for r in runs] + [ApiRun(runs[0], "duplicate")])
    remote = load_wandb("ent", "proj", api=api)
    local = load_local(cwd / "results")  # the store's bookkeeping is left out by both loaders
    assert len(remote) == JOBS
    pd.testing.assert_frame_equal(remote.drop(columns="source"), local.drop(columns="source"))


@pytest.mark.slow
def test_report_run_is_in_the_sweeps_group_with_its_inputs_and_tables(sweep, tmp_path):
    cwd, _, _, _ = sweep
    out = tmp_path / "report"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "analysis.report",
            "--results",
            str(cwd / "results"),
            "--experiment",
            "tiny",
            "--out",
            str(out),
            "--wandb",
        ],
        cwd=ROOT,
        env=wandb_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = offline_runs(out / "wandb")
    assert (run.job_type, run.group, run.name) == ("report", "tiny", "report tiny")
    assert run.config["records"] == JOBS and run.config["experiments"] == ["tiny"]
    assert run.config["experiment_filter"] == ["tiny"] and run.config["source"] == "local"
    assert sorted(run.config["record_sources"]) == sorted(
        str(p) for p in (cwd / "results" / "runs" / "experiment").glob("*/result.json")
    )
    logged = {k: v for row in run.history for k, v in row.items() if isinstance(v, dict)}
    tables = {k for k, v in logged.items() if k.startswith("tables/") and v.get("_type") == "table-file"}
    figures = {k for k, v in logged.items() if k.startswith("figures/") and v.get("_type") == "image-file"}
    assert tables == {f"tables/{p.stem}" for p in (out / "tables").glob("*.csv")} and tables
    assert figures == {f"figures/{p.stem}" for p in (out / "figures").glob("*.png")} and figures


def stored_rows(cwd: Path, digest: str) -> list[dict]:
    path = cwd / "results" / "runs" / "train" / digest / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def logged_table(run, key: str) -> dict:
    """A W&B table the run logged, read from its file in the offline run folder."""
    return json.loads((run.folder / "files" / run.summary[key]["path"]).read_text())


@pytest.mark.slow
def test_each_stage_has_its_own_axis_and_reused_stages_come_from_the_store(sweep):
    cwd, folders, _, _ = sweep
    runs = {run.job_type: run for run in map(read_run, folders)}
    for run in runs.values():
        record = store_record(cwd, run.id)
        train_stages = [
            n for n, h in record["stage_hashes"].items() if (cwd / "results" / "runs" / "train" / h).is_dir()
        ]
        for name in train_stages:
            rows = stored_rows(cwd, record["stage_hashes"][name])
            assert {"name": f"{name}/*", "step_metric": f"{name}/iteration", "hidden": False} in run.metrics
            assert run.curve(f"{name}/iteration") == [r["iteration"] for r in rows], (run.job_type, name)
            assert run.curve(f"{name}/val_acc") == [r["val_acc"] for r in rows]
            assert run.curve(f"{name}/reused") == [int(record["stages_reused"][name])] * len(rows)
        stages = logged_table(run, "stages_table")
        assert sorted(row[:3] for row in stages["data"]) == sorted(
            [n, h, record["stages_reused"][n]] for n, h in record["stage_hashes"].items()
        )
    # the dense model was trained by the dense job: magnitude and lottery (as its level 0) show it as reused
    assert store_record(cwd, runs["magnitude"].id)["stages_reused"]["dense"] is True
    assert runs["lottery"].curve("level0/reused") and set(runs["lottery"].curve("level0/reused")) == {1}
    assert set(runs["lottery"].curve("level1/reused")) == {0}
    levels = logged_table(runs["lottery"], "levels_table")
    record = store_record(cwd, runs["lottery"].id)
    assert levels["columns"] == ["level", "density", "early_stop_iteration", "test_acc"]
    assert (
        levels["data"] == [[row[c] for c in levels["columns"]] for row in record["outputs"]["levels"]]
        and len(levels["data"]) > 3
    )
    rounds = logged_table(runs["magnitude"], "rounds_table")
    magnitude = store_record(cwd, runs["magnitude"].id)
    assert [dict(zip(rounds["columns"], row)) for row in rounds["data"]] == magnitude["outputs"]["rounds"]


@pytest.mark.slow
def test_a_record_made_without_wandb_gets_one_run_with_its_whole_history(tmp_path):
    args = ["name=late", *SYNTH, "method=magnitude", "method.sparsity=0.5"]
    assert train(tmp_path, *args, logger="none").returncode == 0
    assert not list(tmp_path.rglob("offline-run-*"))
    assert train(tmp_path, *args).returncode == 0
    (run,) = offline_runs(tmp_path)
    record = store_record(tmp_path, run.id)
    for name in ("dense", "recover1"):
        rows = stored_rows(tmp_path, record["stage_hashes"][name])
        assert run.curve(f"{name}/val_acc") == [r["val_acc"] for r in rows] and set(run.curve(f"{name}/reused")) == {1}
    assert run.summary["test_acc"] == record["test_acc"] and run.name == "magnitude @ 0.5 s0"
    third = train(tmp_path, *args)
    assert third.returncode == 0 and len(offline_runs(tmp_path)) == 1
