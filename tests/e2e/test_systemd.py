"""systemd: sd_notify to a notify socket, socket activation, and docs/django.md's units.

The test plays systemd's part: it binds an ``AF_UNIX`` datagram socket, passes
its address as ``$NOTIFY_SOCKET`` and reads what bivio sends there, with the
sender's pid (``SO_PASSCRED``), so it can tell that only the main process
speaks. Socket activation runs through Debian's ``systemd-socket-activate``
and through bash (dash takes no fd above 9) that puts a listening socket on fd 3 and sets
``LISTEN_PID=$$`` before it execs bivio (what systemd does). The unit files are
the ones docs/django.md shows: checked by ``systemd-analyze verify`` and their
``ExecStart`` run with only paths, the app and the port put in.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, Running, env_without_bivio, free_port, start_bivio, wait_until

from bivio.cli import build_parser

APP = "tests.apps.systemd_app:app"
TIMEOUT = 20.0
WATCHDOG_USEC = "200000"  # 0.2 s: a ping every 0.1 s
DOC = ROOT / "docs" / "django.md"
ACTIVATE = shutil.which("systemd-socket-activate")
ANALYZE = shutil.which("systemd-analyze")
NO_ACTIVATE = ("systemd-socket-activate is not installed (Debian: apt-get install systemd; "
               "scripts/system-deps.sh installs it when run as root)")


class NotifySocket:
    """What systemd listens on: every datagram, with the pid of the process that sent it."""

    def __init__(self, abstract: bool = False) -> None:
        self.dir = tempfile.mkdtemp(prefix="bivio-sd-")  # short: sun_path has 108 bytes
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        if abstract:
            name = f"bivio-test-{os.getpid()}-{id(self)}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self.address = os.path.join(self.dir, "notify")
            self.sock.bind(self.address)
        self.messages: list[tuple[int, dict[str, str]]] = []  # (sender pid, fields)
        self._closed = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        self.sock.settimeout(0.2)
        while not self._closed:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except TimeoutError:
                continue
            except OSError:
                return
            pid = 0
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", payload[:12])[0]
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.messages.append((pid, fields))

    def find(self, key: str, value: str = "1", start: int = 0) -> int | None:
        for i, (_, fields) in enumerate(self.messages[start:], start):
            if fields.get(key) == value:
                return i
        return None

    def wait(self, key: str, value: str = "1", start: int = 0, timeout: float = TIMEOUT) -> int:
        assert wait_until(lambda: self.find(key, value, start) is not None, timeout), \
            f"no {key}={value} after message {start}: {self.messages}"
        index = self.find(key, value, start)
        assert index is not None
        return index

    def count(self, key: str, start: int = 0, end: int | None = None) -> int:
        return sum(1 for _, f in self.messages[start:end] if key in f)

    def senders(self) -> set[int]:
        return {pid for pid, _ in self.messages}

    def close(self) -> None:
        self._closed = True
        self._thread.join(5)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify():
    sockets: list[NotifySocket] = []

    def _make(abstract: bool = False) -> NotifySocket:
        sockets.append(NotifySocket(abstract))
        return sockets[-1]

    yield _make
    for sock in sockets:
        sock.close()


def get(url: str, path: str = "/") -> dict:
    response = httpx.get(url + path, timeout=TIMEOUT, headers={"connection": "close"})
    assert response.status_code == 200, response.text
    return response.json()


def listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock



def activated(sock: socket.socket, *args: str, env: dict[str, str] | None = None) -> Running:
    """bivio started as systemd starts it: ``sock`` on fd 3, ``LISTEN_FDS=1``, and
    ``LISTEN_PID`` the pid of bivio itself (the shell's, which execs it)."""
    full_env = env_without_bivio()
    full_env.update(PYTHONUNBUFFERED="1", LISTEN_FDS="1", **(env or {}))
    fd = sock.fileno()
    command = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "bivio", *args))
    argv = ["bash", "-c", f"exec 3<&{fd} {fd}<&-; export LISTEN_PID=$$; exec {command}"]
    proc = subprocess.Popen(argv, cwd=str(ROOT), env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, pass_fds=(fd,))
    running = Running(proc, argv)
    running.wait_ready()
    return running


