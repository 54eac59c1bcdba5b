"""The supervisor: a parent process that binds the listeners once and keeps workers serving.

``--workers N``, ``--reload`` or ``--limit-max-requests`` run bivio as a
supervisor (see docs/workers.md for the user's view). The parent:

- binds every listener once (TCP, ``--uds``, ``--fd`` or each ``--bind``: all
  of them or none, :mod:`bivio.process.listeners`), before any worker exists,
  so a bind error is one clear line and the sockets never close while
  workers come and go: a connection that arrives while no worker accepts waits
  in the kernel's backlog instead of being refused;
- never imports the application. Workers are fresh interpreters started with
  :mod:`subprocess` (not ``fork``): a reload must import the *new* code, the
  parent runs a file-watching thread (forking a threaded process is unsafe), and
  an app that fails to import cannot take the supervisor down with it;
- hands each worker the listening sockets by descriptor (inherited, not
  ``SO_REUSEPORT``: one accept queue shared by all workers, so a worker that
  stops or dies leaves no queued connection behind; it works the same for UNIX
  sockets and ``--fd``) and one private channel, an ``AF_UNIX`` socket pair.
  A worker's command line is ``python -c WORKER_CODE "bivio: worker N [app]"``
  (the title ``ps`` shows; setproctitle, when installed, makes it the whole
  line); its app and options come in ``$_BIVIO_WORKER_SPEC``.

Each worker runs the very same serve path as single-process mode
(:func:`bivio.main.serve`, so ASGI and WSGI alike) with ``--bind fd://N`` for
each inherited listener (one asyncio server per socket);
:data:`bivio.server.on_worker_ready` lets the worker's :class:`WorkerAgent`
join in once it is ready. The channel carries newline-terminated words:

- worker -> parent: ``about JSON`` (its mode and event loop, for the "serving
  on" banner the parent logs when the first worker is ready), ``ready``
  (lifespan startup done, accepting), ``beat``
  (sent by a timer *on the worker's event loop*, so a blocked loop stops the
  beats; a side thread would keep beating while the loop is stuck),
  ``recycle`` (``--limit-max-requests`` reached), ``error JSON`` (the app
  could not be loaded: the one-line reason and its traceback, which the parent
  prints once however many workers fail the same way), and with ``--metrics``
  ``metrics JSON`` (its counters: with each beat, when asked, and once more as
  it exits; :mod:`bivio.process.metrics`);
- parent -> worker: ``stop`` (drain gracefully: the same shutdown as SIGTERM)
  and ``metrics`` (a scrape wants fresh counters).

Lines are written whole: what the channel cannot take at once waits, in order,
for it to drain (a worker's ``_send``).

End of file on the channel means the other side is gone: the parent learns a
worker died at once, and a worker whose parent was killed shuts down instead of
serving as an orphan. Workers run in their own session so a terminal's Ctrl+C
reaches only the parent, which then stops them in order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import faulthandler
import fnmatch
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from ..core import configfile, exits
from ..core.config import OPTIONS, Config, ConfigError, metrics_address
from ..core.logs import configure_logging, logger
from . import loader as loader_module
from . import server as server_module
from .listeners import bind_listeners, close_listeners
from .loader import LoadError
from .metrics import SCRAPE_WAIT, Totals, WorkerMetrics, aggregate
from .metrics import start_server as start_metrics_server
from .server import StartupError, banner, listener_url
from .systemd import NOTIFY_ENV
from .systemd import notifier as systemd_notifier
from .tls import build_ssl_context

WORKER_CODE = "from bivio.process.supervisor import worker_main; worker_main()"
TICK = 0.1
"""Seconds between the parent's checks (exits, heartbeats, deadlines)."""
KILL_GRACE = 1.0
"""Seconds between asking a blocked worker for its stack (SIGUSR1) and SIGKILL."""
DRAIN_MARGIN = 10.0
PASSWORD_ENV = "_BIVIO_WORKER_SSL_KEYFILE_PASSWORD"
SPEC_ENV = "_BIVIO_WORKER_SPEC"
"""How a worker gets its app, options and channel: its environment, so that its command
line (what ``ps`` shows) is only its short title."""
"""How a worker gets --ssl-keyfile-password: its environment (readable by the same user
only), never its command line (which ``ps`` shows everyone)."""
"""Beyond --timeout-graceful-shutdown, how long a stopping worker may take (lifespan
shutdown) before it is killed."""

