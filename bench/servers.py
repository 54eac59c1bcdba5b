"""How to start each server with one worker on a given app, and stop it.

Every server gets the same app module and the same machine share: one worker,
pinned to core 0 (``taskset``), access logs off, keep-alive timeouts long
enough for the idle-connection scenario. bivio runs from the project's venv;
the peers from ``bench/.venv-peers`` so their dependencies never touch bivio's.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS_BIN = Path(os.environ.get("BIVIO_BENCH_PEERS", ROOT / "bench" / ".venv-peers")) / "bin"

# App kinds: what a scenario serves, and the module path of that app.
TARGETS = {
    "asgi": "bench.apps.asgi_app:app",
    "wsgi": "bench.apps.wsgi_app:app",
    "django-asgi": "bench.apps.djangoproj.asgi:application",
    "django-wsgi": "bench.apps.djangoproj.wsgi:application",
    # The same project with a Channels WebSocket: served as pure ASGI, and in hybrid
    # mode (bivio only) with wsgi.py for pages and this for /async/ and WebSockets.
    "django-channels": "bench.apps.djangoproj.channels_asgi:application",
    "django-hybrid": "bench.apps.djangoproj.wsgi:application",
    "ceiling": "",
}
INTERFACE = {"asgi": "asgi", "django-asgi": "asgi", "wsgi": "wsgi", "django-wsgi": "wsgi",
             "django-channels": "asgi", "django-hybrid": "hybrid", "ceiling": "ceiling"}
# Hybrid mode's extra flags: the ASGI app and the prefixes it serves.
HYBRID_ARGS = ["--asgi-app", TARGETS["django-channels"], "--asgi-path", "/async/"]

Argv = Callable[[str, int, str], list[str]]  # (target, port, interface) -> argv


@dataclass
class ServerSpec:
    """One server: the interfaces it serves and the command that starts it."""

    name: str
    interfaces: tuple[str, ...]
    argv: Argv
    websocket: bool = False
    peer: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)

    def available(self) -> bool:
        if not self.peer:
            return True
        return (PEERS_BIN / self.argv("x:y", 1, self.interfaces[0])[0]).exists()


def _peer(tool: str) -> str:
    return str(PEERS_BIN / tool)


def _bivio(target: str, port: int, interface: str) -> list[str]:
    return [sys.executable, "-m", "bivio", target, "--host", "127.0.0.1", "--port", str(port),
            "--no-access-log", "--log-level", "warning", "--timeout-keep-alive", "120",
            *(HYBRID_ARGS if interface == "hybrid" else ())]


def _ceiling(target: str, port: int, interface: str) -> list[str]:
    return [sys.executable, "-m", "bench.ceiling", "--port", str(port)]


def _uvicorn(target: str, port: int, interface: str) -> list[str]:
    return [_peer("uvicorn"), target, "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--loop", "uvloop", "--http", "httptools", "--ws", "websockets",
            "--no-access-log", "--log-level", "warning", "--timeout-keep-alive", "120"]


def _granian(target: str, port: int, interface: str) -> list[str]:
    return [_peer("granian"), "--interface", interface, "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1", "--loop", "uvloop",
            "--log-level", "warning", "--no-access-log", target]


def _hypercorn(target: str, port: int, interface: str) -> list[str]:
    return [_peer("hypercorn"), "--bind", f"127.0.0.1:{port}", "--workers", "1",
            "--worker-class", "uvloop", "--keep-alive", "120", "--log-level", "warning", target]


def _daphne(target: str, port: int, interface: str) -> list[str]:
    return [_peer("daphne"), "-b", "127.0.0.1", "-p", str(port), "-v", "0", target]


def _gunicorn(kind: str, *extra: str) -> Argv:
    def argv(target: str, port: int, interface: str) -> list[str]:
        return [_peer("gunicorn"), "--workers", "1", "--worker-class", kind,
                "--bind", f"127.0.0.1:{port}", "--keep-alive", "120",
                "--log-level", "warning", *extra, target]
    return argv


SERVERS: dict[str, ServerSpec] = {s.name: s for s in (
    ServerSpec("ceiling", ("ceiling",), _ceiling, peer=False),
    ServerSpec("bivio", ("asgi", "wsgi", "hybrid"), _bivio, websocket=True, peer=False),
    ServerSpec("uvicorn", ("asgi",), _uvicorn, websocket=True),
    ServerSpec("granian", ("asgi", "wsgi"), _granian, websocket=True),
    ServerSpec("hypercorn", ("asgi",), _hypercorn, websocket=True),
    ServerSpec("daphne", ("asgi",), _daphne, websocket=True),
    ServerSpec("gunicorn-asgi", ("asgi",), _gunicorn("asgi", "--asgi-loop", "uvloop"),
               websocket=True),
    ServerSpec("gunicorn-sync", ("wsgi",), _gunicorn("sync")),
    ServerSpec("gunicorn-gthread", ("wsgi",), _gunicorn("gthread", "--threads", "8")),
)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Running:
    """A started server process (and the log file holding its output)."""

    def __init__(self, spec: ServerSpec, app: str, pin: str | None, log: Path) -> None:
        self.spec = spec
        self.app = app
        self.port = free_port()
        argv = spec.argv(TARGETS[app], self.port, INTERFACE[app])
        if pin is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", pin, *argv]
        env = {k: v for k, v in os.environ.items() if not k.startswith("BIVIO_")}
        env["PYTHONPATH"] = str(ROOT)
        env.pop("DJANGO_SETTINGS_MODULE", None)
        env.update(spec.extra_env)
        self.log = log
        self._out = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, cwd=str(ROOT), env=env, stdout=self._out,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 20.0) -> bool:
        """True once the port accepts connections; False if the process died first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def output(self) -> str:
        self._out.flush()
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._out.close()
