"""Benchmark (not a test): from which sparsity on does a torch.sparse kernel beat the dense one on this CPU?

    .venv/bin/python benchmarks/sparse_kernels.py --out results/benchmarks/sparse_kernels          # a few minutes
    .venv/bin/python benchmarks/sparse_kernels.py --full --out results/benchmarks/sparse_kernels   # every shape, COO

For the Linear and Conv2d shapes of the built-in models (lenet300, mlp_bn, lenet5 and conv_bn on 28x28, vgg-19 and
resnet-20 on 32x32) and of a torchvision ResNet-18 on 224x224 (random weights, no download), one layer at a time:
the dense layer (its masked weights through the dense kernel) and the same layer through each sparse kernel of
``runners/sparse.py`` (CSR; BSR on the same unstructured mask; BSR on a mask of whole blocks, the pattern BSR is
for; COO with ``--full``; convolutions as im2col + the sparse product), at batch 1 and 64, on 1 and 2 threads, over
a grid of sparsities. Every comparison is timed by the records' timer (``runners.metrics.measure_latency_ms``: the
models take turns in ~10 ms blocks, each reports its fastest block), so another process on the cores slows both.
Sparsities are timed from the highest down; a kernel slower than ``--stop`` x dense is not timed at lower sparsities
(it only gets slower there), which keeps the default run affordable.

Printed: what this torch runs (kernels x dtypes, in ``inference_mode``), the floor (``benchmarks/speed.py``'s sgemm
throughput) at the start and the end with the load average, and per shape and kernel the break-even sparsity (the
lowest grid sparsity from which on the kernel stays faster than dense, interpolated in log density from the grid
point below) per batch and thread count. Written to ``--out``: ``speedups.csv`` (every timing), ``break_even.csv``
and ``speedup_vs_sparsity.{png,pdf}`` (measured speed-up against sparsity, one line per kernel and shape, panels per
shape group x batch x threads, the theoretical 1/(1 - s) beside).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# isort: off
import runners  # noqa: E402,F401 - OMP_WAIT_POLICY=PASSIVE before torch loads (runners/__init__.py)

# isort: on
import torch  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks.speed import header, matmul_floor  # noqa: E402
from foundations.seeds import generator  # noqa: E402
from methods.pipeline.masks import apply_masks  # noqa: E402
from models import build_model  # noqa: E402
from models.config import ModelConfig  # noqa: E402
from runners.config import LatencyConfig  # noqa: E402
from runners.metrics import measure_latency_ms  # noqa: E402
from runners.sparse import measure_sparse_latency, sparse_layer, sparse_matrix  # noqa: E402

SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995)
BATCHES = (1, 64)
THREADS = (1, 2)
KERNELS = ("csr", "bsr", "bsr blocks")
FULL_KERNELS = (*KERNELS, "coo")
BUILTIN = (  # (model, depth, input shape) as prunelab's configs build them
    ("lenet300", None, (1, 28, 28)),
    ("mlp_bn", None, (1, 28, 28)),
    ("lenet5", None, (1, 28, 28)),
    ("conv_bn", None, (1, 28, 28)),
    ("vgg", 19, (3, 32, 32)),
    ("resnet", 20, (3, 32, 32)),
)
GROUPS = ("Linear", "Conv, 28x28 nets", "Conv, CIFAR nets", "Conv, ResNet-18 224x224")
# The default run: the big and the typical layers of each group (every distinct shape with --full).
DEFAULT = (
    "lenet300.fc1",
    "lenet300.fc2",
    "mlp_bn.fc1",
    "mlp_bn.fc2",
    "lenet5.fc1",
    "resnet18.fc",
    "lenet5.conv2",
    "conv_bn.conv2",
    "vgg.conv2",
    "vgg.conv6",
    "vgg.conv12",
    "resnet.layer3.0.shortcut.conv",
    "resnet.layer1.0.conv1",
    "resnet.layer3.1.conv1",
    # the stages' 3x3 convs have the same multiply-adds (7.4 G at batch 64); the last has the smallest im2col
    # (layer1's 64->64 @56x56 took 150 s alone at batch 64, 0.46 GB of columns; layer3's 81 s): --full times them
    "resnet18.layer4.1.conv1",
)


@dataclass
class Shape:
    """One distinct layer shape and the layers that have it (``model.module``)."""

    layer: nn.Module  # a fresh layer of the shape (its weights are drawn per sparsity)
    input_shape: tuple[int, ...]  # one example's input: (in_features,) or (C, H, W)
    group: str
    users: list[str]

    @property
    def label(self) -> str:
        m = self.layer
        if isinstance(m, nn.Linear):
            return f"linear {m.in_features}->{m.out_features}"
        assert isinstance(m, nn.Conv2d)
        k, s = m.kernel_size, m.stride
        return (
            f"conv {m.in_channels}->{m.out_channels} {k[0]}x{k[1]}{f' s{s[0]}' if s[0] > 1 else ''} "
            f"@{self.input_shape[1]}x{self.input_shape[2]}"
        )


def layer_like(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.Linear):
        return nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
    assert isinstance(module, nn.Conv2d)
    return nn.Conv2d(
        module.in_channels,
        module.out_channels,
        module.kernel_size,
        module.stride,
        module.padding,
        module.dilation,
        module.groups,
        module.bias is not None,
    )


def key(module: nn.Module, input_shape: tuple[int, ...]) -> tuple:
    if isinstance(module, nn.Linear):
        return ("linear", module.in_features, module.out_features, module.bias is not None)
    return ("conv", str(module), input_shape)


def collect_shapes() -> list[Shape]:
    """Every distinct Linear/Conv2d shape of the built-in models and of torchvision's ResNet-18, found by a forward
    pass (a layer's input size is what it runs on)."""
    import torchvision

    networks = [
        (name, build_model(ModelConfig(name=name, depth=depth), shape, 10, torch.Generator().manual_seed(0)), shape)
        for name, depth, shape in BUILTIN
    ]
    networks.append(("resnet18", torchvision.models.resnet18(weights=None), (3, 224, 224)))
    shapes: dict[tuple, Shape] = {}
    for model_name, model, shape in networks:
        seen: list[tuple[str, nn.Module, tuple[int, ...]]] = []
        hooks = [
            module.register_forward_hook(lambda m, i, o, n=n: seen.append((n, m, tuple(i[0].shape[1:]))))
            for n, module in model.named_modules()
            if isinstance(module, (nn.Linear, nn.Conv2d))
        ]
        with torch.no_grad():
            model.eval()(torch.zeros(1, *shape))
        for hook in hooks:
            hook.remove()
        for name, module, input_shape in seen:
            if isinstance(module, nn.Linear):
                group = GROUPS[0]
            else:
                group = GROUPS[3] if model_name == "resnet18" else GROUPS[1] if shape[1] == 28 else GROUPS[2]
            entry = shapes.setdefault(
                key(module, input_shape),
                Shape(layer_like(module), input_shape[-1:] if group == GROUPS[0] else input_shape, group, []),
            )
            entry.users.append(f"{model_name}.{name}")
    return list(shapes.values())


# ----------------------------------------------------------------------------------------------------- masks
def block_size(matrix_shape: tuple[int, int]) -> int:
    """The BSR block of the benchmark: 4x4, or 2x2 where 4 does not divide the (O, K) matrix."""
    return next((b for b in (4, 2) if all(d % b == 0 for d in matrix_shape)), 0)


def unstructured_mask(shape: torch.Size, sparsity: float, gen: torch.Generator) -> torch.Tensor:
    keep = round((1 - sparsity) * math.prod(shape))
    mask = torch.zeros(math.prod(shape), dtype=torch.bool)
    mask[torch.randperm(mask.numel(), generator=gen)[:keep]] = True
    return mask.view(shape)


def block_mask(shape: torch.Size, sparsity: float, block: int, gen: torch.Generator) -> torch.Tensor:
    """Whole ``block`` x ``block`` blocks of the (O, K) weight matrix kept or removed."""
    rows, cols = shape[0], math.prod(shape[1:])
    blocks = unstructured_mask(torch.Size((rows // block, cols // block)), sparsity, gen)
    return blocks.repeat_interleave(block, 0).repeat_interleave(block, 1).view(shape)


def masked_copy(layer: nn.Module, mask: torch.Tensor) -> nn.Module:
    plain = layer_like(layer)
    plain.load_state_dict(layer.state_dict())
    with torch.no_grad():
        plain.weight.mul_(mask)
    return plain.eval()


def kernel_layer(layer: nn.Module, kernel: str, sparsity: float, seed: int) -> tuple[Optional[nn.Module], str]:
    """(the layer through ``kernel`` at ``sparsity``, its masked dense twin's name) or (None, why not)."""
    gen = torch.Generator().manual_seed(seed)
    matrix_shape = (layer.weight.shape[0], math.prod(layer.weight.shape[1:]))
    block = block_size(matrix_shape)
    if kernel == "bsr blocks":
        if not block:
            return None, f"no 4x4 or 2x2 block divides {matrix_shape}"
        mask = block_mask(layer.weight.shape, sparsity, block, gen)
    else:
        mask = unstructured_mask(layer.weight.shape, sparsity, gen)
    module, report = sparse_layer(masked_copy(layer, mask), kernel.split()[0], block or None)
    return (module.eval() if module is not None else None), report


# ----------------------------------------------------------------------------------------------------- timing
@dataclass
class Row:
    group: str
    shape: str
    users: str
    kernel: str
    batch: int
    threads: int
    sparsity: float
    dense_ms: float
    kernel_ms: float  # nan: not timed (slower than --stop x dense at a higher sparsity) or not supported

    @property
    def speedup(self) -> float:
        return self.dense_ms / self.kernel_ms


def time_shape(shape: Shape, kernels, batch: int, threads: int, min_run_time: float, stop: float) -> list[Row]:
    torch.manual_seed(0)
    layer = shape.layer.eval()
    running = set(kernels)
    rows = []
    for i, sparsity in enumerate(sorted(SPARSITIES, reverse=True)):
        models: dict[str, nn.Module] = {}
        for kernel in kernels:
            if kernel in running:
                module, _ = kernel_layer(layer, kernel, sparsity, seed=i)
                if module is None:
                    running.discard(kernel)
                else:
                    models[kernel] = module
        models["dense"] = layer  # the dense kernel's time does not depend on how many weights are zero
        ms = {
            k: v[str(batch)] for k, v in measure_latency_ms(models, shape.input_shape, (batch,), min_run_time).items()
        }
        for kernel in kernels:
            rows.append(
                Row(
                    shape.group,
                    shape.label,
                    " ".join(shape.users),
                    kernel,
                    batch,
                    threads,
                    sparsity,
                    ms["dense"],
                    ms.get(kernel, math.nan),
                )
            )
            if kernel in ms and ms[kernel] > stop * ms["dense"]:
                running.discard(kernel)
    return rows


def break_even(rows: list[Row]) -> str:
    """The sparsity from which on the kernel stays faster than dense: '<= 0.5' (the whole grid), '> 0.995' (none),
    else interpolated in log density between the grid point below (slower) and the first faster one."""
    ordered = sorted(rows, key=lambda r: r.sparsity)
    if not any(math.isfinite(r.kernel_ms) for r in ordered):
        return "n/a"  # the kernel cannot run this shape (e.g. no square block divides it)
    faster = [r.kernel_ms < r.dense_ms for r in ordered]  # a kernel not timed was slower than --stop x dense
    first = next((i for i in range(len(ordered)) if all(faster[i:])), None)
    if first is None:
        return f"> {ordered[-1].sparsity:g}"
    if first == 0:
        return f"<= {ordered[0].sparsity:g}"
    lo, hi = ordered[first - 1], ordered[first]
    if not math.isfinite(lo.kernel_ms):
        return f"{hi.sparsity:g}"
    x0, x1 = math.log(1 - lo.sparsity), math.log(1 - hi.sparsity)
    y0, y1 = math.log(lo.speedup), math.log(hi.speedup)
    x = x0 + (x1 - x0) * (0 - y0) / (y1 - y0)
    return f"{1 - math.exp(x):.3f}"


# ----------------------------------------------------------------------------------------------------- support
def support_lines() -> list[str]:
    """What this torch runs on the CPU: each kernel on a pruned 32->16 Linear per dtype, in inference_mode."""
    out = ["what torch runs here (a pruned Linear 32->16 in inference_mode; csr/bsr/coo = runners/sparse.py):"]
    layer = nn.Linear(32, 16)
    with torch.no_grad():
        layer.weight.mul_(unstructured_mask(layer.weight.shape, 0.75, torch.Generator().manual_seed(0)))
    x = torch.randn(3, 32)
    for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        cells = []
        for kernel in ("csr", "bsr", "coo", "semi_structured"):
            plain = masked_copy(layer, layer.weight != 0).to(dtype)
            try:
                with torch.inference_mode():
                    module, report = sparse_layer(plain, kernel)
                    if module is None:
                        cells.append(f"{kernel}: {report.removeprefix('dense: ')}")
                        continue
                    error = float((module(x.to(dtype)) - plain(x.to(dtype))).abs().max())
                cells.append(f"{kernel}: ok (max |diff| {error:.1e})")
            except RuntimeError as err:
                cells.append(f"{kernel}: fails ({str(err).splitlines()[0][:70]})")
        out.append(f"  {str(dtype).removeprefix('torch.'):<9} " + "; ".join(cells))
    weight = layer.weight.detach()
    csr, bsr = sparse_matrix(weight, "csr")[0], weight.to_sparse_bsr((4, 1))  # built outside inference_mode
    for what, call in (  # the two calls runners/sparse.py avoids, and why
        ("addmm on a bsr of 4x1 blocks", lambda: torch.addmm(torch.zeros(16, 1), bsr, x.t())),
        ("F.linear(x, csr weight made outside it)", lambda: torch.nn.functional.linear(x, csr)),
    ):
        try:
            with torch.inference_mode():
                call()
            out.append(f"  {what} in inference_mode: ok")
        except RuntimeError as err:
            out.append(f"  {what} in inference_mode: fails ({str(err).splitlines()[0][:80]})")
    return out


# ----------------------------------------------------------------------------------------------------- per job
def job_cost_lines(repeats: int) -> list[str]:
    """What ``Experiment.finish`` spends on a weight-level record's latency (``measure_sparse_latency`` at the
    default ``latency`` settings, one thread as a job) for the survey's networks at sparsity 0.9."""
    timing = LatencyConfig()
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    out = [f"per-job cost of a weight-level record's latency (latency defaults, 1 thread, {repeats} repeats):"]
    for name in ("lenet300", "mlp_bn"):
        model, dense = (build_model(ModelConfig(name=name), (1, 28, 28), 10, generator(0)) for _ in range(2))
        weights = {n: p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() == 2}
        apply_masks(model, {n: torch.rand(p.shape, generator=generator(1)) >= 0.9 for n, p in weights.items()})
        seconds, speedups = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            result = measure_sparse_latency(
                model,
                dense,
                (1, 28, 28),
                kernel=timing.sparse_kernel,
                batch_sizes=timing.batch_sizes,
                min_run_time=timing.per_network(3),
            )
            seconds.append(time.perf_counter() - start)
            ms = result.latency_ms
            speedups.append({b: ms["dense"][b] / ms["sparse"][b] for b in ms["dense"]})
        cells = ", ".join(
            f"batch {b} {min(s[b] for s in speedups):.2f}-{max(s[b] for s in speedups):.2f}" for b in speedups[0]
        )
        out.append(
            f"  {name:<9} median {sorted(seconds)[len(seconds) // 2]:.2f} s [{min(seconds):.2f}, {max(seconds):.2f}] "
            f"per job; dense/sparse ({timing.sparse_kernel}) {cells}; load average {os.getloadavg()[0]:.1f}"
        )
    torch.set_num_threads(previous)
    return out


# ----------------------------------------------------------------------------------------------------- output
def write_csv(rows: list[Row], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "group",
                "shape",
                "layers",
                "kernel",
                "batch",
                "threads",
                "sparsity",
                "dense_ms",
                "kernel_ms",
                "speedup",
                "theoretical",
            ]
        )
        for r in rows:
            writer.writerow(
                [
                    r.group,
                    r.shape,
                    r.users,
                    r.kernel,
                    r.batch,
                    r.threads,
                    r.sparsity,
                    f"{r.dense_ms:.6g}",
                    f"{r.kernel_ms:.6g}",
                    f"{r.speedup:.4g}",
                    f"{1 / (1 - r.sparsity):.4g}",
                ]
            )


def break_even_table(rows: list[Row], kernels, path: Path) -> list[str]:
    settings = [(b, t) for b in BATCHES for t in THREADS]
    cases: dict[tuple[str, str, str], dict[tuple[int, int], list[Row]]] = {}
    for r in rows:
        cases.setdefault((r.group, r.shape, r.kernel), {}).setdefault((r.batch, r.threads), []).append(r)
    head = f"{'shape':<34} {'kernel':<11} " + " ".join(f"{f'b{b} t{t}':>14}" for b, t in settings)
    lines = ["break-even sparsity (speed-up at 0.99 in brackets); '> 0.995': slower than dense on the whole grid", head]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["group", "shape", "kernel", "batch", "threads", "break_even", "speedup_at_0.9", "speedup_at_0.99"]
        )
        for (group, shape, kernel), by in sorted(
            cases.items(), key=lambda kv: (GROUPS.index(kv[0][0]), kv[0][1], kernels.index(kv[0][2]))
        ):
            cells = []
            for setting in settings:
                if setting not in by:
                    cells.append("-")
                    continue
                at = {r.sparsity: r.speedup for r in by[setting]}
                value = break_even(by[setting])
                writer.writerow(
                    [
                        group,
                        shape,
                        kernel,
                        *setting,
                        value,
                        f"{at.get(0.9, math.nan):.3g}",
                        f"{at.get(0.99, math.nan):.3g}",
                    ]
                )
                cells.append(f"{value} ({at.get(0.99, math.nan):.2g}x)")
            lines.append(f"{shape:<34} {kernel:<11} " + " ".join(f"{c:>14}" for c in cells))
    return lines


def figure(rows: list[Row], kernels, out: Path, note: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in GROUPS if any(r.group == g for r in rows)]
    settings = [(b, t) for b in BATCHES for t in THREADS]
    colors = dict(zip(FULL_KERNELS, ("tab:blue", "tab:orange", "tab:green", "tab:red")))
    fig, axes = plt.subplots(
        len(settings),
        len(groups),
        figsize=(3.6 * len(groups), 2.7 * len(settings)),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    density = [1 - s for s in SPARSITIES]
    for i, (batch, threads) in enumerate(settings):
        for j, group in enumerate(groups):
            ax = axes[i][j]
            ax.plot(
                density,
                [1 / d for d in density],
                color="black",
                linestyle="--",
                linewidth=1,
                label="theoretical 1/(1-s)",
            )
            ax.axhline(1.0, color="grey", linewidth=0.8)
            for kernel in kernels:
                shapes = sorted({r.shape for r in rows if r.group == group and r.kernel == kernel})
                for shape in shapes:
                    pts = sorted(
                        (1 - r.sparsity, r.speedup)
                        for r in rows
                        if r.group == group
                        and r.kernel == kernel
                        and r.shape == shape
                        and r.batch == batch
                        and r.threads == threads
                        and math.isfinite(r.kernel_ms)
                    )
                    if pts:
                        ax.plot(
                            *zip(*pts),
                            color=colors[kernel],
                            linewidth=0.9,
                            alpha=0.6,
                            marker=".",
                            markersize=3,
                            label=kernel if shape == shapes[0] else None,
                        )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.invert_xaxis()
            ax.set_xticks(density[::2] + [density[-1]])
            ax.set_xticklabels([f"{1 - d:g}" for d in density[::2] + [density[-1]]])
            ax.minorticks_off()
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(f"{group}\n({len({r.shape for r in rows if r.group == group})} shapes)", fontsize=9)
            if j == 0:
                ax.set_ylabel(f"batch {batch}, {threads} thread{'s' if threads > 1 else ''}\nspeed-up over dense")
            if i == len(settings) - 1:
                ax.set_xlabel("sparsity")
    handles, labels = axes[0][0].get_legend_handles_labels()
    by_label = dict(zip(labels, handles))
    for ax in axes.flat:
        for h, l in zip(*ax.get_legend_handles_labels()):
            by_label.setdefault(l, h)
    fig.legend(by_label.values(), by_label.keys(), loc="lower center", ncol=len(by_label), frameon=False)
    fig.suptitle(f"Sparse kernels against dense, one line per shape and kernel ({note})", fontsize=10)
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    paths = [out / "speedup_vs_sparsity.png", out / "speedup_vs_sparsity.pdf"]
    for path in paths:
        fig.savefig(path, dpi=130)
    plt.close(fig)
    return paths


# ----------------------------------------------------------------------------------------------------- main
def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for the CSVs and the figure")
    ap.add_argument("--full", action="store_true", help="every distinct shape, COO too, 0.1 s per model and timing")
    ap.add_argument("--layers", default=None, help="comma-separated model.module names to time (default: a subset)")
    ap.add_argument("--min-run-time", type=float, default=None, help="seconds per model per timing (0.03; --full 0.1)")
    ap.add_argument(
        "--stop", type=float, default=4.0, help="stop timing a kernel below the sparsity it is this x slower"
    )
    ap.add_argument("--job-repeats", type=int, default=5, help="repeats of the per-job cost measurement (0: skip)")
    return ap.parse_args(argv)


def main(argv=None) -> None:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for line in header():
        print(line, flush=True)
    torch.set_num_threads(2)
    print(f"floor: sgemm 2048x2048, 2 threads, best of 5: {matmul_floor():.1f} GFLOP/s", flush=True)
    for line in support_lines():
        print(line, flush=True)
    for line in job_cost_lines(args.job_repeats) if args.job_repeats else []:
        print(line, flush=True)
    shapes = collect_shapes()
    wanted = set(args.layers.split(",")) if args.layers else None if args.full else set(DEFAULT)
    unknown = sorted((wanted or set()) - {u for s in shapes for u in s.users})
    if unknown:
        raise SystemExit(
            f"--layers: no layer {', '.join(unknown)}; e.g. lenet300.fc1, vgg.conv2, resnet18.layer3.1.conv1"
        )
    chosen = [s for s in shapes if wanted is None or wanted & set(s.users)]
    kernels = FULL_KERNELS if args.full else KERNELS
    min_run_time = args.min_run_time or (0.1 if args.full else 0.03)
    print(
        f"{len(chosen)} of {len(shapes)} distinct shapes, kernels {', '.join(kernels)}, sparsities "
        f"{', '.join(map(str, SPARSITIES))}, batches {BATCHES}, threads {THREADS}, {min_run_time:g} s per model per "
        f"timing, stop below {args.stop:g}x slower",
        flush=True,
    )
    rows: list[Row] = []
    for threads in THREADS:
        torch.set_num_threads(threads)
        for shape in chosen:
            for batch in BATCHES:
                t = time.perf_counter()
                rows += time_shape(shape, kernels, batch, threads, min_run_time, args.stop)
                print(
                    f"  {threads} thread(s) batch {batch:>2} {shape.label:<34} {time.perf_counter() - t:6.1f} s",
                    flush=True,
                )
    write_csv(rows, args.out / "speedups.csv")
    for line in break_even_table(rows, kernels, args.out / "break_even.csv"):
        print(line, flush=True)
    torch.set_num_threads(2)
    floor = matmul_floor()
    note = f"torch {torch.__version__}, floor {floor:.0f} GFLOP/s"
    for path in figure(rows, kernels, args.out, note):
        print(f"wrote {path}", flush=True)
    print(
        f"floor again at the end: {floor:.1f} GFLOP/s, load average {os.getloadavg()[0]:.1f}; "
        f"{time.perf_counter() - start:.0f} s in all",
        flush=True,
    )


if __name__ == "__main__":
    main()
