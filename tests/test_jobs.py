"""The pre-launch check (runners/jobs.py): every job of a command line composed as Hydra composes it and validated
before the first starts; the values a method ignores and ``train.epochs`` under ``train.iterations`` refused in one
line; the method YAMLs leave every default to the schemas, and moving them there moved no hash."""

from __future__ import annotations

import shlex
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from foundations.checks import nondefault
from foundations.errors import UserError
from methods import get_method, registry
from runners.config import CONF, register_schemas
from runners.jobs import Composer, check_command, sweep_jobs

SURVEY = ["-m", "+experiment=survey_mlp"]


def hydra_compose(job: list[str]) -> dict:
    """What ``hydra.compose`` makes of a job, without Hydra's own node: the reference the Composer must equal."""
    register_schemas()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=job)
    return OmegaConf.to_container(cfg)  # type: ignore[return-value]


def composed(argv: list[str]) -> list[tuple[list[str], dict]]:
    with Composer() as composer:
        command = composer.command(argv)
        assert command is not None
        return [(job, OmegaConf.to_container(cfg)) for job, cfg in composer.composed(command)]  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------ composition
def test_jobs_are_the_basic_sweepers_with_the_experiments_params():
    jobs = composed([*SURVEY, "level=0,4", "seed=0,1"])
    survey = yaml.safe_load((CONF / "experiment" / "survey_mlp.yaml").read_text())
    arms = survey["hydra"]["sweeper"]["params"]["+experiment/arm"].split(",")
    assert len(jobs) == 2 * len(arms) * 2
    # the sweep config's params come first (level, arm, seed), the command line's lists replace theirs in place
    assert jobs[0][0] == ["level=0", "+experiment/arm=dense", "seed=0", "+experiment=survey_mlp"]
    assert jobs[1][0] == ["level=0", "+experiment/arm=dense", "seed=1", "+experiment=survey_mlp"]
    assert jobs[-1][0] == ["level=4", "+experiment/arm=scratch_b_thinet", "seed=1", "+experiment=survey_mlp"]
    assert sweep_jobs(["a=1,2"], ["b=3", "a=4"]) == [["a=4", "b=3"]]


@pytest.mark.parametrize(
    "argv",
    [
        [*SURVEY, "+experiment/arm=dense,magnitude,scratch_b_thinet", "level=0,3,4"],  # reuse across levels
        ["-m", "method=random,magnitude", "method.scope=layerwise", "method.sparsity=0.5,0.8", "train.epochs=2"],
        ["model=vgg", "model.depth=11", "dataset=cifar10", "+model.widths=[8,8,8,8,8,8,8,8]"],
        ["-m", "+extra=1,2", "seed=0,1"],  # an added key is no plain value: each job starts from a fresh copy
    ],
)
def test_each_job_is_what_hydra_compose_makes_of_it(argv):
    for job, cfg in composed(argv):
        reference = hydra_compose(job)
        reference.pop("hydra", None)
        assert cfg == reference, job


@pytest.mark.slow  # ~1 min: 60 + 177 compositions by Hydra itself
def test_every_job_of_the_survey_and_the_reproduction_composes_as_hydra_composes_it(tmp_path):
    from runners import reproduce
    from tests.hash_audit import SURVEY as SURVEY_OVERRIDES
    from tests.hash_audit import reproduction_lines

    for line in [SURVEY_OVERRIDES, *reproduction_lines()]:
        for job, cfg in composed(["-m", *line]):
            reference = hydra_compose(job)
            reference.pop("hydra", None)
            assert cfg == reference, job
    assert reproduce  # the lines are the reproduction's own commands


def test_a_source_method_is_composed_by_hydra_not_read_from_its_yaml():
    from runners.jobs import method_defaults

    for name in registry():
        with_hydra = hydra_compose([f"method={name}", "paths.results=/x"])["method"]
        assert OmegaConf.to_container(method_defaults(name)) == with_hydra, name


# ------------------------------------------------------------------------------------------------ one default
@pytest.mark.parametrize("name", sorted(registry()))
def test_a_method_yaml_leaves_every_default_to_its_schema(name):
    """``method=<name>`` composes to exactly ``Config()``: the schema is the one answer to "the default"."""
    method = get_method(name)
    node = hydra_compose([f"method={name}", "paths.results=/x"])["method"]
    from foundations.checks import typed

    assert asdict(typed(method.Config, node, "method")) == asdict(method.Config()), name
    yaml_keys = set(OmegaConf.load(CONF / "method" / f"{name}.yaml")) - {"defaults"}
    assert not yaml_keys, f"conf/method/{name}.yaml restates {yaml_keys}: set the default in the schema"


