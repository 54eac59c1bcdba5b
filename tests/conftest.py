"""Shared fixtures: start a real bivio process on a free port and talk to it.

``serve("tests.apps.basic:app", "--limit-request-body", "100")`` starts
``python -m bivio`` with the given flags, waits until it logs that it is
serving, and returns a :class:`Running` with ``url``, ``port`` and the output.
Every process is stopped with SIGTERM at teardown (SIGKILL if it hangs).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVING = re.compile(r"serving on (\S+)")


class Running:
    """A bivio process under test."""

    def __init__(self, proc: subprocess.Popen[str], args: list[str]) -> None:
        self.proc = proc
        self.args = args
        self.lines: list[str] = []
        self.url = ""
        self.port = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._ready = threading.Event()
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            match = SERVING.search(line)
            if match and not self._ready.is_set():
                self.url = match.group(1)
                if self.url.startswith(("http://", "https://")):
                    self.port = int(self.url.rsplit(":", 1)[1])
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float = 20.0) -> None:
        if not self._ready.wait(timeout) or not self.url:
            self.stop()
            raise RuntimeError("bivio did not start:\n" + self.output)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_output(self, text: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output:
                return True
            time.sleep(0.02)
        return False

    def connect(self, timeout: float = 10.0) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return sock

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        return self.proc.returncode


def env_without_bivio() -> dict[str, str]:
    """``os.environ`` without the ``BIVIO_*`` settings a test must not inherit; only
    ``BIVIO_NO_EXTENSIONS`` stays (it picks the variant under test, see ``make test``)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("BIVIO_") or k == "BIVIO_NO_EXTENSIONS"}


def start_bivio(*args: str, env: dict[str, str] | None = None, wait: bool = True,
                cwd: Path | str = ROOT) -> Running:
    full_env = env_without_bivio()
    full_env["PYTHONUNBUFFERED"] = "1"
    full_env.update(env or {})
    argv = [sys.executable, "-m", "bivio", *args]
    if not any(a.startswith(("--port", "--uds", "--fd", "--bind", "-b")) for a in args) \
            and "BIVIO_PORT" not in full_env:
        argv += ["--port", "0"]
    proc = subprocess.Popen(argv, cwd=str(cwd), env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, pass_fds=_fds(args))
    running = Running(proc, argv)
    if wait:
        running.wait_ready()
    return running


def _fds(args: tuple[str, ...]) -> tuple[int, ...]:
    for i, arg in enumerate(args):
        if arg == "--fd":
            return (int(args[i + 1]),)
    return ()


@pytest.fixture
def serve() -> Iterator:
    started: list[Running] = []

    def _serve(*args: str, **kwargs) -> Running:
        running = start_bivio(*args, **kwargs)
        started.append(running)
        return running

    yield _serve
    for running in started:
        running.stop()


def read_response(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Read until the peer closes the connection (or the timeout passes)."""
    sock.settimeout(timeout)
    chunks = []
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def read_one_response(sock: socket.socket, timeout: float = 10.0) -> tuple[int, dict, bytes]:
    """Read exactly one HTTP/1.1 response (Content-Length or chunked) from ``sock``."""
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a full head: {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        length = int(headers["content-length"])
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, headers, rest[:length]
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            while b"\r\n" not in rest:
                rest += sock.recv(65536)
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                while not rest.endswith(b"\r\n\r\n") and rest != b"\r\n":
                    more = sock.recv(65536)
                    if not more:
                        break
                    rest += more
                return status, headers, body
            while len(rest) < size + 2:
                rest += sock.recv(65536)
            body += rest[:size]
            rest = rest[size + 2:]
    return status, headers, rest


# -- what the kernel says about a connection (Linux /proc/net/tcp, IPv4) -----------------------

_SIOCOUTQ = 0x5411  # TIOCOUTQ: bytes a TCP socket has not yet had acknowledged


def _proc_address(host: str, port: int) -> str:
    return f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"


def _tcp_rows() -> list[list[str]]:
    with open("/proc/net/tcp") as f:
        return [line.split() for line in f.readlines()[1:]]


def server_has_read(sock: socket.socket, timeout: float = 10.0) -> bool:
    """Wait until the server process has read every byte sent on ``sock`` so far.

    A positive signal in place of "sleep a little and hope": the peer kernel has
    acknowledged all our bytes (our send queue is empty) and the server side of
    the connection has nothing left in its receive queue.
    """
    ours = _proc_address(*sock.getsockname()[:2])
    theirs = _proc_address(*sock.getpeername()[:2])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        unacked = struct.unpack("i", fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b"\0" * 4))[0]
        if unacked == 0:
            rows = [row for row in _tcp_rows() if row[1] == theirs and row[2] == ours]
            if not rows:
                return False  # the server side is gone (reset)
            if int(rows[0][4].split(":")[1], 16) == 0:
                return True
        time.sleep(0.01)
    return False


def established_connections(port: int) -> int:
    """How many TCP connections to local ``port`` are established (server side)."""
    suffix = f":{port:04X}"
    return sum(1 for row in _tcp_rows() if row[1].endswith(suffix) and row[3] == "01")


# -- shared by tests that read raw responses (e2e) and that check the server log (unit) -------

STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")
RAW_TIMEOUT = 10.0  # upper bound for anything the server should do "now"


def read_until_close(sock: socket.socket, timeout: float = RAW_TIMEOUT) -> tuple[bytes, bool]:
    """Read until the server closes; return the bytes and whether it did close."""
    deadline = time.monotonic() + timeout
    chunks = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return b"".join(chunks), False
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return b"".join(chunks), False
        except ConnectionResetError:
            return b"".join(chunks), True
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)


def statuses(data: bytes) -> list[int]:
    """The status codes of the HTTP/1.x responses in ``data``, in order."""
    return [int(s) for s in STATUS.findall(data)]


@pytest.fixture
def errors(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch):
    """Records of the "bivio.error" logger (propagating even if setup_logging ran)."""
    monkeypatch.setattr(logging.getLogger("bivio.error"), "propagate", True)
    caplog.set_level(logging.ERROR, logger="bivio.error")

    def records() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "bivio.error"]

    return records


def wait_until(predicate, timeout: float = 30.0) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` passes (False).

    For conditions no event announces (a process's output, a file appearing);
    the timeout is only a guard against hangs, never what a test measures.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def free_port() -> int:
    """A TCP port nothing listens on now (for a program the test starts: nginx, HAProxy)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fill_placeholders(block: str, values: dict[str, str], where: str) -> str:
    """A documented config with its placeholders replaced, each found exactly once.

    ``where`` names the doc (for the message): the doc's block is the one the
    test runs, so a placeholder that went missing or doubled fails loudly.
    """
    for placeholder, value in values.items():
        assert block.count(placeholder) == 1, f"{where} should have {placeholder!r} once"
        block = block.replace(placeholder, value)
    return block
