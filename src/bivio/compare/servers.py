"""Start, watch and stop the bivio servers that ``bivio compare`` measures.

Each mode runs as its own ``python -m bivio`` process on a free port, in a
session of its own: Ctrl-C reaches ``bivio compare`` only, which then stops
every server it started (SIGTERM, then SIGKILL to the whole session if one
hangs), so no server outlives the comparison. CPU and memory are read from
``/proc`` for the server and its workers.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

STOP_TIMEOUT = 10.0
"""Seconds a server gets to finish after SIGTERM before its session is killed."""


class StartFailed(Exception):
    """A server exited, or never accepted a connection: the message is its last error line."""


def free_port() -> int:
    """A port nothing listens on now (the server binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """One running bivio process."""

    mode: str
    argv: list[str]
    port: int
    proc: subprocess.Popen[bytes]
    log: IO[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def error_line(self) -> str:
        """The line that says why it stopped: bivio's ``error:`` line, else the last one."""
        lines = [line.strip() for line in self.output().splitlines() if line.strip()]
        for line in reversed(lines):
            if "error:" in line.lower() or "Error" in line:
                return line.split("error: ", 1)[-1] if line.startswith("bivio:") else line
        return lines[-1] if lines else f"exited with code {self.proc.returncode}"

    def wait_ready(self, timeout: float) -> None:
        """Connect until the port accepts; raise :class:`StartFailed` if the process ends."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StartFailed(self.error_line())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise StartFailed(f"not accepting connections on port {self.port} after {timeout:g} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
            except ProcessLookupError:
                pass
        self.log.close()
        try:
            os.unlink(self.log.name)
        except OSError:
            pass

    # -- what the server costs ------------------------------------------------------------------

    def processes(self) -> list[int]:
        """The server and its workers (the supervisor's children under ``--workers``)."""
        return [self.pid, *children(self.pid)]

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.processes())

    def worker_rss(self) -> float:
        """Resident memory per worker in bytes (the process itself without a supervisor)."""
        kids = children(self.pid)
        sizes = [rss(pid) for pid in (kids or [self.pid])]
        sizes = [s for s in sizes if s]
        return sum(sizes) / len(sizes) if sizes else 0.0


def start(mode: str, bivio_args: list[str], *, env: dict[str, str], cwd: str) -> Server:
    """Start ``python -m bivio BIVIO_ARGS --port P`` on a free port (not yet ready)."""
    port = free_port()
    argv = [sys.executable, "-m", "bivio", *bivio_args, "--host", "127.0.0.1",
            "--port", str(port)]
    # The log outlives this function: Server.stop() closes and removes it.
    log = tempfile.NamedTemporaryFile(prefix=f"bivio-compare-{mode}-",  # noqa: SIM115
                                      suffix=".log", delete=False)
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_die_with_parent)
    return Server(mode, argv, port, proc, log)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when ``bivio compare`` dies, even by SIGKILL.

    The server runs in a session of its own (so Ctrl-C reaches only the comparison,
    which stops it in order); this makes sure no server outlives a comparison that
    could not stop it. Linux's prctl(PR_SET_PDEATHSIG); elsewhere, nothing.
    """
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024.0
    except OSError:
        pass
    return 0.0


def memory_available() -> float:
    """MemAvailable in bytes (0 when /proc/meminfo cannot say)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024.0
    except OSError:
        pass
    return 0.0