_WORKER_ONLY_RESET: dict[str, Any] = {
    "uds": None, "workers": None, "reload": False, "reload_dir": (), "reload_include": (),
    "reload_exclude": (), "limit_max_requests": None, "limit_max_requests_jitter": 0,
    # The parent's alone: the addresses it bound (the worker serves the inherited
    # sockets, given as --bind fd://N), its pid file, and the environment file it
    # loaded into the environment the workers inherit.
    "host": None, "port": None, "fd": None, "pid": None, "env_file": None,
    # The parent serves the metrics; a worker only counts (spec["metrics"]).
    "metrics": None,
}


_RESTART_REASONS = {"recycle": "max_requests", "reload": "reload"}
"""A replacement's reason as ``bivio_worker_restarts_total`` names it (crash and blocked
are counted where the worker's exit is seen)."""
OUT_LIMIT = 1 << 20
"""Bytes a worker keeps for a parent that is not reading its channel; lines beyond are dropped."""


def heartbeat_interval(config: Config) -> float:
    """Beat several times per healthcheck timeout, so one late beat is not a false alarm."""
    return min(1.0, max(0.05, config.timeout_worker_healthcheck / 5))


def request_limit(config: Config, rng: random.Random | None = None) -> int | None:
    """One worker's ``--limit-max-requests`` plus its own ``0..jitter`` share."""
    if config.limit_max_requests is None:
        return None
    jitter = config.limit_max_requests_jitter
    return config.limit_max_requests + ((rng or random).randint(0, jitter) if jitter else 0)


def worker_options(config: Config, fds: int | Sequence[int]) -> dict[str, Any]:
    """The options a worker runs with: every resolved setting, serving on ``fds``.

    Resolved values (not the command line) so a worker sees exactly what the
    parent validated, whatever its environment; supervisor-only options are
    cleared so the worker takes the single-process path. The inherited listeners
    travel as ``--bind fd://N`` each, in the parent's order (one of them also
    sets ``fd``, as ``--fd N`` would).
    """
    options = {o.name: getattr(config, o.name) for o in OPTIONS}
    fds = [fds] if isinstance(fds, int) else list(fds)
    options.update(_WORKER_ONLY_RESET, bind=[f"fd://{fd}" for fd in fds])
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    reason = {exits.LOAD_ERROR: "the app could not be loaded",
              exits.STARTUP_FAILED: "application startup failed",
              exits.ABORTED: "requests were aborted at shutdown"}.get(code)
    return f"exit code {code}: {reason}" if reason else f"exit code {code}"


class ReloadFilter:
    """Which changed files trigger ``--reload``.

    watchfiles' default filter first (VCS and cache directories, editor swap
    files, ``*.pyc``), then ``--reload-exclude`` globs (matched against the
    file name, every directory name on its path, and the whole path), then
    ``*.py`` plus ``--reload-include`` globs.
    """

    def __init__(self, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> None:
        import watchfiles

        self.default = watchfiles.DefaultFilter()
        self.include = ("*.py", *include)
        self.exclude = tuple(exclude)

    def __call__(self, change: Any, path: str) -> bool:
        if not self.default(change, path):
            return False
        parts = Path(path).parts
        for pattern in self.exclude:
            if fnmatch.fnmatch(path, pattern) or any(fnmatch.fnmatch(p, pattern) for p in parts):
                return False
        name = parts[-1] if parts else path
        return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(path, p) for p in self.include)


# -- the worker's side -------------------------------------------------------------------------


