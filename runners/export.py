"""``prunelab-export``: the model an experiment ended with (or any stage) as a standalone artefact.

    prunelab-export results/runs/experiment/<hash>/result.json --format onnx --out exported/
    prunelab-export train/<hash> --format state_dict --sparse --out exported/

The model is rebuilt from the store exactly as the experiment held it: the stage's architecture (compacted by its
channel plan where the method was structured), its validation-selected weights, its masks folded into the weights
(unstructured results), in eval mode on the CPU. Formats:

- ``state_dict``: ``weights.safetensors`` (the compacted architecture's state dict), ``plan.json`` (the channel plan
  over the unpruned architecture, when there is one), ``module.pt`` (the whole module, pickled: loadable wherever its
  classes import — torchvision's, your package's). ``--sparse`` adds ``weights_sparse.pt`` (``sparse_state``): the
  masked tensors as int32-indexed CSR matrices where that is smaller, readable with ``torch.load(weights_only=True)``.
- ``torchscript``: ``model.torchscript.pt``, ``torch.jit.trace`` of the model.
- ``export``: ``model.pt2``, a ``torch.export`` program with a dynamic batch dimension.
- ``onnx``: ``model.onnx`` (opset of torch's dynamo exporter, dynamic batch), written where the ``onnx`` and
  ``onnxscript`` packages are installed (``pip install 'prunelab[export]'``); checked with ``onnx.checker`` and, where
  ``onnxruntime`` is installed, run.
- ``sparse`` (weight-level results): ``model_sparse.torchscript.pt``, the network whose pruned Linear and Conv2d
  layers run a ``torch.sparse`` kernel (``runners/sparse.py``: ``--sparse-kernel csr | bsr | coo``, a Conv2d by
  im2col), each sparse matrix held as its component tensors and rebuilt in every forward (``portable``), traced
  with ``torch.jit.trace``: TorchScript saves that module for every layout, while ``torch.export`` cannot carry a
  sparse tensor at all on torch 2.14.1 ("Sparse tensor creation not supported"; ONNX has no sparse product).
  ``--sparse-kernel auto`` (default) times each kernel on this machine with the records' timer at the throughput
  batch and takes the fastest. ``export_sparse.json`` holds the latency it measured: the stored model (dense kernels)
  against the exported artefact as loaded, at batch 1 and the throughput batch (the record's largest timed batch, else
  256), on ``--threads`` threads (default 1, as the records' jobs), beside the record's own latency.

Every export is verified before it lands in ``--out``: the artefact, loaded back by its own loader, is run on a
batch of ``--batch`` seeded standard-normal inputs and its outputs compared with the stored model's:
``max |y - y_ref| <= atol + rtol * max |y_ref|`` with the tolerance of the format (``TOLERANCE``; state_dict is
exact). The measured difference, the files and their sizes are in ``export_<format>.json``; a failed check writes
nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import inspect
import io
import json
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from foundations.errors import UserError
from foundations.files import atomic_write_json
from foundations.seeds import generator
from foundations.store import Stage, Store, store_of
from methods.pipeline.masks import folded
from methods.pipeline.results import StageResult
from models import build_model, display_name, model_config
from runners.experiment import stored_model
from runners.metrics import latency_setting, measure_latency_ms
from runners.sparse import sparse_network

FORMATS = ("state_dict", "torchscript", "export", "onnx", "sparse")
# (atol, rtol) of the verification per format; measured differences on resnet18/mobilenet_v2 are far below them
# (docs/export.md › Verification): reloading a state dict is bitwise; a trace or an exported program runs the
# same kernels; ONNX Runtime and the sparse kernels (MKL sparse BLAS) have their own (other summation orders).
TOLERANCE = {
    "state_dict": (0.0, 0.0),
    "torchscript": (1e-5, 1e-5),
    "export": (1e-5, 1e-5),
    "onnx": (1e-4, 1e-4),
    "sparse": (1e-5, 1e-5),
}
SPARSE_KERNELS = ("csr", "bsr", "coo")  # what runs on the CPU (runners/sparse.py: semi_structured needs CUDA)
SPARSE_FILE = "model_sparse.torchscript.pt"
THROUGHPUT_BATCH = 256  # where the record timed no batch: latency.batch_sizes' default largest


# ----------------------------------------------------------------------------------------------- the stored model
def resolve(ref: str, results: Optional[str]) -> tuple[Stage, Store]:
    """The stage named by ``ref``: an experiment record (a ``result.json`` path: its final stage) or ``kind/hash``."""
    stage, store, _ = resolve_record(ref, results)
    return stage, store


def resolve_record(ref: str, results: Optional[str]) -> tuple[Stage, Store, Optional[dict]]:
    """``resolve``, and the experiment record where ``ref`` is one (None for a stage kind/hash)."""
    path = Path(ref).expanduser()
    if path.is_file():
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise UserError(f"export: {path} is not an experiment record ({err})") from None
        if not isinstance(record, dict) or not record.get("final_stage"):
            status = record.get("status") if isinstance(record, dict) else None
            raise UserError(
                f"export: {path} is not the record of a finished experiment (status {status!r}); "
                f"export a result.json whose status is ok, or a stage kind/hash"
            )
        # A record names its stages in the store it lies in, or (a job folder's copy) the store it names.
        store = Store(results or store_of(path, record) or "results")
        return store.at(record["final_stage"]), store, record
    if ref.count("/") == 1 and not path.exists():
        store = Store(results or "results")
        return store.at(ref), store, None
    raise UserError(f"export: {ref!r} is neither an experiment record (result.json) nor a stage kind/hash")


def model_of(stage: Stage) -> tuple[nn.Module, dict]:
    """The model the stage holds (masks folded, eval mode, CPU) and what describes it (config, shapes)."""
    shape_info = StageResult.model_input_of(stage.result_json)
    if shape_info is None:
        raise UserError(
            f"export: stage {stage.ref} was stored before stages recorded their input shape; rerun its "
            f"experiment with this version of prunelab"
        )
    identity = dict(stage.config()["spec"]["model"])
    identity.pop("checkpoint", None)  # the weights come from the stage; the checkpoint only started them
    cfg = model_config(identity)
    shape, classes = shape_info.shape, shape_info.num_classes
    base = build_model(cfg, shape, classes, generator(0))
    model = folded(stored_model(stage, base, torch.zeros(1, *shape))).cpu().eval()
    masked = sorted(stage.masks()) if stage.has_masks() else []
    # The inputs the model expects: (pixels / 255 - mean) / std per channel, as prunelab fed it.
    return model, {
        "model": display_name(cfg),
        "model_config": identity,
        "input_shape": list(shape),
        "num_classes": classes,
        "normalization": {"mean": shape_info.mean, "std": shape_info.std},
        "structured": stage.has_plan(),
        "masked_tensors": masked,
    }


# ----------------------------------------------------------------------------------------------- formats
def _state_dict(
    model: nn.Module, stage: Stage, out: Path, sparse: bool, masked: list[str]
) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    from safetensors.torch import load_file, save_file

    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "weights.safetensors"))
    if stage.has_plan():
        (out / "plan.json").write_text(stage.plan_json())
    torch.save(model, out / "module.pt")
    checks: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}

    def reloaded(x: torch.Tensor) -> torch.Tensor:
        copy = _same_architecture(model)
        copy.load_state_dict(load_file(str(out / "weights.safetensors")))
        return copy.eval()(x)

    checks["weights.safetensors"] = reloaded
    checks["module.pt"] = lambda x: torch.load(out / "module.pt", weights_only=False).eval()(x)
    if sparse:
        torch.save(sparse_state(state, masked), out / "weights_sparse.pt")

        def densified(x: torch.Tensor) -> torch.Tensor:
            copy = _same_architecture(model)
            copy.load_state_dict(dense_state(torch.load(out / "weights_sparse.pt", weights_only=True)))
            return copy.eval()(x)

        checks["weights_sparse.pt"] = densified
    return checks


def sparse_state(state: dict[str, torch.Tensor], masked: list[str]) -> dict:
    """``{"sparse": CSR tensors, "shapes": their shapes, "dense": the rest}``: a masked tensor is stored as a CSR
    matrix (rows = output channels, int32 indices: 8 bytes per nonzero) when that is smaller than dense (4 bytes per
    entry, so below ~50% density)."""
    out: dict[str, dict] = {"sparse": {}, "shapes": {}, "dense": {}}
    for name, tensor in state.items():
        nonzero = int((tensor != 0).sum()) if name in masked else tensor.numel()
        if name in masked and tensor.dim() >= 2 and 8 * nonzero + 4 * (tensor.shape[0] + 1) < 4 * tensor.numel():
            csr = tensor.reshape(tensor.shape[0], -1).to_sparse_csr()
            out["sparse"][name] = torch.sparse_csr_tensor(
                csr.crow_indices().int(), csr.col_indices().int(), csr.values(), size=csr.shape
            )
            out["shapes"][name] = list(tensor.shape)
        else:
            out["dense"][name] = tensor
    return out


def dense_state(stored: dict) -> dict[str, torch.Tensor]:
    """``sparse_state`` undone (the two lines of docs/export.md)."""
    return {**stored["dense"], **{k: v.to_dense().reshape(stored["shapes"][k]) for k, v in stored["sparse"].items()}}


def _same_architecture(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with its weights scrambled, so that a check passes only through the loaded file."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for tensor in twin.state_dict().values():
            if tensor.is_floating_point():
                tensor.fill_(float("nan"))
    return twin


@contextmanager
def _quiet():
    """PyTorch 2.14 deprecates TorchScript (FutureWarning on every call) and warns about the O(nnz) check of
    sparse tensors it reads; the exporters print progress lines. None of it is news to the user of this command."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        warnings.filterwarnings("ignore", message="Validating sparse tensor invariants")
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
        # wrong for the sparse format: its traced code rebuilds each matrix from the buffers (``module.fc1.code``;
        # tests/test_export.py changes a buffer of the loaded artefact and sees the output change)
        warnings.filterwarnings("ignore", message=r"torch\.sparse_\w+_tensor results are registered as constants")
        yield


