"""Probe (not a test): which Conv2d geometries survive channels-last (NHWC) training on this CPU, and with which numbers.

    .venv/bin/python benchmarks/layout_probe.py                       # the default grid, ~15 min on 2 busy cores
    .venv/bin/python benchmarks/layout_probe.py --json probe.json     # also every case as JSON
    .venv/bin/python benchmarks/layout_probe.py --full --reps 30      # the whole product of the axes (hours)
    .venv/bin/python benchmarks/layout_probe.py --malloc-check        # glibc's heap checker in every child

torch 2.14.1's oneDNN (v3.12) corrupts the heap on an AVX2 CPU in the weight gradient of a channels-last 1x1 conv
with stride > 1 and 2..7 input channels (``jit_1x1:avx2 backward_weights``): "double free or corruption", "corrupted size
vs. prev_size", a segfault — or nothing at all, and wrong numbers. Each case (one conv geometry) runs in a child
process, so a crash costs that case only: the child runs its cases one after the other and says which one it is
on, the parent records a dead child's signal or exit code and the first line of its stderr against that case and
starts a new child for the rest. A case that did not crash reports the largest relative difference
(max |a - b| / max |b|) between channels-last and contiguous of the output and of the input and weight gradients
over ``--reps`` repetitions (the corruption is nondeterministic; every repetition allocates afresh), against a
fixed upstream gradient; above ``--tolerance`` it is an anomaly. Each child runs as a training job does:
``torch.use_deterministic_algorithms(True)``, ``OMP_WAIT_POLICY=PASSIVE``, the case's thread count.

Axes of the default grid (batch 64 of 8x8 unless said): (a) in x out channels over 1..16, 24, 32, 64, kernel 1,
stride 1..3, threads 1 and 2; (b) the same channel pairs, kernel 3, stride 2, padding 1, one thread; (c) in = out
over the same channels, kernel 1 and 3, stride 1..3, groups 1 and depthwise, dilation 1 and 2 (kernel 3), padding 0
and 1, threads 1 and 2, batch 64 of 8x8 and 16 of 15x15; (d) grouped convs, 8..64 channels in 2, 3, 4 or 8
groups, kernel 1 and 3, stride 1..3, threads 1 and 2, both batch sizes. ``--full`` takes the whole product of
in x out and every other axis, and bias. At most two children run at a time (``--jobs``); the children are forked
from a server that imported torch once, so that a crash costs a fork rather than a new interpreter.

The table lists, per geometry class, the cases, the crashes, the crash rate per repetition (crashes / repetitions
run: the chance that one training step of such a layer crashes the process), the anomalies and the worst difference
of the cases that survived; then, per class with a crash or anomaly, the in x out channel pairs that failed; then
whether ``foundations.training.layout.nhwc_safe`` (the rule the training loop applies) allows any case that failed.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import itertools
import json
import multiprocessing
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from foundations.training.layout import ConvGeometry, nhwc_safe  # noqa: E402

CHANNELS = (*range(1, 17), 24, 32, 64)
MALLOC_DEBUG = "/usr/lib/x86_64-linux-gnu/libc_malloc_debug.so.0"  # glibc >= 2.34 moved MALLOC_CHECK_ here
SILENT_SECONDS = 120  # a child that prints nothing for this long is killed (a hang counts as a crash)


@dataclass(frozen=True)
class Case:
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    groups: int = 1
    dilation: int = 1
    padding: int = 0
    batch: int = 64
    size: int = 8
    threads: int = 1
    bias: bool = False

    @property
    def out_size(self) -> int:
        return (self.size + 2 * self.padding - self.dilation * (self.kernel - 1) - 1) // self.stride + 1

    @property
    def valid(self) -> bool:
        return self.out_size >= 1 and self.in_channels % self.groups == 0 and self.out_channels % self.groups == 0

    def geometry_class(self) -> tuple:
        """Everything but the channels: the rows of the summary table."""
        depthwise = self.groups > 1 and self.groups == self.in_channels == self.out_channels
        return (
            self.kernel,
            self.stride,
            "dw" if depthwise else str(self.groups),
            self.dilation,
            self.padding,
            self.threads,
            f"{self.batch}x{self.size}x{self.size}",
            self.bias,
        )


# ----------------------------------------------------------------------------------------------------- grid
def default_grid(blocks: str = "abcd") -> list[Case]:
    cases: list[Case] = []
    if "a" in blocks:  # pointwise: a ResNet's projection shortcut
        for cin, cout, stride, threads in itertools.product(CHANNELS, CHANNELS, (1, 2, 3), (1, 2)):
            cases.append(Case(cin, cout, 1, stride, threads=threads))
    if "b" in blocks:  # a ResNet's downsampling 3x3
        for cin, cout in itertools.product(CHANNELS, CHANNELS):
            cases.append(Case(cin, cout, 3, 2, padding=1))
    if "c" in blocks:  # every other axis, in = out
        for c, kernel, stride, depthwise, dilation, padding, threads, (batch, size) in itertools.product(
            CHANNELS, (1, 3), (1, 2, 3), (False, True), (1, 2), (0, 1), (1, 2), ((64, 8), (16, 15))
        ):
            if (kernel == 1 and dilation > 1) or (depthwise and c == 1):
                continue  # a 1x1 kernel has no dilation; a 1-channel depthwise conv is the groups=1 one
            cases.append(Case(c, c, kernel, stride, c if depthwise else 1, dilation, padding, batch, size, threads))
    if "d" in blocks:  # grouped convs (ResNeXt, ShuffleNet): narrow groups of a wide layer
        for c, groups, kernel, stride, threads, (batch, size) in itertools.product(
            (8, 12, 16, 24, 32, 64), (2, 3, 4, 8), (1, 3), (1, 2, 3), (1, 2), ((64, 8), (16, 15))
        ):
            cases.append(
                Case(c, c, kernel, stride, groups, padding=kernel // 2, batch=batch, size=size, threads=threads)
            )
    return _unique(cases)


def full_grid() -> list[Case]:
    cases: list[Case] = []
    for cin, cout, kernel, stride, depthwise, dilation, padding, threads, (batch, size), bias in itertools.product(
        CHANNELS, CHANNELS, (1, 3), (1, 2, 3), (False, True), (1, 2), (0, 1), (1, 2), ((64, 8), (16, 15)), (False, True)
    ):
        if (kernel == 1 and dilation > 1) or (depthwise and (cin != cout or cin == 1)):
            continue
        cases.append(
            Case(cin, cout, kernel, stride, cin if depthwise else 1, dilation, padding, batch, size, threads, bias)
        )
    return _unique(cases)


def _unique(cases: Iterable[Case]) -> list[Case]:
    return [c for c in dict.fromkeys(cases) if c.valid]


# ----------------------------------------------------------------------------------------------------- child
def measure(case: Case, reps: int, seed: int, say) -> dict[str, float]:
    """Worst relative difference channels-last vs contiguous over ``reps`` fresh channels-last passes."""
    gen = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(
        case.in_channels,
        case.out_channels,
        case.kernel,
        stride=case.stride,
        padding=case.padding,
        dilation=case.dilation,
        groups=case.groups,
        bias=case.bias,
    )
    with torch.no_grad():
        for p in conv.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    x = torch.randn(case.batch, case.in_channels, case.size, case.size, generator=gen)
    upstream = torch.randn(case.batch, case.out_channels, case.out_size, case.out_size, generator=gen)

    def passes(module: nn.Module, inp: torch.Tensor, up: torch.Tensor) -> dict[str, torch.Tensor]:
        inp = inp.detach().clone().requires_grad_()
        out = module(inp)
        grad_x, grad_w = torch.autograd.grad(out, (inp, module.weight), up)
        return {"output": out.detach(), "grad_input": grad_x, "grad_weight": grad_w}

    reference = passes(conv, x, upstream)
    nhwc = torch.channels_last
    conv_cl = copy.deepcopy(conv).to(memory_format=nhwc)
    worst = dict.fromkeys(reference, 0.0)
    for rep in range(reps):
        say(rep)
        got = passes(conv_cl, x.contiguous(memory_format=nhwc), upstream.contiguous(memory_format=nhwc))
        for key, value in got.items():
            ref = reference[key]
            scale = ref.abs().max().item() or 1.0
            diff = (value - ref).abs().max().item() / scale
            worst[key] = max(worst[key], diff if diff == diff else float("inf"))  # NaN: as bad as it gets
    return worst


def child(conn, cases: list[Case], threads: int, reps: int, seed: int, stderr_path: str) -> None:
    """Runs ``cases`` in a process forked from the probe's fork server; says ``start``/``rep``/``done`` on ``conn``."""
    fd = os.open(stderr_path, os.O_WRONLY)  # glibc's abort message and anything else the crash prints
    os.dup2(fd, 2)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)  # as every CPU training job runs (runners.train.configure_torch)
    for index, case in enumerate(cases):
        conn.send(("start", index))
        worst = measure(case, reps, seed, lambda rep: conn.send(("rep", rep)))
        conn.send(("done", index, worst))
    conn.close()


