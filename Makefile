# Foundry: `make run` brings the stack up on embedded defaults, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast bench lint clean

setup: $(STAMP)

# Idempotent: reinstalls only when pyproject.toml changes. torch==2.13.0 goes first so the
# range in pyproject.toml is already satisfied by the CPU build (no multi-GB CUDA download).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

run: setup
	$(BIN)/foundry up

test: setup
	$(BIN)/python -m pytest -ra

test-fast: setup
	$(BIN)/python -m pytest -ra -m "not slow" tests/unit

lint: setup
	$(BIN)/lint-imports

bench: setup
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) build *.egg-info
