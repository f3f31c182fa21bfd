"""Benchmark (not a test): where a sweep's time goes, as ratios measured in one run on this machine.

    .venv/bin/python benchmarks/speed.py                        # ~3-5 min: floor, models, mini-sweep
    .venv/bin/python benchmarks/speed.py --epoch --repeats 5    # whole epochs instead of the first steps
    .venv/bin/python benchmarks/speed.py --store results --experiment survey_mlp   # reuse in a finished survey
    .venv/bin/python benchmarks/speed.py --threads              # 1 vs 2 threads, idle and with a competing process
    .venv/bin/python benchmarks/speed.py --conv                 # channels_last / torch.compile / mkldnn off (item 6)
    .venv/bin/python benchmarks/speed.py --latency              # the records' latency timer vs blocked_autorange

Printed, all measured in this run (every comparison interleaved A, B, A, B, ...; best of ``--repeats``):
1. the floor: single-precision matrix-multiply throughput at 2 threads (GFLOP/s, 2048x2048 sgemm);
2. per model (Fashion-MNIST, 55k images, batch 128): the epoch time of ``foundations.training.train`` (without
   evaluation) as a multiple of its FLOP floor = multiply-adds per image x 2 FLOPs x 3 (forward + backward) x images
   / floor; framework / hand-written loop (``benchmarks/train_loop.hand_loop``); masked / dense at sparsity 0.9
   (random layerwise masks on every Conv/Linear weight, trained as a masked train stage trains), and the same for
   the masked path before ``masked_training`` (pruning pre-hooks + re-zeroing weights and optimizer state per step);
   for conv nets, which train channels-last on the CPU by default, the NCHW layout / the default; and the
   model's Conv2d/Linear kernels alone (each layer timed in isolation at its batch-128 shape, forward + backward)
   as a multiple of the same floor: the part of the gap to the floor that is PyTorch's kernels, not the framework;
3. per-job overhead of a mini-sweep run through the CLI (basic launcher, fresh store in a temp folder): job wall
   time - the wall times of the stages it computed, median over the jobs;
4. survey time from the records: the sum over jobs of all their stages (no reuse) vs the stages actually computed;
5. (--latency) a structured job's latency timing (dense and a half-width model, batch 1 and 256) by
   ``runners.metrics.measure_latency_ms`` (the models' blocks in turns), by the same timer one model at a time, and
   by ``Timer.blocked_autorange(0.1)``: seconds, and the speed-ups each reports (median and range over the
   repeats), idle and beside one busy process per core;
6. (--conv) training steps of the conv nets in channels-last, with oneDNN off, under ``torch.compile`` (inductor) and
   both, and of mlp_bn under ``torch.compile`` (whether fusing BN, ReLU and the loss closes the gap that its GEMMs
   leave to the floor): speed-up over eager, and whether each is deterministic and equal to eager.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

if "--worker" not in sys.argv or "cli" in sys.argv:
    import runners  # noqa: F401 - the CLI's OpenMP environment (runners/__init__.py), set before torch loads
import torch  # noqa: E402

from benchmarks.train_loop import NoEval, hand_loop, interleaved  # noqa: E402
from datasets import build_dataset  # noqa: E402
from datasets.config import DatasetConfig  # noqa: E402
from foundations.training import Hooks, TrainConfig, channels_last, conv_geometries, train  # noqa: E402
from methods.pipeline.masks import Prunable, apply_masks, masked_training, prunable_names  # noqa: E402
from models import build_model  # noqa: E402
from models.config import ModelConfig  # noqa: E402
from runners.metrics import count_flops, cpu_description, matmul_floor, measure_latency_ms  # noqa: E402
from runners.train import configure_torch  # noqa: E402

MODELS = ("lenet300", "mlp_bn", "conv_bn", "lenet5")
CONVS = ("conv_bn", "lenet5")
CONV_VARIANTS = ("eager", "channels_last", "mkldnn off", "compile", "compile channels_last")
MLP_VARIANTS = ("eager", "compile")  # inductor fuses BN, ReLU and the loss: the part of mlp_bn's gap not in its GEMMs
FLOOR_TARGET = {"mlp_bn": 2.0, "conv_bn": 3.0}
MASKED_TARGET = {"lenet300": 1.1, "mlp_bn": 1.1, "conv_bn": 1.1}
SPARSITY = 0.9
LR = 0.01  # LeNet-5 diverges at the default 0.05 (NaN arithmetic would time something else); speed does not care
SWEEP = ["+experiment=survey_mlp", "survey.dense_epochs=1", "survey.recovery_epochs=1", "dataset.train_limit=5000"]
PY = sys.executable


# ----------------------------------------------------------------------------------------------------- models
def fresh(name: str, data) -> torch.nn.Module:
    return build_model(ModelConfig(name=name), data.input_shape, data.num_classes, torch.Generator().manual_seed(0))


def random_masks(model: torch.nn.Module, sparsity: float = SPARSITY) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    params = dict(model.named_parameters())
    return {n: torch.rand(params[n].shape, generator=gen) >= sparsity for n in prunable_names(model, Prunable())}


def rezero_after_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """The masked path before ``masked_training`` (the 'prune hooks' column): the pruning pre-hook computes
    ``weight_orig * mask`` every forward, and every pruned weight and optimizer-state entry is re-zeroed after each
    step."""
    with torch.no_grad():
        for module in model.modules():
            for buffer_name, mask in module.named_buffers(recurse=False):
                if buffer_name.endswith("_mask"):
                    weight = getattr(module, f"{buffer_name[:-5]}_orig")
                    weight.mul_(mask)
                    for value in optimizer.state.get(weight, {}).values():
                        if torch.is_tensor(value) and value.shape == weight.shape:
                            value.mul_(mask)


def framework(name: str, data, cfg: TrainConfig, masks=None, prune_hooks: bool = False) -> None:
    """Train as a train stage trains (runners/experiment.py: train_stage), masked when ``masks`` are given."""
    model = fresh(name, data)
    if masks is not None:
        apply_masks(model, masks)
    if prune_hooks:
        train(
            model,
            NoEval(data),
            cfg,
            data_seed=0,
            device=torch.device("cpu"),
            hooks=Hooks([], [rezero_after_step]),
            progress=False,
        )
        return
    with masked_training(model) as hooks:
        train(model, NoEval(data), cfg, data_seed=0, device=torch.device("cpu"), hooks=hooks, progress=False)


def kernels_alone(name: str, data, nhwc: bool, steps: int = 20, repeats: int = 3) -> float:
    """Seconds per training step of the model's Conv2d/Linear layers alone, each timed in isolation at its own
    input shape (batch 128; forward, and backward to its input and weight): what PyTorch's CPU kernels need for the
    multiply-adds the FLOP floor counts. The rest of a step (BN, pooling, ReLU, loss, optimizer) is not in it."""
    model, shapes = fresh(name, data), {}
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]

    def note(module, args) -> None:  # a pre-hook's return value would replace the input
        shapes[module] = args[0].shape

    handles = [m.register_forward_pre_hook(note) for m in layers]
    model(torch.zeros(128, *data.input_shape))
    for handle in handles:
        handle.remove()
    layout = torch.channels_last if nhwc else torch.contiguous_format
    total = 0.0
    for layer in layers:
        layer.to(memory_format=layout)
        x = torch.randn(shapes[layer])
        x = (x.contiguous(memory_format=layout) if x.dim() == 4 else x).requires_grad_(layer is not layers[0])

        def step(layer=layer, x=x):
            for _ in range(steps):
                layer.zero_grad(set_to_none=True)
                layer(x).sum().backward()

        step()  # oneDNN primitives created outside the timing
        total += min(interleaved([step], repeats)[0]) / steps
    return total


def model_rows(data, names, iterations: dict[str, int], repeats: int, floor: float) -> list[str]:
    per_epoch = data.train.num_batches(128)
    lines = [
        f"models: epoch = {per_epoch} steps of batch 128, estimated from the first n steps (best of {repeats})",
        f"{'model':<9} {'MACs/image':>11} {'epoch s':>8} {'floor s':>8} {'x floor':>8} {'target':>7} "
        f"{'framework/hand':>15} {'masked/dense':>13} {'target':>7} {'prune hooks/dense':>18} {'NCHW/default':>13} "
        f"{'kernels x floor':>16}",
    ]
    for name in names:
        n = iterations[name]
        cfg = TrainConfig(iterations=n, batch_size=128, lr=LR, weight_decay=5e-4)
        probe = fresh(name, data)  # read only: the masks' shapes, the layout, the multiply-adds
        masks = random_masks(probe)
        nhwc = bool(channels_last(None, conv_geometries(probe), torch.device("cpu")))
        runs = [
            lambda: framework(name, data, cfg),
            lambda: hand_loop(fresh(name, data), data, cfg, nhwc),
            lambda: framework(name, data, cfg, masks),
            lambda: framework(name, data, cfg, masks, prune_hooks=True),
        ]
        if nhwc:  # the conv default (channels-last) against the NCHW layout it replaced
            runs.append(lambda: framework(name, data, replace(cfg, channels_last=False)))
        dense, hand, masked, hooked, *nchw = (min(t) for t in interleaved(runs, repeats))
        macs = count_flops(probe, data.input_shape)["flops_dense"]
        epoch = dense / n * per_epoch
        floor_s = macs * 2 * 3 * len(data.train) / (floor * 1e9)
        kernels = kernels_alone(name, data, nhwc, repeats=repeats) * per_epoch
        lines.append(
            f"{name:<9} {macs:>11,} {epoch:>8.2f} {floor_s:>8.2f} {epoch / floor_s:>8.2f} "
            f"{_target(FLOOR_TARGET.get(name)):>7} {dense / hand:>15.3f} {masked / dense:>13.3f} "
            f"{_target(MASKED_TARGET.get(name)):>7} {hooked / dense:>18.3f} "
            f"{f'{nchw[0] / dense:.3f}' if nchw else '-':>13} {kernels / floor_s:>16.2f}   n={n}"
        )
    return lines


def _target(value) -> str:
    return f"<= {value:g}" if value else "-"


# ----------------------------------------------------------------------------------------------------- sweeps
def run_sweep(root: Path, arms: str, levels: str) -> Path:
    """The mini-sweep through the CLI, as `make survey` runs it (basic launcher, default logger)."""
    sweep_dir = root / "multirun"
    cmd = [
        PY,
        "-m",
        "runners.train",
        "-m",
        *SWEEP,
        f"+experiment/arm={arms}",
        f"level={levels}",
        f"paths.results={root / 'results'}",
        f"hydra.sweep.dir={sweep_dir}",
        "progress=false",
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"mini-sweep failed ({' '.join(cmd)}):\n{done.stderr[-3000:]}")
    return sweep_dir


def stage_results(results: Path) -> dict[str, dict]:
    """Every finished stage of a store (all kinds but experiment records), by hash, with its result.json mtime."""
    out = {}
    for path in (results / "runs").glob("*/*/result.json"):
        if path.parent.parent.name == "experiment":
            continue
        result = json.loads(path.read_text())
        out[path.parent.name] = {**result, "_written": path.stat().st_mtime}
    return out


def job_overheads(sweep_dir: Path, stages: dict[str, dict]) -> list[tuple[str, float, float]]:
    """(label, job wall, walls of the stages it computed) per job of a sequential sweep: a job spans from the end of
    the previous one (the first from the sweep's start marker) to its result.json; its stages are those finished
    in that span."""
    jobs = sorted(
        (p / "result.json" for p in sweep_dir.iterdir() if (p / "result.json").exists()),
        key=lambda p: p.stat().st_mtime,
    )
    start = (sweep_dir / ".sweep_size").stat().st_mtime
    out = []
    for record in jobs:
        end = record.stat().st_mtime
        computed = sum(s["wall_time_s"] for s in stages.values() if start < s["_written"] <= end)
        out.append((json.loads(record.read_text()).get("label", "?"), end - start, computed))
        start = end
    return out


def reuse_summary(records: list[dict], stages: dict[str, dict]) -> tuple[float, float, int, int]:
    """(sum over records of all their stages' walls, sum over the distinct stages, counts of both)."""
    listed = [h for r in records for h in (r.get("stage_hashes") or {}).values() if h in stages]
    distinct = set(listed)
    return (
        sum(stages[h]["wall_time_s"] for h in listed),
        sum(stages[h]["wall_time_s"] for h in distinct),
        len(listed),
        len(distinct),
    )


def sweep_lines(arms: str, levels: str) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="speed-sweep-") as tmp:
        start = time.perf_counter()
        sweep_dir = run_sweep(Path(tmp), arms, levels)
        total = time.perf_counter() - start
        stages = stage_results(Path(tmp) / "results")
        jobs = job_overheads(sweep_dir, stages)
        records = [
            json.loads((p / "result.json").read_text()) for p in sweep_dir.iterdir() if (p / "result.json").exists()
        ]
    overheads = [wall - computed for _, wall, computed in jobs]
    lines = [
        f"mini-sweep through the CLI ({len(jobs)} jobs: arms {arms}, levels {levels}; "
        f"{' '.join(SWEEP[1:])}): {total:.1f} s",
        f"  per-job overhead (job wall - its stages' walls): median {statistics.median(overheads):.2f} s "
        f"(target <= 1 s), first job {overheads[0]:.2f} s, max {max(overheads):.2f} s, "
        f"sum {sum(overheads):.1f} s = {sum(overheads) / total:.0%} of the sweep",
    ]
    lines += [
        f"    {label:<24} wall {wall:6.2f} s  stages {computed:6.2f} s  overhead {wall - computed:5.2f} s"
        for label, wall, computed in jobs
    ]
    lines.append(_reuse_line("  mini-sweep", records, stages, "jobs"))
    return lines


def _reuse_line(what: str, records: list[dict], stages: dict[str, dict], unit: str) -> str:
    everything, computed, listed, distinct = reuse_summary(records, stages)
    return (
        f"{what} time from the records ({len(records)} {unit}): all their stages {everything:.1f} s "
        f"({listed} stage runs) vs stages computed {computed:.1f} s ({distinct}): "
        f"reuse saves {everything / max(computed, 1e-9):.2f}x"
    )


def store_lines(results: Path, experiment: str | None) -> list[str]:
    stages = stage_results(results)
    records = [json.loads(p.read_text()) for p in (results / "runs" / "experiment").glob("*/result.json")]
    records = [
        r for r in records if r.get("status") == "ok" and (experiment is None or r.get("experiment") == experiment)
    ]
    return [_reuse_line(f"store {results} ({experiment or 'all experiments'})", records, stages, "records")]


# ----------------------------------------------------------------------------------------------------- threads
def worker(name: str, iterations: int, threads: int) -> None:
    """One measurement in a fresh process (OpenMP reads its environment once, when torch loads): ms per step."""
    configure_torch(threads, "cpu")
    data = build_dataset(DatasetConfig(train_limit=20000))
    cfg = TrainConfig(iterations=iterations, batch_size=128, lr=LR, weight_decay=5e-4)
    framework(name, data, TrainConfig(iterations=3, batch_size=128, lr=LR))  # warm-up: oneDNN primitives, pages
    start = time.perf_counter()
    framework(name, data, cfg)
    print(f"{(time.perf_counter() - start) / iterations * 1000:.3f}")


def competitor(seconds: float) -> subprocess.Popen:
    """One CPU-bound process (a Python busy loop) that ends by itself after ``seconds`` at the latest."""
    return subprocess.Popen([PY, "-c", f"import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass"])


# label: (threads, environment, set up as the CLI: runners imported before torch)
THREAD_SETTINGS = {
    "1 thread, OpenMP defaults": (1, {}, False),
    "2 threads, OpenMP defaults": (2, {}, False),
    "1 thread, OMP_WAIT_POLICY=PASSIVE": (1, {"OMP_WAIT_POLICY": "PASSIVE"}, False),
    "2 threads, OMP_WAIT_POLICY=PASSIVE": (2, {"OMP_WAIT_POLICY": "PASSIVE"}, False),
    "2 threads, as the CLI sets up": (2, {}, True),
}


def thread_lines(names, iterations: dict[str, int], repeats: int) -> list[str]:
    base_env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    lines = [
        f"threads: ms per training step, median of {repeats}, each in a fresh process, interleaved; "
        f"'+1 busy' = one competing CPU-bound process"
    ]
    for name in names:
        times = {(k, busy): [] for k in THREAD_SETTINGS for busy in (False, True)}
        for _ in range(repeats):
            for busy in (False, True):
                for key, (threads, env, cli) in THREAD_SETTINGS.items():
                    rival = competitor(300) if busy else None
                    try:
                        out = subprocess.run(
                            [
                                PY,
                                __file__,
                                "--worker",
                                name,
                                str(iterations[name]),
                                str(threads),
                                *(["cli"] if cli else []),
                            ],
                            env={**base_env, **env},
                            capture_output=True,
                            text=True,
                            timeout=900,
                        )
                        times[(key, busy)].append(float(out.stdout.split()[-1]))
                    finally:
                        if rival is not None:
                            rival.kill()
                            rival.wait()
        for key in THREAD_SETTINGS:
            idle, busy = statistics.median(times[(key, False)]), statistics.median(times[(key, True)])
            lines.append(f"  {name:<8} {key:<36} idle {idle:8.2f}  +1 busy {busy:8.2f}  busy/idle {busy / idle:5.2f}")
    return lines


# ----------------------------------------------------------------------------------------------------- compile
def compile_lines(data, steps: dict[str, int], repeats: int) -> list[str]:
    import hashlib

    import torch.nn.functional as F

    batches = [b for _, b in zip(range(max(steps.values())), data.train.batches(128, shuffle=True, seed=0))]

    def make(name, variant):
        model = fresh(name, data)
        if "channels_last" in variant:
            model = model.to(memory_format=torch.channels_last)
        forward = torch.compile(model) if "compile" in variant else model
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)
        return model, forward, opt

    def run(name, variant, state=None):
        model, forward, opt = state or make(name, variant)
        torch.backends.mkldnn.enabled = "mkldnn off" not in variant
        try:
            for x, y in batches[: steps[name]]:
                if "channels_last" in variant:
                    x = x.contiguous(memory_format=torch.channels_last)
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(forward(x), y).backward()
                opt.step()
        finally:
            torch.backends.mkldnn.enabled = True
        return hashlib.sha256(
            b"".join(v.detach().contiguous().numpy().tobytes() for v in model.state_dict().values())
        ).hexdigest()[:12]

    lines = [
        f"layouts and compilation: ms per step (best of {repeats}, interleaved; compiled models timed after their "
        f"compilation), speed-up vs eager (NCHW for conv nets), and whether the same steps from the same init give "
        f"the same weights twice (deterministic) and the same as eager (equal numbers)"
    ]
    for name in steps:
        variants = CONV_VARIANTS if name in CONVS else MLP_VARIANTS
        states, compile_s = {}, {}
        for variant in variants:
            start = time.perf_counter()
            states[variant] = make(name, variant)
            run(name, variant, states[variant])  # compiles, creates oneDNN primitives
            compile_s[variant] = time.perf_counter() - start
        times = interleaved([lambda v=v: run(name, v, states[v]) for v in variants], repeats)
        reference = run(name, "eager")
        base = min(times[0])
        for variant, t in zip(variants, times):
            first, second = run(name, variant), run(name, variant)
            lines.append(
                f"  {name:<8} {variant:<22} {min(t) / steps[name] * 1000:8.2f} ms  {base / min(t):5.2f}x  "
                f"deterministic {first == second!s:<5}  equal to eager {first == reference!s:<5}  "
                f"first pass {compile_s[variant]:.1f} s"
            )
    return lines


