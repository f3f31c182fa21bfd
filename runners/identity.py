"""What names an experiment: the spec its record's folder is hashed from (and its W&B run id), and its setting.

``Identity.of(config)`` computes both once per job; ``run_experiment`` and the entry point pass it along.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from datasets import identity as data_identity
from foundations.checks import nondefault
from foundations.hashing import stage_hash
from foundations.store import EXPERIMENT
from models import identity as model_identity
from runners.config import ExperimentConfig


def thread_identity(config: ExperimentConfig) -> dict:
    """What of the process changes every stage's numbers: the CPU thread count, where it is not the default 1."""
    threads = config.cpu_threads()
    return {"threads": threads} if threads not in (None, 1) else {}


def experiment_spec(config: ExperimentConfig) -> dict:
    """What identifies an experiment's record (its folder under ``runs/experiment/``). The sweep's name is hashed
    under the key ``experiment``, as every existing record's hash has it."""
    return {
        "model": model_identity(config.model),
        "dataset": data_identity(config.dataset),
        "method": nondefault(config.method),
        "train": nondefault(config.train),
        "seed": config.seed,
        "seeds": nondefault(config.seeds),
        "experiment": config.sweep,
        **thread_identity(config),
    }


# What "the same setting, another seed" means: two experiments whose specs differ only in these keys. The top-level
# `seed` is what a seed sweep varies; the sweep's name (`experiment` in the spec) changes no number. Explicit `seeds.*`
# overrides stay in the setting: `seed=0,1,2 seeds.init=7` varies only the data order and the pruning draws around one
# fixed initialization, a different setting (and a different spread) from `seed=0,1,2`.
NOT_SETTING = ("seed", "experiment")


def setting_spec(spec: dict) -> dict:
    """An experiment's spec (:func:`experiment_spec`) without ``NOT_SETTING``: what the records of the seeds of one
    setting share (record field ``setting``; the report never averages records of different settings)."""
    return copy.deepcopy({k: v for k, v in spec.items() if k not in NOT_SETTING})


def hash_setting(setting: dict) -> str:
    """The record's ``setting_hash``: equal for the seeds of one setting, different for anything else."""
    return stage_hash("setting", setting, {})


def experiment_hash(config: ExperimentConfig) -> str:
    """The experiment's folder name under ``runs/experiment/`` (and its W&B run id)."""
    return Identity.of(config).hash


@dataclass(frozen=True)
class Identity:
    """An experiment's spec and hash, and its setting and the setting's hash."""

    spec: dict
    hash: str
    setting: dict
    setting_hash: str

    @classmethod
    def of(cls, config: ExperimentConfig) -> Identity:
        spec = experiment_spec(config)
        setting = setting_spec(spec)
        return cls(spec, stage_hash(EXPERIMENT, spec, {}), setting, hash_setting(setting))
