"""Print the experiment hash of every job of ``make survey`` and of the reproduction's default tier, one per line.

    PYTHONPATH=<checkout> python tests/hash_audit.py > /tmp/hashes_<branch>.txt     # then diff two checkouts

A refactor that must move no hash runs this on the old and the new checkout and diffs the outputs. It uses only
Hydra's own compose API and sweeper (not the project's job expansion, which a refactor may change) and, from the
project, what every version has: ``runners.config.validate``, ``experiment_hash`` (``runners.identity``; before it,
``runners.experiment``) and the reproduction's plan and command lines (``runners.reproduce``). ``--stages <store>``
prints instead every stage hash of every record in a store (``stage_hashes``), e.g. of a small survey run on each
checkout (``--tiny`` prints the command that runs one), so the stages' hashes are audited too, not only the
experiments'.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

SURVEY = ["+experiment=survey_mlp"]  # make survey's overrides; its launcher overrides change no record
TINY = [  # the survey's own sweep, shortened: every stage kind and method, ~2 min on 2 cores
    *SURVEY,
    "survey.dense_epochs=1",
    "survey.recovery_epochs=1",
    "survey.obd_samples=64",
    "survey.gmp_frequency=5",  # 3,000 examples: a 100-step update interval would not fit gmp's window
    "dataset.train_limit=3000",
    "logger=none",
    "progress=false",
]


def jobs(overrides: list[str]) -> list[list[str]]:
    """The jobs Hydra's basic sweeper launches for a multirun command line: the sweep config's
    ``hydra.sweeper.params``, then the command line's overrides (hydra.* left out: they change no record)."""
    parser = OverridesParser.create()
    science = [o for o in parser.parse_overrides(overrides) if not o.is_hydra_override()]
    # the sweep's params come from the experiment config alone; its other static overrides (e.g. a method field of
    # the arms) may not compose with the config's default arm
    chosen = [o.input_line for o in science if not o.is_sweep_override() and o.key_or_group == "experiment"]
    sweep = compose("config", overrides=chosen, return_hydra_config=True)
    params = [f"{k}={v}" for k, v in (sweep.hydra.sweeper.params or {}).items()]
    return BasicSweeper.split_arguments(parser.parse_overrides(params + [o.input_line for o in science]), None)[0]


def reproduction_lines() -> list[list[str]]:
    """Every sweep ``python -m runners.reproduce`` launches in the default tier, as its overrides."""
    from analysis.claims import load_claims
    from runners import reproduce

    seeds = [int(s) for s in reproduce.load_tiers()["default"]["seeds"]]
    out = []
    for sweep in reproduce.plan(load_claims(), mnist=False):
        cmd = reproduce.command(sweep, tier="default", seeds=seeds, extra=[], sweep_dir=Path("/nonexistent"))
        out.append(cmd[cmd.index("-m", cmd.index("runners.train")) + 1 :])
    return out


def experiment_hashes(results: str) -> None:
    from runners.config import CONF, register_schemas, validate  # CONF: the conf/ of the checkout on PYTHONPATH

    try:
        from runners.identity import experiment_hash
    except ImportError:  # a checkout from before runners/identity.py
        from runners.experiment import experiment_hash  # type: ignore[attr-defined,no-redef]

    register_schemas()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for command in [SURVEY, *reproduction_lines()]:
            for job in jobs(command):
                cfg = compose("config", overrides=[*job, f"paths.results={results}"])
                print(f"{experiment_hash(validate(cfg))}  {shlex.join(job)}", flush=True)


def stage_hashes(store: Path) -> None:
    """Every record's stage hashes, keyed by what names the job (label, sparsity, seed), sorted."""
    lines = []
    for path in sorted((store / "runs" / "experiment").glob("*/result.json")):
        record = json.loads(path.read_text())
        key = (
            f"{record.get('experiment')} {record.get('label')} @ {record.get('target_sparsity')} s{record.get('seed')}"
        )
        lines.append(f"{key}: experiment/{path.parent.name} {json.dumps(record.get('stage_hashes'), sort_keys=True)}")
    print("\n".join(sorted(lines)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="/tmp/hash_audit_results", help="paths.results of the composed jobs")
    parser.add_argument("--stages", type=Path, help="print the stage hashes of every record in this store instead")
    parser.add_argument("--tiny", action="store_true", help="print the command of the small survey and stop")
    args = parser.parse_args()
    if args.tiny:
        print(shlex.join([sys.executable, "-m", "runners.train", "-m", *TINY]))
    elif args.stages:
        stage_hashes(args.stages)
    else:
        experiment_hashes(args.results)


if __name__ == "__main__":
    main()
