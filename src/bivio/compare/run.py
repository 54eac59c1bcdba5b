"""The comparison itself: check that the modes agree, then measure them one by one.

Two phases. First every mode is started (in parallel: only startup time is
spent) and asked each path once; a mode that cannot start, or answers unlike
the others, is marked failing and never measured, so it cannot look fast by
answering errors quickly. A path that fails in *every* mode is a wrong path,
not a slow mode: it is left out with one line. Then each working mode gets a
fresh server, a warm-up, and the measurements, one mode after the other so
they never compete for the CPU.

Results are written into the :class:`Comparison` as they arrive, so a Ctrl-C
leaves in it exactly what was measured so far.
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any

from . import load, servers
from .load import Answer, RunResult
from .project import ProjectInfo

MODES = ("wsgi", "asgi", "hybrid")
LABELS = {"wsgi": "WSGI", "asgi": "ASGI", "hybrid": "hybrid"}
LENGTH_TOLERANCE = 0.10
"""Bodies may differ this much (or 64 bytes) between modes: CSRF tokens, the request's
class name, a pid in the page. More than that is another page."""


class BadInput(Exception):
    """What the user gave cannot be compared: one line that says what to change."""


@dataclass
class Setup:
    """What the command line asked for, resolved."""

    modes: dict[str, list[str]]
    """Each mode's bivio arguments (without host and port)."""
    paths: list[str]
    headers: list[tuple[str, str]]
    concurrency: list[int]
    duration: float
    warmup: float
    env: dict[str, str]
    cwd: str
    startup_timeout: float = 60.0


@dataclass
class ModeResult:
    name: str
    args: list[str]
    ok: bool = True
    error: str | None = None
    answers: dict[str, Answer | str] = field(default_factory=dict)
    runs: dict[str, list[RunResult]] = field(default_factory=dict)
    run_cpu: dict[str, list[float]] = field(default_factory=dict)
    """Server CPU seconds used during each run, alongside ``runs``."""
    rss: float = 0.0
    pid: int | None = None
    port: int | None = None

    def fail(self, reason: str) -> None:
        self.ok, self.error = False, reason

    def cpu_us_per_request(self) -> float | None:
        requests = sum(r.requests for runs in self.runs.values() for r in runs)
        cpu = sum(c for cpus in self.run_cpu.values() for c in cpus)
        return cpu / requests * 1e6 if requests else None

    def score(self, paths: list[str], concurrency: int) -> float | None:
        """Geometric mean of requests/s over ``paths`` at ``concurrency``: one number per mode
        in which no single fast or slow page dominates."""
        values = [r.rps for p in paths for r in self.runs.get(p, [])
                  if r.concurrency == concurrency]
        if not values or len(values) < len(paths) or any(v <= 0 for v in values):
            return None
        return math.exp(sum(math.log(v) for v in values) / len(values))

    def as_dict(self) -> dict[str, Any]:
        paths = {}
        for path in sorted(set(self.answers) | set(self.runs)):
            answer = self.answers.get(path)
            check = ({"status": answer.status, "bytes": answer.length}
                     if isinstance(answer, Answer) else {"error": answer})
            runs = []
            for run, cpu in zip(self.runs.get(path, []), self.run_cpu.get(path, []), strict=False):
                entry = run.as_dict()
                entry["server_cpu_us_per_request"] = (round(cpu / run.requests * 1e6, 1)
                                                      if run.requests else None)
                runs.append(entry)
            paths[path] = {"check": check, "runs": runs}
        cpu = self.cpu_us_per_request()
        return {"ok": self.ok, "error": self.error, "bivio_args": self.args,
                "paths": paths,
                "cpu_us_per_request": None if cpu is None else round(cpu, 1),
                "rss_mib_per_worker": round(self.rss / 2**20, 1) if self.rss else None}


@dataclass
class Comparison:
    setup: Setup
    project: ProjectInfo | None = None
    modes: dict[str, ModeResult] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)
    """The paths measured: those given, less the ones that fail in every mode."""
    dropped: list[str] = field(default_factory=list)
    """One line per path left out, saying why."""
    interrupted: bool = False


