"""The start-up banner says the facts, once bivio serves; workers have short process titles.

``bivio VERSION serving on URL (HTTP VERSIONS): MODE, LOOP, PROCESSES`` with the
URL the first word after "serving on" (tests and scripts read it there). With
``--workers`` or ``--reload`` it comes from the supervisor once the first worker
is ready, so never before the app was imported. In ``ps`` a worker is
``bivio: worker N [MODULE:ATTR]``, not a JSON blob of options.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import httpx
import pytest
from certs import Certs, make_certs
from conftest import wait_until

import bivio

BANNER = re.compile(r"INFO bivio (\S+) serving on (\S+) \(([^)]*)\): (.*), (uvloop|asyncio), "
                    r"(.*) \(Press CTRL\+C to quit\)$", re.M)


def banner(output: str) -> tuple[str, ...]:
    found = BANNER.findall(output)
    assert len(found) == 1, output
    return found[0]


def ready_pids(output: str) -> list[int]:
    return [int(p) for p in re.findall(r"Worker \[(\d+)\] ready", output)]



def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().rstrip("\0").split("\0")


@pytest.mark.parametrize(("args", "versions", "mode", "loop"), [
    ([], "HTTP/1.1, cleartext HTTP/2", "ASGI", "uvloop"),
    (["--loop", "asyncio", "--http", "h1"], "HTTP/1.1", "ASGI", "asyncio"),
    (["--http", "h2"], "cleartext HTTP/2", "ASGI", "uvloop"),
    (["--interface", "wsgi", "--threads", "3"], "HTTP/1.1, cleartext HTTP/2",
     "WSGI (3 threads)", "uvloop"),
])
def test_single_process_banner(serve, args, versions, mode, loop):
    app = "tests.apps.wsgi_apps:app" if "wsgi" in args else "tests.apps.basic:app"
    running = serve(app, *args)
    version, url, got_versions, got_mode, got_loop, processes = banner(running.output)
    assert version == bivio.__version__
    assert url == running.url == f"http://127.0.0.1:{running.port}"
    assert (got_versions, got_mode, got_loop, processes) == (versions, mode, loop, "1 process")


def test_hybrid_banner(serve):
    running = serve("tests.apps.wsgi_apps:app", "--asgi-app", "tests.apps.basic:app",
                    "--threads", "2")
    assert banner(running.output)[3] == "hybrid WSGI (2 threads) + ASGI"


def test_https_banner(serve, tmp_path):
    certs: Certs = make_certs(tmp_path)
    running = serve("tests.apps.basic:app", "--ssl-certfile", str(certs.cert),
                    "--ssl-keyfile", str(certs.key))
    _, url, versions, *_ = banner(running.output)
    assert url.startswith("https://127.0.0.1:") and versions == "HTTP/1.1, HTTP/2"


IMPORT_MARK = '''
import time

print("app module imported", flush=True)
time.sleep(0.3)  # a slow import: the banner must still wait for it


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
'''


def test_workers_banner_comes_once_a_worker_is_ready(serve, tmp_path):
    (tmp_path / "marked.py").write_text(IMPORT_MARK)
    running = serve("marked:app", "--workers", "2", "--app-dir", str(tmp_path))
    output = running.output
    *_, mode, loop, processes = banner(output)
    assert (mode, loop, processes) == ("ASGI", "uvloop", "2 workers")
    position = output.index("serving on")
    assert output.index("app module imported") < position
    assert output.index("] ready") < position  # a worker was ready first
    assert httpx.get(running.url + "/").text == "ok"  # and it serves at once


def test_reload_banner(serve, tmp_path):
    (tmp_path / "marked.py").write_text(IMPORT_MARK)
    running = serve("marked:app", "--reload", "--app-dir", str(tmp_path))
    assert banner(running.output)[-1] == "1 worker with --reload"
    assert running.output.index("app module imported") < running.output.index("serving on")


def test_no_banner_when_no_worker_starts(serve):
    running = serve("tests.apps.no_such_module:app", "--workers", "2", wait=False)
    assert running.proc.wait(30) == 1
    running.stop()
    assert "serving on" not in running.output
    assert "listening on http://127.0.0.1:" in running.output  # the supervisor bound


def titles(running) -> dict[int, list[str]]:
    assert wait_until(lambda: len(ready_pids(running.output)) >= 2), running.output
    return {pid: cmdline(pid) for pid in ready_pids(running.output)}


ENV_APP = '''
import os


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    seen = ",".join(sorted(k for k in os.environ if k.startswith("_BIVIO")))
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": seen.encode() or b"none"})
'''


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_worker_command_line_is_short_without_setproctitle(serve, tmp_path):
    """No setproctitle (an import that fails): ``ps`` shows the title as the last word."""
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "setproctitle.py").write_text("raise ImportError('not installed')\n")
    (tmp_path / "envapp.py").write_text(ENV_APP)
    pythonpath = os.pathsep.join(p for p in (str(blocker), os.environ.get("PYTHONPATH")) if p)
    running = serve("envapp:app", "--workers", "2", "--app-dir", str(tmp_path),
                    env={"PYTHONPATH": pythonpath, "BIVIO_HEADER": "x-a:1"})
    argvs = titles(running)
    assert sorted(argv[-1] for argv in argvs.values()) == [
        "bivio: worker 1 [envapp:app]", "bivio: worker 2 [envapp:app]"]
    for argv in argvs.values():
        assert argv[1] == "-c"  # the interpreter's own command line: no setproctitle
        line = " ".join(argv)
        assert "{" not in line and "x-a" not in line and "options" not in line, line
        assert len(line) < 200, line
    # The options came through the environment, which the app no longer sees.
    assert httpx.get(running.url + "/").text == "none"


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_worker_process_title_with_setproctitle(serve):
    pytest.importorskip("setproctitle")
    running = serve("tests.apps.basic:app", "--workers", "2")
    argvs = titles(running)
    assert sorted(" ".join(argv).strip() for argv in argvs.values()) == [
        "bivio: worker 1 [tests.apps.basic:app]", "bivio: worker 2 [tests.apps.basic:app]"]
    # A replacement takes the number of the worker it replaces.
    victim = next(pid for pid, argv in argvs.items() if "worker 1 " in " ".join(argv))
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: len(ready_pids(running.output)) >= 3), running.output
    new = ready_pids(running.output)[-1]
    assert " ".join(cmdline(new)).strip() == "bivio: worker 1 [tests.apps.basic:app]"
