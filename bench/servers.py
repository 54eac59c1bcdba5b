"""How to start each server with one worker on a given app, and stop it.

Every server gets the same app module and the same machine share: one worker,
pinned to core 0 (``taskset``), access logs off, keep-alive timeouts long
enough for the idle-connection scenario. bivio runs from the project's venv;
the peers from ``bench/.venv-peers`` so their dependencies never touch bivio's.

A scenario may ask for HTTP/2 (cleartext prior knowledge, or ALPN over TLS) and
for TLS (:class:`Listen`); a server that cannot serve that raises
:class:`CannotServe` with the reason, which the table prints.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from .tls import TLSFiles

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
# Streams an HTTP/2 connection may carry before the server sends GOAWAY: h2load does
# not reconnect after one, so a per-connection limit (bivio 10,000, hypercorn 1,000
# by default) would end the load mid-run. Lifted, like the keep-alive timeouts.
H2_STREAMS_PER_CONNECTION = 2**30
# hypercorn takes its per-connection request limit from a config file only.
HYPERCORN_CONFIG = ROOT / "bench" / "hypercorn.toml"


@dataclass(frozen=True)
class Listen:
    """What a scenario needs from the listener: HTTP/2 on (prior knowledge in cleartext,
    ALPN over TLS) and TLS on (this certificate)."""

    http2: bool = False
    tls: TLSFiles | None = None


class CannotServe(Exception):
    """This server cannot be set up for this scenario (the message says why)."""


Argv = Callable[[str, int, str, Listen], list[str]]  # (target, port, interface, listen)


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
        return (PEERS_BIN / self.argv("x:y", 1, self.interfaces[0], Listen())[0]).exists()

    def cannot_serve(self, http2: bool, tls: bool) -> str | None:
        """Why this server cannot run a scenario with these needs, or None."""
        listen = Listen(http2, TLSFiles("cert.pem", "key.pem") if tls else None)
        try:
            self.argv("x:y", 1, self.interfaces[0], listen)
        except CannotServe as exc:
            return str(exc)
        return None


def _peer(tool: str) -> str:
    return str(PEERS_BIN / tool)


def _bivio(target: str, port: int, interface: str, listen: Listen) -> list[str]:
    # HTTP/2 needs no flag: --http auto serves it on the HTTP/1.1 port (prior knowledge,
    # Upgrade: h2c, ALPN over TLS).
    argv = [sys.executable, "-m", "bivio", target, "--host", "127.0.0.1", "--port", str(port),
            "--no-access-log", "--log-level", "warning", "--timeout-keep-alive", "120",
            *(HYBRID_ARGS if interface == "hybrid" else ())]
    if listen.http2:
        argv += ["--h2-max-requests", str(H2_STREAMS_PER_CONNECTION)]
    if listen.tls:
        argv += ["--ssl-certfile", listen.tls.cert, "--ssl-keyfile", listen.tls.key]
    return argv


def _ceiling(target: str, port: int, interface: str, listen: Listen) -> list[str]:
    if listen.http2 or listen.tls:
        raise CannotServe("the ceiling is cleartext HTTP/1.1 only")
    return [sys.executable, "-m", "bench.ceiling", "--port", str(port)]


def _uvicorn(target: str, port: int, interface: str, listen: Listen) -> list[str]:
    if listen.http2:
        raise CannotServe("uvicorn has no HTTP/2 (httptools and h11 are HTTP/1.1 only)")
    argv = [_peer("uvicorn"), target, "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--loop", "uvloop", "--http", "httptools", "--ws", "websockets",
            "--no-access-log", "--log-level", "warning", "--timeout-keep-alive", "120"]
    if listen.tls:
        argv += ["--ssl-certfile", listen.tls.cert, "--ssl-keyfile", listen.tls.key]
    return argv


def _granian(target: str, port: int, interface: str, listen: Listen) -> list[str]:
    argv = [_peer("granian"), "--interface", interface, "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1", "--loop", "uvloop",
            "--log-level", "warning", "--no-access-log"]
    if listen.http2:
        # HTTP/2 only; granian's default (auto) also serves h2c prior knowledge.
        argv += ["--http", "2"]
    if listen.tls:
        argv += ["--ssl-certificate", listen.tls.cert, "--ssl-keyfile", listen.tls.key]
    return [*argv, target]


def _hypercorn(target: str, port: int, interface: str, listen: Listen) -> list[str]:
    # HTTP/2 needs no flag: h2c prior knowledge in cleartext, ALPN over TLS.
    argv = [_peer("hypercorn"), "--config", str(HYPERCORN_CONFIG),
            "--bind", f"127.0.0.1:{port}", "--workers", "1",
            "--worker-class", "uvloop", "--keep-alive", "120", "--log-level", "warning"]
    if listen.tls:
        argv += ["--certfile", listen.tls.cert, "--keyfile", listen.tls.key]
    return [*argv, target]


def _daphne(target: str, port: int, interface: str, listen: Listen) -> list[str]:
    if listen.http2 and not listen.tls:
        raise CannotServe("daphne serves HTTP/2 only over TLS (Twisted picks it by ALPN); "
                          "no cleartext prior knowledge")
    if listen.tls:
        # A Twisted endpoint; HTTP/2 by ALPN when Twisted's http2 extra is installed.
        where = f"ssl:{port}:interface=127.0.0.1:privateKey={listen.tls.key}:" \
                f"certKey={listen.tls.cert}"
        return [_peer("daphne"), "-e", where, "-v", "0", target]
    return [_peer("daphne"), "-b", "127.0.0.1", "-p", str(port), "-v", "0", target]


@cache
def _gunicorn_flags() -> str:
    """gunicorn's --help (its HTTP/2 flags depend on the version installed)."""
    try:
        return subprocess.run([_peer("gunicorn"), "--help"], capture_output=True, text=True,
                              timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _gunicorn(kind: str, *extra: str) -> Argv:
    def argv(target: str, port: int, interface: str, listen: Listen) -> list[str]:
        flags = []
        if listen.http2:
            help_text = _gunicorn_flags()
            if "--http-protocols" not in help_text:
                raise CannotServe("this gunicorn has no HTTP/2 (--http-protocols: 25.0 and "
                                  "later)")
            if not listen.tls and "--http2-cleartext" not in help_text:
                raise CannotServe("this gunicorn has HTTP/2 over TLS only (--http2-cleartext: "
                                  "26.2 and later)")
            flags += ["--http-protocols", "h2,h1"]
            if not listen.tls:
                # Prior knowledge and Upgrade: h2c; HTTP/1.1 still served (like bivio's auto).
                flags += ["--http2-cleartext", "both"]
        if listen.tls:
            flags += ["--certfile", listen.tls.cert, "--keyfile", listen.tls.key]
        return [_peer("gunicorn"), "--workers", "1", "--worker-class", kind,
                "--bind", f"127.0.0.1:{port}", "--keep-alive", "120",
                "--log-level", "warning", *extra, *flags, target]
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


def _through_interpreter(argv: list[str]) -> list[str]:
    """``[script, ...]`` as ``[python, script, ...]`` when the script is a ``#!`` Python
    console script (the peers' entry points), else ``argv`` unchanged."""
    try:
        with open(argv[0], "rb") as f:
            first = f.readline(512)
    except OSError:
        return argv
    if first.startswith(b"#!") and b"python" in first:
        return [first[2:].decode().strip().split()[0], *argv]
    return argv


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Running:
    """A started server process (and the log file holding its output)."""

    def __init__(self, spec: ServerSpec, app: str, pin: str | None, log: Path,
                 listen: Listen = Listen(),  # noqa: B008 - frozen, shared
                 wrap: Sequence[str] = (), extra_env: dict[str, str] | None = None) -> None:
        """``wrap``: a command the server runs under (valgrind, strace: bench/counts.py);
        a Python console script is then started through its interpreter, so the tool
        sees Python itself, not a ``#!`` line."""
        self.spec = spec
        self.app = app
        self.listen = listen
        self.port = free_port()
        argv = spec.argv(TARGETS[app], self.port, INTERFACE[app], listen)
        if wrap:
            argv = [*wrap, *_through_interpreter(argv)]
        if pin is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", pin, *argv]
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("BIVIO_") or k == "BIVIO_NO_EXTENSIONS"}
        env["PYTHONPATH"] = str(ROOT)
        env.pop("DJANGO_SETTINGS_MODULE", None)
        env.update(spec.extra_env)
        env.update(extra_env or {})
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
