"""Sparse execution of a weight-pruned network, and its latency beside the dense and the masked network.

``sparse_network(model, kernel)`` builds the same network with each pruned Linear and Conv2d running a
``torch.sparse`` kernel on the weight its forward uses (``weight_orig * weight_mask`` of a masked model, or the
weight of a folded plain copy), and says per layer which kernel it runs. A layer the kernel cannot run keeps its
dense module and is reported as ``dense: not supported (<why>)`` — never a silent dense fallback; ``strict=True``
refuses it instead. ``measure_sparse_latency`` times dense, masked and sparse with the records' timer
(``runners.metrics.measure_latency_ms``: turns, fastest block).

Kernels (what torch 2.14.1 runs on the CPU; ``benchmarks/sparse_kernels.py`` measures where each starts to pay):

- ``csr``: ``torch.addmm(bias, W_csr, xᵀ)ᵀ`` — MKL sparse BLAS, float32 and float64 only on the CPU (bfloat16 and
  float16: "addmm_out_sparse_csr_impl_mkl not implemented"). The product is computed as W·xᵀ because the other
  orientations (x·W_csrᵀ, CSC) ran 5-45x slower, and through ``addmm`` because ``F.linear`` with a CSR weight built
  outside ``torch.inference_mode`` fails inside it ("Cannot set version_counter for inference tensor").
- ``bsr``: the same product on a block-sparse weight (``to_sparse_bsr``); MKL takes square blocks only ("MKL Sparse
  doesn't support matrices with non-square blocks"), so the block is the largest of ``BSR_BLOCKS`` that divides both
  dimensions (or the one asked for). A block is stored whole if any of its weights survives, so BSR pays on
  block-sparse masks, not on unstructured ones.
- ``coo``: torch's own COO kernel (every dtype; slower than CSR where both run).
- ``semi_structured``: 2:4 sparse tensor cores (``torch.sparse.to_sparse_semi_structured``): CUDA with compute
  capability >= 8.0 only, Linear layers whose weights are 2:4 along the input; "not supported on cpu" otherwise.
  Not exercised here (no GPU on the machine this was written on).

Conv2d runs as im2col (``F.unfold``) followed by the same sparse product with the weight as an (O, C·R·S) matrix;
grouped convolutions, padding modes other than zeros and string padding other than ``valid`` are not supported;
torch has no sparse convolution of strided tensors.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from foundations.errors import UserError
from methods.pipeline.masks import folded, masked_weight
from runners.metrics import measure_latency_ms

KERNELS = ("csr", "bsr", "coo", "semi_structured")
BSR_BLOCKS = (16, 8, 4, 2)
MKL_DTYPES = (torch.float32, torch.float64)
NOT_PRUNED = "dense: not pruned"


class Unsupported(Exception):
    """Why a layer cannot run a kernel (becomes its ``dense: not supported (...)`` report)."""


def _square_block(shape: Sequence[int], block: Optional[int]) -> int:
    choices = (block,) if block is not None else BSR_BLOCKS
    for b in choices:
        if all(d % b == 0 for d in shape):
            return b
    raise Unsupported(f"bsr needs a square block dividing {shape[0]}x{shape[1]}; tried {', '.join(map(str, choices))}")


def sparse_matrix(matrix: torch.Tensor, kernel: str, block: Optional[int] = None) -> tuple[torch.Tensor, str]:
    """``matrix`` (2-d, zeros where pruned) in ``kernel``'s layout, and the kernel's name as layers report it."""
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state": once per job, says nothing
        warnings.filterwarnings("ignore", "Sparse (CSR|BSR) tensor support is in beta", UserWarning)
        return _sparse_matrix(matrix, kernel, block)


def _sparse_matrix(matrix: torch.Tensor, kernel: str, block: Optional[int]) -> tuple[torch.Tensor, str]:
    cpu = matrix.device.type == "cpu"
    if kernel in ("csr", "bsr") and cpu and matrix.dtype not in MKL_DTYPES:
        raise Unsupported(f"{kernel} on cpu takes float32/float64 (MKL), not {matrix.dtype}")
    if kernel == "csr":
        return matrix.to_sparse_csr(), "csr"
    if kernel == "bsr":
        b = _square_block(matrix.shape, block)
        return matrix.to_sparse_bsr((b, b)), f"bsr {b}x{b}"
    if kernel == "coo":
        return matrix.to_sparse().coalesce(), "coo"
    if kernel == "semi_structured":
        return _semi_structured(matrix), "semi_structured"
    raise UserError(f"latency.sparse_kernel: must be one of {', '.join(KERNELS)} or none (got {kernel!r})")


def _semi_structured(matrix: torch.Tensor) -> torch.Tensor:
    if matrix.device.type != "cuda":
        raise Unsupported(f"semi_structured: not supported on {matrix.device.type}; 2:4 kernels need CUDA")
    major, minor = torch.cuda.get_device_capability(matrix.device)
    if major < 8:
        raise Unsupported(f"semi_structured needs compute capability >= 8.0 (this GPU: {major}.{minor})")
    if matrix.shape[1] % 4 or bool(((matrix.reshape(-1, 4) != 0).sum(dim=1) > 2).any()):
        raise Unsupported("semi_structured needs at most 2 nonzero weights in every 4 along the input")
    try:
        return torch.sparse.to_sparse_semi_structured(matrix.contiguous())
    except RuntimeError as err:  # torch's own dtype and shape constraints
        raise Unsupported(f"semi_structured: {str(err).splitlines()[0]}") from None


class _SparseWeight(nn.Module):
    """Holds a layer's sparse matrix: as the sparse tensor itself (what the records time), or ``portable``: as its
    dense component tensors (CSR/BSR: ``crow``, ``col``, ``values``; COO: ``indices``, ``values``), buffers of the
    state dict from which every forward rebuilds the matrix (~5 µs per layer on this CPU). TorchScript saves a module
    holding the latter for every layout (a BSR tensor attribute it cannot save: "Cannot access storage of
    SparseCsrTensorImpl"), and ``torch.export`` neither ("Sparse tensor creation not supported", torch 2.14.1)."""

    kernel: str
    matrix: torch.Tensor
    crow: torch.Tensor
    col: torch.Tensor
    indices: torch.Tensor
    values: torch.Tensor

    def _hold(self, matrix: torch.Tensor, portable: bool) -> None:
        self.layout = ""
        self.matrix_shape = (int(matrix.shape[0]), int(matrix.shape[1]))
        if not portable:
            self.register_buffer("matrix", matrix, persistent=False)
            return
        if matrix.layout in (torch.sparse_csr, torch.sparse_bsr):
            self.layout = "csr" if matrix.layout == torch.sparse_csr else "bsr"
            parts = {"crow": matrix.crow_indices(), "col": matrix.col_indices(), "values": matrix.values()}
        elif matrix.layout == torch.sparse_coo:
            self.layout = "coo"
            parts = {"indices": matrix.indices(), "values": matrix.values()}
        else:
            raise Unsupported(f"{self.kernel} has no portable form (only csr, bsr and coo)")
        for name, part in parts.items():
            self.register_buffer(name, part.clone())

    def sparse_matrix(self) -> torch.Tensor:
        if self.layout == "csr":
            return torch.sparse_csr_tensor(self.crow, self.col, self.values, self.matrix_shape)
        if self.layout == "bsr":
            return torch.sparse_bsr_tensor(self.crow, self.col, self.values, self.matrix_shape)
        if self.layout == "coo":
            return torch.sparse_coo_tensor(self.indices, self.values, self.matrix_shape, is_coalesced=True)
        return self.matrix


def _product(matrix: torch.Tensor, bias: Optional[torch.Tensor], columns: torch.Tensor) -> torch.Tensor:
    """``matrix @ columns (+ bias per row)``: (O, K) sparse times (K, N) dense."""
    if bias is None:
        return matrix @ columns
    return torch.addmm(bias.unsqueeze(1), matrix, columns)


class SparseLinear(_SparseWeight):
    """A Linear layer whose weight is a sparse matrix; ``kernel`` names what it runs."""

    bias: Optional[torch.Tensor]

    def __init__(self, matrix: torch.Tensor, bias: Optional[torch.Tensor], kernel: str, portable: bool = False):
        super().__init__()
        self.kernel = kernel
        self._hold(matrix, portable)
        self.register_buffer("bias", bias, persistent=portable)
        self.out_features, self.in_features = matrix.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if self.kernel == "semi_structured":
            out = F.linear(rows, self.matrix, self.bias)
        else:
            out = _product(self.sparse_matrix(), self.bias, rows.t()).t()
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kernel={self.kernel}"


class SparseConv2d(_SparseWeight):
    """A Conv2d as im2col (``F.unfold``) and a sparse (O, C·R·S) matrix times the (C·R·S, N·L) columns."""

    bias: Optional[torch.Tensor]

    def __init__(
        self, conv: nn.Conv2d, matrix: torch.Tensor, bias: Optional[torch.Tensor], kernel: str, portable: bool = False
    ):
        super().__init__()
        self.kernel = kernel
        self._hold(matrix, portable)
        self.register_buffer("bias", bias, persistent=portable)
        self.out_channels = conv.out_channels
        self.kernel_size: tuple[int, int] = (conv.kernel_size[0], conv.kernel_size[-1])
        self.stride: tuple[int, int] = (conv.stride[0], conv.stride[-1])
        self.dilation: tuple[int, int] = (conv.dilation[0], conv.dilation[-1])
        padding = (0, 0) if conv.padding == "valid" else conv.padding
        self.padding: tuple[int, int] = (int(padding[0]), int(padding[-1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        columns = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)  # (N, C·R·S, L)
        k, positions = columns.shape[1], columns.shape[2]
        out = _product(self.sparse_matrix(), self.bias, columns.transpose(0, 1).reshape(k, n * positions))
        return out.reshape(self.out_channels, n, self._size(h, 0), self._size(w, 1)).transpose(0, 1)

    def _size(self, d: int, i: int) -> int:
        """The output's height (i = 0) or width (1), as Conv2d computes it."""
        span = self.dilation[i] * (self.kernel_size[i] - 1) + 1
        return (d + 2 * self.padding[i] - span) // self.stride[i] + 1

    def extra_repr(self) -> str:
        return f"out_channels={self.out_channels}, kernel={self.kernel} (im2col)"


def sparse_layer(
    module: nn.Module, kernel: str, block: Optional[int] = None, portable: bool = False
) -> tuple[Optional[nn.Module], str]:
    """The sparse replacement of a Linear or Conv2d (None where it stays as it is) and what the layer runs;
    ``portable``: the matrix held as its component tensors (``_SparseWeight``)."""
    weight, bias = masked_weight(module), masked_weight(module, "bias")
    assert weight is not None
    if bool((weight != 0).all()):
        return None, NOT_PRUNED
    try:
        if isinstance(module, nn.Linear):
            matrix, name = sparse_matrix(weight, kernel, block)
            return SparseLinear(matrix, bias, name, portable), name
        if not isinstance(module, nn.Conv2d):
            raise Unsupported(f"{type(module).__name__} layers")
        if module.groups != 1:
            raise Unsupported(f"grouped convolution (groups={module.groups})")
        if module.padding_mode != "zeros":
            raise Unsupported(f"padding_mode={module.padding_mode}")
        if isinstance(module.padding, str) and module.padding != "valid":
            raise Unsupported(f"padding={module.padding!r}")
        if kernel == "semi_structured":
            raise Unsupported("semi_structured kernels multiply 2-d weights (Linear layers) only")
        matrix, name = sparse_matrix(weight.reshape(weight.shape[0], -1), kernel, block)
        return SparseConv2d(module, matrix, bias, name, portable), f"{name} (im2col)"
    except Unsupported as why:
        return None, f"dense: not supported ({why})"


def sparse_network(
    model: nn.Module,
    kernel: str = "csr",
    *,
    block: Optional[int] = None,
    strict: bool = False,
    portable: bool = False,
) -> tuple[nn.Module, dict[str, str]]:
    """A plain copy of ``model`` (``folded``) whose pruned Linear/Conv2d layers run ``kernel`` (``KERNELS``) on the
    weights ``model``'s forward uses (``masked_weight``), and per layer what it runs: the kernel's name (``csr``,
    ``bsr 4x4``, ``csr (im2col)``), ``dense: not pruned`` (no zero weight), or ``dense: not supported (<why>)``;
    ``strict`` refuses the last with ``UserError``; ``portable`` holds each sparse matrix as its component tensors,
    rebuilt in every forward, so that ``torch.jit.trace`` can save the network (``runners/export.py``). ``model`` is
    not modified."""
    if kernel not in KERNELS:
        raise UserError(f"latency.sparse_kernel: must be one of {', '.join(KERNELS)} or none (got {kernel!r})")
    network = folded(model)
    report: dict[str, str] = {}
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        with torch.no_grad():
            replacement, report[name] = sparse_layer(module, kernel, block, portable)
        if strict and report[name].startswith("dense: not supported"):
            raise UserError(f"{name}: {kernel} {report[name]}")
        if replacement is not None and name == "":  # the model is one layer
            network = replacement
        elif replacement is not None:
            parent, _, child = name.rpartition(".")
            setattr(network.get_submodule(parent), child, replacement)
    return network.eval(), report


@dataclass
class SparseLatency:
    latency_ms: dict[str, dict[str, float]]  # {"dense" | "masked" | "sparse": {batch size: ms}}
    kernels: dict[str, str]  # layer -> what the sparse network runs there (sparse_network)


def measure_sparse_latency(
    masked: nn.Module,
    dense: nn.Module,
    input_shape: Sequence[int],
    *,
    kernel: str = "csr",
    batch_sizes: Sequence[int] = (1, 256),
    min_run_time: float = 0.1,
) -> SparseLatency:
    """Latency (ms per forward) of the unpruned ``dense`` network, of the pruned network as stored (``masked``: its
    pruning hooks multiply weight and mask in every forward) and of its ``sparse_network`` running ``kernel``,
    timed in turns by ``measure_latency_ms`` on the models' device and this process's threads."""
    network, kernels = sparse_network(masked, kernel)
    models = {"dense": dense, "masked": masked, "sparse": network}
    return SparseLatency(measure_latency_ms(models, input_shape, batch_sizes, min_run_time), kernels)
