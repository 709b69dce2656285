# The scripts README and CI call, unchanged. Every target installs what it needs into .venv first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint bench faults clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## setup: create .venv with visionq and its development tools
setup: $(STAMP)

## run: set up, pull the model if missing, and run api + worker + beat + flower (Ctrl-C stops)
run: setup
	$(BIN)/visionq up

## lint: ruff and mypy over the package and the tests; the import layering contracts (pyproject.toml)
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

## test: lint, then the whole test suite against the real services and the real model
test: lint
	$(BIN)/pytest

## faults: the fault scenarios (they stop and restart real servers: RabbitMQ, Redis) and their tables
faults: setup
	$(BIN)/pytest -m faults

## bench: detector throughput, visionq vs OpenCV DNN vs raw ONNX Runtime
bench: setup
	$(BIN)/visionq bench detector

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