# ----------------------------------------------------------------------------------------------------- parent
def fork_server(malloc_check: bool):
    """The processes the cases run in: forked from a server that imported torch once (a crash costs a fork, not a
    2-second torch import), in the environment training jobs run in."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # runners/__init__.py; read when torch loads
    os.environ["LIBC_FATAL_STDERR_"] = "1"  # glibc's fatal messages to stderr, not to the terminal
    if malloc_check:  # read when the server starts: every child inherits the checking allocator
        os.environ["LD_PRELOAD"] = MALLOC_DEBUG
        os.environ["MALLOC_CHECK_"] = "3"
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch"])
    return context


def first_line(text: str) -> str:
    """The crash's message: the first line of stderr that is not a Python warning."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and "Warning" not in line]
    return lines[0] if lines else ""


def run_chunk(context, cases: list[Case], threads: int, reps: int, seed: int) -> list[dict]:
    """Run ``cases`` in as few children as crashes allow; one result dict per case, in order."""
    results: list[dict] = []
    while len(results) < len(cases):
        done_before = len(results)
        todo = cases[done_before:]
        with tempfile.NamedTemporaryFile(prefix="layout-probe-") as err:
            receive, send = context.Pipe(duplex=False)
            proc = context.Process(target=child, args=(send, todo, threads, reps, seed, err.name))
            proc.start()
            send.close()  # the child holds the only writing end: its death is our EOF
            current, rep, hung = None, -1, False
            while True:
                if not receive.poll(SILENT_SECONDS):
                    proc.kill()
                    hung = True
                    break
                try:
                    message = receive.recv()
                except EOFError:
                    break
                if message[0] == "start":
                    current, rep = message[1], -1
                elif message[0] == "rep":
                    rep = message[1]
                else:
                    results.append(_result(todo[message[1]], reps, diffs=message[2]))
                    current = None
            proc.join()
            receive.close()
            code = proc.exitcode if proc.exitcode is not None else -9
            stderr = (
                f"hung (no sign of life for {SILENT_SECONDS} s)" if hung else Path(err.name).read_text(errors="replace")
            )
        if len(results) == done_before and current is None:
            raise RuntimeError(f"probe child exited ({code}) before its first case: {first_line(stderr)}")
        after = current is None and code != 0
        if after:  # died after its last case had finished (a heap check at exit): blame that case
            last = results.pop()
            current, rep, todo = 0, last["reps_run"] - 1, [Case(**last["case"])]
        if current is not None:
            name = signal.Signals(-code).name if code < 0 else f"exit {code}"
            crash = {"signal": name, "stderr": first_line(stderr), "rep": rep, "after_case": after}
            results.append(_result(todo[current], rep + 1, crash=crash))
    return results


