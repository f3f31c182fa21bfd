"""Sweeps as users run them: every experiment config composes for every job of its sweep, the survey's level →
sparsity mapping, real multiruns on ``synthetic`` (joblib, a failing job, an interrupted sweep re-launched) and the
report the ``on_multirun_end`` callback writes."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
UNSTRUCTURED = [0.5, 0.75, 0.9, 0.95, 0.98]
STRUCTURED = [0.3, 0.5, 0.7, 0.8, 0.9]
# The smallest version of the survey's own experiment file: synthetic data, LeNet-300-100, one epoch.
TINY_SURVEY = [
    "+experiment=survey_mlp",
    "dataset=synthetic",
    "model=lenet300",
    "survey.dense_epochs=1",
    "survey.recovery_epochs=1",
    "train.batch_size=64",
]


def method_of(defaults_owner: Path) -> str | None:
    """The ``override /method: X`` of an experiment or arm file (None when it does not choose one)."""
    for entry in OmegaConf.load(defaults_owner).get("defaults") or []:
        if isinstance(entry, (dict, type(OmegaConf.create({})))):
            for key, value in dict(entry).items():
                if key.replace("override ", "").strip() == "/method":
                    return str(value)
    return None


def sweep_jobs(name: str) -> list[list[str]]:
    """Overrides of a representative set of the sweep's jobs: every value of the group axes (arms, models) and the
    first and last value of every other axis, in all combinations."""
    params = OmegaConf.load(CONF / "experiment" / f"{name}.yaml").get("hydra", {}).get("sweeper", {}).get("params", {})
    axes = []
    for key, values in dict(params or {}).items():
        choices = [v.strip() for v in str(values).split(",")]
        group = key.lstrip("+").split(".")[0] in ("experiment/arm", "model", "method", "dataset")
        kept = choices if group or len(choices) <= 2 else [choices[0], choices[-1]]
        axes.append([f"{key}={v}" for v in kept])
    return [list(combo) for combo in itertools.product(*axes)] if axes else [[]]


def compose(tmp_path, *overrides, hydra_cfg: bool = False):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from runners.config import register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(
            "config",
            overrides=["logger=none", f"paths.results={tmp_path}/results", *overrides],
            return_hydra_config=hydra_cfg,
        )


def missing_method(name: str, job: list[str]) -> str | None:
    """A method the job needs whose conf/method YAML is not there (yet): such jobs are skipped, not failed."""
    files = [CONF / "experiment" / f"{name}.yaml"]
    files += [
        CONF / "experiment" / "arm" / f"{o.split('=', 1)[1]}.yaml" for o in job if o.startswith("+experiment/arm=")
    ]
    for f in files:
        method = method_of(f)
        if method and not (CONF / "method" / f"{method}.yaml").exists():
            return method
    return None


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_validates_for_its_sweep(tmp_path, name):
    from runners.config import validate

    ran, skipped = 0, set()
    for job in sweep_jobs(name):
        missing = missing_method(name, job)
        if missing:
            skipped.add(missing)
            continue
        cfg = compose(tmp_path, f"+experiment={name}", *job)
        run = validate(cfg)
        # the reproduction's configs name their records by tier (reproduce_default), so tiers never mix in a report
        assert run.sweep == ("reproduce_default" if name.startswith("reproduce_") else name), job
        assert 0 <= run.method.sparsity < 1, job
        ran += 1
    if not ran:
        pytest.skip(f"{name}: methods not written yet: {', '.join(sorted(skipped))}")


def test_sweep_params_name_existing_arms_and_options():
    for name in EXPERIMENTS:
        params = OmegaConf.load(CONF / "experiment" / f"{name}.yaml").hydra.sweeper.params
        for key, values in params.items():
            folder = {"+experiment/arm": CONF / "experiment" / "arm", "model": CONF / "model"}.get(key)
            if folder is not None:
                for value in str(values).split(","):
                    assert (folder / f"{value.strip()}.yaml").exists(), f"{name}: {key}={value}"


@pytest.mark.parametrize(
    "arm,levels",
    [
        ("magnitude", UNSTRUCTURED),
        ("obd", UNSTRUCTURED),
        ("snip", UNSTRUCTURED),
        ("grasp", UNSTRUCTURED),
        ("synflow", UNSTRUCTURED),
        ("gmp", UNSTRUCTURED),
        ("random", UNSTRUCTURED),
        ("lottery", UNSTRUCTURED),
        ("slimming", STRUCTURED),
        ("thinet", STRUCTURED),
        ("scratch_e_slimming", STRUCTURED),
        ("scratch_b_thinet", STRUCTURED),
        ("dense", [0.0] * 5),
    ],
)
def test_survey_level_maps_to_each_methods_own_sparsity(tmp_path, arm, levels):
    from runners.config import validate

    method = method_of(CONF / "experiment" / "arm" / f"{arm}.yaml")
    if not (CONF / "method" / f"{method}.yaml").exists():
        pytest.skip(f"conf/method/{method}.yaml not written yet")
    for level, expected in enumerate(levels):
        run = validate(compose(tmp_path, "+experiment=survey_mlp", f"+experiment/arm={arm}", f"level={level}"))
        assert run.method.name == method
        assert run.method.sparsity == pytest.approx(expected), (arm, level)
        source = getattr(run.method, "source", None)
        if arm.startswith("scratch"):  # Scratch takes the architecture of its source at the same channel fraction
            assert source in arm
            assert run.method.budget == arm.split("_")[1].upper()


@pytest.mark.parametrize("knobs", [[], ["survey.dense_epochs=4", "survey.recovery_epochs=2"]])
def test_gmp_trains_as_many_epochs_as_the_magnitude_arm_in_total(tmp_path, knobs):
    """Equal total epochs (Zhu & Gupta; Gale et al.): GMP's one run = magnitude's dense training + its fine-tune,
    with the same batch size, so the same number of steps, whatever the survey's knobs say."""
    from runners.config import validate

    def arm(name):
        return validate(compose(tmp_path, "+experiment=survey_mlp", f"+experiment/arm={name}", *knobs))

    gmp, magnitude = arm("gmp"), arm("magnitude")
    assert gmp.method.training.epochs == magnitude.train.epochs + magnitude.method.recovery.epochs
    assert gmp.train == magnitude.train and gmp.method.train_from == "init"
    assert gmp.method.scope == magnitude.method.scope == "global"


