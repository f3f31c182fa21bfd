"""Planted bugs: proof that the tests bite. ``make mutants`` (or ``python tests/mutations.py [name ...]``).

Each mutant is one small wrong edit a real bug could make (a flipped ranking, an off-by-one in the level ladder, a
missing ½, a wrong init, a density-changing shuffle, swapped scopes, a field missing from a hash). For each, the
repository is copied to a temporary folder, the edit is applied there (its ``old`` text must occur exactly once in
the file, else the mutant is stale and reported), and the named tests are run inside the copy with this Python. A
mutant is *caught* when pytest reports failing tests, *survived* when they pass. Before any mutant, the same tests
must pass on the unmutated copy, or nothing would be proven. Exit code 0 only if every mutant is caught.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "results",
    "outputs",
    "multirun",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    "wandb",
)
ANSWERS = "tests/test_method_answers.py"


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]  # pytest arguments: files or node ids


MUTANTS = [
    Mutant(
        "magnitude score sign flipped",
        "methods/pipeline/scores/weights.py",
        "return {n: params[n].detach().abs().cpu() for n in names}",
        "return {n: -params[n].detach().abs().cpu() for n in names}",
        (ANSWERS,),
    ),
    Mutant(
        "lottery ranks the smallest weights first",
        "methods/lottery.py",
        "scores = magnitude_scores(model, alive)",
        "scores = {n: -s for n, s in magnitude_scores(model, alive).items()}",
        (ANSWERS,),
    ),
    Mutant(
        "SNIP keeps the least sensitive connections",
        "methods/snip.py",
        "return snip_scores(model.to(stages.device), params, batches)",
        "return {n: -s for n, s in snip_scores(model.to(stages.device), params, batches).items()}",
        (ANSWERS,),
    ),
    Mutant(
        "SNIP scores ∂L/∂w instead of ∂L/∂c = g ⊙ w",
        "methods/pipeline/scores/sensitivity.py",
        "scores = {n: (grads[n] / count * values[n].to(torch.float64)).abs() for n in names}",
        "scores = {n: (grads[n] / count).abs() for n in names}",
        (ANSWERS,),
    ),
    Mutant(
        "OBD saliency without the ½",
        "methods/pipeline/scores/hessian.py",
        "out[name] = 0.5 * h * w.square()",
        "out[name] = h * w.square()",
        (ANSWERS,),
    ),
    Mutant(
        "OBD ranks by magnitude instead of saliency",
        "methods/obd.py",
        "return obd_saliency({n: p.detach().cpu() for n, p in params.items()}, hdiag)",
        "return {n: p.detach().abs().cpu() for n, p in params.items()}",
        (ANSWERS,),
    ),
    Mutant(
        "lottery level ladder off by one",
        "methods/lottery.py",
        "(1 - rates[n]) ** (level if level < count else hi)",
        "(1 - rates[n]) ** (level + 1 if level < count else hi)",
        (ANSWERS,),
    ),
    Mutant(
        "lottery prunes the output layer at the common rate",
        "methods/lottery.py",
        'n.startswith(head + ".")',
        'n.startswith(head + "#")',
        (ANSWERS,),
    ),
    Mutant(
        "SNIP fresh init is the scored init",
        "methods/snip.py",
        'fresh = stages.init_stage("fresh_init", seed=stages.seed("init") + REINIT_OFFSET)',
        'fresh = stages.init_stage("fresh_init", seed=stages.seed("init"))',
        (ANSWERS,),
    ),
    Mutant(
        "survey SNIP arm at the Kaiming init",
        "conf/experiment/arm/snip.yaml",
        "  init: variance_scaling",
        "  init: kaiming_normal",
        (ANSWERS,),
    ),
    Mutant(
        "lottery reinit control reuses the original init",
        "methods/lottery.py",
        'fresh = stages.init_stage("reinit", seed=stages.seed("init") + REINIT_OFFSET)',
        'fresh = stages.init_stage("reinit", seed=stages.seed("init"))',
        (ANSWERS,),
    ),
    Mutant(
        "lottery reinit control trains from iteration 0",
        "methods/lottery.py",
        'state = stages.train_stage("control", fresh, stages.train_config, masks=pruned, start_iteration=k)',
        'state = stages.train_stage("control", fresh, stages.train_config, masks=pruned)',
        (ANSWERS,),
    ),
    Mutant(
        "Scratch re-initializes with the source's own init seed",
        "methods/scratch.py",
        'else stages.seed("init") + REINIT_OFFSET',
        'else stages.seed("init")',
        ("tests/test_scratch.py",),
    ),
    Mutant(
        "latency reports a block's time, not a forward's",
        "runners/metrics.py",
        "    return (time.perf_counter() - start) / number",
        "    return time.perf_counter() - start",
        ("tests/test_metrics.py",),
    ),
    Mutant(
        "latency times one model after the other, not in turns",
        "runners/metrics.py",
        "    while any(sum(b) * n < min_run_time or len(b) < min_blocks for b, n in zip(blocks, numbers)):\n"
        "        for forward, number, times in zip(forwards, numbers, blocks):\n",
        "    for forward, number, times in zip(forwards, numbers, blocks):\n"
        "        while sum(times) * number < min_run_time or len(times) < min_blocks:\n",
        ("tests/test_metrics.py",),
    ),
    Mutant(
        "a scratch init is not hashed by the widths it draws",
        "runners/experiment.py",
        'spec["widths"] = widths.widths()',
        "pass",
        ("tests/test_scratch.py",),
    ),
    Mutant(
        "a scratch init keeps the source's own channels",
        "runners/experiment.py",
        "widths = architecture.architecture() if",
        "widths = architecture if",
        ("tests/test_scratch.py",),
    ),
    Mutant(
        "shuffle draws positions with replacement (densities drift)",
        "methods/pipeline/scores/weights.py",
        "m.flatten()[torch.randperm(m.numel(), generator=gen)]",
        "m.flatten()[torch.randint(m.numel(), (m.numel(),), generator=gen)]",
        (ANSWERS,),
    ),
    Mutant(
        "layerwise selection acts globally",
        "methods/pipeline/select.py",
        'if scope == "global":',
        'if scope in ("global", "layerwise"):',
        (ANSWERS, "tests/test_masks.py"),
    ),
    Mutant(
        "random variants global and layerwise swapped",
        "methods/random.py",
        'scope = "global" if self.cfg.variant == "global" else "layerwise"\n        return select(',
        'scope = "layerwise" if self.cfg.variant == "global" else "global"\n        return select(',
        (ANSWERS,),
    ),
    Mutant(
        "pruned weights are ranked again (not only survivors)",
        "methods/pipeline/select.py",
        'flat = torch.where(alive.flatten(), scores.flatten().double(), torch.tensor(float("-inf"), '
        "dtype=torch.float64))",
        "flat = scores.flatten().double()",
        (ANSWERS, "tests/test_masks.py"),
    ),
    Mutant(
        "prune_from ignored: always the validation-selected weights",
        "methods/pipeline/unstructured.py",
        'return self.cfg.prune_from if source.kind == "train" else "selected"',
        'return "selected"',
        (ANSWERS,),
    ),
    Mutant(
        "lottery prune stages do not hash method.prunable",
        "methods/lottery.py",
        '                **({"prunable": prunable} if (prunable := nondefault(self.cfg.prunable)) else {}),\n',
        "",
        ("tests/test_hashes.py::test_flipping_a_field_changes_a_stage_hash_unless_declared_neutral[lottery]",),
    ),
    Mutant(
        "global selection keeps one weight too many",
        "methods/pipeline/select.py",
        "keep = round(global_target * total)",
        "keep = round(global_target * total) + 1",
        (ANSWERS,),
    ),
    Mutant(
        "shuffle returns the source mask unshuffled",
        "methods/pipeline/scores/weights.py",
        "return {n: m.flatten()[torch.randperm(m.numel(), generator=gen)].view_as(m) for n, m in masks.items()}",
        "return {n: m.clone() for n, m in masks.items()}",
        (ANSWERS,),
    ),
    Mutant(
        "slimming's L1 subgradient pushes γ away from 0",
        "methods/slimming.py",
        "torch.sign(module.weight), alpha=lam",
        "torch.sign(module.weight), alpha=-lam",
        ("tests/test_slimming.py",),
    ),
    Mutant(
        "masked training forgets to mask the gradients",
        "methods/pipeline/masks.py",
        "        if present:\n            torch._foreach_mul_",
        "        if False:\n            torch._foreach_mul_",
        ("tests/test_masks.py",),
    ),
    Mutant(
        "masked training leaves the pre-hooks detached",
        "methods/pipeline/masks.py",
        "            module._forward_pre_hooks.update(hooks)",
        "            pass",
        ("tests/test_masks.py",),
    ),
    Mutant(
        "the train hash leaves out the conv layout train() picks",
        "runners/experiment.py",
        "        layout = channels_last(train_cfg.channels_last, self.trained_convs(start, weights), self.device)",
        "        layout = train_cfg.channels_last",
        ("tests/test_layout.py",),
    ),
    Mutant(
        "conv nets train NCHW whatever the layout says",
        "foundations/training/loop.py",
        "    layout = torch.channels_last if nhwc else",
        "    layout = torch.contiguous_format if nhwc else",
        ("tests/test_layout.py",),
    ),
    Mutant(
        "the layout rule lets narrow stride-2 1x1 convs through",
        "foundations/training/layout.py",
        "    strided = conv.stride != (1, 1)",
        "    strided = max(conv.stride) > 2",
        ("tests/test_layout.py::test_the_rule_refuses_every_geometry_the_probe_saw_fail",),
    ),
    Mutant(
        "the layout rule lets narrow stride-2 1x1 convs train channels-last (their gradients, in a child process)",
        "foundations/training/layout.py",
        "    strided = conv.stride != (1, 1)",
        "    strided = max(conv.stride) > 2",
        ("tests/test_layout.py::test_narrow_convs_the_rule_allows_give_the_contiguous_gradients_in_a_child_process",),
    ),
    Mutant(
        "the train stage resolves the layout on the base network, not the one it trains",
        "runners/experiment.py",
        "        layout = channels_last(train_cfg.channels_last, self.trained_convs(start, weights), self.device)",
        "        layout = channels_last(train_cfg.channels_last, self.base_convs, self.device)",
        ("tests/test_layout.py::test_the_train_stage_resolves_the_layout_on_the_network_it_trains",),
    ),
    Mutant(
        "a test that crashed its xdist worker is queued again",
        "tests/conftest.py",
        "            workload[scope][crashed] = True",
        "            pass",
        ("tests/test_crash_isolation.py",),
    ),
    Mutant(
        "the CPU thread count is left out of the hashes",
        "runners/experiment.py",
        '    return {"threads": threads} if threads not in (None, 1) else {}',
        "    return {}",
        ("tests/test_hashes.py::test_the_cpu_thread_count_is_hashed_unless_it_is_the_default_one",),
    ),
    Mutant(
        "divergence goes unnoticed",
        "foundations/training/loop.py",
        "        if first >= 0:\n            raise Diverged",
        "        if first < -1:\n            raise Diverged",
        ("tests/test_fail_loudly.py::test_the_loop_stops_at_the_first_non_finite_loss",),
    ),
]


def copy_repo(into: Path) -> Path:
    target = into / "repo"
    shutil.copytree(ROOT, target, ignore=IGNORE)
    return target


def stale(repo: Path, mutant: Mutant) -> str | None:
    """Why the mutant cannot be applied to ``repo`` (its file is gone or its old text is not there exactly once)."""
    path = repo / mutant.file
    if not path.exists():
        return f"{mutant.file} does not exist"
    found = path.read_text().count(mutant.old)
    return None if found == 1 else f"its old snippet occurs {found} times in {mutant.file}"


def apply(repo: Path, mutant: Mutant) -> None:
    path = repo / mutant.file
    path.write_text(path.read_text().replace(mutant.old, mutant.new))


def pytest(repo: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "WANDB_MODE": "disabled"}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {timeout:.0f} s"
    lines = [line for line in proc.stdout.splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    return proc.returncode, (lines[-1].strip("= ") if lines else (proc.stdout + proc.stderr).strip()[-300:])


def imports_from(repo: Path) -> Path:
    """Where the copy's Python imports the project from (it must be the copy, not an editable install)."""
    out = subprocess.run(
        [sys.executable, "-c", "import methods; print(methods.__file__)"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return Path(out).resolve()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="run only mutants whose name contains one of these words")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per pytest run")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.names or any(w.lower() in m.name.lower() for w in args.names)]
    if args.list or not chosen:
        for m in MUTANTS:
            print(f"{m.name:62} {m.file}  [{' '.join(m.tests)}]")
        return 0 if args.list else 2
    with tempfile.TemporaryDirectory(prefix="prunelab-mutants-") as tmp:
        baseline = copy_repo(Path(tmp) / "baseline")
        if not imports_from(baseline).is_relative_to(baseline.resolve()):
            print(f"error: the copy imports the project from {imports_from(baseline)}, not itself", file=sys.stderr)
            return 2
        tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        start = time.perf_counter()
        code, summary = pytest(baseline, tests, args.timeout)
        print(f"baseline (unmutated): {summary} ({time.perf_counter() - start:.0f} s)")
        if code != 0:
            print("error: the tests fail without any mutant; fix them first", file=sys.stderr)
            return 2
        caught = survived = broken = 0
        for i, mutant in enumerate(chosen, start=1):
            why = stale(ROOT, mutant)
            if why is not None:
                broken += 1
                print(f"[{i:2}/{len(chosen)}] STALE     {mutant.name}: {why}")
                continue
            repo = copy_repo(Path(tmp) / f"mutant{i}")
            apply(repo, mutant)
            start = time.perf_counter()
            code, summary = pytest(repo, mutant.tests, args.timeout)
            elapsed = time.perf_counter() - start
            if code == 1:
                caught += 1
                verdict = "caught   "
            elif code == 0:
                survived += 1
                verdict = "SURVIVED "
            else:
                broken += 1
                verdict = "ERROR    "  # collection error, timeout, crash: proves nothing either way
            print(f"[{i:2}/{len(chosen)}] {verdict} {mutant.name}  ({summary}; {elapsed:.0f} s)")
            shutil.rmtree(repo, ignore_errors=True)
    print(f"mutants: {len(chosen)}, caught {caught}, survived {survived}, stale or error {broken}")
    return 0 if caught == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