class WorkerAgent:
    """Inside a worker: report readiness, beat from the event loop, obey ``stop``."""

    def __init__(self, channel: socket.socket, interval: float, max_requests: int | None,
                 metrics: bool = False) -> None:
        self.channel = channel
        self.interval = interval
        self.max_requests = max_requests
        self.server: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.recycling = False
        self.stopping = False
        self._buffer = b""
        self._out = bytearray()  # what the channel could not take yet (whole lines only)
        self._count = metrics  # --metrics: count, and report with every beat
        self.metrics: WorkerMetrics | None = None
        self._due = 0.0  # when the next beat should run (loop time): its lag is measured

    def ready(self, server: Any) -> None:
        """Called by the server once lifespan startup is done and it accepts connections."""
        self.server = server
        self.loop = asyncio.get_running_loop()
        if self._count:  # before the first connection: every request is counted
            self.metrics = WorkerMetrics(server.ctx)
            if server.watchdog is not None:  # --loop-warn ticks often: its lateness is the lag
                server.watchdog.on_lag = self.metrics.loop_lag.observe
        self._send(b"about " + json.dumps(server.describe()).encode() + b"\n")  # the banner
        self._send(b"ready\n")
        self.loop.add_reader(self.channel.fileno(), self._on_readable)
        self._beat()

    def _send(self, data: bytes) -> None:
        """Send whole lines: what the channel cannot take now waits, in order, for it
        to drain (a snapshot is larger than a beat; half a line would garble the next)."""
        if self._out:
            if len(self._out) < OUT_LIMIT:  # else the parent is not reading: drop lines
                self._out += data
            return
        try:
            sent = self.channel.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            return  # the parent is gone: the reader sees end of file and stops us
        if sent < len(data):
            self._out += data[sent:]
            assert self.loop is not None
            self.loop.add_writer(self.channel.fileno(), self._flush_out)

    def _flush_out(self) -> None:
        assert self.loop is not None
        try:
            sent = self.channel.send(self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            sent = len(self._out)  # gone: nothing more to send
        del self._out[:sent]
        if not self._out:
            self.loop.remove_writer(self.channel.fileno())

    def _report(self) -> None:
        """``metrics JSON``: this worker's counters, for the supervisor to sum."""
        if self.metrics is not None:
            self._send(b"metrics " + json.dumps(self.metrics.snapshot()).encode() + b"\n")

    def final_report(self) -> None:
        """After the server has stopped: the last counts, so none are lost at a recycle or
        reload (blocking, briefly: the loop is gone)."""
        if self.metrics is None:
            return
        data = bytes(self._out) + b"metrics " + json.dumps(self.metrics.snapshot()).encode() \
            + b"\n"
        try:
            self.channel.settimeout(2.0)
            self.channel.sendall(data)
        except OSError:
            pass  # the parent is gone or stuck: it has the counts of the last beat

    def _beat(self) -> None:
        assert self.loop is not None
        now = self.loop.time()
        if self.metrics is not None and self._due and self.server.watchdog is None:
            self.metrics.loop_lag.observe(max(0.0, now - self._due))
        self._due = now + self.interval
        self._send(b"beat\n")
        self._report()
        if (self.max_requests is not None and not self.recycling
                and self.server.ctx.requests >= self.max_requests):
            self.recycling = True
            logger.info("Served %d requests (--limit-max-requests): asking for a replacement",
                        self.server.ctx.requests)
            self._send(b"recycle\n")
        self.loop.call_later(self.interval, self._beat)

    def _on_readable(self) -> None:
        assert self.loop is not None
        try:
            data = self.channel.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.loop.remove_reader(self.channel.fileno())
            if not self.stopping:
                logger.warning("The supervisor is gone: shutting down")
            self._stop()
            return
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        if b"metrics" in lines:  # a scrape: fresh counts now
            self._report()
        if b"stop" in lines and not self.stopping:
            logger.info("Stopping gracefully (asked by the supervisor)")
            self._stop()

    def _stop(self) -> None:
        self.stopping = True
        self.server.stop()


def worker_title(number: int, app: str) -> str:
    """A worker's title in ``ps``: ``bivio: worker 2 [mysite.asgi:application]``."""
    return f"bivio: worker {number} [{app}]"


def set_process_title(title: str) -> bool:
    """Show ``title`` as this process's command line, with setproctitle when installed.

    Without it ``ps`` still shows a short line, ending with the title: the
    worker's command line carries nothing else.
    """
    try:
        import setproctitle
    except ImportError:
        return False
    setproctitle.setproctitle(title)
    return True


def worker_main() -> NoReturn:
    """Entry point of a worker process: ``python -c WORKER_CODE TITLE``, the rest in
    ``$_BIVIO_WORKER_SPEC`` (read, then removed before the app can see it)."""
    if len(sys.argv) > 1:
        set_process_title(sys.argv[1])
    spec = json.loads(os.environ.pop(SPEC_ENV))
    channel = socket.socket(fileno=spec["channel"])
    channel.set_inheritable(False)
    channel.setblocking(False)
    # The supervisor sends SIGUSR1 to a worker whose loop is blocked: faulthandler
    # writes every thread's stack to the log from C, which works even while the
    # Python code that blocks never gives the interpreter back.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    agent = WorkerAgent(channel, spec["interval"], spec["max_requests"],
                        spec.get("metrics", False))
    server_module.on_worker_ready = agent.ready
    options = spec["options"]
    if PASSWORD_ENV in os.environ:
        options["ssl_keyfile_password"] = os.environ.pop(PASSWORD_ENV)
    config = dataclasses.replace(Config.from_options(options, env={}), multiprocess=True)
    configure_logging(config)
    loader_module.log_tracebacks = False  # the supervisor logs them, once
    try:
        code = server_module.run(spec["app"], config)
        agent.final_report()
    except LoadError as exc:
        report = json.dumps({"error": str(exc), "details": exc.details})
        try:
            channel.settimeout(5.0)
            channel.sendall(b"error " + report.encode() + b"\n")
        except OSError:  # no supervisor to tell: say it here
            print(f"bivio: error: {exc}", file=sys.stderr, flush=True)
        code = exits.LOAD_ERROR
    sys.exit(code)


