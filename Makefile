# The two set-up commands (see README): `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-pythons install install-example install-test system-deps lint bench bench-peers conformance fuzz

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

install-test: $(BIN)/python system-deps
	$(BIN)/pip install -q -e '.[test]'

system-deps:
	bash scripts/system-deps.sh

# Installed once, and again only when pyproject.toml (the dependencies) changes.
EXAMPLE_STAMP := $(VENV)/.installed-example
$(EXAMPLE_STAMP): pyproject.toml | $(BIN)/python
	@echo "Installing bivio and the example's dependencies into $(VENV)"
	$(BIN)/pip install -q -e '.[example]'
	@touch $@

install-example: $(EXAMPLE_STAMP)

## Serve the bundled Django example (examples/example) on http://$(HOST):$(PORT):
## SQLite migrations and collectstatic first, then bivio with /static/ served by --static.
## PORT=8001 make run (or HOST=0.0.0.0): another address; a port in use stops it at once.
## REDIS_URL=redis://127.0.0.1:6379/0 make run: the chat goes through Redis (any --workers).
HOST ?= 127.0.0.1
PORT ?= 8000
EXAMPLE_STATIC_ROOT ?= $(CURDIR)/examples/staticfiles
export EXAMPLE_STATIC_ROOT
# Before minutes of pip, migrate and collectstatic: can bivio bind HOST:PORT at all?
# (SO_REUSEADDR as bivio binds, so a port left in TIME_WAIT does not count as taken.)
define PORT_CHECK
import errno, socket, sys
host, port = sys.argv[1], sys.argv[2]
try:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.close()
except (ValueError, OverflowError):
    sys.exit(f"make run: PORT must be a port number, got {port!r}")
except OSError as exc:
    taken = exc.errno == errno.EADDRINUSE
    sys.exit(f"make run: cannot serve on {host}:{port}: {exc.strerror or exc}" + (
        f" (another server runs there: stop it, or PORT={int(port) + 1} make run)" if taken else ""))
endef
export PORT_CHECK
run:
	@$(PYTHON) -c "$$PORT_CHECK" '$(HOST)' '$(PORT)'
	@$(MAKE) -s --no-print-directory $(EXAMPLE_STAMP)
	$(BIN)/python examples/manage.py migrate --noinput
	$(BIN)/python examples/manage.py collectstatic --noinput -v 0
	$(BIN)/bivio example.asgi:application --app-dir examples --host '$(HOST)' --port '$(PORT)' \
		--static /static/=$(EXAMPLE_STATIC_ROOT)

lint:
	$(BIN)/ruff check src tests examples bench

## Install everything and run the whole test suite
# The suite runs twice: on the compiled hot path (setup.py builds it in place) and on the
# same .py files uncompiled (BIVIO_NO_EXTENSIONS=1, see src/bivio/compiled.py).
HOT_PATH_CHECK := import bivio.compiled as c, sys; s = c.status(); print("bivio hot path:", s); \
	sys.exit(s != "compiled" and "the compiled hot path did not build (no C compiler or Python headers?)")
test: install-test
	$(BIN)/ruff check src tests examples bench setup.py
	$(BIN)/python -c '$(HOT_PATH_CHECK)'
	$(BIN)/pytest
	BIVIO_NO_EXTENSIONS=1 $(BIN)/pytest

## The suite on the other supported Pythons, 3.10, 3.12 and 3.13 (PYTHONS="3.12" for one):
## each in its own .venv-py3.X, found on PATH or in pyenv's versions, skipped with a
## message when absent (REQUIRE_PYTHONS=1: fail instead). See scripts/test-pythons.sh.
test-pythons: system-deps
	HOT_PATH_CHECK='$(HOT_PATH_CHECK)' bash scripts/test-pythons.sh

## Fuzz the HTTP/1.1 request path in-process (tests/fuzz_http1.py): 10^6 inputs, ends with
## one summary line (inputs, failures, time) and, on a failure, the minimal reproducer.
## FUZZ_ARGS="--inputs 20000 --seed 1" make fuzz: a shorter run, another seed.
FUZZ_ARGS ?= --inputs 1000000
fuzz: install-test
	$(BIN)/python scripts/fuzz.py $(FUZZ_ARGS)

## Benchmarks (docs/performance.md): peers in bench/.venv-peers, a Markdown table;
## then instructions (valgrind callgrind) and syscalls (strace) per request for ASGI
## hello, WSGI hello and the Django sync view. BENCH_ARGS="--counts off" skips those,
## BENCH_ARGS="--counts only" runs only them.
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