def _result(case: Case, reps_run: int, diffs: Optional[dict] = None, crash: Optional[dict] = None) -> dict:
    return {"case": asdict(case), "reps_run": reps_run, "diffs": diffs, "crash": crash}


def run(cases: list[Case], reps: int, seed: int, jobs: int, malloc_check: bool, chunk: int) -> list[dict]:
    """Every case's result, ``jobs`` children at a time, each running up to ``chunk`` cases of one thread count."""
    context = fork_server(malloc_check)
    by_threads: dict[int, list[Case]] = defaultdict(list)
    for case in cases:
        by_threads[case.threads].append(case)
    chunks = [
        (group[i : i + chunk], threads) for threads, group in by_threads.items() for i in range(0, len(group), chunk)
    ]
    done = [0]
    lock = threading.Lock()

    def one(work: tuple[list[Case], int]) -> list[dict]:
        out = run_chunk(context, work[0], work[1], reps, seed)
        with lock:
            done[0] += len(out)
            crashed = sum(r["crash"] is not None for r in out)
            print(f"  {done[0]}/{len(cases)} cases ({crashed} crashes in this chunk)", file=sys.stderr, flush=True)
        return out

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return [r for part in pool.map(one, chunks) for r in part]


# ----------------------------------------------------------------------------------------------------- report
def machine() -> dict:
    info = {"model_name": platform.processor(), "flags": []}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in lscpu.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model name":
                info["model_name"] = value.strip()
            if key.strip() == "Flags":
                info["flags"] = sorted(f for f in value.split() if f.startswith("avx"))
    except (OSError, subprocess.CalledProcessError):
        pass
    onednn = re.search(r"MKL-DNN v([\d.]+)", torch.__config__.show())
    return {
        **info,
        "cpus": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "onednn": onednn.group(1) if onednn else None,
        "python": platform.python_version(),
    }