# ----------------------------------------------------------------------------------------------------- latency
def autorange_ms(model: torch.nn.Module, shape, batch_sizes=(1, 256)) -> dict[str, float]:
    """What the records' timer replaced: torch's block-size search, then blocks for 0.1 s."""
    from torch.utils import benchmark

    gen, out = torch.Generator().manual_seed(0), {}
    with torch.inference_mode():
        for batch in batch_sizes:
            timer = benchmark.Timer(
                stmt="model(x)",
                globals={"model": model, "x": torch.randn(batch, *shape, generator=gen)},
                num_threads=torch.get_num_threads(),
            )
            out[str(batch)] = timer.blocked_autorange(min_run_time=0.1).median * 1000.0
    return out


def latency_lines(data, names, repeats: int) -> list[str]:
    torch.set_num_threads(1)  # as a job
    lines = [
        "latency timing of a structured job (dense + half width, batch 1 and 256), 1 thread, interleaved, "
        f"{max(repeats, 10)} repeats: median [range] of the speed-ups, idle and beside {os.cpu_count()} busy "
        "processes:"
    ]
    for name in names:
        dense = fresh(name, data).eval()
        linears = [m for m in dense.modules() if isinstance(m, torch.nn.Linear)][:-1]  # the hidden layers
        widths = [m.out_features // 2 for m in linears]
        half = build_model(ModelConfig(name=name, widths=widths), data.input_shape, data.num_classes).eval()
        shape = data.input_shape
        timers = {
            "measure_latency_ms": lambda d, p: measure_latency_ms({"d": d, "p": p}, shape).values(),
            "one model at a time": lambda d, p: (measure_latency_ms({"m": m}, shape)["m"] for m in (d, p)),
            "blocked_autorange": lambda d, p: (autorange_ms(m, shape) for m in (d, p)),
        }
        for load in ("idle", "loaded"):
            busy = [competitor(120.0) for _ in range(os.cpu_count() or 1)] if load == "loaded" else []
            try:
                seconds, speedups = _latency_repeats(timers, dense, half, max(repeats, 10))
            finally:
                for process in busy:
                    process.kill()
            for key in timers:
                at1, at256 = zip(*speedups[key])
                lines.append(
                    f"  {name:9} {load:6} {key:19} {statistics.median(seconds[key]):.2f} s per job; speed-up "
                    f"at batch 1 {_spread(at1)}, at 256 {_spread(at256)}"
                )
    return lines


def _latency_repeats(timers, dense, half, repeats: int):
    seconds, speedups = {k: [] for k in timers}, {k: [] for k in timers}
    for _ in range(repeats):
        for key, timed in timers.items():
            start = time.perf_counter()
            d, p = timed(dense, half)
            seconds[key].append(time.perf_counter() - start)
            speedups[key].append((d["1"] / p["1"], d["256"] / p["256"]))
    return seconds, speedups


def _spread(values) -> str:
    return f"{statistics.median(values):.3f} [{min(values):.3f}, {max(values):.3f}]"


# ----------------------------------------------------------------------------------------------------- main
def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--iterations", type=int, default=None, help="steps timed per model (default: 100 MLP, 25 conv)")
    ap.add_argument("--epoch", action="store_true", help="time whole epochs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sweep-arms", default="dense,magnitude,snip,random,slimming")
    ap.add_argument("--sweep-levels", default="0,2")
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--store", type=Path, default=None, help="also: reuse in this results folder (e.g. results)")
    ap.add_argument("--experiment", default=None, help="with --store: only this experiment name")
    ap.add_argument("--threads", action="store_true", help="also: the thread study (~10 min)")
    ap.add_argument(
        "--conv",
        action="store_true",
        help="also: channels_last / torch.compile / oneDNN off (conv nets), torch.compile (mlp_bn): minutes",
    )
    ap.add_argument("--latency", action="store_true", help="also: the latency timer against blocked_autorange")
    ap.add_argument("--worker", nargs="+", metavar="MODEL STEPS THREADS [cli]", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def header() -> list[str]:
    cpu = cpu_description()["cpu"]
    return [
        f"prunelab speed benchmark, {datetime.datetime.now():%Y-%m-%d %H:%M}, torch {torch.__version__}, {cpu}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}"
    ]


def main(argv=None) -> None:
    args = parse(argv)
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), int(args.worker[2]))
        return
    names = [n for n in args.models.split(",") if n]
    data = build_dataset(DatasetConfig())
    per_epoch = data.train.num_batches(128)
    iterations = {n: per_epoch if args.epoch else args.iterations or (25 if n in CONVS else 100) for n in names}
    configure_torch(2, "cpu")  # the floor's count; jobs default to 1 thread (--threads shows why)
    for line in header():
        print(line, flush=True)
    floor = matmul_floor()
    print(f"floor: sgemm 2048x2048, 2 threads, best of 5: {floor:.1f} GFLOP/s", flush=True)
    for line in model_rows(data, names, iterations, args.repeats, floor):
        print(line, flush=True)
    if not args.no_sweep:
        for line in sweep_lines(args.sweep_arms, args.sweep_levels):
            print(line, flush=True)
    if args.store is not None:
        for line in store_lines(args.store, args.experiment):
            print(line, flush=True)
    if args.threads:
        for line in thread_lines(
            [n for n in ("mlp_bn", "conv_bn") if n in names] or names[:1], iterations, args.repeats
        ):
            print(line, flush=True)
    if args.conv:
        studied = {n: max(10, iterations[n]) for n in names if n in CONVS or n in FLOOR_TARGET}
        for line in compile_lines(data, studied, args.repeats):
            print(line, flush=True)
    if args.latency:
        for line in latency_lines(data, [n for n in ("lenet300", "mlp_bn") if n in names], args.repeats):
            print(line, flush=True)
    print(f"floor again at the end: {matmul_floor():.1f} GFLOP/s, load average {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
