"""Compression metrics: parameters, multiply-adds (dense and effective), measured CPU latency.

Multiply-adds come from ``torch.utils.flop_counter`` (which counts 2 FLOPs per multiply-add) attributed to each
Conv2d/Linear; the effective count scales each layer by its weight density, so masks count only nonzero weights
and a physically compacted model simply has fewer MACs. FLOPs are not speed: structured results also measure latency.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> dict:
    params = list(model.parameters())
    return {"params_total": sum(p.numel() for p in params),
            "params_nonzero": sum(int((p.detach() != 0).sum()) for p in params)}


def count_flops(model: nn.Module, input_shape) -> dict:
    """Multiply-adds of one example: ``flops_dense`` (all weights) and ``flops_effective`` (nonzero weights)."""
    model = model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    counts = counter.get_flop_counts()
    root = next(iter(counts))  # "Global"; module keys are "<ClassName>.<module path>"
    prefix = type(model).__name__ + "."
    per_layer = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            flops = sum(counts.get(prefix + name, {}).values())
            weight = module.weight.detach()
            per_layer[name] = {"macs": flops // 2, "density": float((weight != 0).sum()) / weight.numel()}
    dense = sum(counts[root].values()) // 2
    layer_total = sum(v["macs"] for v in per_layer.values())
    effective = dense - layer_total + sum(v["macs"] * v["density"] for v in per_layer.values())
    return {"flops_dense": int(dense), "flops_effective": int(round(effective)), "per_layer": per_layer}


def measure_latency_ms(model: nn.Module, input_shape, batch_sizes=(1, 256), repeats: int = 20, warmup: int = 3) -> dict:
    """Median CPU wall time of a forward pass per batch size (eval mode, inference mode)."""
    model = model.cpu().eval()
    out = {}
    with torch.inference_mode():
        for batch in batch_sizes:
            x = torch.randn(batch, *input_shape)
            for _ in range(warmup):
                model(x)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - start) * 1000)
            out[str(batch)] = statistics.median(times)
    return out
