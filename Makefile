# Two commands on a fresh machine:  `make run` (set up + default job)  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: setup run test lint ui clean cross-toolchain postgres browser

# The install stamp is refreshed whenever pyproject.toml or setup.py changes.
$(VENV)/.installed: pyproject.toml setup.py
	command -v aarch64-linux-gnu-g++ >/dev/null || $(MAKE) cross-toolchain
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || $(MAKE) postgres
	command -v chromium >/dev/null || $(MAKE) browser
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,onnx,scaleout]"
	touch $@

setup: $(VENV)/.installed

run: setup
	$(BIN)/python -m dlas.run $(ARGS)

# One worker per core, a test file per worker (its module fixtures are built once): the
# suite is mostly single-threaded LLVM compiles, so two cores take ~12 min instead of ~19.
# A worker that crashes fails the suite at once: pytest-xdist 3.8 can hang for good when it
# replaces a crashed worker under --dist loadfile (pytest-xdist#784, #1323).
test: setup
	$(BIN)/python -m pytest -n auto --dist loadfile --max-worker-restart=0 $(ARGS)

lint: setup
	$(BIN)/ruff check dlas tests benchmarks hydra_plugins
	$(BIN)/ruff format --check dlas tests benchmarks hydra_plugins

# MLflow UI over the embedded store (runs, params, metrics, artifacts side by side).
ui: setup
	@echo "runs view: http://127.0.0.1:5000/#/experiments?workflowType=machine_learning"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --port 5000 --workers 1

clean:
	rm -rf outputs multirun .pytest_cache

# Cross-compiling for Arm boards (device=hikey_cpu, xavier, ...) links with Debian's aarch64 g++.
# Optional: without it those tests are skipped and such builds fail with a message naming it.
cross-toolchain:
	-(apt-get update -qq && apt-get install -y -qq g++-aarch64-linux-gnu) >/dev/null 2>&1 \
	  || echo "note: could not install g++-aarch64-linux-gnu (needs root and apt); Arm cross builds disabled"

# PostgreSQL for several sweep workers on one study and the MLflow tracking server's store
# (docs/scale-out.md); the scale-out tests start a throw-away cluster with it. Optional:
# without it those tests are skipped with this reason.
postgres:
	-(apt-get update -qq && apt-get install -y -qq postgresql) >/dev/null 2>&1 \
	  || echo "note: could not install postgresql (needs root and apt); scale-out tests skipped"

# Headless Chromium (Debian's package) opens the study report and the MLflow UI in the browser
# tests (tests/report, tests/serving/test_ui.py). Optional: without it those tests are skipped
# and say how to install it.
browser:
	-(apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 \
	  || echo "note: could not install chromium (needs root and apt); the report's browser test will be skipped"
