"""Compression metrics: parameters, multiply-adds (dense and effective), measured latency; and the machine they are
measured on (the CPU, its SIMD flags, the sgemm floor ``benchmarks/speed.py`` and the reproduction print).

Multiply-adds (MACs) come from ``torch.utils.flop_counter.FlopCounterMode``, which counts 2 FLOPs per multiply-add
for convolutions and matrix products (bias additions, BN, pooling and activations are not counted), attributed to
each Conv2d/Linear by module path. The record's ``flops_*`` fields hold these MAC counts for ONE example
(LeNet-300-100: 266,200; slimming's "7.97e8 FLOPs" for VGG-19 is 2 × its 3.98e8 MACs).

``flops_effective`` scales each layer's MACs by its weight density — from ``masks`` when given, else from the masks
``torch.nn.utils.prune`` attached to the module, else from the nonzero weights — which is how the Rethinking code
counts unstructured sparsity for Scratch-B (Liu et al. 2019, ``count_flops.py``: only nonzero weights). For a Conv2d
or Linear this is exact: MACs = output positions × weight entries. A physically compacted model simply has fewer
MACs. FLOPs are not speed, so structured results also report measured latency.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from foundations.training import eval_mode
from methods.pipeline.masks import Masks, current_masks, plain_name

COUNTED_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _nonzero(name: str, value: torch.Tensor, masks: Masks) -> int:
    if name in masks:
        mask = masks[name]
        if mask.shape != value.shape:
            raise ValueError(f"mask {name!r} has shape {tuple(mask.shape)} but the parameter has {tuple(value.shape)}")
        return int(mask.detach().bool().sum())
    return int((value.detach() != 0).sum())


def count_params(model: nn.Module, masks: Optional[Masks] = None) -> dict:
    """``params_total`` (every parameter) and ``params_nonzero`` (mask True where a mask is given, else value ≠ 0).

    Works on plain models and on models masked with ``torch.nn.utils.prune`` (``weight_orig`` counts as ``weight``).
    """
    masks = {**current_masks(model), **(masks or {})}
    total = nonzero = 0
    for name, param in model.named_parameters():
        name = plain_name(name)
        total += param.numel()
        nonzero += _nonzero(name, param, masks)
    return {"params_total": total, "params_nonzero": nonzero}


def _device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def count_flops(model: nn.Module, input_shape, masks: Optional[Masks] = None) -> dict:
    """Multiply-adds of one example of shape ``input_shape`` (C, H, W).

    Returns ``flops_dense`` (all weights), ``flops_effective`` (each Conv/Linear scaled by its weight density; any
    matrix products outside such modules count fully) and ``per_layer`` {module name: {"macs", "density"}}.
    """
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), eval_mode(model):
        x = torch.zeros(1, *input_shape, device=_device(model))
        with counter:
            model(x)
    counts = counter.get_flop_counts()
    dense = sum(counts.get("Global", {}).values()) // 2
    # FlopCounterMode keys modules as "<root class name>.<module path>".
    prefix = type(model).__name__ + "."
    masks = {**current_masks(model), **(masks or {})}
    per_layer: dict[str, dict] = {}
    for name, module in model.named_modules():
        if not isinstance(module, COUNTED_MODULES) or name == "":
            continue
        macs = sum(counts.get(prefix + name, {}).values()) // 2
        weight = module.weight  # for a pruned module this is weight_orig * mask, refreshed by the forward above
        density = _nonzero(f"{name}.weight", weight, masks) / max(weight.numel(), 1)
        per_layer[name] = {"macs": int(macs), "density": float(density)}
    attributed = sum(v["macs"] for v in per_layer.values())
    effective = dense - attributed + sum(v["macs"] * v["density"] for v in per_layer.values())
    return {"flops_dense": int(dense), "flops_effective": int(round(effective)), "per_layer": per_layer}


def processor(device: torch.device) -> str:
    """What a latency measured on ``device`` ran on, as a report names the machine: a CUDA device's name, else the
    CPU's model name (:func:`cpu_description`)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_description()["cpu"]


def latency_setting(model: nn.Module) -> dict:
    """Where :func:`measure_latency_ms` times ``model``: its device, what that device is (:func:`processor`) and the
    torch thread count of this process (``threads=1`` jobs under joblib are timed on one thread, a plain run on
    torch's default)."""
    device = _device(model)
    return {"device": str(device), "processor": processor(device), "threads": torch.get_num_threads()}