# -- sd_notify ---------------------------------------------------------------------------------


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_single_process_ready_watchdog_stopping(notify, abstract: bool) -> None:
    sd = notify(abstract)
    server = start_bivio(APP, env={"NOTIFY_SOCKET": sd.address, "WATCHDOG_USEC": WATCHDOG_USEC})
    try:
        ready = sd.wait("READY")
        pid, fields = sd.messages[ready]
        assert pid == server.proc.pid and fields["MAINPID"] == str(server.proc.pid)
        assert fields["STATUS"] == f"serving on {server.url}"
        assert get(server.url)["pid"] == server.proc.pid
        # The app keeps $NOTIFY_SOCKET (a single process is the main process).
        assert get(server.url)["notify"] is True
        sd.wait("WATCHDOG", start=ready + 1)
        assert wait_until(lambda: sd.count("WATCHDOG", ready + 1) >= 3), sd.messages
        server.signal(signal.SIGTERM)
        stopping = sd.wait("STOPPING", start=ready)
        assert sd.messages[stopping][0] == server.proc.pid
        assert server.proc.wait(TIMEOUT) == 0
        assert sd.count("READY") == 1
        assert sd.senders() == {server.proc.pid}
    finally:
        server.stop()


def test_blocked_loop_stops_the_watchdog(notify) -> None:
    """The pings come from the event loop: none while an async view blocks it."""
    sd = notify()
    server = start_bivio(APP, env={"NOTIFY_SOCKET": sd.address, "WATCHDOG_USEC": WATCHDOG_USEC})
    try:
        sd.wait("READY")
        get(server.url, "/block?1")  # 1 s: ten ping periods
        start = sd.wait("X_BLOCK", "start")
        end = sd.wait("X_BLOCK", "end", start)
        assert sd.count("WATCHDOG", start, end) == 0, sd.messages[start:end + 1]
        sd.wait("WATCHDOG", start=end)  # and they resume once the loop runs again
    finally:
        server.stop()


def test_watchdog_pid_of_another_process_means_no_pings(notify) -> None:
    sd = notify()
    server = start_bivio(APP, env={"NOTIFY_SOCKET": sd.address, "WATCHDOG_USEC": WATCHDOG_USEC,
                                   "WATCHDOG_PID": "1"})
    try:
        ready = sd.wait("READY")
        get(server.url)
        server.signal(signal.SIGTERM)
        sd.wait("STOPPING", start=ready)
        assert server.proc.wait(TIMEOUT) == 0
        assert sd.count("WATCHDOG") == 0, sd.messages
    finally:
        server.stop()


def test_workers_ready_reload_stopping(notify, tmp_path: Path) -> None:
    """With workers the supervisor alone speaks: READY once a worker serves,
    RELOADING then READY around a SIGHUP (READY only once the new workers serve),
    WATCHDOG while workers beat, STOPPING on SIGTERM."""
    sd = notify()
    gate = tmp_path / "gate"
    server = start_bivio(APP, "--workers", "2",
                         env={"NOTIFY_SOCKET": sd.address, "WATCHDOG_USEC": WATCHDOG_USEC,
                              "SYSTEMD_APP_GATE": str(gate)})
    try:
        ready = sd.wait("READY")
        assert sd.messages[ready][1]["MAINPID"] == str(server.proc.pid)
        body = get(server.url)
        assert body["pid"] != server.proc.pid
        assert body["notify"] is False  # the workers never talk to systemd
        assert wait_until(lambda: sd.count("WATCHDOG", ready) >= 3), sd.messages

        gate.touch()  # the new workers' startup waits for the test
        server.signal(signal.SIGHUP)
        reloading = sd.wait("RELOADING", start=ready + 1)
        usec = int(sd.messages[reloading][1]["MONOTONIC_USEC"])
        assert 0 < usec <= time.monotonic_ns() // 1000
        assert server.wait_for_output("(reload)")  # a new worker is starting, held at the gate
        assert wait_until(lambda: sd.count("WATCHDOG", reloading) >= 2), sd.messages
        assert sd.find("READY", start=reloading) is None, "READY before the new workers serve"
        gate.unlink()
        reloaded = sd.wait("READY", start=reloading)
        assert wait_until(lambda: len(re.findall(r"Worker \[\d+\] ready", server.output)) >= 4)
        assert sd.messages[reloaded][1]["MAINPID"] == str(server.proc.pid)

        server.signal(signal.SIGTERM)
        sd.wait("STOPPING", start=reloaded)
        assert server.proc.wait(TIMEOUT) == 0
        assert sd.senders() == {server.proc.pid}, "only the supervisor notifies"
    finally:
        if gate.exists():
            gate.unlink()
        server.stop()


