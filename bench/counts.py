"""Counted, not timed: user-space instructions and system calls per request.

Requests/s and CPU µs/req depend on the CPU and on the neighbours; the ratio of
bivio to a peer written in Rust (granian) even changes sign from one machine to
the next. Two figures do not:

- **instructions per request**, counted by valgrind's callgrind (every
  instruction the server's processes execute in user space, whatever else the
  machine does; hardware counters are not available on these machines);
- **system calls per request**, counted by ``strace -c -f`` (callgrind does not
  see the kernel, and a server can trade user-space work for system calls).

Each (scenario, server) pair is started four times under a tool: callgrind with
no load and with ``--count-requests`` requests, strace the same. Every run
answers the scenario's check request first (so lazy first-request work is in
both), the loaded runs then get N requests from h2load (``--h1``, fixed count,
``--count-connections`` connections) sent from outside the measured process,
and every run ends with SIGTERM (a graceful stop, so the tools write their
totals). Per request = (loaded - unloaded) / N: start-up and shutdown cancel
out. A native run first writes the ``.pyc`` files, so no run pays for
compiling. Under valgrind a server is about 50 times slower: the readiness and
answer timeouts are generous.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .scenarios import Scenario
from .servers import Listen, Running, ServerSpec

REQUESTS = 10_000
CONNECTIONS = 64
READY_S = 600.0  # seconds a server under valgrind may take to listen (Django: a minute)
ANSWER_S = 300.0  # seconds for the check request's answer (imports on first request)
STOP_S = 900.0  # seconds for a graceful stop under a tool (granian + Django: minutes)
# The peers counted beside bivio by default: the ones the goals name.
SERVERS = ("ceiling", "bivio", "uvicorn", "granian", "gunicorn-gthread")
# Fixed hash seed: the same dict and set layouts in every run of a pair.
ENV = {"PYTHONHASHSEED": "0"}


class CountFailed(Exception):
    """A counting run did not complete (the message says which and why)."""


@dataclass
class Counts:
    """What one (scenario, server) pair costs per request, counted."""

    requests: int
    instructions: float  # user-space instructions per request (callgrind, all processes)
    syscalls: float  # system calls per request (strace -c -f, all processes and threads)
    by_syscall: dict[str, float] = field(default_factory=dict)  # per request, by name
    files: list[str] = field(default_factory=list)  # the callgrind outputs (for annotate)

    def top_syscalls(self, n: int = 4) -> str:
        """The most frequent calls per request, for the table's note."""
        top = sorted(self.by_syscall.items(), key=lambda kv: -kv[1])[:n]
        return ", ".join(f"{name} {calls:.2f}" for name, calls in top if calls >= 0.01)


