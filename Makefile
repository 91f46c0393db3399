# vaelab: `make help` lists the targets. `make run` and `make test` work on a fresh machine:
# they create .venv, install the pinned environment and fetch MNIST themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 5000
ROOT := $(or $(VAELAB_HOME),$(CURDIR))
STORE := sqlite:///$(ROOT)/mlruns/mlflow.db
ARGS ?=

.PHONY: help install install-gpu lock data run train smoke test test-long test-full test-server e2e lint format ui server server-stop clean report bench bench-sweep bench-sweeper bench-iw bench-overhead bench-checkpoint

help: ## Show this help
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

install: $(STAMP) ## Create .venv with the pinned environment (requirements.lock)

install-gpu: $(STAMP) ## Swap in TensorFlow and JAX with CUDA (Linux + NVIDIA GPU)
	$(PY) -m pip uninstall --yes tensorflow-cpu
	$(PY) -m pip install --quiet -c requirements.lock -e '.[gpu]'

lock: ## Re-pin every package after changing pyproject.toml
	rm -rf $(VENV)-lock && $(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/pip install --quiet -e '.[dev,cluster]'
	{ head -2 requirements.lock; $(VENV)-lock/bin/pip freeze --exclude-editable; } > requirements.lock.new
	mv requirements.lock.new requirements.lock && rm -rf $(VENV)-lock

data: $(STAMP) ## Fetch and verify MNIST into data/mnist
	$(PY) pipelines/fetch_data.py

run: data ## The product: the demo sweep on full MNIST (~1 min), then its report
	$(PY) pipelines/train.py --multirun sweep=demo $(ARGS); status=$$?; \
	$(PY) pipelines/report.py; \
	exit $$status

train: data ## One run of the default config (full MNIST, 3 epochs); ARGS="style=subclass ..."
	$(PY) pipelines/train.py $(ARGS)

report: $(STAMP) ## A report of the latest sweep (ARGS="sweep_id=<id>")
	$(PY) pipelines/report.py $(ARGS)

smoke: data ## A tiny run (512 digits, 1 epoch) to check the set-up in seconds
	$(PY) pipelines/train.py experiment=smoke $(ARGS)

FAST := -m "not slow and not gpu and not server and not long and not browser" --dist worksteal

test: data ## Fast tests, the CI gate: the TensorFlow session, then the JAX one (tests/jax)
	$(PY) -m pytest $(FAST) -n 2 $(ARGS)
	KERAS_BACKEND=jax $(PY) -m pytest $(FAST) -n 2 $(ARGS)

test-long: data ## End to end: several processes at once, SIGKILL and resume, Slurm, Ray (two nodes, one killed), pruned sweeps (~10 min)
	$(PY) -m pytest -m "long and not slow" -n 2 $(ARGS)
	KERAS_BACKEND=jax $(PY) -m pytest -m "long and not slow" -n 2 $(ARGS)

test-full: data ## Every test, slow and server ones included, in both sessions
	$(PY) -m pytest -n 2 $(ARGS)
	KERAS_BACKEND=jax $(PY) -m pytest -n 2 $(ARGS)

test-server: data ## The team store for real: PostgreSQL + mlflow server, faults, logins (~4 min)
	$(PY) -m pytest -m server tests/server $(ARGS)

e2e: data ## The report and the MLflow UI in headless Chromium (apt-get install chromium); outputs/e2e/*.png
	VAELAB_TEST_KEEP=$(CURDIR)/outputs/e2e $(PY) -m pytest -m "browser and not slow" -n 2 -rs $(ARGS)

lint: $(STAMP) ## ruff lint and format check
	$(VENV)/bin/ruff check src pipelines tests benchmarks
	$(VENV)/bin/ruff format --check src pipelines tests benchmarks

format: $(STAMP) ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix src pipelines tests benchmarks
	$(VENV)/bin/ruff format src pipelines tests benchmarks

# The local store has no logins: python -m vaelab.edges.ui refuses a HOST other than loopback unless
# OPEN=1 says so, and a PORT already in use; then it makes the store private, turns MLflow's
# telemetry off (unless MLFLOW_DISABLE_TELEMETRY=false) and becomes `mlflow ui` with these
# arguments; ui_url.txt is written once the UI answers.
ui: $(STAMP) ## MLflow UI on the run store; prints the runs table's address (BROWSE=1 opens it; HOST=0.0.0.0 OPEN=1: shared, no logins)
	$(PY) -m vaelab.edges.ui --backend-store-uri $(STORE) --host $(HOST) --port $(PORT) \
		--url-file '$(ROOT)/mlruns/ui_url.txt' $(if $(filter 1,$(OPEN)),--open) $(if $(filter 1,$(BROWSE)),--browse)

# docs/team.md: DATABASE_URI (an existing PostgreSQL), ARTIFACTS (a directory or s3://...),
# ALLOWED_HOSTS (the names workers use, when HOST=0.0.0.0), AUTH=1 (MLflow's basic-auth app).
# DATABASE_URI reaches the server through the environment (make exports command-line
# variables), never its argument list or make's echo, so a password in it stays private.
SERVER_OPTS = --state-dir '$(ROOT)/mlruns' --host '$(HOST)' --port '$(PORT)' $(if $(AUTH),--auth) \
	$(if $(ARTIFACTS),--artifacts '$(ARTIFACTS)') $(if $(ALLOWED_HOSTS),--allowed-hosts '$(ALLOWED_HOSTS)')

server: $(STAMP) ## The team store: PostgreSQL (mlruns/postgres/) + mlflow server on HOST:PORT; AUTH=1 for logins
	$(PY) -m vaelab_server start $(SERVER_OPTS)

server-stop: $(STAMP) ## Stop what `make server` started
	$(PY) -m vaelab_server stop --state-dir '$(ROOT)/mlruns'

clean: ## Remove the venv and Hydra outputs (keeps mlruns/ and data/)
	rm -rf $(VENV) outputs .pytest_cache

bench: data ## Epoch time: the notebook's fit vs each style, and a results check
	$(PY) benchmarks/bench_training.py $(ARGS)

bench-sweep: data ## sweep=grid sequential vs packed, and a 96-configuration packed sweep
	$(PY) benchmarks/bench_sweep.py $(ARGS)

bench-sweeper: data ## The Optuna sweeper on 2 workers: a trial as soon as one ends vs batches (~5 min)
	$(PY) benchmarks/bench_sweeper.py $(ARGS)

bench-iw: data ## The importance-weighted estimate at K = 5 and K = 5000 on all test digits
	$(PY) benchmarks/bench_iw.py $(ARGS)

bench-checkpoint: data ## What checkpointing every epoch adds to a run's epoch time, and its size
	$(PY) benchmarks/bench_checkpoint.py $(ARGS)

bench-overhead: data ## Start-up, report and per-run costs beyond training (ARGS=--baseline <commit>)
	$(PY) benchmarks/bench_overhead.py $(ARGS)
