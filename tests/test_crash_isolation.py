"""``make test`` runs the suite on two pytest-xdist workers: a test that kills its process (a native crash such as
oneDNN's heap corruption, docs/speed.md) is one failure by name, and every other test still runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CRASHING = """
import os

import pytest


@pytest.mark.parametrize("i", range(3))
def test_before(i):
    pass


def test_dies():
    os.abort()


@pytest.mark.parametrize("i", range(3))
def test_after(i):
    pass
"""


@pytest.mark.slow
def test_a_test_that_kills_its_worker_is_one_failure_by_name_and_the_rest_run(tmp_path):
    (tmp_path / "test_crash.py").write_text(CRASHING)
    try:
        proc = subprocess.run(
            # the Makefile's distribution, with the suite's conftest (its scheduler) loaded as a plugin
            [sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup", "-p", "tests.conftest"]
            + ["-p", "no:cacheprovider", "test_crash.py"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"the session did not end after the crash: {str(err.stdout)[-2000:]}")
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "crashed while running 'test_crash.py::test_dies'" in proc.stdout
    assert "1 failed, 6 passed" in proc.stdout