@pytest.mark.parametrize(
    "experiment,levels", [("survey_mlp", 5), ("survey_conv", 5), ("rethinking_scratch", 3), ("reproduce_mlp", 5)]
)
@pytest.mark.parametrize(
    "arm", ["scratch_e_slimming", "scratch_b_slimming", "scratch_e_thinet", "scratch_b_thinet", "scratch_b_l1_filter"]
)
def test_scratch_arms_resolve_to_the_sweeps_own_source_experiments(tmp_path, experiment, levels, arm):
    # otherwise every scratch job would silently train a second, differently configured source experiment
    from methods import get_method
    from runners.config import validate
    from runners.experiment import source_experiment_config
    from runners.identity import experiment_spec

    source_arm = arm.split("_", 2)[2]
    for level in range(levels):
        scratch = validate(compose(tmp_path, f"+experiment={experiment}", f"+experiment/arm={arm}", f"level={level}"))
        config = get_method("scratch")(scratch.method).source_config()
        source = validate(
            compose(tmp_path, f"+experiment={experiment}", f"+experiment/arm={source_arm}", f"level={level}")
        )
        assert experiment_spec(source_experiment_config(scratch, config)) == experiment_spec(source), (arm, level)


def test_survey_epochs_are_set_in_one_place(tmp_path):
    from runners.config import validate

    run = validate(
        compose(
            tmp_path,
            "+experiment=survey_mlp",
            "+experiment/arm=magnitude",
            "survey.dense_epochs=7",
            "survey.recovery_epochs=3",
        )
    )
    assert run.train.epochs == 7 and run.method.recovery.epochs == 3
    assert run.model.name == "mlp_bn" and run.dataset.name == "fashion_mnist"


