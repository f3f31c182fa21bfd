"""What the pre-launch check (runners/jobs.py) costs a sweep before its first job starts, in one run.

    PYTHONPATH=. python benchmarks/check_cost.py [overrides ...]      # default: make survey's (60 jobs)

Prints the check's wall time (best of ``--repeat``, each with a fresh composer: nothing cached across repeats), its
parts (expanding the command line, composing the jobs, validating them) and, as the yardstick measured in the same
run, one ``hydra.compose`` per job — what composing each job with Hydra's compose API would cost — and the ratio.
Times on a shared machine are noisy: compare the ratio, not the seconds.
"""

from __future__ import annotations

import argparse
import sys
import time

from hydra import compose, initialize_config_dir

from runners.config import CONF, register_schemas, validate
from runners.jobs import Composer, check_command

SURVEY = ["-m", "+experiment=survey_mlp", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def parts(argv: list[str]) -> dict[str, float]:
    out = {}
    with Composer() as composer:
        start = time.perf_counter()
        command = composer.command(argv)
        assert command is not None
        out["expand"] = time.perf_counter() - start
        memo: dict = {}
        compose_s = validate_s = 0.0
        jobs = composer.composed(command)
        while True:
            start = time.perf_counter()
            item = next(jobs, None)
            compose_s += time.perf_counter() - start
            if item is None:
                break
            validate_s += timed(lambda cfg=item[1]: validate(cfg, memo=memo))
        out.update(compose=compose_s, validate=validate_s, jobs=len(command.jobs))
    return out


def hydra_compose_each(argv: list[str]) -> float:
    with Composer() as composer:
        command = composer.command(argv)
        assert command is not None
        jobs = command.jobs
    register_schemas()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return timed(lambda: [compose("config", overrides=job) for job in jobs])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    argv = args.overrides or SURVEY
    check_command(argv)  # warm: imports, the first model build
    check = min(timed(lambda: check_command(argv)) for _ in range(args.repeat))
    split = parts(argv)
    reference = hydra_compose_each(argv)
    print(f"command: {' '.join(argv)}  ({split['jobs']} jobs)")
    print(
        f"pre-launch check {check:.2f} s (best of {args.repeat}): expand {split['expand']:.2f} s, compose "
        f"{split['compose']:.2f} s, validate {split['validate']:.2f} s"
    )
    print(f"hydra.compose once per job {reference:.2f} s: the check costs {check / reference:.2f}x that")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