# -- the parent's side -------------------------------------------------------------------------


@dataclass(eq=False)
class Worker:
    """One worker process as the parent sees it.

    ``state``: ``starting`` (not ready yet), ``ready``, ``stopping`` (told to
    drain) or ``killing`` (blocked: stack dump asked, SIGKILL at ``deadline``).
    ``replaces``: the worker this one takes over from once ready (rolling restart).
    """

    proc: subprocess.Popen[bytes]
    channel: socket.socket
    reason: str
    last_beat: float
    state: str = "starting"
    replaces: Worker | None = None
    deadline: float | None = None
    eof: bool = False
    buffer: bytes = b""
    error: dict[str, Any] | None = None  # its ``error`` report: it could not load the app
    killed: bool = False  # SIGKILLed for not stopping in time
    number: int = 0  # its place among the workers, in its process title (worker 2)
    about: dict[str, str] | None = None  # its ``about`` report: mode and event loop
    metrics: dict[str, Any] | None = None  # its latest ``metrics`` report (--metrics)
    fresh: asyncio.Future[None] | None = None  # a scrape waiting for its next report

    @property
    def pid(self) -> int:
        return self.proc.pid


class Supervisor:
    """Keep ``config.workers`` workers serving ``app`` until told to stop."""

    def __init__(self, app: str, config: Config) -> None:
        self.app = app
        self.config = config
        self.target = config.workers or 1
        self.workers: list[Worker] = []
        self.to_replace: list[tuple[Worker, str]] = []
        self.listeners: list[socket.socket] = []
        self.stopping = False
        self.broken = False  # --reload: the code does not start; wait for the next change
        self.exit_code = 0
        self.interval = heartbeat_interval(config)
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.done: asyncio.Future[int] = None  # type: ignore[assignment]
        self._tick_handle: asyncio.TimerHandle | None = None
        self._booted = False
        self._announced = False  # the "serving on" banner, once the first worker is ready
        self.notify = systemd_notifier()  # sd_notify under systemd ($NOTIFY_SOCKET), or None
        self._reloading = False  # RELOADING=1 sent: READY=1 once the rolling restart is over
        # Load errors printed since the last reload or ready worker: N workers failing
        # on the same import error print it once.
        self._reported: set[str] = set()
        # --metrics: the counts of workers that have exited, and why workers were replaced.
        self.totals = Totals()
        self.restarts: dict[str, int] = {}
        self.metrics_server: Any = None
        self._figures: dict[str, Any] = aggregate(self.totals, [], {})  # the last scrape's

    # -- running ---------------------------------------------------------------------------

    def run(self) -> int:
        try:
            self._check_tls()  # once here, rather than every worker failing the same way
            # Every address, before any worker exists: all bound, or none and one line.
            self.listeners = bind_listeners(self.config)
            self._start_metrics()
        except StartupError as exc:
            close_listeners(self.listeners, self.config.addresses)
            logger.error("%s", exc)
            return exc.code
        addresses = self.config.addresses  # a SIGHUP keeps them (KEPT_ON_RELOAD)
        try:
            return asyncio.run(self._main())
        finally:
            if self.metrics_server is not None:
                self.metrics_server.shutdown()
                self.metrics_server.server_close()
            close_listeners(self.listeners, addresses)

    def _start_metrics(self) -> None:
        """``--metrics HOST:PORT``: the scrape listener, bound before any worker starts."""
        if self.config.metrics is None:
            return
        host, port = metrics_address(self.config.metrics)
        try:
            self.metrics_server = start_metrics_server(host, port, self._gather_for_scrape)
        except OSError as exc:
            raise StartupError(f"could not bind --metrics {self.config.metrics}: "
                               f"{exc.strerror or exc}") from None
        bound = self.metrics_server.server_address
        logger.info("Metrics on http://%s/metrics",
                    f"[{bound[0]}]:{bound[1]}" if ":" in bound[0] else f"{bound[0]}:{bound[1]}")

    def _gather_for_scrape(self) -> dict[str, Any]:
        """From the scrape's thread: the figures, gathered on the loop (see :meth:`_gather`)."""
        try:
            future = asyncio.run_coroutine_threadsafe(self._gather(), self.loop)
            self._figures = future.result(SCRAPE_WAIT + 5.0)
        except (RuntimeError, TimeoutError, concurrent.futures.TimeoutError):
            pass  # the loop is gone (shutting down) or stuck: the last figures will do
        return self._figures

    async def _gather(self) -> dict[str, Any]:
        """Ask every live worker for fresh counts, wait a moment for them, and sum."""
        waiting = []
        for worker in self.workers:
            if worker.state in ("ready", "stopping") and not worker.eof:
                if worker.fresh is None or worker.fresh.done():
                    worker.fresh = self.loop.create_future()
                    try:
                        worker.channel.send(b"metrics\n")
                    except OSError:
                        continue  # busy or gone: its last report will do
                waiting.append(worker.fresh)
        if waiting:
            await asyncio.wait(waiting, timeout=SCRAPE_WAIT)
        live = [(w.number, w.state, w.metrics) for w in self.workers]
        return aggregate(self.totals, live, self.restarts)

    async def _main(self) -> int:
        self.loop = asyncio.get_running_loop()
        self.done = self.loop.create_future()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGTTIN,
                    signal.SIGTTOU):
            self.loop.add_signal_handler(sig, self._on_signal, sig)
        # "serving on" comes once a worker is ready (_on_ready): not before the app loads.
        logger.info("Supervisor [%d] listening on %s, starting %d worker(s)", os.getpid(),
                    ", ".join(listener_url(s, self.config.tls) for s in self.listeners),
                    self.target)
        self._maintain()
        self._booted = True
        self._tick_handle = self.loop.call_later(TICK, self._tick)
        watcher: asyncio.Task[None] | None = None
        stop_watching = asyncio.Event()
        if self.config.reload:
            watcher = self.loop.create_task(self._watch(stop_watching))
        try:
            code = await self.done
        finally:
            if self._tick_handle is not None:
                self._tick_handle.cancel()
            if watcher is not None:
                stop_watching.set()
                with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                    await asyncio.wait_for(watcher, 5)
        logger.info("Shutdown complete")
        return code

    def _check_tls(self) -> None:
        """Build a TLS context from the ``--ssl-*`` files, only to see that it can be built.

        Each worker builds its own (and so reads renewed files on SIGHUP); the
        parent never serves TLS itself.
        """
        if self.config.tls:
            build_ssl_context(self.config)

    # -- workers ----------------------------------------------------------------------------

    def _spawn(self, reason: str, replaces: Worker | None = None) -> Worker:
        parent_end, child_end = socket.socketpair()
        parent_end.setblocking(False)
        options = worker_options(self.config, [s.fileno() for s in self.listeners])
        env = {k: v for k, v in os.environ.items() if k not in NOTIFY_ENV}  # systemd: ours
        password = options.pop("ssl_keyfile_password", None)
        if password is not None:
            env[PASSWORD_ENV] = password
        env[SPEC_ENV] = json.dumps({
            "app": self.app,
            "options": options,
            "channel": child_end.fileno(),
            "interval": self.interval,
            "max_requests": request_limit(self.config),
            "metrics": self.config.metrics is not None,
        })
        used = {w.number for w in self.workers}
        number = next(n for n in range(1, len(used) + 2) if n not in used)
        try:
            proc = subprocess.Popen(
                # The last word is all `ps` shows of what it runs (and its title, with
                # setproctitle): the options travel in the environment, not on argv.
                [sys.executable, "-c", WORKER_CODE, worker_title(number, self.app)],
                pass_fds=(*(s.fileno() for s in self.listeners), child_end.fileno()),
                stdin=subprocess.DEVNULL, start_new_session=True, env=env,
            )
        finally:
            child_end.close()
        worker = Worker(proc, parent_end, reason, time.monotonic(), replaces=replaces,
                        number=number)
        if reason in _RESTART_REASONS:
            self._count_restart(_RESTART_REASONS[reason])
        self.workers.append(worker)
        self.loop.add_reader(parent_end.fileno(), self._on_channel, worker)
        logger.info("Started worker [%d] (%s)", worker.pid, reason)
        return worker

    def _retire(self, worker: Worker) -> None:
        """Ask ``worker`` to stop accepting and drain (its own graceful shutdown)."""
        worker.state = "stopping"
        worker.deadline = (time.monotonic() + self.config.timeout_graceful_shutdown
                           + DRAIN_MARGIN)
        self.to_replace = [(w, r) for w, r in self.to_replace if w is not worker]
        try:
            worker.channel.send(b"stop\n")
        except OSError:
            pass  # already gone: its exit is noticed by the next tick

    def _maintain(self) -> None:
        """Start or stop workers until ``target`` are starting or ready."""
        if self.stopping:
            if not self.workers and not self.done.done():
                self.done.set_result(self.exit_code)
            return
        if self.broken:
            return
        live = [w for w in self.workers if w.state in ("starting", "ready")]
        count = len(live) - sum(1 for w in live if w.replaces is not None)
        while count < self.target:
            self._spawn("respawn" if self._booted else "start")
            count += 1
        surplus = count - self.target
        for worker in reversed(live):
            if surplus <= 0:
                break
            if worker.replaces is None:
                logger.info("Stopping worker [%d] (fewer workers asked)", worker.pid)
                self._retire(worker)
                surplus -= 1

    def _advance(self) -> None:
        """Rolling restart: start the next replacement once the previous one is ready."""
        if self.stopping:
            return
        if self.broken:
            self._reloaded()
            return
        if any(w.state == "starting" and w.replaces is not None for w in self.workers):
            return
        while self.to_replace:
            old, reason = self.to_replace.pop(0)
            if old in self.workers and old.state == "ready":
                self._spawn(reason, replaces=old)
                return
        self._reloaded()

    def _reloaded(self) -> None:
        """systemd: the rolling restart is over (done or aborted): ``READY=1`` again."""
        if self._reloading:
            self._reloading = False
            if self.notify is not None and not self.stopping:
                self.notify.ready(self._status())

    def _status(self) -> str:
        ready = sum(1 for w in self.workers if w.state == "ready")
        return (f"serving on {', '.join(listener_url(s, self.config.tls) for s in self.listeners)}"
                f": {ready} worker{'s' if ready != 1 else ''} ready")

    def _reload_all(self, reason: str) -> bool:
        """Replace every worker, one by one, each new one ready before an old one stops.

        The new workers read the TLS files again (renewed certificates): files
        that do not load abort the reload here, with the reason, rather than
        in every new worker.
        """
        if self.notify is not None:
            self._reloading = True
            self.notify.reloading(f"Reloading ({reason})")
        try:
            self._check_tls()
        except StartupError as exc:
            serving = any(w.state == "ready" for w in self.workers)
            logger.error("Reload aborted: %s.%s", exc,
                         " The running workers keep serving." if serving else "")
            self._reloaded()
            return False
        self.broken = False
        self._reported.clear()  # new code: its errors are news
        for worker in self.workers:
            if worker.state == "starting":
                self._retire(worker)  # it may have imported the old code
        self.to_replace = [(w, reason) for w in self.workers if w.state == "ready"]
        self._advance()
        self._maintain()
        return True

    def _reread_config(self) -> bool:
        """SIGHUP: read the config file again (as the command started, see
        :func:`bivio.core.configfile.reload_config`); the new workers get its options.
        False when it cannot be used: the running workers keep serving."""
        try:
            new = configfile.reload_config(self.config)
        except ConfigError as exc:
            logger.error("Reload aborted: %s. The running workers keep serving.", exc)
            return False
        if new is not None:
            changed = configfile.changes(self.config, new)
            if changed:
                logger.info("Options changed: %s", "; ".join(changed))
            self.config = new
        return True

    def _stop_all(self) -> None:
        self.stopping = True
        if self.notify is not None:
            self.notify.stop()
        self.to_replace.clear()
        for worker in self.workers:
            if worker.state in ("starting", "ready"):
                self._retire(worker)
        self._maintain()

    # -- events -----------------------------------------------------------------------------

    def _on_channel(self, worker: Worker) -> None:
        try:
            data = worker.channel.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            worker.eof = True
            self.loop.remove_reader(worker.channel.fileno())
            self._check_exit(worker)
            return
        self._on_lines(worker, data)

    def _on_lines(self, worker: Worker, data: bytes) -> None:
        worker.buffer += data
        *lines, worker.buffer = worker.buffer.split(b"\n")
        for line in lines:
            if line == b"beat":
                worker.last_beat = time.monotonic()
            elif line == b"ready":
                self._on_ready(worker)
            elif line == b"recycle":
                self._on_recycle(worker)
            elif line.startswith(b"about "):
                with contextlib.suppress(ValueError):
                    worker.about = json.loads(line[6:])
            else:
                _take_report(worker, line)

    def _drain(self, worker: Worker) -> None:
        """Read what an exited worker wrote last (its ``error``) before its channel closes."""
        while True:
            try:
                data = worker.channel.recv(65536)
            except OSError:  # BlockingIOError included: nothing more
                return
            if not data:
                return
            worker.buffer += data
            *lines, worker.buffer = worker.buffer.split(b"\n")
            for line in lines:
                _take_report(worker, line)

    def _report_error(self, worker: Worker) -> None:
        """Print a worker's load error as single-process mode does, once per distinct error."""
        text = (worker.error or {}).get("error")
        if not text or text in self._reported:
            return
        self._reported.add(text)
        details = (worker.error or {}).get("details")
        if details:
            logger.debug("%s\n%s", text, str(details).rstrip())
        print(f"bivio: error: {text}", file=sys.stderr, flush=True)

    def _on_ready(self, worker: Worker) -> None:
        if worker.state != "starting":
            return
        worker.state = "ready"
        worker.last_beat = time.monotonic()
        self._reported.clear()
        logger.info("Worker [%d] ready", worker.pid)
        if not self._announced:
            self._announce(worker)
        old, worker.replaces = worker.replaces, None
        if old is not None and old in self.workers and old.state == "ready":
            logger.info("Stopping worker [%d] gracefully (replaced by [%d])", old.pid, worker.pid)
            self._retire(old)
        self._advance()
        self._maintain()

    def _announce(self, worker: Worker) -> None:
        """The "serving on" banner, with what the first ready worker reported."""
        self._announced = True
        about = worker.about or {}
        count = f"{self.target} worker{'s' if self.target != 1 else ''}"
        if self.config.reload:
            count += " with --reload"
        for sock in self.listeners:
            logger.info("%s", banner(listener_url(sock, self.config.tls), self.config,
                                     about.get("mode", "?"), about.get("loop", "?"), count))
        if self.notify is not None:
            self.notify.ready(self._status())

    def _on_recycle(self, worker: Worker) -> None:
        if self.stopping or worker.state != "ready" or any(w is worker for w, _ in self.to_replace):
            return
        logger.info("Worker [%d] reached --limit-max-requests: replacing it", worker.pid)
        self.to_replace.append((worker, "recycle"))
        self._advance()

    def _tick(self) -> None:
        now = time.monotonic()
        timeout = self.config.timeout_worker_healthcheck
        for worker in list(self.workers):
            if self._check_exit(worker):
                continue
            if worker.deadline is not None and now >= worker.deadline:
                if worker.state == "stopping":
                    logger.warning("Worker [%d] did not stop in time: killing it", worker.pid)
                    worker.killed = True
                worker.deadline = None
                _kill(worker.pid, signal.SIGKILL)
            elif worker.state in ("ready", "stopping") and now - worker.last_beat > timeout:
                logger.error(
                    "Worker [%d] has not answered for %.1fs (--timeout-worker-healthcheck): "
                    "its event loop is blocked. Its stack follows; killing it and starting "
                    "a replacement.", worker.pid, now - worker.last_beat)
                worker.state = "killing"
                worker.deadline = now + KILL_GRACE
                _kill(worker.pid, signal.SIGUSR1)
        if self.notify is not None and self.notify.ping_due() and self._healthy(now):
            self.notify.ping()
        self._tick_handle = self.loop.call_later(TICK, self._tick)

    def _healthy(self, now: float) -> bool:
        """systemd's watchdog: some worker is starting, or ready and beating in time."""
        timeout = self.config.timeout_worker_healthcheck
        return any(w.state == "starting" or (w.state == "ready" and now - w.last_beat <= timeout)
                   for w in self.workers)

    def _check_exit(self, worker: Worker) -> bool:
        code = worker.proc.poll()
        if code is None:
            return False
        self.workers.remove(worker)
        if not worker.eof:
            self.loop.remove_reader(worker.channel.fileno())
            self._drain(worker)
        worker.channel.close()
        if worker.metrics is not None:  # its last counts stay in the totals
            self.totals.fold(worker.metrics)
            worker.metrics = None
        self.to_replace = [(w, r) for w, r in self.to_replace if w is not worker]
        for other in self.workers:
            if other.replaces is worker:
                other.replaces = None  # the old one is gone; the new one simply takes over
        how = describe_exit(code)
        if self.stopping and worker.state != "starting" and self.exit_code == exits.OK and (
                code == exits.ABORTED or worker.killed):
            self.exit_code = exits.ABORTED  # bivio's own shutdown cut requests off
        self._report_error(worker)
        if worker.state == "starting":
            self._boot_failed(worker, code, how)
        elif worker.state == "stopping" and (code == exits.ABORTED or worker.killed):
            logger.warning("Worker [%d] stopped (%s)", worker.pid, how)
        elif worker.state == "stopping":
            logger.info("Worker [%d] stopped (%s)", worker.pid, how)
        elif worker.state == "killing":
            self._count_restart("blocked")
            logger.info("Worker [%d] killed (%s)", worker.pid, how)
        elif self.stopping:
            logger.info("Worker [%d] exited (%s)", worker.pid, how)
        else:
            self._count_restart("crash")
            logger.error("Worker [%d] died unexpectedly (%s): starting a replacement",
                         worker.pid, how)
        self._maintain()
        self._advance()
        return True

    def _count_restart(self, reason: str) -> None:
        self.restarts[reason] = self.restarts.get(reason, 0) + 1

    def _boot_failed(self, worker: Worker, code: int, how: str) -> None:
        """A worker exited before it was ready: never respawn it blindly."""
        if self.stopping:
            logger.info("Worker [%d] exited before it was ready (%s)", worker.pid, how)
            return
        if self.config.reload:
            self.broken = True
            self.to_replace.clear()
            logger.error("Worker [%d] failed to start (%s; the reason is above). Waiting for "
                         "a file change to try again.", worker.pid, how)
            return
        if worker.reason == "reload":
            self.to_replace.clear()
            logger.error("Reload aborted: the new worker [%d] failed to start (%s; the reason "
                         "is above). The running workers keep serving.", worker.pid, how)
            return
        logger.error("Worker [%d] failed to start (%s; the reason is above): stopping bivio",
                     worker.pid, how)
        self.exit_code = code if code in (exits.LOAD_ERROR, exits.STARTUP_FAILED) \
            else exits.WORKER_FAILED
        self._stop_all()

    def _on_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if sig in (signal.SIGINT, signal.SIGTERM):
            if self.stopping:
                logger.warning("Second %s: closing every connection now", name)
                for worker in self.workers:
                    _kill(worker.pid, signal.SIGTERM)  # a worker's second signal forces
                return
            logger.info("Received %s, shutting down gracefully", name)
            self._stop_all()
            return
        if self.stopping:
            return
        if sig == signal.SIGHUP:
            logger.info("Received SIGHUP: replacing the workers one by one")
            old = self.config
            if not self._reread_config():
                return
            if not self._reload_all("reload"):
                self.config = old  # aborted: what the running workers were started with
        elif sig == signal.SIGTTIN:
            self.target += 1
            logger.info("Received SIGTTIN: %d worker(s) now", self.target)
            self._maintain()
        elif sig == signal.SIGTTOU:
            if self.target <= 1:
                logger.warning("Received SIGTTOU: already at one worker")
                return
            self.target -= 1
            logger.info("Received SIGTTOU: %d worker(s) now", self.target)
            self._maintain()

    async def _watch(self, stop: asyncio.Event) -> None:
        import watchfiles

        dirs = [str(Path(d).resolve()) for d in (self.config.reload_dir or (self.config.app_dir,))]
        missing = [d for d in dirs if not os.path.isdir(d)]
        if missing:
            logger.error("--reload-dir: no such directory: %s", ", ".join(missing))
            dirs = [d for d in dirs if d not in missing]
            if not dirs:
                return
        logger.info("Watching for changes in %s", ", ".join(dirs))
        watch_filter = ReloadFilter(self.config.reload_include, self.config.reload_exclude)
        # --reload-delay: reload once files have been quiet this long (watchfiles' step),
        # grouping at most 8 times that (at least 400 ms) of a long burst of changes.
        step = max(1, round(self.config.reload_delay * 1000))
        async for changes in watchfiles.awatch(*dirs, watch_filter=watch_filter,
                                               debounce=max(400, 8 * step), step=step,
                                               stop_event=stop):
            if self.stopping:
                return
            names = sorted({os.path.relpath(path) for _, path in changes})
            logger.info("Changes detected in %s: reloading", ", ".join(names[:5])
                        + (f" and {len(names) - 5} more" if len(names) > 5 else ""))
            self._reload_all("reload")


def _take_report(worker: Worker, line: bytes) -> None:
    """A worker's ``error`` (it could not load the app) or ``metrics`` (its counts) line."""
    if line.startswith(b"error "):
        with contextlib.suppress(ValueError):
            worker.error = json.loads(line[6:])
    elif line.startswith(b"metrics "):
        with contextlib.suppress(ValueError):
            worker.metrics = json.loads(line[8:])
        if worker.fresh is not None and not worker.fresh.done():
            worker.fresh.set_result(None)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass  # already gone


def supervise(app: Any, config: Config) -> int:
    """Run the supervisor for ``app`` (an import string); return the exit code."""
    if not isinstance(app, str):
        raise ConfigError("--workers, --reload and --limit-max-requests need the app as an "
                          "import string 'module:attr': every worker imports it")
    return Supervisor(app, config).run()