class Progress:
    """A bar on a terminal; plain lines otherwise (a CI log, a test's pipe)."""

    def __init__(self, total: int, stream: IO[str] | None = None, enabled: bool = True) -> None:
        self.total, self.done = max(total, 1), 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()

    def note(self, text: str) -> None:
        """A line that stays (a server started, and its pid), bar or no bar."""
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()

    def step(self, label: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        if self.tty:
            width = 30
            filled = int(width * self.done / self.total)
            self.stream.write(f"\r\033[K[{'#' * filled}{'.' * (width - filled)}] "
                              f"{self.done}/{self.total} {label}")
            if self.done >= self.total:
                self.stream.write("\r\033[K")
            self.stream.flush()
        else:
            self.note(f"[{self.done}/{self.total}] {label}")


def _start_all(result: Comparison, live: list[servers.Server],
               names: list[str]) -> dict[str, servers.Server]:
    setup = result.setup
    started = {}
    for name in names:
        server = servers.start(name, setup.modes[name], env=setup.env, cwd=setup.cwd)
        live.append(server)
        started[name] = server
        mode = result.modes[name]
        mode.pid, mode.port = server.pid, server.port
    ready = {}
    for name, server in started.items():
        try:
            server.wait_ready(setup.startup_timeout)
        except servers.StartFailed as exc:
            result.modes[name].fail(f"fails to start: {exc}")
            continue
        ready[name] = server
    return ready


def _stop(server: servers.Server, live: list[servers.Server]) -> None:
    server.stop()
    if server in live:
        live.remove(server)


def check(result: Comparison, live: list[servers.Server], progress: Progress) -> None:
    """Phase one: every mode answers every path once; failing modes and paths are marked."""
    setup = result.setup
    ready = _start_all(result, live, list(setup.modes))
    for name, server in ready.items():
        progress.note(f"{LABELS[name]}: serving on http://127.0.0.1:{server.port} "
                      f"(pid {server.pid}): checking its answers")
        for path in setup.paths:
            try:
                answer: Answer | str = asyncio.run(load.fetch(server.port, path, setup.headers))
            except (OSError, ConnectionError, asyncio.TimeoutError) as exc:
                answer = f"no answer: {exc or type(exc).__name__}"
            result.modes[name].answers[path] = answer
        progress.step(f"{LABELS[name]} checked")
    for server in ready.values():
        _stop(server, live)
    for name in setup.modes:
        if name not in ready:
            progress.step(f"{LABELS[name]} failed to start")
    _judge_answers(result)


def _status(answer: Answer | str | None) -> int | None:
    return answer.status if isinstance(answer, Answer) else None


def _judge_answers(result: Comparison) -> None:
    working = [m for m in result.modes.values() if m.ok]
    for path in result.setup.paths:
        answers = {m.name: m.answers.get(path) for m in working}
        statuses = Counter(_status(a) for a in answers.values())
        if not working:
            break
        if len(statuses) == 1:
            status = next(iter(statuses))
            if status is None or status >= 400:
                result.dropped.append(_bad_path_line(path, status, result))
                continue
        # The reference answer: the most common status, a success preferred on a tie.
        reference = max(statuses, key=lambda s: (statuses[s], s is not None and s < 400))
        lengths = [a.length for a in answers.values()
                   if isinstance(a, Answer) and a.status == reference]
        typical = sorted(lengths)[len(lengths) // 2] if lengths else 0
        for mode in working:
            answer = answers[mode.name]
            others = ", ".join(f"{LABELS[n]} {_show(a)}" for n, a in answers.items()
                               if n != mode.name)
            if _status(answer) != reference:
                mode.fail(f"{path} answers {_show(answer)} where {others}")
            elif isinstance(answer, Answer) and abs(answer.length - typical) > max(
                    64, LENGTH_TOLERANCE * max(answer.length, typical)):
                mode.fail(f"{path} answers {answer.length} bytes where the others answer "
                          f"about {typical}")
        result.paths.append(path)


def _show(answer: Answer | str | None) -> str:
    if isinstance(answer, Answer):
        return str(answer.status)
    return answer or "nothing"


def _bad_path_line(path: str, status: int | None, result: Comparison) -> str:
    """One line for a path that fails whatever the server: what to change."""
    if status == 400:
        return (f"{path} answers 400 in every mode: Django refuses the Host 127.0.0.1? "
                "add '127.0.0.1' to ALLOWED_HOSTS (or pass --header 'Host: NAME' with one "
                "it allows)")
    if status == 404:
        return (f"{path} answers 404 in every mode: no such page; pass --path with a page "
                "of the project (or leave --path out: the URLconf's pages)")
    if status in (401, 403):
        return (f"{path} answers {status} in every mode: it needs a login; pass "
                "--header 'Cookie: sessionid=...' (or a token) to measure it")
    if status is None:
        return f"{path} gets no answer in any mode: the servers close the connection"
    return (f"{path} answers {status} in every mode: the view itself fails, whatever the "
            "server; fix it, or leave it out with --path")


def measure(result: Comparison, live: list[servers.Server], progress: Progress) -> None:
    """Phase two: each working mode on a fresh server, one after the other."""
    setup = result.setup
    for name in setup.modes:
        mode = result.modes[name]
        if not mode.ok:
            continue
        ready = _start_all(result, live, [name])
        if name not in ready:
            for _ in result.paths:
                for _ in setup.concurrency:
                    progress.step(f"{LABELS[name]} failed to start")
            continue
        server = ready[name]
        progress.note(f"{LABELS[name]}: serving on http://127.0.0.1:{server.port} "
                      f"(pid {server.pid}): measuring")
        top = max(setup.concurrency)
        for path in result.paths:  # warm-up: imports, caches, the thread pool's threads
            expect = _status(mode.answers.get(path)) or 200
            asyncio.run(load.measure(server.port, path, setup.headers, top,
                                     setup.warmup, expect))
        for path in result.paths:
            expect = _status(mode.answers.get(path)) or 200
            for concurrency in setup.concurrency:
                cpu0 = server.cpu_seconds()
                run = asyncio.run(load.measure(server.port, path, setup.headers, concurrency,
                                               setup.duration, expect))
                mode.runs.setdefault(path, []).append(run)
                mode.run_cpu.setdefault(path, []).append(server.cpu_seconds() - cpu0)
                progress.step(f"{LABELS[name]} {path} c={concurrency}: {run.rps:,.0f} req/s")
        mode.rss = server.worker_rss()
        if server.proc.poll() is not None:
            mode.fail(f"the server exited while measured: {server.error_line()}")
        _stop(server, live)
