"""``python -m runners.reproduce``: run exactly the experiments the papers' claims need, then judge them.

    python -m runners.reproduce                          # every claim, default tier (3 seeds), then REPRODUCTION.md
    python -m runners.reproduce --claims 4,5             # some claims (numbers or ids of conf/claims/*.yaml)
    python -m runners.reproduce --report-only            # no training: judge what the store holds
    python -m runners.reproduce --tier paper --mnist     # the papers' schedules, and the MNIST variants
    python -m runners.reproduce hydra/launcher=joblib hydra.launcher.n_jobs=2     # any Hydra override, any launcher

Each distinct command line of the chosen claims' ``experiments`` is one Hydra multirun of ``runners.train`` (so
basic, joblib and SLURM launchers work as for any sweep, with its progress line after every job), with the tier's
seeds appended last (so consecutive jobs use different seeds and parallel workers rarely wait on one dense model),
``name=reproduce_<tier>`` and ``reproduce.tier=<tier>``. Before them, one sweep per model trains the dense models.
Stages are shared through the store: a claim's line that repeats another's trains nothing, and a second run trains
nothing at all. The report (``analysis.reproduction``) is written to ``--out`` (default REPRODUCTION.md at the repo
root), its figures, ``per_seed.csv`` and ``verdicts.json`` to ``<paths.results>/report/reproduction/``, with
``run.json`` (command, wall time per sweep and its job count, the machine: CPU, SIMD flags and the sgemm floor
measured before the first sweep), which ``--report-only`` reprints and which the next plan's time estimate reads.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

from analysis.calibration import calibration_section
from analysis.claims import CLAIMS_DIR, load_claims, select_claims
from analysis.records import read_records
from analysis.reproduction import Context, duration, verdict_lines, write_report
from datasets.mnist_like import locate
from foundations.errors import UserError
from foundations.files import atomic_write_json
from foundations.store import Store
from runners.config import validate
from runners.experiment import recorded
from runners.jobs import Composer
from runners.metrics import cpu_description, matmul_floor

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
TIERS = CONF / "reproduce" / "tiers.yaml"
DEFAULTS = {"logger": "none", "progress": "false"}  # unless given: the store is the record; no tqdm in sweep logs
NEEDS_MNIST = "needs MNIST (README › Data)"
MNIST_NOT_ASKED = "the MNIST variants run the papers' own schedules (hours): add --mnist"


@dataclass
class Sweep:
    line: str  # the claim's overrides
    claims: list[str] = field(default_factory=list)
    requires: Optional[str] = None  # a dataset that may be absent (mnist)


def load_tiers() -> dict[str, Any]:
    tiers = OmegaConf.to_container(OmegaConf.load(TIERS).tiers, resolve=True)
    assert isinstance(tiers, dict)
    return {str(k): v for k, v in tiers.items()}


def record_name(tier: str) -> str:
    return f"reproduce_{tier}"


def experiment_of(line: str) -> str:
    return next(t.split("=", 1)[1] for t in shlex.split(line) if t.startswith("+experiment="))


def is_reproduce_config(line: str) -> bool:
    """Lines whose experiment config includes the tiers (``/reproduce: tiers``) take ``reproduce.tier``; the papers'
    own configs (the MNIST variants) have no tier."""
    path = CONF / "experiment" / f"{experiment_of(line)}.yaml"
    if not path.exists():
        return False
    config = OmegaConf.to_container(OmegaConf.load(path))
    defaults = config.get("defaults") if isinstance(config, dict) else None
    return any(isinstance(entry, dict) and "/reproduce" in entry for entry in defaults or [])


def dense_line(line: str) -> Optional[str]:
    """The dense models a reproduce line's after-training arms start from: its experiment, model and data overrides
    with ``+experiment/arm=dense`` (an init override such as SNIP's is left out: at-init arms have no dense model)."""
    if not is_reproduce_config(line):
        return None
    keep = [
        t
        for t in shlex.split(line)
        if t.startswith(("+experiment=", "model=", "dataset=", "dataset.")) and "," not in t
    ]
    return " ".join(keep + ["+experiment/arm=dense"])


def plan(claims, *, mnist: bool) -> list[Sweep]:
    """Distinct sweeps in run order: the dense models first, then each claim's lines (and its MNIST variants)."""
    lines: dict[str, Sweep] = {}
    ordered: list[tuple[str, str, Optional[str]]] = []
    for claim in claims:
        ordered += [(line, claim.id, claim.requires) for line in claim.experiments]
        for variant in claim.variants.values():
            if mnist or variant.requires != "mnist":
                ordered += [(line, variant.key, variant.requires) for line in variant.experiments]
    for line, _, requires in ordered:
        dense = dense_line(line)
        if dense is not None:
            lines.setdefault(dense, Sweep(dense, ["dense models"], requires))
    for line, owner, requires in ordered:
        sweep = lines.setdefault(line, Sweep(line, requires=requires))
        if owner not in sweep.claims:
            sweep.claims.append(owner)
    return list(lines.values())


def jobs_of(line: str) -> list[list[str]]:
    """The jobs of one claim's command line, as Hydra's basic sweeper launches them (runners/jobs.py: the
    experiment config's ``hydra.sweeper.params`` included; every comma list is an axis, the last varying fastest)."""
    with Composer() as composer:
        command = composer.command(["-m", *shlex.split(line)])
    assert command is not None
    return command.jobs


def job_count(sweep: Sweep, seeds: list[int]) -> Optional[int]:
    jobs = jobs_of(sweep.line)
    return None if jobs is None else len(jobs) * len(seeds)


def plan_lines(sweeps: list[Sweep], seeds: list[int], last_run: dict[str, Any]) -> list[str]:
    """The plan in numbers: jobs per sweep and in all, and a time estimate from the last run of the same tier
    (``run.json``: its seconds per job for each line it ran, times this plan's jobs; lines it did not time are
    named, not guessed)."""
    timed = {
        o["line"]: o["seconds"] / o["jobs"]
        for o in last_run.get("sweeps", [])
        if o.get("jobs") and not o.get("skipped") and o.get("returncode") == 0
    }
    counts = [job_count(s, seeds) for s in sweeps]
    total = sum(c for c in counts if c is not None)
    estimate = sum(timed[s.line] * c for s, c in zip(sweeps, counts) if c is not None and s.line in timed)
    untimed = [s.line for s, c in zip(sweeps, counts) if c is None or s.line not in timed]
    lines = [f"plan: {len(sweeps)} sweeps, {total} jobs ({len(seeds)} seeds)"]
    if timed:
        lines.append(
            f"estimate from the last run ({last_run.get('date', '?')}, floor "
            f"{(last_run.get('machine') or {}).get('floor_gflops', '?')} GFLOP/s): {duration(estimate)} for "
            f"{len(sweeps) - len(untimed)} sweeps" + (f"; not timed: {len(untimed)} sweep(s)" if untimed else "")
        )
    else:
        lines.append("no earlier run of this tier timed these lines: no estimate")
    return lines


def sweep_done(sweep: Sweep, *, tier: str, seeds: list[int], extra: list[str], results: Path) -> bool:
    """Whether every job of the sweep already has a finished record in the store, so launching it (workers, Hydra,
    data loading per job) would only read them back. The jobs are those of the sweep's own command line, composed
    as the pre-launch check composes them; anything that does not compose here simply runs."""
    store = Store(results)
    argv = command(sweep, tier=tier, seeds=seeds, extra=extra, sweep_dir=results / "unused")
    try:
        with Composer() as composer:
            launched = composer.command(argv[argv.index("runners.train") + 1 :])
            memo: dict = {}
            for _, cfg in composer.composed(launched) if launched is not None else ():
                if recorded(validate(cfg, memo=memo), store) is None:
                    return False
    except Exception:
        return False
    return True


def keys_of(overrides: list[str]) -> set[str]:
    return {o.lstrip("+~").split("=", 1)[0] for o in overrides if "=" in o}


def command(sweep: Sweep, *, tier: str, seeds: list[int], extra: list[str], sweep_dir: Path) -> list[str]:
    given = keys_of(extra)
    defaults = [f"{k}={v}" for k, v in DEFAULTS.items() if k not in given]
    tier_args = [f"reproduce.tier={tier}"] if is_reproduce_config(sweep.line) else []
    return [
        sys.executable,
        "-m",
        "runners.train",
        "-m",
        *shlex.split(sweep.line),
        *tier_args,
        *defaults,
        f"name={record_name(tier)}",
        "hydra.callbacks.report.enabled=false",
        f"hydra.sweep.dir={sweep_dir}",
        *extra,
        "seed=" + ",".join(map(str, seeds)),
    ]


def results_root(extra: list[str]) -> Path:
    """The store the sweeps write to: ``paths.results`` as the jobs see it (they run in the repo root)."""
    for override in extra:
        if override.startswith("paths.results="):
            path = Path(override.split("=", 1)[1]).expanduser()
            return path if path.is_absolute() else ROOT / path
    return ROOT / "results"


def mnist_available(mnist_dir: Optional[str]) -> bool:
    try:
        locate("mnist", mnist_dir)
        return True
    except UserError:
        return False


def git_commit() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        return commit + ("+uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_sweeps(
    sweeps: list[Sweep], *, tier: str, seeds: list[int], extra: list[str], base: Path, results: Path
) -> list[dict]:
    outcomes = []
    for k, sweep in enumerate(sweeps, start=1):
        cmd = command(sweep, tier=tier, seeds=seeds, extra=extra, sweep_dir=base / f"{k:02d}")
        print(
            f"\n== reproduce {k}/{len(sweeps)} ({', '.join(sweep.claims)}): {sweep.line} seed="
            f"{','.join(map(str, seeds))}",
            flush=True,
        )
        start = time.perf_counter()
        jobs = job_count(sweep, seeds)
        if sweep_done(sweep, tier=tier, seeds=seeds, extra=extra, results=results):
            print(f"== reproduce {k}/{len(sweeps)}: every job's record is in the store; not launched", flush=True)
            outcomes.append(
                {
                    "line": sweep.line,
                    "claims": sweep.claims,
                    "returncode": 0,
                    "seconds": 0.0,
                    "jobs": jobs,
                    "skipped": True,
                }
            )
            continue
        code = subprocess.run(cmd, cwd=ROOT).returncode
        seconds = time.perf_counter() - start
        print(
            f"== reproduce {k}/{len(sweeps)}: {'done' if code == 0 else f'exit code {code}'} in {seconds:.0f} s",
            flush=True,
        )
        outcomes.append(
            {"line": sweep.line, "claims": sweep.claims, "returncode": code, "seconds": round(seconds, 1), "jobs": jobs}
        )
    return outcomes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m runners.reproduce",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--claims", help="numbers or ids, comma-separated (default: all of --claims-dir)")
    parser.add_argument("--claims-dir", default=str(CLAIMS_DIR), help="the claim files (default: conf/claims/)")
    parser.add_argument("--tier", default="default", help="a tier of conf/reproduce/tiers.yaml (default, paper, smoke)")
    parser.add_argument("--report-only", action="store_true", help="train nothing; judge the records in the store")
    parser.add_argument("--mnist", action="store_true", help="also run the MNIST variants (the papers' schedules)")
    parser.add_argument("--mnist-dir", help="folder with the MNIST IDX files (default: ~/.cache/prunelab/mnist/)")
    parser.add_argument("--out", default=str(ROOT / "REPRODUCTION.md"), help="the report (default: REPRODUCTION.md)")
    parser.add_argument(
        "--sweep-dir", help="parent of the sweeps' job folders (default: multirun/reproduce_<tier>/<time>)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the sweeps' commands and stop")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every sweep (launcher, paths.results, ...)")
    return parser


