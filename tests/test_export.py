"""prunelab-export: the final model of an experiment as a standalone artefact, verified when written, loadable
without prunelab."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from foundations.errors import UserError
from methods.pipeline.masks import folded
from runners import export as exporter
from runners.experiment import Experiment, run_experiment
from runners.store import Store
from tests.conftest import make_run

ROOT = Path(__file__).resolve().parent.parent
MODEL = [
    "dataset=synthetic",
    "dataset.input_shape=[3,8,8]",
    "dataset.num_train=80",
    "dataset.num_test=16",
    "dataset.val_size=16",
    "train.epochs=1",
    "train.batch_size=32",
    "model=torchvision",
    "model.arch=mobilenet_v2",
    "model.small_input=true",
    "+model.kwargs.width_mult=0.25",
    "method.recovery.epochs=1",
]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A masked (magnitude) and a compacted (l1_filter) experiment in one store, and their stored final models."""
    root = tmp_path_factory.mktemp("store")
    out = {}
    for method in ("magnitude", "l1_filter"):
        run = make_run(root, *MODEL, f"method={method}", f"method.sparsity={0.9 if method == 'magnitude' else 0.6}")
        store = Store(run.paths.results)
        record = run_experiment(run, store)
        exp = Experiment(run, store)
        final = store.at(record["final_stage"])
        path = store.stage_dir("experiment", "x").parent  # runs/experiment/
        record_path = next(
            p / "result.json"
            for p in path.iterdir()
            if p.is_dir()
            if json.loads((p / "result.json").read_text()).get("method") == method
        )
        out[method] = {
            "record": record,
            "path": record_path,
            "final": final,
            "store": store,
            "model": folded(exp.model_from(final)).cpu().eval(),
            "shape": exp.data.input_shape,
        }
    return out


def batch(shape, n=5, seed=7):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def test_state_dict_of_a_masked_model_folds_the_masks_and_stores_them_sparse(done, tmp_path):
    case = done["magnitude"]
    info = exporter.export(str(case["path"]), "state_dict", tmp_path / "out", sparse=True)
    assert info["files"] == ["module.pt", "weights.safetensors", "weights_sparse.pt"]
    assert set(info["verified"]) == set(info["files"]) and all(
        v["max_abs_diff"] == 0 for v in info["verified"].values()
    )
    state = load_file(str(tmp_path / "out" / "weights.safetensors"))
    expect = case["model"].state_dict()
    assert state.keys() == expect.keys() and all(torch.equal(state[k], expect[k]) for k in state)
    masks = case["final"].masks()
    assert all(int((state[n] != 0).sum()) <= int(m.sum()) for n, m in masks.items())  # pruned entries are 0
    assert info["params_nonzero"] == case["record"]["params_nonzero"]
    stored = torch.load(tmp_path / "out" / "weights_sparse.pt", weights_only=True)
    assert set(masks) == set(info["masked_tensors"])
    smaller = {n for n, m in masks.items() if 8 * int(m.sum()) + 4 * (m.shape[0] + 1) < 4 * m.numel()}
    assert set(stored["sparse"]) == smaller and len(smaller) > len(masks) / 2  # CSR wherever it is smaller
    dense = {**stored["dense"], **{k: v.to_dense().reshape(stored["shapes"][k]) for k, v in stored["sparse"].items()}}
    assert dense.keys() == state.keys() and all(torch.equal(dense[k], state[k]) for k in state)
    assert info["bytes"]["weights_sparse.pt"] < 0.5 * info["bytes"]["weights.safetensors"]  # 10% density
    assert json.loads((tmp_path / "out" / "export_state_dict.json").read_text())["source"] == case["final"].ref


def test_structured_export_is_the_compacted_architecture_with_its_plan(done, tmp_path):
    case = done["l1_filter"]
    info = exporter.export(str(case["path"]), "state_dict", tmp_path / "out")
    assert info["structured"] and "plan.json" in info["files"]
    assert json.loads((tmp_path / "out" / "plan.json").read_text())["keep"] == case["final"].plan().keep
    module = torch.load(tmp_path / "out" / "module.pt", weights_only=False).eval()
    assert sum(p.numel() for p in module.parameters()) == case["record"]["params_nonzero"]
    x = batch(case["shape"])
    with torch.no_grad():
        assert torch.equal(module(x), case["model"](x))


@pytest.mark.parametrize(
    "fmt,file", [("torchscript", "model.torchscript.pt"), pytest.param("export", "model.pt2", marks=pytest.mark.slow)]
)  # ~10 s
def test_program_formats_reproduce_the_model_at_any_batch_size(done, tmp_path, fmt, file):
    case = done["l1_filter"]
    stage = case["final"]
    info = exporter.export(stage.ref, fmt, tmp_path / "out", results=str(case["store"].root))  # a kind/hash ref
    assert info["files"] == [file] and info["verified"][file]["max_abs_diff"] <= 1e-5
    path = str(tmp_path / "out" / file)
    loaded = torch.jit.load(path) if fmt == "torchscript" else torch.export.load(path).module()
    x = batch(case["shape"], n=3)  # not the verification batch's size
    with torch.no_grad():
        assert torch.allclose(loaded(x), case["model"](x), atol=1e-5)