def _torchscript(model: nn.Module, out: Path, x: torch.Tensor) -> dict:
    with torch.no_grad(), _quiet():
        traced = torch.jit.trace(model, x, check_trace=False)
        torch.jit.save(traced, str(out / "model.torchscript.pt"))
    return {"model.torchscript.pt": lambda x: torch.jit.load(str(out / "model.torchscript.pt")).eval()(x)}


def _program(model: nn.Module, out: Path, x: torch.Tensor) -> dict:
    program = torch.export.export(model, (x,), dynamic_shapes=_dynamic(model, x))
    torch.export.save(program, str(out / "model.pt2"))
    return {"model.pt2": lambda x: torch.export.load(str(out / "model.pt2")).module()(x)}


def _dynamic(model: nn.Module, x: torch.Tensor):
    """A dynamic batch dimension under the name of the model's forward argument."""
    params = list(inspect.signature(model.forward).parameters.values())
    return {params[0].name: {0: torch.export.Dim("batch", min=1, max=4096)}} if params else None


def _onnx(model: nn.Module, out: Path, x: torch.Tensor) -> dict:
    try:
        import onnx
        import onnxscript  # noqa: F401 - torch's dynamo exporter needs it
    except ImportError:
        raise UserError(
            "export --format onnx: the onnx and onnxscript packages are not installed; "
            "pip install 'prunelab[export]' (or onnx onnxscript onnxruntime)"
        ) from None
    with _quiet():
        torch.onnx.export(
            model,
            (x,),
            str(out / "model.onnx"),
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=_dynamic(model, x),
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    onnx.checker.check_model(onnx.load(str(out / "model.onnx")), full_check=True)
    try:
        import onnxruntime
    except ImportError:
        return {}  # structurally checked only; export.json says so

    def run(x: torch.Tensor) -> torch.Tensor:
        session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])

    return {"model.onnx": run}


