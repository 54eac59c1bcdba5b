"""``make run``: its address, its install stamp, a port in use, the example's messages once."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def make(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # Not the outer make's variables either: `make test` runs this suite, and a
    # make started from it would be a sub-make (MAKELEVEL, MAKEFLAGS).
    clean = {k: v for k, v in os.environ.items()
             if k not in ("HOST", "PORT", "VENV", "MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT,
                          env={**clean, **(env or {})}, capture_output=True, text=True,
                          timeout=60)


def test_a_port_in_use_stops_make_run_before_anything_is_installed(tmp_path):
    venv = tmp_path / "venv"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = make("run", f"PORT={port}", f"VENV={venv}")
    assert result.returncode != 0
    ours = [line for line in (result.stdout + result.stderr).splitlines()
            if not re.match(r"make(\[\d+\])?: \*\*\*", line)]  # make's own "Error 1" line
    assert ours == [f"make run: cannot serve on 127.0.0.1:{port}: Address already in use "
                    f"(another server runs there: stop it, or PORT={port + 1} make run)"]
    assert not venv.exists()  # no venv, no pip, no migrate: it stopped first


def test_host_and_port_reach_bivio(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    (venv / ".installed-example").touch()
    result = make("-n", "run", "HOST=127.0.0.2", "PORT=8123", f"VENV={venv}")
    assert result.returncode == 0, result.stderr
    assert "--host '127.0.0.2' --port '8123'" in result.stdout
    assert "pip install" not in result.stdout  # the stamp is newer than pyproject.toml


def test_the_install_stamp_follows_pyproject(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    stamp = venv / ".installed-example"
    stamp.touch()
    changed = (ROOT / "pyproject.toml").stat().st_mtime
    os.utime(stamp, (changed + 10, changed + 10))
    assert make("-q", f"VENV={venv}", str(stamp)).returncode == 0  # up to date: no install
    os.utime(stamp, (changed - 10, changed - 10))
    result = make("-n", f"VENV={venv}", str(stamp))
    assert f"{venv}/bin/pip install -q -e '.[example]'" in result.stdout  # changed: install


def test_management_commands_do_not_print_the_chat_layer_line(tmp_path):
    pytest.importorskip("channels")
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(EXAMPLE_DB_PATH=str(tmp_path / "db.sqlite3"),
               EXAMPLE_STATIC_ROOT=str(tmp_path / "static"))
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "manage.py"), "check"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "chat:" not in result.stdout + result.stderr
    # The server says it once (tests/e2e/test_example.py checks bivio's output for it).