# -- socket activation -------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [None, "2"], ids=["single", "workers"])
def test_socket_activation_from_listen_fds(workers: str | None) -> None:
    sock = listener()
    port = sock.getsockname()[1]
    args = [APP] + (["--workers", workers] if workers else [])
    with sock:
        server = activated(sock, *args)
    try:
        assert server.url == f"http://127.0.0.1:{port}"
        assert "systemd socket activation: serving fd 3" in server.output
        for _ in range(4):
            body = get(server.url)
            assert body["listen"] == [], "LISTEN_* must not reach the app"
            assert (body["pid"] == server.proc.pid) is (workers is None)
    finally:
        assert server.stop() == 0


def test_socket_activation_wins_over_address_flags() -> None:
    sock = listener()
    port, other = sock.getsockname()[1], free_port()
    with sock:
        server = activated(sock, APP, "--port", str(other))
    try:
        assert server.url == f"http://127.0.0.1:{port}"
        assert f"serving fd 3; ignoring --port {other}" in server.output
        get(server.url)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", other), timeout=TIMEOUT).close()
    finally:
        server.stop()


def test_listen_pid_of_another_process_is_not_ours() -> None:
    """LISTEN_PID names the process the sockets are for: bivio's child would not use them."""
    env = {"LISTEN_FDS": "1", "LISTEN_PID": "1"}
    server = start_bivio(APP, env=env)
    try:
        assert "socket activation" not in server.output
        assert get(server.url)["listen"] == ["LISTEN_FDS", "LISTEN_PID"]
    finally:
        server.stop()


