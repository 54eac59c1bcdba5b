#!/usr/bin/env bash
# The suite on the other supported Pythons (run as `make test-pythons`; CI runs it after
# `make test`, which covers the machine's python3 in full).
#
# bivio supports Python 3.10 to 3.13, and some of its code differs by version:
# eager Tasks and the C current_task() from 3.12, asyncio.Task(context=) from 3.11,
# a compiled hot path built for each interpreter. For each version named in
# PYTHONS, this makes its own venv (.venv-py3.X, with bivio installed editable, so
# the compiled modules are built in place for that interpreter beside the others)
# and runs:
#   - the unit suite on the compiled hot path, then on the .py files
#     (BIVIO_NO_EXTENSIONS=1);
#   - end-to-end tests over real sockets on the compiled hot path: ASGI, WSGI,
#     WebSockets, HTTP/2, Starlette and Django apps, and the smoke test.
# (The rest of the end-to-end suite meets other programs, nginx, HAProxy,
# Prometheus, whose side does not change with bivio's Python.)
#
# An interpreter is looked for as python3.X on PATH, then in pyenv's versions
# (the newest 3.X.*). A version that is on neither is skipped, and says so;
# REQUIRE_PYTHONS=1 makes that a failure instead.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHONS=${PYTHONS:-"3.10 3.12 3.13"}
E2E=(tests/e2e/test_smoke.py tests/e2e/test_asgi.py tests/e2e/test_wsgi.py
     tests/e2e/test_websocket.py tests/e2e/test_http2.py tests/e2e/test_starlette.py
     tests/e2e/test_django.py)
# The Makefile's check that the compiled hot path is there (the one `make test` runs).
: "${HOT_PATH_CHECK:?run this as make test-pythons, which passes the hot path check of the Makefile}"

find_python() {  # $1 = 3.X; prints an interpreter's path, or nothing
    local minor=$1 candidate root
    candidate=$(command -v "python$minor" 2>/dev/null || true)
    # A pyenv shim is on PATH even where that version is not selected: ask it.
    if [ -n "$candidate" ] && "$candidate" -c 'import sys' >/dev/null 2>&1; then
        echo "$candidate"
        return
    fi
    root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
    candidate=$(ls -d "$root"/versions/"$minor".* 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$candidate" ] && [ -x "$candidate/bin/python$minor" ]; then
        echo "$candidate/bin/python$minor"
    fi
}

ran=() skipped=()
for minor in $PYTHONS; do
    python=$(find_python "$minor")
    if [ -z "$python" ]; then
        echo "== Python $minor: skipped, no python$minor on PATH or in pyenv's versions"
        skipped+=("$minor")
        continue
    fi
    venv=".venv-py$minor"
    echo "== Python $minor: $python ($("$python" -c 'import platform; print(platform.python_version())'))"
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q -e '.[test]'
    "$venv/bin/python" -c "$HOT_PATH_CHECK"
    "$venv/bin/pytest" -q -p no:cacheprovider tests --ignore=tests/e2e
    BIVIO_NO_EXTENSIONS=1 "$venv/bin/pytest" -q -p no:cacheprovider tests --ignore=tests/e2e
    "$venv/bin/pytest" -q -p no:cacheprovider "${E2E[@]}"
    ran+=("$minor")
done

echo "== other Pythons: ran ${ran[*]:-none}; skipped ${skipped[*]:-none}"
if [ "${REQUIRE_PYTHONS:-0}" = 1 ] && [ ${#skipped[@]} -gt 0 ]; then
    echo "REQUIRE_PYTHONS=1 and Python ${skipped[*]} could not be found" >&2
    exit 1
fi