# ----------------------------------------------------------------------------------------------- sparse kernels
@contextmanager
def _threads(count: int):
    """Torch's thread count set to ``count`` inside (timing), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _runs_sparse(layers: dict[str, str]) -> bool:
    return any(not kernel.startswith("dense") for kernel in layers.values())


def throughput_batch(record: Optional[dict]) -> int:
    """The largest batch size the record timed (its throughput batch), else ``THROUGHPUT_BATCH``."""
    latency = (record or {}).get("latency_ms") or {}
    batches = [int(b) for times in latency.values() if isinstance(times, dict) for b in times if str(b).isdigit()]
    return max(batches, default=THROUGHPUT_BATCH)


def choose_kernel(model: nn.Module, input_shape, kernel: str, batch: int, run_time: float) -> tuple[str, dict]:
    """The kernel to export and what choosing it measured: ``kernel`` as asked (nothing measured), or for ``auto``
    the fastest of ``SPARSE_KERNELS`` that runs some layer of ``model``, each exported network (``portable``) timed
    at ``batch`` in turns by the records' timer (``{"batch": 256, "ms": {"csr": ..., ...}}``)."""
    if kernel != "auto":
        return kernel, {}
    candidates: dict[str, nn.Module] = {}
    for name in SPARSE_KERNELS:
        network, layers = sparse_network(model, name, portable=True)
        if _runs_sparse(layers):
            candidates[name] = network
    if not candidates:
        raise UserError("export --sparse-kernel auto: no layer of this model can run csr, bsr or coo")
    with _quiet():
        times = measure_latency_ms(candidates, input_shape, (batch,), run_time)
    ms = {name: times[name][str(batch)] for name in candidates}
    return min(ms, key=lambda name: ms[name]), {"batch": batch, "ms": ms}