# The experiment hashes' method part as the YAMLs made it before the defaults moved into the schemas (their values,
# read off conf/method/*.yaml of commit 4376c8e; gmp's of 1b9fa9d; grasp and synflow were written with their defaults
# in the schema): a moved default must keep measuring against the old schema value, and a method's name and sparsity
# against dense's (MethodConfig.HASH_DEFAULTS), except slimming's, hashed against its own from the start.
OLD_NONDEFAULT = {
    "dense": {},
    "gmp": {"name": "gmp", "sparsity": 0.9},
    "grasp": {"name": "grasp", "sparsity": 0.9},
    "l1_filter": {"name": "l1_filter", "sparsity": 0.5, "recovery": {"epochs": 5, "lr_scale": 0.1}},
    "lottery": {"name": "lottery", "sparsity": 0.8},
    "magnitude": {"name": "magnitude", "sparsity": 0.9, "recovery": {"epochs": 5, "lr_scale": 0.1}},
    "obd": {"name": "obd", "sparsity": 0.9, "recovery": {"epochs": 5, "lr_scale": 0.1}},
    "random": {"name": "random", "sparsity": 0.9, "recovery": {"epochs": 5, "lr_scale": 0.1}},
    "random_channel": {"name": "random_channel", "sparsity": 0.5, "recovery": {"epochs": 5, "lr_scale": 0.1}},
    "scratch": {"name": "scratch", "sparsity": 0.5},
    "slimming": {},
    "snip": {"name": "snip", "sparsity": 0.9},
    "synflow": {"name": "synflow", "sparsity": 0.9},
    "thinet": {"name": "thinet", "sparsity": 0.5, "recovery": {"epochs": 5, "lr_scale": 0.1}},
}


@pytest.mark.parametrize("name", sorted(OLD_NONDEFAULT))
def test_moved_defaults_hash_as_before(name):
    assert nondefault(get_method(name).Config()) == OLD_NONDEFAULT[name]


# ------------------------------------------------------------------------------------------------ the check
def flags_first(argv) -> list[str]:
    """Hydra's argument parser takes ``-m`` before the overrides."""
    return sorted(argv, key=lambda a: not a.startswith("-"))


def refusal(*argv: str) -> str:
    with pytest.raises(UserError) as caught:
        check_command(flags_first(argv))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_the_survey_and_every_reproduction_sweep_pass_the_pre_launch_check(tmp_path):
    from analysis.claims import load_claims
    from runners import reproduce

    assert check_command([*SURVEY, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])[0] == "-m"
    seeds = [int(s) for s in reproduce.load_tiers()["default"]["seeds"]]
    for sweep in reproduce.plan(load_claims(), mnist=True):
        cmd = reproduce.command(sweep, tier="default", seeds=seeds, extra=[], sweep_dir=tmp_path)
        check_command(cmd[cmd.index("runners.train") + 1 :])


@pytest.mark.parametrize(
    "argv,start",
    [
        (["method.sparsity=0.9"], "method.sparsity: dense ignores it (nothing is pruned); methods that use it: "),
        (["method=snip", "method.recovery.epochs=3"], "method.recovery.epochs: snip ignores it (it prunes at init"),
        (
            ["method=random", "method.when=init", "method.recovery.lr_scale=0.5"],
            "method.recovery.lr_scale: random ignores it (it prunes at initialization",
        ),
        (["method=random", "method.scope=layerwise"], "method.scope: random ignores it (method.variant decides"),
        (["method=scratch", "method.flops=conv_linear"], "method.flops: scratch ignores it (Scratch-E trains"),
        (["-m", "+experiment=survey_mlp", "+experiment/arm=dense", "method.sparsity=0.5"], "method.sparsity: dense"),
    ],
)
def test_a_value_the_method_ignores_is_refused_naming_who_uses_it(argv, start):
    message = refusal("dataset=synthetic", *argv)
    assert message.startswith(start), message
    if "recovery.epochs" in start:
        assert "magnitude" in message and "thinet" in message and "snip," not in message


