"""Shared by the tests of the bundled Django example (test_example.py, test_nginx.py).

``prepare_example(base)`` makes a ready project (SQLite in ``base``, collectstatic,
a superuser made by ``manage.py createsuperuser``) and returns the environment that
points the example at it. ``example_args(mode, static_root)`` is the bivio command
line for each way of serving it. ``run_chat_page(url)`` runs the chat page's script
under Node (``chat_page.js``) and returns what it did.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

EXAMPLES = ROOT / "examples"
PASSWORD = "correct horse battery staple"
CHAT_PAGE_JS = Path(__file__).with_name("chat_page.js")
# The chat script's retries (chat.js RETRY_DELAYS_MS): one try, then one per delay.
RETRY_DELAYS_MS = [1000, 2000, 4000]


def prepare_example(base: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(EXAMPLE_DB_PATH=str(base / "db.sqlite3"), EXAMPLE_STATIC_ROOT=str(base / "static"),
               DJANGO_SUPERUSER_PASSWORD=PASSWORD, PYTHONUNBUFFERED="1")
    for command in (["migrate", "--noinput"], ["collectstatic", "--noinput", "-v", "0"],
                    ["createsuperuser", "--noinput", "--username", "admin",
                     "--email", "admin@example.com"]):
        subprocess.run([sys.executable, str(EXAMPLES / "manage.py"), *command], env=env,
                       check=True, capture_output=True, timeout=60)
    return env


def example_args(mode: str, static_root: str | None = None) -> list[str]:
    """bivio's arguments for the example as ``asgi``, ``wsgi`` or ``hybrid`` (--django)."""
    app = ["--django", "example"] if mode == "hybrid" else [f"example.{mode}:application"]
    static = ["--static", f"/static/={static_root}"] if static_root else []
    return [*app, "--app-dir", "examples", *static]


@functools.cache
def node() -> tuple[list[str], bool] | None:
    """The Node command (with the flag its WebSocket needs) and whether it has a WebSocket."""
    path = shutil.which("node")
    if path is None:
        return None
    probe = ("process.exit(typeof fetch !== 'function' ? 4"
             " : typeof WebSocket === 'function' ? 0 : 3)")
    for flags in (["--experimental-websocket"], []):
        try:
            code = subprocess.run([path, *flags, "-e", probe], capture_output=True,
                                  timeout=30).returncode
        except (OSError, subprocess.TimeoutExpired):
            return None
        if code in (0, 3):
            return [path, *flags], code == 0
    return None


def run_chat_page(url: str, *, say: str | None = None, fake: list[str] | None = None,
                  ca: Path | None = None) -> dict:
    """Run the chat page at ``url`` under Node; skip when there is no Node that can."""
    found = node()
    if found is None:
        pytest.skip("needs Node.js >= 18 (fetch) to run the chat page's script")
    command, has_websocket = found
    if fake is None and not has_websocket:
        pytest.skip("needs a Node.js with a WebSocket (>= 20.10 with --experimental-websocket)")
    argv = [*command, str(CHAT_PAGE_JS), url]
    if say is not None:
        argv.append(f"--say={say}")
    if fake is not None:
        argv.append("--fake=" + ",".join(fake))
    env = dict(os.environ)
    if ca is not None:
        env["NODE_EXTRA_CA_CERTS"] = str(ca)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=45, env=env)
    assert done.stdout.strip(), f"chat_page.js said nothing (exit {done.returncode}):\n" \
                                f"{done.stderr}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["exit"] = done.returncode
    result["stderr"] = done.stderr
    return result