def start_activated(port: int, argv: list[str], env: dict[str, str] | None = None) -> Running:
    """``systemd-socket-activate -l 127.0.0.1:PORT ARGV``: it execs ARGV at the first
    connection, which waits in the socket's backlog meanwhile."""
    assert ACTIVATE is not None
    setenv = [f"--setenv={k}={v}" for k, v in (env or {}).items()]
    command = [ACTIVATE, "-l", f"127.0.0.1:{port}", *setenv, *argv]
    proc = subprocess.Popen(command, cwd=str(ROOT), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    running = Running(proc, command)
    assert wait_until(lambda: f"Listening on 127.0.0.1:{port}" in running.output, TIMEOUT), \
        running.output
    return running


@pytest.mark.skipif(ACTIVATE is None, reason=NO_ACTIVATE)
def test_systemd_socket_activate() -> None:
    port = free_port()
    server = start_activated(port, [sys.executable, "-m", "bivio", "tests.apps.basic:app"],
                             {"PYTHONUNBUFFERED": "1"})
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/", timeout=TIMEOUT)
        assert response.status_code == 200
        server.wait_ready()
        assert server.url == f"http://127.0.0.1:{port}"
        assert "systemd socket activation: serving fd 3" in server.output
    finally:
        server.stop()


# -- docs/django.md's units ----------------------------------------------------------------------


def documented_units() -> dict[str, str]:
    """The ```ini blocks of docs/django.md's systemd section, by their file name."""
    section = DOC.read_text().split("\n## systemd, with socket activation\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    units = {}
    for block in re.findall(r"```ini\n(.*?)```", section, re.S):
        first, _, body = block.partition("\n")
        assert first.startswith("# /etc/systemd/system/"), first
        units[first.rsplit("/", 1)[1]] = body
    assert set(units) == {"mysite.socket", "mysite.service"}, units.keys()
    return units


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as systemd reads it: sections, repeated keys, ``\\`` continuations."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None and "=" in line, line
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def exec_start(service: dict[str, dict[str, list[str]]]) -> list[str]:
    (line,) = service["Service"]["ExecStart"]
    return shlex.split(line)


def test_documented_units_use_notify_and_activation() -> None:
    units = documented_units()
    socket_unit = parse_unit(units["mysite.socket"])
    service = parse_unit(units["mysite.service"])
    assert socket_unit["Socket"]["ListenStream"] == ["127.0.0.1:8000"]
    assert service["Service"]["Type"] == ["notify"]
    assert int(service["Service"]["WatchdogSec"][0]) > 0
    assert service["Service"]["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert "mysite.socket" in service["Unit"]["Requires"][0]
    argv = exec_start(service)
    assert argv[0] == "/srv/mysite/.venv/bin/bivio"
    # Every flag is one of bivio's (argparse exits on an unknown one)...
    args = vars(build_parser().parse_args(argv[1:]))
    assert args["app"] == "mysite.asgi:application"
    # ...and the socket comes from systemd, with no address flag.
    assert not any(a.startswith(("--fd", "--host", "--port", "--uds", "--bind", "-b"))
                   for a in argv[1:])


def substitute(argv: list[str], static: Path) -> list[str]:
    """The documented command with only the program's path, the app and the static
    directory replaced by the test's."""
    values = {"/srv/mysite/.venv/bin/bivio": str(Path(sys.executable).with_name("bivio")),
              "mysite.asgi:application": "tests.apps.basic:app",
              "/static/=/srv/mysite/staticfiles": f"/static/={static}"}
    for placeholder in values:
        assert argv.count(placeholder) == 1, f"ExecStart should have {placeholder!r} once"
    return [values.get(a, a) for a in argv]


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (Debian: systemd)")
def test_documented_units_verify(tmp_path: Path) -> None:
    """``systemd-analyze verify`` reads the units as systemd would (with the program's
    path put in, which it checks is executable)."""
    assert ANALYZE is not None
    units = documented_units()
    service = units["mysite.service"].replace(
        "/srv/mysite/.venv/bin/bivio", str(Path(sys.executable).with_name("bivio")))
    service = service.replace("/srv/mysite/.venv/bin/python", sys.executable)
    (tmp_path / "mysite.socket").write_text(units["mysite.socket"])
    (tmp_path / "mysite.service").write_text(service)
    result = subprocess.run([ANALYZE, "verify", "--man=no", str(tmp_path / "mysite.socket"),
                             str(tmp_path / "mysite.service")], capture_output=True, text=True,
                            timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "mysite" in line or "Unknown" in line or "rror" in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


@pytest.mark.skipif(ACTIVATE is None, reason=NO_ACTIVATE)
def test_documented_exec_start_under_socket_activation(notify, tmp_path: Path) -> None:
    """The documented ExecStart, started the way its socket unit starts it: serves the
    socket it is given (workers, static files) and says READY to systemd."""
    sd = notify()
    static = tmp_path / "staticfiles"
    static.mkdir()
    (static / "site.css").write_text("body { color: teal }\n")
    argv = substitute(exec_start(parse_unit(documented_units()["mysite.service"])), static)
    port = free_port()
    server = start_activated(port, argv, {"NOTIFY_SOCKET": sd.address,
                                          "WATCHDOG_USEC": WATCHDOG_USEC,
                                          "PYTHONUNBUFFERED": "1"})
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/static/site.css", timeout=TIMEOUT)
        assert response.status_code == 200 and "teal" in response.text
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=TIMEOUT).text == "hello"
        ready = sd.wait("READY")
        assert sd.messages[ready][1]["MAINPID"] == str(server.proc.pid)
        assert wait_until(lambda: "4 workers" in server.output), server.output
        server.signal(signal.SIGTERM)
        sd.wait("STOPPING", start=ready)
        assert server.proc.wait(TIMEOUT) == 0
    finally:
        server.stop()

