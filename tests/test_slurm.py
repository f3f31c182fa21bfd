"""A real single-node Slurm cluster (runners/slurm/cluster.sh) and Hydra's submitit_slurm launcher on it.

The module-scoped fixture ``slurm_cluster`` starts the cluster (as root it installs the Debian packages on first
use), and stops at the end only what it started: a cluster that was already up is left running. Tests take the
function-scoped ``slurm`` fixture (the partition name), which also fails a test at once when the node does not take
jobs or an earlier test timed out on the cluster. Without root and without Slurm the module is skipped; so is it
without root when the cluster is not running.

To add a test that sweeps on the cluster, put it in this module, take ``slurm`` and run the command through
``run_on_cluster``, which never hangs: at its deadline it cancels the jobs of the run and fails with the output::

    def test_train_sweep(slurm, tmp_path):
        name = unique_job_name()
        proc = run_on_cluster([sys.executable, "-m", "runners.train", "-m", "seed=0,1", *SLURM_LOCAL,
                               f"hydra.job.name={name}", f"hydra.sweep.dir={tmp_path}/multirun"],
                              job_name=name, cwd=REPO, timeout=170)
        ...  # check the store

Budget: a broken cluster fails within about three minutes (apt-get install on a fresh machine excepted).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SH = REPO / "runners" / "slurm" / "cluster.sh"
PARTITION = os.environ.get("PRUNELAB_SLURM_PARTITION", "debug")
# The repo's launcher config for the local cluster: `hydra/launcher=slurm_local` (conf/hydra/launcher/).
SLURM_LOCAL = ["hydra/launcher=slurm_local"]

START_TIMEOUT_S = 150  # `cluster.sh start` with the packages present: its own wait for an idle node is 60 s
INSTALL_TIMEOUT_S = 900  # the first start installs slurmctld, slurmd and munge with apt-get
NODE_WAIT_S = 30  # for the node to take jobs at the start of a test
JOB_TIMEOUT_S = 60  # a one-line batch job
SWEEP_TIMEOUT_S = 120  # a 2-job Hydra multirun through submitit, start to end


def slurm_installed() -> bool:
    sbin = ("/usr/sbin", "/sbin")
    return bool(
        shutil.which("sbatch")
        and shutil.which("sinfo")
        and any(os.access(f"{d}/slurmctld", os.X_OK) for d in sbin)
        and any(os.access(f"{d}/slurmd", os.X_OK) for d in sbin)
    )


IS_ROOT = os.geteuid() == 0

pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("slurm"),  # one pytest worker starts, uses and stops the one cluster (make test: -n 2)
    pytest.mark.skipif(
        not IS_ROOT and not slurm_installed(),
        reason="Slurm is not installed and installing it needs root: "
        "run `sudo runners/slurm/cluster.sh start` once (Debian: slurmctld slurmd munge)",
    ),
]


def cluster_sh(command: str, timeout: float) -> subprocess.CompletedProcess:
    """Run ``runners/slurm/cluster.sh COMMAND``; a hang becomes a failure with what it printed so far."""
    env = {**os.environ, "PRUNELAB_SLURM_TIMEOUT": "60", "PRUNELAB_SLURM_PARTITION": PARTITION}
    try:
        return subprocess.run(
            ["bash", str(CLUSTER_SH), command], capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"cluster.sh {command} did not finish within {timeout}s:\n{_text(e.stdout)}\n{_text(e.stderr)}")


def _text(out: bytes | str | None) -> str:
    return out.decode(errors="replace") if isinstance(out, bytes) else (out or "")


def start_cluster() -> bool:
    """Bring the cluster up; True when this call started it (and so should stop it), False if it was up."""
    if cluster_sh("status", timeout=60).returncode == 0:
        return False
    timeout = START_TIMEOUT_S if slurm_installed() else INSTALL_TIMEOUT_S
    proc = cluster_sh("start", timeout=timeout)
    if proc.returncode == 2 and not IS_ROOT:
        pytest.skip(f"the Slurm cluster is not running and starting it needs root: {proc.stderr.strip()}")
    if proc.returncode != 0:
        pytest.fail(f"cluster.sh start failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return True


def stop_cluster() -> None:
    proc = cluster_sh("stop", timeout=90)
    assert proc.returncode == 0, f"cluster.sh stop failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running single-node cluster for this module's tests; stopped afterwards if this fixture started it."""
    started = start_cluster()
    try:
        yield PARTITION
    finally:
        if started:
            stop_cluster()