def now() -> str:
    return dt.datetime.now().strftime("%Y-%m-%d %H:%M")


def last_run(meta_path: Path, tier: str) -> dict[str, Any]:
    """``run.json`` of the last run of ``tier`` ({} when there is none)."""
    last = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return last if isinstance(last, dict) and last.get("tier") == tier else {}


def report_only_header(command_text: str, meta_path: Path, tier: str) -> dict[str, Any]:
    """``--report-only``: the header names the last run of this tier (its command, date, wall time and machine)."""
    last = last_run(meta_path, tier)
    wall = (
        f"report only; the last run (`{last['command']}`, {last['date']}) took {last['wall_time']}"
        if last
        else "report only (no run of this tier recorded)"
    )
    return {
        "command": command_text,
        "date": now(),
        "commit": git_commit(),
        "wall_time": wall,
        "machine": last.get("machine"),
    }


def machine() -> dict[str, Any]:
    """What the run's numbers are bitwise reproducible on, and how fast it was when the run started."""
    return {**cpu_description(), "floor_gflops": round(matmul_floor(), 1)}


def run_and_record(
    sweeps: list[Sweep],
    *,
    tier: str,
    seeds: list[int],
    extra: list[str],
    base: Path,
    results: Path,
    command_text: str,
    meta_path: Path,
) -> dict[str, Any]:
    """Run the sweeps; the header (and ``run.json`` beside the figures) says how long, what it computed and on what
    machine (its floor measured before the first sweep)."""
    host = machine()
    print(
        f"machine: {host['cpu']}, {host['cpus']} CPUs, {' '.join(host['flags'])} (torch {host['capability']}); "
        f"floor {host['floor_gflops']:.1f} GFLOP/s",
        flush=True,
    )
    before = Store(results).count_stages()
    start = time.perf_counter()
    outcomes = run_sweeps(sweeps, tier=tier, seeds=seeds, extra=extra, base=base, results=results)
    seconds = time.perf_counter() - start
    computed = Store(results).count_stages() - before
    meta = {
        "command": command_text,
        "date": now(),
        "commit": git_commit(),
        "wall_time": f"{duration(seconds)} for {len(sweeps)} sweeps; {computed} stages computed (a re-run "
        f"computes none)",
        "seconds": round(seconds, 1),
        "tier": tier,
        "seeds": seeds,
        "machine": host,
        "sweeps": outcomes,
    }
    meta_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(meta_path, meta)
    failed = [o for o in outcomes if o["returncode"] != 0]
    if failed:
        print(
            f"{len(failed)} sweep(s) exited with an error: {'; '.join(o['line'] for o in failed)} "
            f"(their claims get no verdict)",
            file=sys.stderr,
        )
    return meta


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_intermixed_args(argv)
    tiers = load_tiers()
    if args.tier not in tiers:
        raise UserError(f"--tier: no tier {args.tier!r} in {TIERS.relative_to(ROOT)}; choose {', '.join(tiers)}")
    knobs = tiers[args.tier]
    seeds = [int(s) for s in knobs["seeds"]]
    extra = list(args.overrides)
    bad = [o for o in extra if "=" not in o]
    if bad:
        raise UserError(f"overrides: {' '.join(bad)} is not key=value (see --help)")
    every_claim = load_claims(Path(args.claims_dir))
    claims = select_claims(every_claim, args.claims)
    have_mnist = mnist_available(args.mnist_dir)
    run_mnist = (args.mnist or args.tier == "paper") and have_mnist
    sweeps = plan(claims, mnist=run_mnist)
    if args.mnist_dir:  # only the MNIST lines read it (Fashion-MNIST has its own location)
        for sweep in sweeps:
            if sweep.requires == "mnist":
                sweep.line += f" dataset.data_dir={shlex.quote(args.mnist_dir)}"
    results = results_root(extra)
    base = (
        Path(args.sweep_dir).expanduser().resolve()
        if args.sweep_dir
        else ROOT / "multirun" / record_name(args.tier) / dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    )
    figures_dir = results / "report" / "reproduction"
    plan_text = plan_lines(sweeps, seeds, last_run(figures_dir / "run.json", args.tier))
    if args.dry_run:
        for k, sweep in enumerate(sweeps, start=1):
            print(shlex.join(command(sweep, tier=args.tier, seeds=seeds, extra=extra, sweep_dir=base / f"{k:02d}")))
        print("\n".join(plan_text))
        return 0
    if not args.report_only:
        print("\n".join(plan_text), flush=True)
    command_text = "python -m runners.reproduce " + shlex.join(argv)
    if args.report_only:
        header = report_only_header(command_text, figures_dir / "run.json", args.tier)
    else:
        header = run_and_record(
            sweeps,
            tier=args.tier,
            seeds=seeds,
            extra=extra,
            base=base,
            results=results,
            command_text=command_text,
            meta_path=figures_dir / "run.json",
        )
    if args.claims:
        header["claims_run"] = ", ".join(str(c.number) for c in claims)
    # The report judges every claim (a run of some of them never truncates REPRODUCTION.md).
    not_run = {"mnist": None if run_mnist else (NEEDS_MNIST if not have_mnist else MNIST_NOT_ASKED)}
    records = [record for record, _ in read_records(results)[0]]
    context = Context(
        experiment=record_name(args.tier),
        tier=args.tier,
        seeds=seeds,
        knobs=knobs,
        header=header,
        not_run=not_run,
        calibration=calibration_section(results / "calibration"),
    )
    out, judged = write_report(every_claim, records, context, Path(args.out), figures_dir)
    print("\n== reproduction verdicts ==\n" + "\n".join(verdict_lines(judged)))
    print(f"report: {out}\nfigures: {figures_dir}")
    return 0


def cli() -> None:
    try:
        sys.exit(main())
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