def test_a_failed_check_writes_nothing(done, tmp_path, monkeypatch):
    real = exporter._torchscript

    def planted(model, out, x):  # a loader that is off by a little: the check must catch it
        checks = real(model, out, x)
        return {name: (lambda x, run=run: run(x) + 1e-3) for name, run in checks.items()}

    monkeypatch.setattr(exporter, "_torchscript", planted)
    with pytest.raises(RuntimeError, match=r"model\.torchscript\.pt does not reproduce the stored model"):
        exporter.export(str(done["l1_filter"]["path"]), "torchscript", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_bad_requests_are_one_line(done, tmp_path):
    with pytest.raises(UserError, match=r"^export --sparse: stage train/\w+ has no weight masks"):
        exporter.export(str(done["l1_filter"]["path"]), "state_dict", tmp_path / "a", sparse=True)
    with pytest.raises(UserError, match=r"^export --sparse: only the state_dict format"):
        exporter.export(str(done["magnitude"]["path"]), "torchscript", tmp_path / "a", sparse=True)
    with pytest.raises(UserError, match=r"^stage train/0123456789abcdef: missing or corrupt"):
        exporter.export("train/0123456789abcdef", "state_dict", tmp_path / "a", results=str(tmp_path))
    (tmp_path / "failed.json").write_text(json.dumps({"status": "failed", "error": "boom"}))
    with pytest.raises(UserError, match=r"is not the record of a finished experiment \(status 'failed'\)"):
        exporter.export(str(tmp_path / "failed.json"), "state_dict", tmp_path / "a")
    assert not (tmp_path / "a").exists()
    result = subprocess.run(
        [sys.executable, "-m", "runners.export", "nothing/here/at/all", "--out", str(tmp_path / "b")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (
        result.returncode == 2
        and result.stderr.strip().count("\n") == 0
        and "neither an experiment record" in result.stderr
    )


BLOCKER = """
import importlib.abc, sys
BLOCKED = {"foundations", "datasets", "models", "methods", "runners", "analysis", "torch_pruning", "hydra", "omegaconf"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: the artefact must load without prunelab")
sys.meta_path.insert(0, Block())
"""


@pytest.mark.slow  # three exports and a second interpreter
def test_artefacts_load_without_prunelab(done, tmp_path):
    """The README's snippets, in a process where prunelab (and torch-pruning, Hydra) cannot be imported."""
    case = done["l1_filter"]
    out = tmp_path / "out"
    for fmt in ("state_dict", "torchscript", "export"):
        exporter.export(str(case["path"]), fmt, out)
    x = batch(case["shape"])
    with torch.no_grad():
        torch.save({"x": x, "y": case["model"](x)}, tmp_path / "io.pt")
    script = (
        BLOCKER
        + f"""
import torch, warnings
warnings.simplefilter("ignore")
io = torch.load({str(tmp_path / "io.pt")!r})
out = {str(out)!r}
loaded = {{
    "module.pt": torch.load(out + "/module.pt", weights_only=False).eval(),
    "torchscript": torch.jit.load(out + "/model.torchscript.pt").eval(),
    "export": torch.export.load(out + "/model.pt2").module(),
}}
try:
    import models
except ImportError:
    pass
else:
    raise SystemExit("the blocker does not work")
with torch.no_grad():
    for name, model in loaded.items():
        assert torch.allclose(model(io["x"]), io["y"], atol=1e-5), name
print("ok", sorted(loaded))
"""
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok ['export', 'module.pt', 'torchscript']"


@pytest.mark.slow  # torch's dynamo ONNX exporter takes ~10 s
def test_onnx_checked_with_onnxruntime(done, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    case = done["magnitude"]
    info = exporter.export(str(case["path"]), "onnx", tmp_path / "out")
    assert info["files"] == ["model.onnx"] and info["verified"]["model.onnx"]["max_abs_diff"] <= 1e-4
    session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"))
    x = batch(case["shape"], n=3)
    with torch.no_grad():
        expect = case["model"](x).numpy()
    assert abs(session.run(None, {"input": x.numpy()})[0] - expect).max() <= 1e-4


@pytest.mark.slow  # a run through the CLI, then an export and a report from another folder (~1 min)
def test_the_record_a_run_prints_leads_to_its_store_wherever_paths_results_was(tmp_path):
    """The run folder's copy of the record names its store: export and report take the path as printed."""
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    (tmp_path / "here").mkdir()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "runners.train",
            "logger=none",
            "progress=false",
            f"paths.results={tmp_path}/store",
            "dataset=synthetic",
            "train.epochs=1",
            "method=magnitude",
            "method.recovery.epochs=1",
            "name=mine",
        ],
        cwd=tmp_path / "here",
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    tail = (row.partition(":") for row in run.stdout.splitlines() if row.strip().startswith(("record:", "store:")))
    printed = {k.strip(): v.strip() for k, _, v in tail}
    assert printed["store"] == str((tmp_path / "store").resolve())
    record = printed["record"]
    assert Path(record).is_relative_to(tmp_path / "here" / "outputs")  # the run folder's copy
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()  # no results/ here: only the record can say where the stages are
    export = subprocess.run(
        [sys.executable, "-m", "runners.export", record, "--format", "torchscript", "--out", "x"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert export.returncode == 0, export.stderr[-3000:]
    assert (elsewhere / "x" / "model.torchscript.pt").is_file()
    report = subprocess.run(
        [sys.executable, "-m", "analysis.report", record, "--out", "report"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert "magnitude" in (elsewhere / "report" / "summary.md").read_text()