def test_level_out_of_range_is_one_line(tmp_path):
    from foundations.errors import UserError
    from runners.config import validate

    with pytest.raises(UserError, match="level"):
        validate(compose(tmp_path, "+experiment=survey_mlp", "+experiment/arm=magnitude", "level=9"))


def test_report_callback_is_registered_for_multiruns(tmp_path):
    cfg = compose(tmp_path, hydra_cfg=True)
    assert cfg.hydra.callbacks.report._target_ == "runners.callbacks.ReportOnMultirunEnd"
    assert cfg.hydra.callbacks.progress._target_ == "runners.callbacks.SweepProgress"


@pytest.mark.parametrize(
    "overrides,jobs",
    [
        (["+experiment=survey_mlp"], 15 * 5),
        (["+experiment=survey_mlp", "seed=0,1,2", "level=0,4"], 15 * 2 * 3),
        (["method=magnitude", "method.sparsity=0.5,0.8", "seed=0,1"], 4),
    ],
)
def test_sweep_size_counts_the_jobs_hydra_will_launch(tmp_path, overrides, jobs):
    from runners.callbacks import sweep_size

    cfg = compose(tmp_path, *[o for o in overrides if "," not in o], hydra_cfg=True)  # the sweep's own config
    cfg.hydra.overrides.task = overrides  # what Hydra records of the command line
    assert sweep_size(cfg) == jobs


# ---------------------------------------------------------------------------------------------- real sweeps


def multirun(tmp_path, *args, timeout=600):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "runners.train",
            "-m",
            "logger=none",
            "progress=false",
            "threads=1",
            f"paths.results={tmp_path}/results",
            f"hydra.sweep.dir={tmp_path}/multirun",
            *args,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def store_records(tmp_path) -> list[dict]:
    return [
        json.loads(p.read_text()) for p in sorted((tmp_path / "results" / "runs" / "experiment").glob("*/result.json"))
    ]


def job_records(tmp_path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "multirun").glob("*/result.json")}


