"""``python -m runners.calibrate``: choose slimming's λ and the fine-tuning LR on the validation split, and record why.

    python -m runners.calibrate                                   # reproduce_mlp at the default tier, seeds 0,1
    python -m runners.calibrate --experiment survey_mlp           # the survey's setting
    python -m runners.calibrate --only lam --lams 0,1e-4,1e-3     # one rule, another grid
    python -m runners.calibrate hydra/launcher=joblib hydra.launcher.n_jobs=2     # any Hydra override, any launcher

Each grid is one Hydra multirun of ``runners.train`` over an experiment config's arm (``slimming`` with
``method.lam=<grid>``, ``magnitude`` with ``method.recovery.lr_scale=<grid>``) and the seeds, named ``calibration``
(so no report or claim ever judges these records), through the store: the dense models, and every sparsity
training of the grid, are the same stages the experiment's own runs use, and a second call trains nothing (a grid
whose every record is in the store is not even launched). The rules are ``analysis.calibration``'s: λ = the largest
of the grid whose sparsity training costs ≤ 0.5 pp of validation accuracy against the dense model (Liu et al. 2017
§4.3), lr_scale = the best mean validation accuracy after recovery. The result, with every run's measurements and
store hashes, the rules, the chosen values and the setting's hash, is written (atomically, once every run is in) to
``<paths.results>/calibration/<experiment>[_<tier>].json`` and a markdown table beside it; the command prints the
overrides that use the chosen values. Configs take a calibrated value as a plain value (the YAML names the file in
a comment): the hashes cover the value, never the file.
"""

from __future__ import annotations

import argparse
import functools
import math
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from analysis.calibration import (
    LAM,
    LR_SCALE,
    TOLERANCE,
    Choice,
    Measurement,
    calibration_lines,
    choice_json,
    choose_lam,
    choose_lr_scale,
)
from foundations.errors import UserError
from foundations.files import atomic_write_json, atomic_write_text
from foundations.record import ExperimentRecord
from foundations.store import Store
from methods.pipeline.results import TrainResult
from runners.config import CONF, ExperimentConfig, validate
from runners.experiment import recorded_stage
from runners.identity import experiment_spec, hash_setting, setting_spec
from runners.jobs import Composer, check_command
from runners.reproduce import DEFAULTS, ROOT, git_commit, is_reproduce_config, load_tiers, now, results_root