def failed(result: dict, tolerance: float) -> str:
    """'' (fine), 'crash' or 'anomaly'."""
    if result["crash"] is not None:
        return "crash"
    return "anomaly" if max(result["diffs"].values()) > tolerance else ""


def summary_rows(results: list[dict], tolerance: float) -> Iterator[str]:
    classes: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        classes[Case(**r["case"]).geometry_class()].append(r)
    head = (
        f"{'kernel':>6} {'stride':>6} {'groups':>6} {'dil':>3} {'pad':>3} {'thr':>3} {'batch':>9} {'bias':>5} "
        f"{'cases':>5} {'crashed':>7} {'per rep':>8} {'anomal':>6} {'worst out':>9} {'worst gx':>9} {'worst gw':>9}"
    )
    yield head
    for key in sorted(classes, key=str):
        rows = classes[key]
        crashes = sum(r["crash"] is not None for r in rows)
        reps = sum(r["reps_run"] for r in rows)
        anomalies = sum(failed(r, tolerance) == "anomaly" for r in rows)
        alive = [r["diffs"] for r in rows if r["diffs"] is not None]
        worst = [max((d[k] for d in alive), default=float("nan")) for k in ("output", "grad_input", "grad_weight")]
        kernel, stride, groups, dilation, padding, threads, batch, bias = key
        yield (
            f"{kernel:>6} {stride:>6} {groups:>6} {dilation:>3} {padding:>3} {threads:>3} {batch:>9} {bias!s:>5} "
            f"{len(rows):>5} {crashes:>7} {crashes / max(reps, 1):>8.3f} {anomalies:>6} "
            + " ".join(f"{w:>9.1e}" for w in worst)
        )