def _sparse(model: nn.Module, out: Path, x: torch.Tensor, kernel: str) -> tuple[dict, dict[str, str]]:
    """The model with its pruned layers running ``kernel`` (``portable``), traced and saved; and per layer what it
    runs (as the record's ``latency_kernels``)."""
    network, layers = sparse_network(model, kernel, portable=True)
    if not _runs_sparse(layers):
        why = "; ".join(f"{name}: {what}" for name, what in layers.items())
        raise UserError(f"export --sparse-kernel {kernel}: no layer of this model runs it ({why})")
    with torch.no_grad(), _quiet():
        traced = torch.jit.trace(network, x, check_trace=False)
        torch.jit.save(traced, str(out / SPARSE_FILE))
    return {SPARSE_FILE: lambda x: torch.jit.load(str(out / SPARSE_FILE)).eval()(x)}, layers


def sparse_latency(model: nn.Module, artefact: Path, input_shape, batch: int, run_time: float) -> dict:
    """The stored model (dense kernels) against the artefact as ``torch.jit.load`` gives it, timed in turns by the
    records' timer at batch 1 and ``batch``, on this process's threads: ``latency_ms``, ``speedup`` (dense ms /
    exported ms per batch size) and where it was timed."""
    with _quiet():
        exported = torch.jit.load(str(artefact)).eval()
        latency = measure_latency_ms({"dense": model, "exported": exported}, input_shape, sorted({1, batch}), run_time)
    setting = latency_setting(model)
    return {
        "latency_ms": latency,
        "speedup": {b: latency["dense"][b] / latency["exported"][b] for b in latency["dense"]},
        "latency_device": setting["device"],
        "latency_processor": setting["processor"],
        "latency_threads": setting["threads"],
    }