_broken: list[str] = []  # why the cluster stopped working during this session, once a wait timed out


def node_state() -> str:
    proc = subprocess.run(["sinfo", "-h", "-p", PARTITION, "-o", "%t"], capture_output=True, text=True, timeout=30)
    return proc.stdout.strip() or proc.stderr.strip()


@pytest.fixture
def slurm(slurm_cluster):
    """Per test: the partition name, once the node takes jobs and no earlier test timed out on the cluster
    (a broken cluster then fails each later test at once instead of at its own deadline)."""
    if _broken:
        pytest.fail(f"the Slurm cluster stopped working in an earlier test: {_broken[0]}")
    deadline = time.monotonic() + NODE_WAIT_S  # a node may be completing a cancelled job for a moment
    while (state := node_state()) not in ("idle", "mix", "alloc") and time.monotonic() < deadline:
        time.sleep(1)
    if state not in ("idle", "mix", "alloc"):
        _broken.append(f"node state {state!r}")
        pytest.fail(
            f"the Slurm node does not take jobs (state {state!r}); see `runners/slurm/cluster.sh status` "
            f"and the logs in /var/tmp/prunelab-slurm/log"
        )
    return slurm_cluster


def unique_job_name(prefix: str = "prunelab-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def cancel_jobs(job_name: str) -> None:
    subprocess.run(["scancel", f"--name={job_name}"], capture_output=True, timeout=30)


def run_on_cluster(
    cmd: list[str], *, job_name: str, cwd: Path | str, timeout: float = SWEEP_TIMEOUT_S, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run a command that submits Slurm jobs named ``job_name`` and waits for them (a Hydra sweep with
    ``hydra.job.name=<job_name>``). At ``timeout`` its jobs are cancelled and the test fails with the output and
    the queue, so a stuck job cannot hang the suite (submitit waits forever for a job that died unrecorded)."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "WANDB_MODE": "disabled", **(env or {})}
    try:
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        queue = subprocess.run(["squeue"], capture_output=True, text=True, timeout=30).stdout
        cancel_jobs(job_name)
        _broken.append(f"{cmd[:3]} timed out after {timeout}s")
        pytest.fail(
            f"{' '.join(cmd)} did not finish within {timeout}s\nsqueue:\n{queue}\n"
            f"stdout:\n{_text(e.stdout)[-4000:]}\nstderr:\n{_text(e.stderr)[-4000:]}"
        )


def job_state(job_id: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30).stdout
    for field in out.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return "UNKNOWN"


def test_sbatch_job_runs_to_completion(slurm, tmp_path):
    out = tmp_path / "job.out"
    proc = subprocess.run(
        [
            "sbatch",
            "--parsable",
            f"--partition={slurm}",
            "--job-name=prunelab-sbatch",
            f"--output={out}",
            "--time=2",
            "--mem=100M",
            "--wrap",
            "hostname; echo done",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip().split(";")[0]
    deadline = time.monotonic() + JOB_TIMEOUT_S
    state = job_state(job_id)
    while state in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING") and time.monotonic() < deadline:
        time.sleep(1)
        state = job_state(job_id)
    if state != "COMPLETED":
        subprocess.run(["scancel", job_id], capture_output=True, timeout=30)
        _broken.append(f"batch job {job_id} still {state} after {JOB_TIMEOUT_S}s")
    assert state == "COMPLETED", f"job {job_id} is {state}; output: {out.read_text() if out.exists() else None}"
    lines = out.read_text().split()
    assert (
        lines[-1] == "done"
        and lines[0] == subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
    )


def test_srun_runs_a_step(slurm):
    proc = subprocess.run(
        ["srun", f"--partition={slurm}", "--time=1", "--mem=100M", "echo", "step-ok"],
        capture_output=True,
        text=True,
        timeout=JOB_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "step-ok"


APP = """
import os, sys
import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path=".", config_name="app")
def main(cfg: DictConfig) -> int:
    with open(os.path.join(cfg.out_dir, f"result_{cfg.x}.txt"), "w") as f:
        print(cfg.x * cfg.x, os.environ.get("SLURM_JOB_ID"), sys.executable,
              os.environ.get("OMP_NUM_THREADS"), file=f)
    return cfg.x * cfg.x


if __name__ == "__main__":
    main()
"""


@pytest.mark.parametrize("launcher", ["submitit_slurm", "slurm_local"])
def test_hydra_multirun_through_submitit_slurm(slurm, tmp_path, launcher):
    """A standalone Hydra app sweeps x=3,4 as two Slurm jobs; each writes its file from inside Slurm."""
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    (tmp_path / "app.yaml").write_text(f"x: 0\nout_dir: {tmp_path / 'out'}\n")
    (tmp_path / "out").mkdir()
    name = unique_job_name()
    if launcher == "submitit_slurm":  # the plugin's own config, told the partition
        overrides = [
            "hydra/launcher=submitit_slurm",
            f"hydra.launcher.partition={slurm}",
            "hydra.launcher.timeout_min=5",
            "hydra.launcher.mem_gb=1",
        ]
    else:  # the repo's config for this cluster, found through a search path as any app of the repo would
        overrides = [*SLURM_LOCAL, f"hydra.searchpath=[file://{REPO / 'conf'}]"]
    proc = run_on_cluster(
        [
            sys.executable,
            "app.py",
            "-m",
            "x=3,4",
            *overrides,
            f"hydra.job.name={name}",
            f"hydra.sweep.dir={tmp_path / 'multirun'}",
        ],
        job_name=name,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Submitit 'slurm' sweep" in proc.stdout + proc.stderr

    job_ids = set()
    for x in (3, 4):
        result = tmp_path / "out" / f"result_{x}.txt"
        assert result.exists(), f"job x={x} wrote nothing; stderr:\n{proc.stderr}"
        square, job_id, python, omp_threads = result.read_text().split()
        assert int(square) == x * x
        assert job_id != "None", "the job did not run under Slurm"
        assert python == sys.executable, "the job did not run with this venv's python"
        if launcher == "slurm_local":
            assert omp_threads == "1"
        job_ids.add(job_id)
    assert len(job_ids) == 2
    submitit_dir = tmp_path / "multirun" / ".submitit"
    assert len(list(submitit_dir.glob("*/*_result.pkl"))) == 2


def test_train_sweep_lands_every_result_in_the_store(slurm, tmp_path):
    """The real entry point: a 2-job `runners.train -m` on `synthetic`, one Slurm array task per job; both
    experiment records land in the store and the on_multirun_end callback writes the report."""
    import json

    name = unique_job_name()
    results = tmp_path / "results"
    proc = run_on_cluster(
        [
            sys.executable,
            "-m",
            "runners.train",
            "-m",
            "dataset=synthetic",
            "logger=none",
            "progress=false",
            "method=magnitude",
            "method.sparsity=0.5,0.8",
            "train.epochs=1",
            "method.recovery.epochs=1",
            f"paths.results={results}",
            *SLURM_LOCAL,
            f"hydra.job.name={name}",
            f"hydra.sweep.dir={tmp_path / 'multirun'}",
        ],
        job_name=name,
        cwd=REPO,
        timeout=SWEEP_TIMEOUT_S + 60,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    records = [json.loads(p.read_text()) for p in (results / "runs" / "experiment").glob("*/result.json")]
    pruned = sorted(r["target_sparsity"] for r in records if r["method"] == "magnitude" and r["status"] == "ok")
    assert pruned == [0.5, 0.8], records
    assert len(list((tmp_path / "multirun" / ".submitit").glob("*/*_result.pkl"))) == 2
    assert (results / "report" / "default" / "summary.md").exists()