def failure_rows(results: list[dict], tolerance: float) -> Iterator[str]:
    """Per geometry class with a failure: which channel pairs failed (X crash, ! anomaly)."""
    classes: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        if failed(r, tolerance):
            classes[Case(**r["case"]).geometry_class()].append(r)
    for key in sorted(classes, key=str):
        kernel, stride, groups, dilation, padding, threads, batch, bias = key
        pairs = sorted(
            f"{r['case']['in_channels']}->{r['case']['out_channels']}{'X' if r['crash'] else '!'}" for r in classes[key]
        )
        pairs.sort(key=lambda p: tuple(int(v) for v in re.findall(r"\d+", p)))
        yield (
            f"k{kernel} s{stride} g{groups} d{dilation} p{padding} t{threads} {batch}{' bias' if bias else ''}: "
            + " ".join(pairs)
        )
    messages = defaultdict(int)
    for r in results:
        if r["crash"]:
            messages[f"{r['crash']['signal']}: {r['crash']['stderr'] or '(no message)'}"] += 1
    for message, count in sorted(messages.items(), key=lambda kv: -kv[1]):
        yield f"  {count:>5} x {message}"


def rule_check(results: list[dict], tolerance: float) -> list[str]:
    """The cases that failed although ``nhwc_safe`` allows their geometry (must be none)."""
    wrong = []
    for r in results:
        c = Case(**r["case"])
        geometry = ConvGeometry(
            c.in_channels, c.out_channels, (c.kernel, c.kernel), (c.stride, c.stride), c.groups, (c.dilation,) * 2
        )
        if failed(r, tolerance) and nhwc_safe(geometry):
            wrong.append(f"{failed(r, tolerance)}: {c}")
    return wrong


# ----------------------------------------------------------------------------------------------------- main
def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--full", action="store_true", help="the whole product of the axes (hours)")
    ap.add_argument("--reps", type=int, default=10, help="channels-last passes per case (default 10)")
    ap.add_argument("--jobs", type=int, default=2, choices=(1, 2), help="children at a time (default 2)")
    ap.add_argument("--chunk", type=int, default=200, help="cases per child before a fresh one (default 200)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tolerance", type=float, default=1e-4, help="anomaly above this relative difference")
    ap.add_argument("--malloc-check", action="store_true", help=f"children with MALLOC_CHECK_=3 ({MALLOC_DEBUG})")
    ap.add_argument("--blocks", default="abcd", help="blocks of the default grid (a b c d, see above)")
    ap.add_argument("--channels", default=None, help="only these channel counts, e.g. 4,8 (both in and out)")
    ap.add_argument("--json", type=Path, default=None, help="write the machine, the settings and every case here")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    if args.malloc_check and not Path(MALLOC_DEBUG).exists():
        print(f"--malloc-check: {MALLOC_DEBUG} not found (glibc's libc_malloc_debug)", file=sys.stderr)
        return 2
    cases = full_grid() if args.full else default_grid(args.blocks)
    if args.channels:
        keep = {int(c) for c in args.channels.split(",")}
        cases = [c for c in cases if c.in_channels in keep and c.out_channels in keep]
    info = machine()
    start = time.monotonic()
    print(
        f"layout probe {datetime.datetime.now():%Y-%m-%d %H:%M}: {info['model_name']}, {info['cpus']} CPUs, "
        f"flags {' '.join(info['flags']) or '(no avx)'}, torch {info['torch']} (cpu capability "
        f"{info['cpu_capability']}, oneDNN {info['onednn']}); {len(cases)} cases x {args.reps} reps, "
        f"{args.jobs} children, malloc check {'on' if args.malloc_check else 'off'}",
        flush=True,
    )
    results = run(cases, args.reps, args.seed, args.jobs, args.malloc_check, args.chunk)
    wall = time.monotonic() - start
    print(f"relative difference channels-last vs contiguous, max over reps; anomaly above {args.tolerance:g}")
    for line in summary_rows(results, args.tolerance):
        print(line)
    print("failed channel pairs (in->out, X crashed, ! anomaly), then the crash messages:")
    for line in failure_rows(results, args.tolerance):
        print(line)
    wrong = rule_check(results, args.tolerance)
    print(f"failed cases that foundations.training.layout.nhwc_safe allows: {len(wrong)}")
    for line in wrong[:50]:
        print(f"  {line}")
    print(f"wall time {wall:.0f} s")
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "settings": settings,
                    "wall_s": wall,
                    "results": results,
                    "rule_allows_failed": wrong,
                },
                indent=1,
            )
        )
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