# ----------------------------------------------------------------------------------------------- export
def export(
    ref: str,
    fmt: str,
    out: str | Path,
    *,
    results: Optional[str] = None,
    sparse: bool = False,
    batch: int = 8,
    sparse_kernel: Optional[str] = None,
    threads: int = 1,
    run_time: float = 0.1,
) -> dict:
    """Write the artefact of ``fmt`` for ``ref`` into ``out`` after verifying it; returns ``export.json``'s content.
    ``sparse_kernel`` (format ``sparse``; default ``auto``), ``threads`` and ``run_time`` (seconds per network and
    batch size) set the sparse format's kernel and its timing."""
    if fmt not in FORMATS:
        raise UserError(f"export --format: must be one of {', '.join(FORMATS)} (got {fmt!r})")
    if sparse and fmt != "state_dict":
        raise UserError(
            "export --sparse: only the state_dict format stores weights one by one; use --format state_dict --sparse"
        )
    if sparse_kernel is not None and fmt != "sparse":
        raise UserError(f"export --sparse-kernel: only with --format sparse (got --format {fmt})")
    kernel = sparse_kernel or "auto"
    if kernel not in (*SPARSE_KERNELS, "auto"):
        raise UserError(
            f"export --sparse-kernel: must be one of {', '.join(SPARSE_KERNELS)} or auto (got {kernel!r}); "
            f"semi_structured (2:4) runs on CUDA only and the export is on the CPU"
        )
    if batch < 1:
        raise UserError(f"export --batch: must be >= 1 (got {batch})")
    if threads < 1:
        raise UserError(f"export --threads: must be >= 1 (got {threads})")
    stage, _, record = resolve_record(ref, results)
    model, about = model_of(stage)
    if sparse and not about["masked_tensors"]:
        raise UserError(
            f"export --sparse: stage {stage.ref} has no weight masks (a dense or channel-pruned "
            f"model); its state dict is already as small as it gets"
        )
    if fmt == "sparse" and not about["masked_tensors"]:
        raise UserError(
            f"export --format sparse: stage {stage.ref} has no weight masks (a dense or channel-pruned model: "
            f"dense kernels already run all it has); use --format torchscript or export"
        )
    x = torch.randn(batch, *about["input_shape"], generator=generator(0))
    with torch.no_grad():
        reference = model(x)
    out = Path(out).expanduser().absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    speed: dict = {}
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-export-") as tmp:  # moved in once verified
        staging = Path(tmp)
        if fmt == "state_dict":
            checks = _state_dict(model, stage, staging, sparse, about["masked_tensors"])
        elif fmt == "torchscript":
            checks = _torchscript(model, staging, x)
        elif fmt == "export":
            checks = _program(model, staging, x)
        elif fmt == "sparse":
            throughput = throughput_batch(record)
            with _threads(threads):
                chosen, choice = choose_kernel(model, about["input_shape"], kernel, throughput, run_time)
            checks, layers = _sparse(model, staging, x, chosen)
        else:
            checks = _onnx(model, staging, x)
        verified = verify(checks, x, reference, TOLERANCE[fmt])
        if fmt == "sparse":
            with _threads(threads):
                timed = sparse_latency(model, staging / SPARSE_FILE, about["input_shape"], throughput, run_time)
            speed = {
                "sparse_kernel": chosen,
                "sparse_kernel_requested": kernel,
                "kernel_choice": choice,
                "layers": layers,
                "throughput_batch": throughput,
                **timed,
                "record_latency_ms": (record or {}).get("latency_ms"),
                "record_latency_kernels": (record or {}).get("latency_kernels"),
                "record_latency_threads": (record or {}).get("latency_threads"),
            }
        files = sorted(p.name for p in staging.iterdir())
        info = {
            "format": fmt,
            "source": stage.ref,
            **about,
            "files": files,
            "bytes": {name: (staging / name).stat().st_size for name in files},
            "verified": verified,
            "tolerance": {"atol": TOLERANCE[fmt][0], "rtol": TOLERANCE[fmt][1]},
            "batch": batch,
            "params": sum(p.numel() for p in model.parameters()),
            "params_nonzero": sum(int((p != 0).sum()) for p in model.parameters()),
            **speed,
        }
        if fmt == "onnx" and not checks:
            info["verified"] = {"model.onnx": "onnx.checker only (onnxruntime is not installed)"}
        out.mkdir(exist_ok=True)
        for name in info["files"]:
            shutil.move(str(staging / name), out / name)
    atomic_write_json(out / f"export_{fmt}.json", info)
    return info


