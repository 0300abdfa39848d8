# The two commands of the README:
#   make dev    installs into .venv and runs the whole platform locally (unityplan dev)
#   make test   installs what the tests need and runs them against real services
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: dev test bench lint system-deps browser-deps ipfs-node web-client clean

dev: system-deps $(VENV)/.dev-installed ipfs-node web-client
	$(BIN)/unityplan dev

test: system-deps browser-deps $(VENV)/.test-installed ipfs-node web-client
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Every benchmark (about 8 minutes on 2 cores): bench-results.json, docs/benchmarks.svg and the goal table.
bench: system-deps $(VENV)/.test-installed ipfs-node
	$(BIN)/python -m bench all $(BENCH_ARGS)

# Style, types and layers: ruff (lint + format check), mypy, and import-linter's contracts
# (imports point down: appservice -> commands | bridges -> workflows -> core -> db).
lint: $(VENV)/.lint-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check appservice bridges commands core registration db workflows tests bench
	$(BIN)/mypy
	cd synapse/modules && ../../$(BIN)/mypy  # the gate module: mypy --strict (its pyproject)
	$(BIN)/lint-imports

$(VENV)/.lint-installed: pyproject.toml $(VENV)/.test-installed
	$(BIN)/pip install --quiet -e '.[lint]'
	touch $@

system-deps:
	@bash tools/system-deps.sh

# Chromium for the web client's browser test (Debian's package; Playwright drives it).
browser-deps:
	@bash tools/system-deps.sh --browser

# The IPFS node's npm packages, installed once into ~/.cache/unityplan (keyed by the lock file).
ipfs-node: $(VENV)/.dev-installed
	$(BIN)/python -m appservice.stack.ipfs

# The web client (Hydrogen, bundled with esbuild), built once into ~/.cache/unityplan.
web-client: $(VENV)/.dev-installed
	$(BIN)/python -m appservice.stack.webclient

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(VENV)/.test-installed: pyproject.toml $(VENV)/.dev-installed
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) .unityplan .pytest_cache
