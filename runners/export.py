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

FORMATS = ("state_dict", "torchscript", "export", "onnx")
# (atol, rtol) of the verification per format; measured differences on resnet18/mobilenet_v2 are far below them
# (README "Your own model and data"): reloading a state dict is bitwise; a trace or an exported program runs the
# same kernels; ONNX Runtime has its own kernels (other summation orders).
TOLERANCE = {"state_dict": (0.0, 0.0), "torchscript": (1e-5, 1e-5), "export": (1e-5, 1e-5), "onnx": (1e-4, 1e-4)}


# ----------------------------------------------------------------------------------------------- the stored model
def resolve(ref: str, results: Optional[str]) -> tuple[Stage, Store]:
    """The stage named by ``ref``: an experiment record (a ``result.json`` path: its final stage) or ``kind/hash``."""
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
        return store.at(record["final_stage"]), store
    if ref.count("/") == 1 and not path.exists():
        store = Store(results or "results")
        return store.at(ref), store
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
    """``sparse_state`` undone (the README's two lines)."""
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


# ----------------------------------------------------------------------------------------------- export
def export(
    ref: str, fmt: str, out: str | Path, *, results: Optional[str] = None, sparse: bool = False, batch: int = 8
) -> dict:
    """Write the artefact of ``fmt`` for ``ref`` into ``out`` after verifying it; returns ``export.json``'s content."""
    if fmt not in FORMATS:
        raise UserError(f"export --format: must be one of {', '.join(FORMATS)} (got {fmt!r})")
    if sparse and fmt != "state_dict":
        raise UserError(
            "export --sparse: only the state_dict format stores weights one by one; use --format state_dict --sparse"
        )
    if batch < 1:
        raise UserError(f"export --batch: must be >= 1 (got {batch})")
    stage, _ = resolve(ref, results)
    model, about = model_of(stage)
    if sparse and not about["masked_tensors"]:
        raise UserError(
            f"export --sparse: stage {stage.ref} has no weight masks (a dense or channel-pruned "
            f"model); its state dict is already as small as it gets"
        )
    x = torch.randn(batch, *about["input_shape"], generator=generator(0))
    with torch.no_grad():
        reference = model(x)
    out = Path(out).expanduser().absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-export-") as tmp:  # moved in once verified
        staging = Path(tmp)
        if fmt == "state_dict":
            checks = _state_dict(model, stage, staging, sparse, about["masked_tensors"])
        elif fmt == "torchscript":
            checks = _torchscript(model, staging, x)
        elif fmt == "export":
            checks = _program(model, staging, x)
        else:
            checks = _onnx(model, staging, x)
        verified = verify(checks, x, reference, TOLERANCE[fmt])
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
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        info = export(args.ref, args.format, args.out, results=args.results, sparse=args.sparse, batch=args.batch)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
