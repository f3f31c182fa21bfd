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
from foundations.store import Store
from methods.pipeline.masks import folded
from runners import export as exporter
from runners.experiment import Experiment, run_experiment
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
            "model": folded(exp.model_from(exp.stage_at(final.ref))).cpu().eval(),
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
    assert (
        json.loads((tmp_path / "out" / "plan.json").read_text())["keep"]
        == json.loads(case["final"].plan_json())["keep"]
    )
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
    """The snippets of docs/export.md, in a process where prunelab (and torch-pruning, Hydra) cannot be imported."""
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


# ------------------------------------------------------------------------------------------------- sparse kernels
# The MobileNetV2 of `done` answers every input alike after its one epoch on noise (dead ReLU6s: max |y - y[0]| = 0),
# which no check could tell from a wrong weight; conv_bn's outputs depend on the input (and it has Conv2d and Linear).
LIVE = [
    "dataset=synthetic",
    "dataset.input_shape=[3,16,16]",
    "dataset.num_train=80",
    "dataset.num_test=16",
    "dataset.val_size=16",
    "train.epochs=1",
    "train.batch_size=32",
    "model=conv_bn",
    "method=magnitude",
    "method.sparsity=0.8",
    "method.recovery.epochs=1",
]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A masked conv_bn experiment (~8 s) whose outputs vary with the input, and its stored model."""
    root = tmp_path_factory.mktemp("live")
    run = make_run(root, *LIVE)
    store = Store(run.paths.results)
    record = run_experiment(run, store)
    exp = Experiment(run, store)
    path = next((store.stage_dir("experiment", "x").parent).glob("*/result.json"))
    model = folded(exp.model_from(exp.stage_at(record["final_stage"]))).cpu().eval()
    x = batch(exp.data.input_shape)
    with torch.no_grad():
        y = model(x)
    assert float((y - y[0]).abs().max()) > 0.1  # a check against this model can see a wrong weight
    return {"record": record, "path": path, "model": model, "shape": exp.data.input_shape}


def expected_layers(model: torch.nn.Module, kernel: str) -> dict[str, str]:
    """What each Conv2d/Linear of the stored model must run, worked out from its weights alone."""
    out = {}
    for name, module in model.named_modules():
        if not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            continue
        if bool((module.weight != 0).all()):
            out[name] = "dense: not pruned"
        elif isinstance(module, torch.nn.Conv2d) and module.groups != 1:
            out[name] = f"dense: not supported (grouped convolution (groups={module.groups}))"
        else:
            out[name] = kernel if isinstance(module, torch.nn.Linear) else f"{kernel} (im2col)"
    return out


def test_the_sparse_export_runs_the_stored_weights_through_the_kernel_and_times_itself(live, tmp_path):
    case = live
    info = exporter.export(str(case["path"]), "sparse", tmp_path / "out", sparse_kernel="csr", run_time=0.01)
    assert info["files"] == [exporter.SPARSE_FILE] and (info["sparse_kernel"], info["format"]) == ("csr", "sparse")
    assert info["verified"][exporter.SPARSE_FILE]["max_abs_diff"] <= 1e-5
    assert json.loads((tmp_path / "out" / "export_sparse.json").read_text()) == info
    assert info["layers"] == expected_layers(case["model"], "csr")
    sparse_layers = [n for n, k in info["layers"].items() if k.startswith("csr")]
    assert any(k == "csr" for k in info["layers"].values()) and any(
        k == "csr (im2col)" for k in info["layers"].values()
    )
    loaded = torch.jit.load(str(tmp_path / "out" / exporter.SPARSE_FILE)).eval()
    x = batch(case["shape"], n=3)  # not the verification batch's size
    with torch.no_grad():
        expect = case["model"](x)
        assert torch.allclose(loaded(x), expect, atol=1e-5, rtol=1e-5)
    # the artefact holds each pruned layer's nonzero weights as CSR parts, row by row, and computes with them
    name = sparse_layers[-1]
    weight = (
        case["model"].get_submodule(name).weight.detach().reshape(case["model"].get_submodule(name).weight.shape[0], -1)
    )
    layer = loaded
    for part in name.split("."):
        layer = getattr(layer, part)
    kept = weight != 0
    assert torch.equal(layer.values, weight[kept])
    assert torch.equal(layer.col, kept.nonzero()[:, 1])
    assert torch.equal(layer.crow, torch.cat([torch.zeros(1, dtype=torch.long), kept.sum(1).cumsum(0)]))
    with torch.no_grad():
        layer.values.mul_(2.0)
        assert not torch.allclose(loaded(x), expect, atol=1e-3)
    # the latency: stored model (dense kernels) against the artefact, at batch 1 and the record's throughput batch
    assert set(info["latency_ms"]) == {"dense", "exported"} and info["throughput_batch"] == 256
    assert all(set(v) == {"1", "256"} and min(v.values()) > 0 for v in info["latency_ms"].values())
    for b in ("1", "256"):
        assert info["speedup"][b] == info["latency_ms"]["dense"][b] / info["latency_ms"]["exported"][b]
    assert (info["latency_device"], info["latency_threads"]) == ("cpu", 1)
    assert info["record_latency_ms"] == case["record"]["latency_ms"]
    assert info["record_latency_kernels"] == case["record"]["latency_kernels"]


def test_auto_exports_the_kernel_fastest_at_the_throughput_batch(live, tmp_path, monkeypatch):
    seen = []
    per_image = {"csr": 3.0, "bsr": 2.0, "coo": 1.0, "dense": 4.0, "exported": 2.0}

    def timer(models, input_shape, batch_sizes, min_run_time):  # the records' timer, with chosen numbers
        seen.append((sorted(models), tuple(batch_sizes)))
        return {name: {str(b): per_image[name] * b for b in batch_sizes} for name in models}

    monkeypatch.setattr(exporter, "measure_latency_ms", timer)
    case = live
    info = exporter.export(str(case["path"]), "sparse", tmp_path / "out", threads=2)
    candidates = seen[0][0]
    assert {"csr", "coo"} <= set(candidates) and seen[0][1] == (256,)
    assert info["sparse_kernel"] == "coo" and info["sparse_kernel_requested"] == "auto"
    assert info["kernel_choice"] == {"batch": 256, "ms": {k: per_image[k] * 256 for k in candidates}}
    assert info["layers"] == expected_layers(case["model"], "coo")
    assert seen[1] == (["dense", "exported"], (1, 256))
    assert info["speedup"] == {"1": 2.0, "256": 2.0} and info["latency_threads"] == 2
    assert torch.get_num_threads() == 1  # restored


def test_the_throughput_batch_is_the_records_largest():
    assert exporter.throughput_batch({"latency_ms": {"dense": {"1": 0.1, "64": 2.0}, "sparse": {"1": 0.2}}}) == 64
    assert exporter.throughput_batch({"latency_ms": None}) == exporter.THROUGHPUT_BATCH == 256
    assert exporter.throughput_batch(None) == 256


def test_bad_sparse_requests_are_one_line(done, tmp_path):
    with pytest.raises(UserError, match=r"^export --format sparse: stage train/\w+ has no weight masks"):
        exporter.export(str(done["l1_filter"]["path"]), "sparse", tmp_path / "a")
    with pytest.raises(UserError, match=r"^export --sparse-kernel: only with --format sparse \(got --format onnx\)"):
        exporter.export(str(done["magnitude"]["path"]), "onnx", tmp_path / "a", sparse_kernel="csr")
    with pytest.raises(UserError, match=r"semi_structured \(2:4\) runs on CUDA only"):
        exporter.export(str(done["magnitude"]["path"]), "sparse", tmp_path / "a", sparse_kernel="semi_structured")
    assert not (tmp_path / "a").exists()


@pytest.mark.slow  # an export and a second interpreter (~8 s)
def test_the_sparse_artefact_loads_without_prunelab(live, tmp_path):
    case = live
    exporter.export(str(case["path"]), "sparse", tmp_path / "out", sparse_kernel="bsr", run_time=0.01)
    x = batch(case["shape"])
    with torch.no_grad():
        torch.save({"x": x, "y": case["model"](x)}, tmp_path / "io.pt")
    script = (
        BLOCKER
        + f"""
import torch, warnings
warnings.simplefilter("ignore")
io = torch.load({str(tmp_path / "io.pt")!r})
model = torch.jit.load({str(tmp_path / "out" / exporter.SPARSE_FILE)!r}).eval()
try:
    import runners
except ImportError:
    pass
else:
    raise SystemExit("the blocker does not work")
with torch.no_grad():
    assert torch.allclose(model(io["x"]), io["y"], atol=1e-5, rtol=1e-5)
print("ok", sorted({{type(m).__name__ for m in model.modules()}} & {{"SparseLinear", "SparseConv2d"}}))
"""
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().startswith("ok")