def available() -> str | None:
    """None when counting can run here, else why not."""
    missing = [tool for tool in ("valgrind", "strace", "h2load") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (scripts/system-deps.sh)"
    return None


def count(spec: ServerSpec, scenario: Scenario, log_dir: Path, requests: int = REQUESTS,
          connections: int = CONNECTIONS) -> Counts:
    """Instructions and system calls per request for ``spec`` serving ``scenario``."""
    work = log_dir / f"counts-{scenario.name}-{spec.name}"
    work.mkdir(parents=True, exist_ok=True)
    _run(spec, scenario, work, "prime", [], 0, connections)  # writes the .pyc files
    base_files = _run(spec, scenario, work, "callgrind-0", _callgrind(work / "cg0"), 0,
                      connections)
    load_files = _run(spec, scenario, work, f"callgrind-{requests}", _callgrind(work / "cgN"),
                      requests, connections)
    _run(spec, scenario, work, "strace-0", _strace(work / "strace-0.txt"), 0, connections)
    _run(spec, scenario, work, f"strace-{requests}", _strace(work / "strace-N.txt"), requests,
         connections)
    base_ir = sum(callgrind_total(p.read_text(errors="replace")) for p in base_files)
    load_ir = sum(callgrind_total(p.read_text(errors="replace")) for p in load_files)
    base_sys = strace_calls((work / "strace-0.txt").read_text(errors="replace"))
    load_sys = strace_calls((work / "strace-N.txt").read_text(errors="replace"))
    by_name = {name: (load_sys.get(name, 0) - base_sys.get(name, 0)) / requests
               for name in set(load_sys) | set(base_sys) if name != "total"}
    return Counts(requests, (load_ir - base_ir) / requests,
                  (load_sys.get("total", 0) - base_sys.get("total", 0)) / requests,
                  by_name, [str(p) for p in load_files])


def _callgrind(prefix: Path) -> list[str]:
    # %p: one file per process (gunicorn and granian run a worker beside the master);
    # --trace-children: follow the exec of a spawned worker too.
    return ["valgrind", "--tool=callgrind", "--trace-children=yes",
            f"--callgrind-out-file={prefix}.%p", "--log-file=" + f"{prefix}.valgrind.%p"]


def _strace(out: Path) -> list[str]:
    return ["strace", "-f", "-c", "-o", str(out)]


def _run(spec: ServerSpec, scenario: Scenario, work: Path, label: str, wrap: list[str],
         requests: int, connections: int) -> list[Path]:
    """Start the server under ``wrap``, check it, send ``requests``, stop it gracefully;
    return the callgrind files it wrote (none for other tools)."""
    before = set(work.iterdir())
    running = Running(spec, scenario.app, None, work / f"{label}.log", Listen(), wrap, ENV)
    try:
        if not running.wait_ready(READY_S):
            raise CountFailed(f"{label}: did not start: "
                              + (running.output().strip().splitlines() or ["?"])[-1])
        problem = scenario.check(running.port, timeout=ANSWER_S)  # type: ignore[call-arg]
        if problem:
            raise CountFailed(f"{label}: {problem}")
        if requests:
            _load(running.port, scenario.path, requests, connections, label)
        _stop(running, traced=bool(wrap) and wrap[0] == "strace")
    finally:
        running.stop()  # a no-op once stopped; else the whole group is ended
    return sorted(p for p in set(work.iterdir()) - before
                  if p.name.startswith(("cg0.", "cgN.")) and ".valgrind." not in p.name)


def _load(port: int, path: str, requests: int, connections: int, label: str) -> None:
    """Exactly ``requests`` keep-alive HTTP/1.1 requests over ``connections``."""
    argv = ["h2load", "--h1", "-t1", f"-n{requests}", f"-c{min(connections, requests)}",
            f"http://127.0.0.1:{port}{path}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    ok = re.search(r"(\d+) succeeded", done.stdout)
    if done.returncode != 0 or not ok or int(ok.group(1)) != requests:
        raise CountFailed(f"{label}: h2load did not get {requests} answers: "
                          f"{done.stdout.strip()[-300:]}")


def _stop(running: Running, traced: bool) -> None:
    """SIGTERM to the server itself (under strace, strace's child; under valgrind the
    process is the server), then wait for the tools to write their figures."""
    pid = running.proc.pid
    if traced:
        children = _children(pid)
        if not children:
            raise CountFailed("strace has no child to stop")
        pid = children[0]
    os.kill(pid, signal.SIGTERM)
    try:
        running.proc.wait(STOP_S)
    except subprocess.TimeoutExpired:
        raise CountFailed(f"the server did not stop within {STOP_S:g} s of SIGTERM") from None
    time.sleep(0.1)


def _children(pid: int) -> list[int]:
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return found


def callgrind_total(text: str) -> int:
    """The instructions a callgrind output file counted (its ``totals:`` line)."""
    match = re.search(r"^totals:\s+(\d+)", text, re.M) or \
        re.search(r"^summary:\s+(\d+)", text, re.M)
    if not match:
        raise CountFailed("a callgrind file has no totals (the process was killed?)")
    return int(match.group(1))


def strace_calls(text: str) -> dict[str, int]:
    """``strace -c`` summary as {syscall: calls}, with the ``total`` row."""
    calls = {}
    for line in text.splitlines():
        fields = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(fields) >= 5 and fields[3].isdigit() and re.fullmatch(r"[\d.]+", fields[0]):
            calls[fields[-1]] = int(fields[3])
    return calls