def verify(checks: dict, x: torch.Tensor, reference: torch.Tensor, tolerance: tuple[float, float]) -> dict:
    """Run every loader on ``x``; each must reproduce ``reference`` within ``atol + rtol * max|reference|``."""
    atol, rtol = tolerance
    bound = atol + rtol * float(reference.abs().max())
    measured = {}
    for name, run in checks.items():
        with torch.no_grad(), _quiet():
            got = run(x.clone())
        diff = float((got.float() - reference).abs().max()) if got.shape == reference.shape else float("inf")
        if not diff <= bound:
            raise RuntimeError(
                f"export: {name} does not reproduce the stored model (max |diff| {diff:.3g} > "
                f"{bound:.3g}); nothing was written"
            )
        measured[name] = {"max_abs_diff": diff}
    return measured


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prunelab-export", description=__doc__.split("\n\n")[0].replace("``", ""))
    parser.add_argument("ref", help="an experiment record (result.json) or a stage kind/hash")
    parser.add_argument("--format", default="state_dict", choices=FORMATS)
    parser.add_argument("--out", required=True, help="folder to write the artefact and export.json into")
    parser.add_argument(
        "--results", default=None, help="the store root for a kind/hash (default: the record's own store, else results)"
    )
    parser.add_argument("--sparse", action="store_true", help="state_dict: also the masked tensors in sparse format")
    parser.add_argument("--batch", type=int, default=8, help="examples in the verification batch (default 8)")
    parser.add_argument(
        "--sparse-kernel",
        default=None,
        choices=[*SPARSE_KERNELS, "auto"],
        help="--format sparse: the torch.sparse kernel of the pruned layers; auto (default): the fastest here",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="--format sparse: torch threads to time with (default 1, as jobs run)"
    )
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        info = export(
            args.ref,
            args.format,
            args.out,
            results=args.results,
            sparse=args.sparse,
            batch=args.batch,
            sparse_kernel=args.sparse_kernel,
            threads=args.threads,
        )
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    diffs = ", ".join(
        f"{k}: {v['max_abs_diff']:.2g}" if isinstance(v, dict) else f"{k}: {v}" for k, v in info["verified"].items()
    )
    print(
        f"exported {info['model']} ({info['source']}, {info['params_nonzero']:,}/{info['params']:,} weights nonzero) "
        f"as {info['format']} to {args.out}: {', '.join(info['files'])}\n  verified on {info['batch']} inputs, "
        f"max |diff| {diffs}"
    )
    if info["format"] == "sparse":
        print(speed_lines(info))
    return 0


def speed_lines(info: dict) -> str:
    """What ``--format sparse`` measured, in two or three lines."""
    threads = info["latency_threads"]
    where = f"{info['latency_processor']} ({info['latency_device']}), {threads} thread{'s' if threads != 1 else ''}"
    times = ", ".join(
        f"batch {b}: dense {info['latency_ms']['dense'][b]:.3g} ms, exported {info['latency_ms']['exported'][b]:.3g}"
        f" ms ({info['speedup'][b]:.2f}x)"
        for b in info["speedup"]
    )
    choice = info["kernel_choice"]
    chosen = f"kernel {info['sparse_kernel']}" + (
        f" (auto, at batch {choice['batch']}: " + ", ".join(f"{k} {ms:.3g} ms" for k, ms in choice["ms"].items()) + ")"
        if choice
        else ""
    )
    lines = [f"  {chosen}; latency on {where}: {times}"]
    throughput = str(info["throughput_batch"])
    if info["speedup"][throughput] < 1:
        lines.append(
            f"  the sparse artefact is slower than dense kernels at batch {throughput} here: "
            f"--format torchscript keeps dense speed"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
