# The two set-up commands (see README): `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test install install-example install-test system-deps lint bench bench-peers conformance fuzz

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

install-test: $(BIN)/python system-deps
	$(BIN)/pip install -q -e '.[test]'

system-deps:
	bash scripts/system-deps.sh

install-example: $(BIN)/python
	$(BIN)/pip install -q -e '.[example]'

## Serve the bundled Django example (examples/example) on http://127.0.0.1:8000:
## SQLite migrations and collectstatic first, then bivio with /static/ served by --static.
## REDIS_URL=redis://127.0.0.1:6379/0 make run: the chat goes through Redis (any --workers).
EXAMPLE_STATIC_ROOT ?= $(CURDIR)/examples/staticfiles
export EXAMPLE_STATIC_ROOT
run: install-example
	$(BIN)/python examples/manage.py migrate --noinput
	$(BIN)/python examples/manage.py collectstatic --noinput -v 0
	$(BIN)/bivio example.asgi:application --app-dir examples --host 127.0.0.1 --port 8000 \
		--static /static/=$(EXAMPLE_STATIC_ROOT)

lint:
	$(BIN)/ruff check src tests examples bench

## Install everything and run the whole test suite
test: install-test
	$(BIN)/ruff check src tests examples bench
	$(BIN)/pytest

## Fuzz the HTTP/1.1 request path in-process (tests/fuzz_http1.py): 10^6 inputs, ends with
## one summary line (inputs, failures, time) and, on a failure, the minimal reproducer.
## FUZZ_ARGS="--inputs 20000 --seed 1" make fuzz: a shorter run, another seed.
FUZZ_ARGS ?= --inputs 1000000
fuzz: install-test
	$(BIN)/python scripts/fuzz.py $(FUZZ_ARGS)

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
