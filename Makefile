# Set-up is idempotent: the venv is created once, packages are installed once per pyproject.toml version
# (a stamp file records it), and the Debian Fashion-MNIST package is installed once (as root).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
PYTEST_ARGS ?=
# Two pytest workers (pytest-xdist): a test that kills its process (a segfault, an abort in a native kernel) is
# reported as that test's failure and its worker replaced, instead of ending the run; the two cores are both used.
# loadgroup keeps the tests of one xdist_group on one worker (the SLURM cluster's start/stop). PYTEST_WORKERS=0: one
# process, in order.
PYTEST_WORKERS ?= 2
PYTEST_XDIST = $(if $(filter 0,$(PYTEST_WORKERS)),-p no:xdist,-n $(PYTEST_WORKERS) --dist loadgroup)

.PHONY: setup data test test-fast lint mutants demo survey reproduce report clean

setup: $(STAMP) data

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# uv resolves the same versions as pip (compared by freeze, 2026-12-03) and installs them in 35 s where pip took
# 2 min 15 s (cold caches both; torch and its 4 GB of CUDA wheels); pip stays the fallback where uv cannot run.
# uv reads UV_INDEX_URL / UV_FIND_LINKS, not pip.conf: a machine whose index is set only in pip.conf gets pip.
# --compile-bytecode, as pip does: without .pyc files (and with PYTHONDONTWRITEBYTECODE=1, as here) every process
# compiles torch's sources again, 4.2 s of each job's start-up.
PINS := torch==2.14.1 torchvision==0.29.1
$(STAMP): pyproject.toml | $(BIN)/python
	( $(BIN)/pip install --quiet uv && \
	  $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python $(PINS) -e '.[test,launchers,export]' ) \
	  || ( $(BIN)/pip install --quiet $(PINS) && $(BIN)/pip install --quiet -e '.[test,launchers,export]' )
	rm -f $(VENV)/.installed-* && touch $@

data:
	@if [ -f $(FMNIST) ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else \
	  echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist'," \
	       "or point at local IDX files with dataset.data_dir=DIR, or use dataset.download=true with a network."; \
	fi

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_XDIST) $(PYTEST_ARGS)

# The edit loop: everything but the tests marked slow (SLURM, kill -9, long trainings).
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_XDIST) $(PYTEST_ARGS)

# Planted bugs (tests/mutations.py): each is applied to a temporary copy and must make its tests fail.
mutants: setup
	$(BIN)/python tests/mutations.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python tests/import_graph.py

demo: setup
	$(BIN)/python -m runners.train

# The sweep's on_multirun_end callback writes results/report/survey_mlp/ and prints where; a re-run reuses the store.
# Two jobs at a time, one torch thread each: 544 s against 1,618 s for one job at a time on two threads (fresh
# stores, back to back, 2026-12-03; benchmarks/speed.py's floor 181 -> 144 GFLOP/s). SURVEY_LAUNCHER= for the basic one.
SURVEY_LAUNCHER ?= hydra/launcher=joblib hydra.launcher.n_jobs=2
survey: setup
	$(BIN)/python -m runners.train -m +experiment=survey_mlp $(SURVEY_LAUNCHER)

# Every paper claim of conf/claims/ (default tier: 3 seeds), then REPRODUCTION.md and results/report/reproduction/;
# a re-run trains nothing. REPRODUCE_ARGS="--claims 4,5" | "--report-only" | "--tier paper"; the launcher: two jobs
# at a time, one torch thread each (REPRODUCE_LAUNCHER= for the basic launcher, or a SLURM launcher's overrides).
REPRODUCE_ARGS ?=
REPRODUCE_LAUNCHER ?= hydra/launcher=joblib hydra.launcher.n_jobs=2
reproduce: setup
	$(BIN)/python -m runners.reproduce $(REPRODUCE_ARGS) $(REPRODUCE_LAUNCHER)

report: setup
	$(BIN)/python -m analysis.report

# results/report/reproduction/ is committed (REPRODUCTION.md's figures): clean keeps it
clean:
	rm -rf outputs multirun results/runs results/cache
	find results/report -mindepth 1 -maxdepth 1 ! -name reproduction -exec rm -rf {} + 2>/dev/null || true