def measure_latency_ms(
    models: Mapping[str, nn.Module], input_shape, batch_sizes=(1, 256), min_run_time: float = 0.1
) -> dict[str, dict[str, float]]:
    """Wall time (ms) of one forward pass of each of ``models`` per batch size, in eval mode under
    ``torch.inference_mode``, on the models' own device and with this process's torch thread count
    (:func:`latency_setting`): ``{"dense": {"1": 0.09, "256": 2.1}, "pruned": {...}}`` for
    ``{"dense": ..., "pruned": ...}``. Keys are the batch sizes as strings. The models are not modified.

    Timed in blocks of ~10 ms (CUDA synchronized around each: a CUDA forward only queues kernels), the models'
    blocks taking turns, until each has run ``min_run_time`` seconds and 3 blocks; each model's latency is its
    fastest block's time per forward (:func:`_fastest_blocks`).
    """
    devices = {_device(m) for m in models.values()}
    if len(devices) != 1:
        raise ValueError(f"latency compares models on one device; these are on {sorted(map(str, devices))}")
    device = devices.pop()
    gen = torch.Generator().manual_seed(0)
    out: dict[str, dict[str, float]] = {name: {} for name in models}
    with torch.inference_mode(), contextlib.ExitStack() as stack:
        for model in models.values():
            stack.enter_context(eval_mode(model))
        for batch in batch_sizes:
            x = torch.randn(batch, *input_shape, generator=gen).to(device)
            forwards = [functools.partial(model, x) for model in models.values()]
            for name, seconds in zip(models, _fastest_blocks(forwards, device, min_run_time)):
                out[name][str(batch)] = seconds * 1000.0
    return out


def _block(forward: Callable[[], Any], number: int, device: torch.device) -> float:
    """Seconds per call of ``number`` calls of ``forward``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(number):
        forward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / number


def _fastest_blocks(
    forwards: Sequence[Callable[[], Any]],
    device: torch.device,
    min_run_time: float,
    block: float = 0.01,
    min_blocks: int = 3,
) -> list[float]:
    """Seconds per call of each of ``forwards`` in its fastest block of ~``block`` seconds; the blocks take turns
    until each has run ``min_run_time`` seconds and ``min_blocks`` blocks.

    Turns and the fastest block, because a record's speed-up is a ratio of two latencies and a user's machine is
    rarely idle: another process on the cores only ever adds time, turns spread it over both models, and the fastest
    of ~10 blocks is one it missed. Beside two busy processes on 2 cores (``benchmarks/speed.py --latency``, 10
    repeats), a half-width mlp_bn's speed-up at batch 1 ranged 1.43-1.48 taking turns, 0.79-2.75 timing one model
    after the other, and 0.75-1.84 by ``torch.utils.benchmark``'s ``blocked_autorange``; idle, the medians were
    1.41-1.47. A plain clock, not ``torch.utils.benchmark.Timer``: its ``timeit`` runs two uncounted warm-up calls
    before each block (40 % more forwards at batch 256), and ``blocked_autorange`` searches a block size by powers
    of ten (1,111 forwards of a 0.1 ms model before the first block).
    """
    numbers = []
    for forward in forwards:
        _block(forward, 1, device)  # warm-up: the first call allocates and builds the kernels' primitives
        # sized by the fastest of up to 3 calls: one call slowed by another process sized blocks far below ~10 ms,
        # and the models whose blocks were sized right then ran every extra turn (a weight-level job's three
        # networks took up to 4.3 s instead of 1.1 s beside busy processes; 1.45 s at most with this)
        once = _block(forward, 1, device)
        for _ in range(2):
            once = min(once, _block(forward, 1, device)) if once < block else once
        numbers.append(max(1, int(block / max(once, 1e-7))))
    blocks: list[list[float]] = [[] for _ in forwards]
    while any(sum(b) * n < min_run_time or len(b) < min_blocks for b, n in zip(blocks, numbers)):
        for forward, number, times in zip(forwards, numbers, blocks):
            times.append(_block(forward, number, device))
    return [float(min(times)) for times in blocks]


# ------------------------------------------------------------------------------------------------ the machine
# The vector-instruction flags that decide which kernels torch runs (and so the last bits of the numbers).
SIMD_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile")


def matmul_floor(threads: int = 2, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n x n sgemm, best of ``repeats``: the rate no training step of these models can beat."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    torch.mm(a, b, out=c)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=c)
        best = min(best, time.perf_counter() - start)
    torch.set_num_threads(previous)
    return 2 * n**3 / best / 1e9


@functools.cache  # lscpu once per process: every record's latency names its processor
def cpu_description() -> dict[str, Any]:
    """The CPU model, its SIMD flags among ``SIMD_FLAGS`` (``lscpu``, else /proc/cpuinfo) and the kernel level torch
    dispatches to (``torch.backends.cpu.get_cpu_capability()``): numbers are bitwise reproducible on one such type."""
    fields: dict[str, str] = {}
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True, timeout=10).stdout
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}
    except (OSError, subprocess.SubprocessError):  # no lscpu: its "Model name" and "Flags" from /proc/cpuinfo
        cpuinfo = Path("/proc/cpuinfo")
        for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
            key, _, value = line.partition(":")
            fields.setdefault(key.strip().lower(), value.strip())
    flags = set(fields.get("flags", "").split())
    return {
        "cpu": fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU",
        "cpus": os.cpu_count(),
        "flags": [f for f in SIMD_FLAGS if f in flags],
        "capability": torch.backends.cpu.get_cpu_capability(),
    }