@pytest.mark.parametrize(
    "argv",
    [
        ["method=random", "method.when=after_training", "method.recovery.lr_scale=0.5"],
        ["method=magnitude", "method.sparsity=0.9", "method.recovery.epochs=3"],
        ["-m", "method=dense,magnitude", "method.sparsity=0.9"],  # a method sweep's shared value is for magnitude
        ["-m", "method=random,magnitude", "method.scope=layerwise", "method.recovery.epochs=1"],
        ["-m", "+experiment=survey_mlp", "+experiment/arm=dense,magnitude", "method.sparsity=0.5"],
    ],
)
def test_a_value_some_job_uses_passes(argv):
    check_command(flags_first(["dataset=synthetic", *argv]))


def test_train_epochs_where_iterations_decide_the_length_is_refused():
    message = refusal("+experiment=snip_vgg_cifar", "train.epochs=1")
    assert message.startswith("train.epochs: the config sets train.iterations=") and "train.iterations=null" in message
    check_command(["+experiment=snip_vgg_cifar", "train.epochs=1", "train.iterations=null"])
    check_command(["train.epochs=1"])  # no iterations: epochs decide


@pytest.mark.parametrize(
    "argv,expected",
    [
        (
            ["model=resnet18"],
            "model=resnet18: no such option; torchvision's resnet18 is model=torchvision model.arch=resnet18",
        ),
        (["train.epoch=3"], "train.epoch: no such key (did you mean train.epochs?)"),
        (
            ["method=magnitude", "method.recovry.epochs=3"],
            "method.recovry.epochs: no such key (did you mean method.recovery?)",
        ),
        (["dataset.val_sise=3"], "dataset.val_sise: no such key (did you mean dataset.val_size?)"),
        (
            ["~seeds.init"],
            "~seeds.init: it holds null already (Hydra deletes only keys with a value); drop the override",
        ),
        (["seed=0,1"], "seed=0,1: a comma list is a sweep; add -m"),
        (["hydra/launcher=joblb"], "hydra/launcher=joblb: no such option (did you mean joblib?)"),
    ],
)
def test_hints_point_to_what_exists(argv, expected):
    assert refusal("dataset=synthetic", *argv).startswith(expected)


def test_help_and_completion_run_no_check():
    for argv in (["--help"], ["dataset=folder", "--help"], ["-sc", "query=bash"], ["--cfg", "job"]):
        assert check_command(argv) == argv


def test_the_check_names_no_internal_class():
    for argv in (["train.epoch=3"], ["model.depht=3"], ["method=magnitude", "method.scop=global"]):
        message = refusal("dataset=synthetic", *argv)
        assert "Config'" not in message and "not in '" not in message, message


def test_hydra_launches_the_lines_the_check_rewrites():
    """A method sweep's field becomes a one-value sweep for @hydra.main (the sweep's own config has no such field);
    everything else is passed as given."""
    argv = ["-m", "method=random,magnitude", "method.scope=layerwise", "seed=0,1", "name=x", "dataset=synthetic"]
    assert check_command(argv) == [
        "-m",
        "method=random,magnitude",
        "method.scope=choice(layerwise)",
        "seed=0,1",
        "name=x",
        "dataset=synthetic",
    ]
    # a key the sweep's own config has stays as given (Hydra has no one-value sweep of null)
    claim = ["-m", "+experiment=reproduce_mlp", "dataset.train_limit=null", "+experiment/arm=magnitude,random_after"]
    assert check_command([*claim, "method.sparsity=0.8"]) == [*claim, "method.sparsity=0.8"]


def test_command_of_a_claim_line_is_its_jobs(tmp_path):
    from runners.reproduce import jobs_of

    line = "+experiment=reproduce_mlp +experiment/arm=snip,random model.init=variance_scaling method.sparsity=0.95,0.98"
    jobs = jobs_of(line)
    assert len(jobs) == 4 and all("model.init=variance_scaling" in job for job in jobs)
    assert [j[0] for j in jobs] == ["+experiment/arm=snip"] * 2 + ["+experiment/arm=random"] * 2
    assert shlex.split(line)[0] in jobs[0]


def test_a_job_folder_record_names_its_store(tmp_path):
    from foundations.store import STORE_KEY, store_of

    inside = tmp_path / "store" / "runs" / "experiment" / "abc" / "result.json"
    assert store_of(inside, {}) == (tmp_path / "store").resolve()
    assert store_of(tmp_path / "out" / "result.json", {STORE_KEY: "/data/store"}) == Path("/data/store")
    assert store_of(tmp_path / "out" / "result.json", {}) is None
