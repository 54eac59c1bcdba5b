# The two set-up commands (see README): `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test install install-test system-deps lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

install-test: $(BIN)/python system-deps
	$(BIN)/pip install -q -e '.[test]'

system-deps:
	bash scripts/system-deps.sh

## Serve the bundled example app on http://127.0.0.1:8000
run: install
	$(BIN)/bivio examples.hello:app --host 127.0.0.1 --port 8000

lint:
	$(BIN)/ruff check src tests examples

## Install everything and run the whole test suite
test: install-test
	$(BIN)/ruff check src tests examples
	$(BIN)/pytest