def test_joblib_two_jobs_land_in_the_store_and_the_callback_writes_the_report(tmp_path):
    proc = multirun(
        tmp_path,
        "dataset=synthetic",
        "method=magnitude",
        "method.sparsity=0.5,0.8",
        "train.epochs=1",
        "method.recovery.epochs=1",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [r for r in store_records(tmp_path) if r["method"] == "magnitude"]
    assert sorted(r["target_sparsity"] for r in records) == [0.5, 0.8]
    assert all(r["status"] == "ok" and r["experiment"] == "default" for r in records)
    report = tmp_path / "results" / "report" / "default"
    assert (report / "summary.md").stat().st_size > 0
    assert list((report / "tables").glob("*.md")) and list((report / "figures").glob("*.png"))
    assert "jobs: 2 ok, 0 failed" in proc.stdout and str(report / "summary.md") in proc.stdout


def test_a_failed_job_is_recorded_and_the_sweep_goes_on(tmp_path):
    # Sparsity 0.995 is a valid config the pre-launch check passes, but this lottery cannot reach it (its classifier,
    # 0.8 % of the weights, is pruned at rate 0): only the job, with the model built, can tell. (An invalid config,
    # once refused in its job only, now stops the sweep before any job: test_an_invalid_job_stops_the_sweep...)
    proc = multirun(
        tmp_path,
        "name=probe",
        "dataset=synthetic",
        "method=lottery",
        "method.scope=layerwise",
        "method.output_rate=0",
        "method.sparsity=0.995,0.5",
        "train.epochs=1",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = job_records(tmp_path)
    assert jobs["0"]["status"] == "failed" and "method.sparsity" in jobs["0"]["error"]
    assert jobs["1"]["status"] == "ok"
    assert [r["target_sparsity"] for r in store_records(tmp_path) if r["method"] == "lottery"] == [0.5]
    assert "jobs: 1 ok, 1 failed" in proc.stdout
    assert "sweep: 1/2 jobs done (0 ok, 1 failed)" in proc.stdout
    assert "sweep: 2/2 jobs done (1 ok, 1 failed)" in proc.stdout
    assert (tmp_path / "results" / "report" / "probe" / "summary.md").exists()


def test_an_invalid_job_stops_the_sweep_before_any_job_runs(tmp_path):
    # every job is composed and validated before the first starts: one line, exit 2, nothing written
    proc = multirun(tmp_path, "dataset=synthetic", "method=magnitude", "method.sparsity=0.5,1.5", "train.epochs=1")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: method.sparsity: must be in [0, 1) (got 1.5)"]
    assert not (tmp_path / "results").exists() and not (tmp_path / "multirun").exists()


def test_a_method_sweep_takes_fields_its_methods_share(tmp_path):
    proc = multirun(
        tmp_path,
        "dataset=synthetic",
        "train.epochs=1",
        "method=random,magnitude",
        "method.scope=layerwise",
        "method.recovery.epochs=1",
        "method.sparsity=0.5",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(r["label"] for r in store_records(tmp_path)) == ["magnitude (layerwise)", "random"]


def test_a_method_sweep_with_a_field_one_method_lacks_stops_before_any_job(tmp_path):
    proc = multirun(tmp_path, "dataset=synthetic", "method=dense,magnitude", "method.scope=layerwise")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: method.scope: dense has no field 'scope'; sweep methods that share it, or give each method its own "
        "settings in an experiment config (conf/experiment/arm/)"
    ]
    assert not (tmp_path / "results").exists() and not (tmp_path / "multirun").exists()


def test_a_relaunched_survey_computes_only_what_is_missing(tmp_path):
    args = [*TINY_SURVEY, "+experiment/arm=magnitude,snip", "level=0,4"]
    first = multirun(tmp_path, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    records = store_records(tmp_path)
    assert sorted((r["method"], r["target_sparsity"]) for r in records) == [
        ("magnitude", 0.5),
        ("magnitude", 0.98),
        ("snip", 0.5),
        ("snip", 0.98),
    ]
    assert all(r["status"] == "ok" and r["experiment"] == "survey_mlp" for r in records)

    # An interruption during the job magnitude @ 0.98: its recovery stage and its record never got written.
    runs = tmp_path / "results" / "runs"
    victim = next(r for r in records if r["method"] == "magnitude" and r["target_sparsity"] == 0.98)
    recover = next(digest for name, digest in victim["stage_hashes"].items() if name.startswith("recover"))
    lost = [p for p in runs.glob(f"*/{recover}/result.json")]
    lost += [p for p in (runs / "experiment").glob("*/result.json") if json.loads(p.read_text()) == victim]
    assert len(lost) == 2
    before = {p: p.stat().st_mtime_ns for p in runs.rglob("result.json") if p not in lost}
    for p in lost:
        p.unlink()

    second = multirun(tmp_path, *args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert all(p.exists() for p in lost), "the missing job was not recomputed"
    after = {p: p.stat().st_mtime_ns for p in runs.rglob("result.json")}
    assert {p for p in after if p not in before} == set(lost), "only the lost stages are new"
    assert all(after[p] == t for p, t in before.items()), "a finished stage was recomputed"
    redone = job_records(tmp_path)
    reused = {(r["method"], r["target_sparsity"]): r.get("stages_reused", {}) for r in redone.values()}
    victim_reuse = reused[("magnitude", 0.98)]
    assert victim_reuse.get("dense") is True and not all(victim_reuse.values())
    assert len(store_records(tmp_path)) == 4