NAME = "calibration"  # the records' sweep name: never one a report or a claim judges
# Half-decade steps from the paper's smallest searched value (1e-5; its grid is {1e-5, 1e-4, 1e-3}) to 1e-2, the
# value the reproduction used before calibration (so today's choice is one of the measured points); 0 measures what
# the γ = 0.5 initialization alone costs.
DEFAULT_LAMS = (0.0, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
# Half-decade steps from Han et al.'s LR / 100 through their LR / 10 (the method's default) to the dense LR itself.
DEFAULT_LR_SCALES = (0.01, 0.03, 0.1, 0.3, 1.0)
RULES = (LAM, LR_SCALE)
_NOT_SETTING = ("hydra", "paths.", "logger", "progress")  # overrides that change no number of the setting


@dataclass(frozen=True)
class Grid:
    key: str  # LAM | LR_SCALE: its part of the calibration file
    arm: str  # conf/experiment/arm/<arm>.yaml
    field: str  # the method field the grid sets
    sparsity: float  # method.sparsity of the arm's jobs
    values: tuple[float, ...]
    override: str  # how a config uses the chosen value

    def line(self, setting: list[str]) -> list[str]:
        values = ",".join(repr(float(v)) for v in self.values)
        return [*setting, f"+experiment/arm={self.arm}", f"method.sparsity={self.sparsity!r}", f"{self.field}={values}"]


def number_list(text: str, flag: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"{flag}: {text!r} is not a comma-separated list of numbers (e.g. 0,1e-4,1e-3)") from None
    if not values:
        raise UserError(f"{flag}: the grid is empty; give at least one value")
    if not all(math.isfinite(v) for v in values):
        raise UserError(f"{flag}: every value must be finite (got {text!r})")
    if len(set(values)) != len(values):
        raise UserError(f"{flag}: {text!r} repeats a value; give each grid value once")
    return values


def seed_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds: {text!r} is not a comma-separated list of integers (e.g. 0,1)") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UserError(f"--seeds: give distinct integers >= 0, at least one (got {text!r})")
    return seeds


def grids(args: argparse.Namespace) -> list[Grid]:
    lams = number_list(args.lams, "--lams")
    if min(lams) < 0:
        raise UserError(f"--lams: λ must be >= 0 (got {args.lams!r})")
    scales = number_list(args.lr_scales, "--lr-scales")
    if min(scales) <= 0:
        raise UserError(f"--lr-scales: every scale must be > 0 (got {args.lr_scales!r})")
    for flag, sparsity in (
        ("--slimming-sparsity", args.slimming_sparsity),
        ("--magnitude-sparsity", args.magnitude_sparsity),
    ):
        if not 0 < sparsity < 1:
            raise UserError(f"{flag}: must be in (0, 1) (got {sparsity})")
    every = [
        Grid(LAM, "slimming", "method.lam", args.slimming_sparsity, lams, "survey.slimming_lam"),
        Grid(
            LR_SCALE,
            "magnitude",
            "method.recovery.lr_scale",
            args.magnitude_sparsity,
            scales,
            "method.recovery.lr_scale",
        ),
    ]
    return [g for g in every if args.only in (None, g.key)]


def setting_line(args: argparse.Namespace) -> list[str]:
    """The experiment config (and its tier) with the overrides that change the setting's numbers."""
    if not (CONF / "experiment" / f"{args.experiment}.yaml").exists():
        choices = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
        raise UserError(f"--experiment: no conf/experiment/{args.experiment}.yaml; choose one of {', '.join(choices)}")
    line = [f"+experiment={args.experiment}"]
    if is_reproduce_config(line[0]):
        tiers = load_tiers()
        if args.tier not in tiers:
            raise UserError(f"--tier: no tier {args.tier!r}; choose {', '.join(tiers)}")
        line.append(f"reproduce.tier={args.tier}")
    elif args.tier is not None:
        raise UserError(f"--tier: {args.experiment} has no tiers (only the reproduce_* configs); leave --tier out")
    return line + [o for o in args.overrides if not o.lstrip("+~").startswith(_NOT_SETTING)]


def sweep_argv(line: list[str], extra: list[str], seeds: list[int], sweep_dir: Path) -> list[str]:
    """``runners.train``'s arguments for one grid (after ``-m runners.train``): as ``runners.reproduce`` launches."""
    given = {o.lstrip("+~").split("=", 1)[0] for o in extra}
    defaults = [f"{k}={v}" for k, v in DEFAULTS.items() if k not in given]
    setting = set(line)
    return [
        "-m",
        *line,
        *defaults,
        f"name={NAME}",
        "hydra.callbacks.report.enabled=false",
        f"hydra.sweep.dir={sweep_dir}",
        *[o for o in extra if o not in setting],
        "seed=" + ",".join(map(str, seeds)),
    ]


def _field(config: ExperimentConfig, path: str) -> float:
    return float(functools.reduce(getattr, path.split(".")[1:], config.method))


def _selected(store: Store, digest: str) -> tuple[float, float]:
    """(validation, test) accuracy of a training stage's validation-selected checkpoint (``TrainResult.selected``)."""
    selected = TrainResult.from_json(store.at(f"train/{digest}").result_json).selected
    return selected.val_acc, selected.test_acc


def gather(
    grid: Grid, argv: list[str], store: Store
) -> tuple[dict[float, list[Measurement]], dict[tuple[float, int], dict[str, Any]], list[str]]:
    """The grid's measurements from the store's records of ``argv``'s jobs, their hashes, and the jobs not there.

    λ: the sparsity-trained model (stage ``sparsity``) against the same seed's dense model; lr_scale: the model
    after recovery (the record's final stage). Both: the validation-selected checkpoint of each stage."""
    measured: dict[float, list[Measurement]] = {}
    provenance: dict[tuple[float, int], dict[str, Any]] = {}
    missing: list[str] = []
    with Composer() as composer:
        command = composer.command(argv)
        assert command is not None
        memo: dict = {}
        for job, cfg in composer.composed(command):
            config = validate(cfg, memo=memo)
            found = recorded_stage(config, store)
            if found is None:
                missing.append(" ".join(job))
                continue
            record = ExperimentRecord.from_dict(found.result_json)
            assert record.dense_stage is not None
            dense_val, dense_test = _selected(store, record.dense_stage)
            sparsity = record.stage_hashes.get("sparsity")  # slimming's sparsity training (λ's grid only)
            if grid.key == LAM:
                assert sparsity is not None
                val, test = _selected(store, sparsity)
            else:  # an ok record has both
                assert record.val_acc is not None and record.test_acc is not None
                val, test = record.val_acc, record.test_acc
            value = _field(config, grid.field)
            measured.setdefault(value, []).append(Measurement(config.seed, val, test, dense_val, dense_test))
            provenance[(value, config.seed)] = {
                "record": found.ref,
                "dense_stage": f"train/{record.dense_stage}",
                "stage": f"train/{sparsity}" if grid.key == LAM else record.final_stage,
            }
    return measured, provenance, missing


def setting_hash(line: list[str], seed: int) -> str:
    """The ``setting_hash`` of the setting's dense model (model, data, training; no seed, no sweep name): the records
    of the dense arm of this setting carry the same."""
    with Composer() as composer:
        command = composer.command([*line, "+experiment/arm=dense", f"seed={seed}"])
        assert command is not None
        (_, cfg), *_ = list(composer.composed(command))
        return hash_setting(setting_spec(experiment_spec(validate(cfg))))


class RunsFailed(Exception):
    """Some runs of a grid have no finished record after their sweep: nothing is chosen, nothing written."""


def run_grid(grid: Grid, argv: list[str], store: Store) -> tuple[dict, dict]:
    measured, provenance, missing = gather(grid, argv, store)
    if missing:
        print(
            f"\n== calibrate {grid.key}: {len(missing)} run(s) to compute: runners.train {shlex.join(argv)}", flush=True
        )
        code = subprocess.run([sys.executable, "-m", "runners.train", *argv], cwd=ROOT).returncode
        measured, provenance, missing = gather(grid, argv, store)
        if missing:
            raise RunsFailed(
                f"{grid.key}: {len(missing)} run(s) have no finished record (the sweep exited {code}), e.g. "
                f"{missing[0]}; see the sweep's output above, then run the same command again (finished runs are reused)"
            )
    else:
        print(f"== calibrate {grid.key}: every run's record is in the store; nothing launched", flush=True)
    return measured, provenance


def choose(grid: Grid, measured: dict[float, list[Measurement]], tolerance: float) -> Choice:
    return choose_lam(measured, tolerance) if grid.key == LAM else choose_lr_scale(measured)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m runners.calibrate",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--experiment", default="reproduce_mlp", help="conf/experiment/<name>.yaml (default: reproduce_mlp)"
    )
    parser.add_argument("--tier", help="the reproduce_* configs' tier (default: default)")
    parser.add_argument("--only", choices=RULES, help="one rule only (default: both)")
    parser.add_argument("--lams", default=",".join(map(repr, DEFAULT_LAMS)), help="λ grid (comma-separated)")
    parser.add_argument("--lr-scales", default=",".join(map(repr, DEFAULT_LR_SCALES)), help="lr_scale grid")
    parser.add_argument("--seeds", default="0,1", help="seeds, paired across the grid (default: 0,1)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="λ's validation cost bound (default 0.005)")
    parser.add_argument("--slimming-sparsity", type=float, default=0.8, help="the slimming jobs' method.sparsity")
    parser.add_argument("--magnitude-sparsity", type=float, default=0.95, help="the magnitude jobs' method.sparsity")
    parser.add_argument("--out", help="the calibration file (default: <paths.results>/calibration/<name>.json)")
    parser.add_argument("--sweep-dir", help="parent of the sweeps' job folders (default: multirun/calibration/<name>)")
    parser.add_argument("--dry-run", action="store_true", help="print the sweeps' commands and stop")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every job (data, launcher, paths.results)")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_intermixed_args(argv)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise UserError(f"overrides: {' '.join(bad)} is not key=value (see --help)")
    grid_set = [o for o in args.overrides if o.lstrip("+~").startswith(("method.", "method=", "experiment", "seed="))]
    if grid_set:
        raise UserError(
            f"overrides: {grid_set[0]} sets a field the grids set (the experiment, arm, method and seeds: "
            f"--experiment, --lams, --lr-scales, --*-sparsity, --seeds); use those options"
        )
    if not (math.isfinite(args.tolerance) and args.tolerance >= 0):
        raise UserError(f"--tolerance: must be a finite number >= 0 (got {args.tolerance})")
    reproduce_config = is_reproduce_config(f"+experiment={args.experiment}")
    if reproduce_config and args.tier is None:
        args.tier = "default"
    line = setting_line(args)
    seeds, chosen_grids = seed_list(args.seeds), grids(args)
    name = args.experiment + (f"_{args.tier}" if reproduce_config else "")
    results = results_root(args.overrides)
    out = Path(args.out) if args.out else results / "calibration" / f"{name}.json"
    if out.suffix != ".json":
        raise UserError(f"--out: the calibration file is JSON; give a path ending in .json (got {out})")
    base = Path(args.sweep_dir) if args.sweep_dir else ROOT / "multirun" / NAME / name
    argvs = {g.key: sweep_argv(g.line(line), args.overrides, seeds, base / g.key) for g in chosen_grids}
    if args.dry_run:
        for g in chosen_grids:
            print(shlex.join([sys.executable, "-m", "runners.train", *argvs[g.key]]))
        return 0
    for g in chosen_grids:
        check_command(argvs[g.key])  # every job composes and validates before the first starts (exit 2 otherwise)
    store = Store(results)
    data: dict[str, Any] = {
        "name": name,
        "command": " ".join(["python -m runners.calibrate", shlex.join(argv)]).strip(),
        "date": now(),
        "commit": git_commit(),
        "seeds": seeds,
        "split": "validation",
        "setting": {"line": shlex.join(line), "setting_hash": setting_hash(line, seeds[0])},
    }
    for g in chosen_grids:
        measured, provenance = run_grid(g, argvs[g.key], store)
        choice = choose(g, measured, args.tolerance)
        override = None if choice.value is None else f"{g.override}={choice.value!r}"
        rule_knobs = {"tolerance": args.tolerance} if g.key == LAM else {}
        data[g.key] = choice_json(choice, provenance, line=shlex.join(g.line(line)), override=override, **rule_knobs)
    report = "\n".join(calibration_lines(data))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out.with_suffix(".md"), report + "\n")
    atomic_write_json(out, data)  # last: the file the configs name exists only once everything is measured
    print("\n" + report)
    print(f"calibration: {out}")
    for g in chosen_grids:
        part = data[g.key]
        print(f"use: {part['override']}" if part["override"] else f"{g.key}: {part['message']}")
    return 0 if all(data[g.key]["chosen"] is not None for g in chosen_grids) else 1


def cli() -> None:
    try:
        sys.exit(main())
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except RunsFailed as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli()
