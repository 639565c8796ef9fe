# Two commands on a fresh machine:  `make run` (set up + default job)  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: setup run test lint ui clean cross-toolchain browser

# The install stamp is refreshed whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	command -v aarch64-linux-gnu-g++ >/dev/null || $(MAKE) cross-toolchain
	command -v chromium >/dev/null || $(MAKE) browser
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,onnx]"
	touch $@

setup: $(VENV)/.installed

run: setup
	$(BIN)/python -m dlas.run $(ARGS)

test: setup
	$(BIN)/python -m pytest $(ARGS)

lint: setup
	$(BIN)/ruff check dlas tests benchmarks hydra_plugins
	$(BIN)/ruff format --check dlas tests benchmarks hydra_plugins

# MLflow UI over the embedded store (runs, params, metrics, artifacts side by side).
ui: setup
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --port 5000 --workers 1

clean:
	rm -rf outputs multirun .pytest_cache

# Cross-compiling for Arm boards (device=hikey_cpu, xavier, ...) links with Debian's aarch64 g++.
# Optional: without it those tests are skipped and such builds fail with a message naming it.
cross-toolchain:
	-(apt-get update -qq && apt-get install -y -qq g++-aarch64-linux-gnu) >/dev/null 2>&1 \
	  || echo "note: could not install g++-aarch64-linux-gnu (needs root and apt); Arm cross builds disabled"

# The study report's end-to-end test opens the HTML report in a real headless Chromium (Debian's
# package). Optional: without it that test is skipped and says how to install it.
browser:
	-(apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 \
	  || echo "note: could not install chromium (needs root and apt); the report's browser test will be skipped"
