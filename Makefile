# The two set-up commands (see README): `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test install install-test system-deps lint bench bench-peers conformance

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
	$(BIN)/ruff check src tests examples bench

## Install everything and run the whole test suite
test: install-test
	$(BIN)/ruff check src tests examples bench
	$(BIN)/pytest

## Benchmarks (docs/performance.md): peers in bench/.venv-peers, a Markdown table
PEERS := bench/.venv-peers
BENCH_ARGS ?=

$(PEERS)/bin/python: bench/requirements-peers.txt
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install -q --upgrade pip
	$(PEERS)/bin/pip install -q -r bench/requirements-peers.txt
	touch $@

bench-peers: $(PEERS)/bin/python

bench: install bench-peers
	bash scripts/system-deps.sh
	$(BIN)/python -m bench.run $(BENCH_ARGS)

## Autobahn TestSuite, all 517 cases (kosoku), against the echo app: docs/websockets.md
conformance: install-test
	$(BIN)/python scripts/conformance.py
