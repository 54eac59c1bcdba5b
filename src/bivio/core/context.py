"""State one worker shares between its connections, and the connection side of the contract.

Connection protocols read their settings and the pre-encoded default headers
from here, register themselves (a :class:`Connection`) for graceful shutdown
and intake, start request handlers through :meth:`ServerContext.start_handler`
so in-flight requests can be counted (``--limit-concurrency``) and awaited on
shutdown, and report each finished response through :meth:`ServerContext.record`
(the access log today, metrics later: protocols write no log lines).

Intake: a handler that cannot take more work (the WSGI thread pool with every
thread busy) calls :meth:`ServerContext.pause_intake`; every connection then
stops *starting new streams* until :meth:`ServerContext.resume_intake`. How is
the protocol's business: HTTP/1.1 stops reading between requests (a connection
in the middle of a request keeps reading its body, so a running app is never
starved), so unread requests wait in the kernel's socket buffers rather than
in bivio's memory; a multiplexed protocol (HTTP/2) must keep reading (other
streams' bodies, window updates, pings) and instead defers or refuses new
streams (REFUSED_STREAM, a lower SETTINGS_MAX_CONCURRENT_STREAMS). The
protocol stays ignorant of why.

The pause is *lazy*: pausing sets a flag and touches no connection; each
connection reads the flag where it decides (HTTP/1.1 when a response is done,
HTTP/2 when a stream would start) and, if it holds back, registers in
:attr:`ServerContext.held`, the only connections a resume touches. A saturated
WSGI pool flips the pause often (every few requests under load), and visiting
every connection on each flip cost more than the requests themselves on a
worker with many keep-alive clients. The price: a connection idle when the pause
began may still read one request, which then waits for a thread like any other
(at most one per connection, as when the pause began in the middle of a request).
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .config import Config

if TYPE_CHECKING:
    from .stream import Stream


class StreamHandler(Protocol):
    """What answers streams: an adapter, the static files, the hybrid dispatcher.

    ``bind`` gives it the worker's context once, before the first stream (the
    WSGI pool pauses intake through it); ``shutdown`` runs once after the last
    stream finished (the WSGI pool stops its threads). Wrappers pass both on.
    """

    def __call__(self, stream: Stream) -> Awaitable[None]: ...

    def bind(self, ctx: ServerContext) -> None: ...

    def shutdown(self) -> None: ...


Handler = Callable[["Stream"], Awaitable[None]]


class Connection(Protocol):
    """What the worker asks of every live connection (HTTP/1.1, WebSocket, HTTP/2)."""

    def is_idle(self) -> bool:
        """No stream in progress: closing it now loses nothing."""
        ...

    @property
    def awaiting_first_request(self) -> bool:
        """Accepted but nothing received yet: shutdown waits for it a little."""
        ...

    def pause_intake(self) -> None:
        """Start no new stream until :meth:`resume_intake` (see the module docstring).

        A connection that holds back adds itself to ``ctx.held`` (and leaves it
        when it is lost), so the context's resume reaches it.
        """
        ...

    def resume_intake(self) -> None: ...

    def shutdown(self) -> None:
        """Graceful shutdown: finish what is in progress, take nothing new; idempotent."""
        ...

    def close_now(self) -> None:
        """Close at once, whatever is in progress (a second SIGTERM)."""
        ...


@dataclass(slots=True)
class ResponseInfo:
    """One finished response, as the per-response hooks see it."""

    client: tuple[str, int] | None
    method: str
    target: str
    http_version: str
    status: int
    sent: int  # body bytes
    duration: float  # seconds from the request head to the end of the response
    protocol: str  # "http/1.1", "h2", "websocket"
    interface: str  # "asgi", "wsgi", "static"; "-" when the server answered itself
    # The request's headers, by reference (nothing is copied or scanned per request):
    # read only by a hook that wants one, such as the JSON access log's request_id.
    headers: Sequence[tuple[bytes, bytes]] = ()

    def request_id(self) -> str | None:
        """The client's ``X-Request-ID`` (at most 200 characters), or None."""
        for name, value in self.headers:
            if name == b"x-request-id":
                return value[:200].decode("latin-1")
        return None


ResponseHook = Callable[[ResponseInfo], None]


class ServerContext:
    """Per-worker shared state; one instance per :class:`bivio.process.server.Server`."""

    def __init__(self, config: Config, handler: Handler) -> None:
        self.config = config
        self.handler = handler
        # The worker's event loop, set by the server once it runs (None: ask asyncio).
        # Kept here because asyncio.get_running_loop() costs a getpid() system call on
        # Python 3.11 (it checks for a fork), and the hot path would ask per request.
        self.loop: asyncio.AbstractEventLoop | None = None
        self.connections: set[Connection] = set()
        # Each running handler Task and the stream it answers (what a forced shutdown
        # names when it cancels one); a request started without a Task is here by the
        # future that stands for it (see start_handler).
        self.tasks: dict[asyncio.Future[None], Stream] = {}
        self.shutting_down = False
        # Requests started by this worker: the supervisor's worker agent reads it
        # for --limit-max-requests (a counter here costs one add per request).
        self.requests = 0
        # Event-loop stalls longer than --loop-warn, counted by the loop watchdog
        # (bivio.process.watchdog) from its own thread: what metrics will export.
        self.loop_stalls = 0
        self.intake_paused = False
        # Connections holding back because of the pause: what resume_intake() restarts.
        self.held: set[Connection] = set()
        # What metrics export (bivio.process.metrics reads them; nothing else does).
        # Bytes read from clients, counted where each protocol receives them.
        self.received_bytes = 0
        # Limits and timeouts enforced, by the flag that did it ("timeout-send"):
        # counted on the error paths only, see :meth:`limit_hit`.
        self.limit_counts: dict[str, int] = {}
        # Seconds intake has been paused (every WSGI thread busy), closed periods only;
        # :attr:`paused_since` is when the current pause began.
        self.paused_seconds = 0.0
        self.paused_since: float | None = None
        # The WSGI pool's (size, busy threads), set by the WSGI handler when it binds.
        self.thread_pool: Callable[[], tuple[int, int]] | None = None
        # Called with a ResponseInfo after every response; empty means nobody
        # listens, and protocols then build no record at all (the hot path).
        self.response_hooks: list[ResponseHook] = []
        # PEM of the certificate served over TLS (the ASGI tls extension's
        # server_cert); set by the server when it loads the certificate.
        self.tls_server_cert: str | None = None
        self.server_header = b"server: bivio\r\n" if config.server_header else b""
        self.extra_headers = b"".join(n + b": " + v + b"\r\n" for n, v in config.extra_headers)
        # A multiplexed connection (HTTP/2) runs at most this many handlers at
        # once; set by a handler with a bounded pool (WSGI: half its threads) so
        # one connection cannot take every thread. None: the protocol's own limit.
        self.streams_per_connection: int | None = None
        self.date_header = b""
        self.default_headers = b""
        self.default_header_pairs: list[tuple[bytes, bytes]] = []
        self._date_timer: asyncio.TimerHandle | None = None
        # Read per request: kept here, not looked up on the (frozen) config each time.
        self._reset_contextvars = config.reset_contextvars
        # What each request's Task starts from (a copy of it, or with
        # --reset-contextvars an empty one): the context as it is before serving.
        # Not the current context at start_handler: that is a handler's own when the
        # next pipelined request, or a queued HTTP/2 stream, starts from its last send,
        # and a context variable one request set would show in the next.
        self._base_context = contextvars.copy_context()
        self.eager_stream: Stream | None = None  # see start_handler
        self._limit_concurrency = config.limit_concurrency
        self._task_done_cb = self._task_done
        # The handler's start without a Task (see start_handler), looked up again
        # whenever ``handler`` is another object than the one it was found on.
        self._nowait_of: Any = None
        self._start_nowait: Any = None
        self._ends_its_task = False
        self.refresh_date()

    def refresh_date(self) -> None:
        """Re-encode the Date header; called once a second by the loop, not per request."""
        if self.config.date_header:
            self.date_header = b"date: " + email.utils.formatdate(usegmt=True).encode() + b"\r\n"
        self.default_headers = self.server_header + self.date_header + self.extra_headers
        # The same headers as (name, value) pairs, for HTTP/2's header blocks.
        self.default_header_pairs = [
            (line.split(b": ", 1)[0], line.split(b": ", 1)[1])
            for line in self.default_headers.split(b"\r\n") if line
        ]

    def start_date_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        self.refresh_date()
        delay = 1.0 - (time.time() % 1.0)
        self._date_timer = loop.call_later(delay, self.start_date_timer, loop)

    def stop_date_timer(self) -> None:
        if self._date_timer is not None:
            self._date_timer.cancel()
            self._date_timer = None

    def record(self, client: tuple[str, int] | None, method: str, target: str,
               http_version: str, status: int, sent: int, duration: float, protocol: str,
               interface: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        """Report one finished response to every hook (call only if ``response_hooks``)."""
        info = ResponseInfo(client, method, target, http_version, status, sent, duration,
                            protocol, interface, headers)
        for hook in self.response_hooks:
            hook(info)

    def limit_hit(self, flag: str) -> None:
        """Count one enforcement of a limit or timeout, named by its flag without the dashes
        (``"timeout-send"``): each is logged where it happens and counted here."""
        self.limit_counts[flag] = self.limit_counts.get(flag, 0) + 1

    @property
    def in_flight(self) -> int:
        return len(self.tasks)

    def over_capacity(self) -> bool:
        limit = self._limit_concurrency
        return limit is not None and len(self.tasks) >= limit

    def pause_intake(self) -> None:
        """Start no new streams on any connection (lazily: see the module docstring)."""
        if not self.intake_paused:
            self.intake_paused = True
            self.paused_since = time.monotonic()

    def resume_intake(self) -> None:
        """End the pause: the connections that held back (and only they) go on."""
        if self.intake_paused:
            self.intake_paused = False
            if self.paused_since is not None:
                self.paused_seconds += time.monotonic() - self.paused_since
                self.paused_since = None
        if self.held:
            held, self.held = self.held, set()
            for conn in held:
                conn.resume_intake()

    def start_handler(self, stream: Stream) -> asyncio.Future[None] | None:
        """Run the handler for ``stream`` in a Task; eagerly where Python allows it.

        Most requests (a hello view, a cached page) complete without ever
        suspending. On Python >= 3.12 the Task starts *eagerly*: its first step
        runs right here, so a handler that never waits finishes before this
        returns and costs no scheduling round-trip. It is still a real Task
        while it runs, which matters: anyio (Starlette, FastAPI) and other
        libraries rely on ``asyncio.current_task()``, so running a bare
        coroutine step outside a Task is not an option (it broke every
        Starlette app using a task group or BaseHTTPMiddleware). On 3.11 the
        Task is scheduled as usual.

        A handler may also offer ``start_nowait(stream)``: it starts the request
        without a Task when it can (the WSGI adapter for a bodiless HTTP/1.1
        request: the app runs on a thread, and the loop only waits for its
        answer, by callback) and returns the future that stands for it, which is
        counted in :attr:`tasks` like a Task (``--limit-concurrency``, graceful
        shutdown) and cancelled to give the request up (a forced shutdown); None
        when it cannot, and the Task is made as usual.

        A handler whose ``ends_its_task`` is true calls :meth:`task_ended` as its
        coroutine ends (in a ``finally``): its Task gets no done callback, which
        cost a loop round trip per request (a handle scheduled, run and freed,
        several thousand instructions) for one line of bookkeeping.

        Returns the Task (or that future), or None if the handler finished.
        """
        self.requests += 1
        handler = self.handler
        if handler is not self._nowait_of:
            self._nowait_of = handler
            self._start_nowait = getattr(handler, "start_nowait", None)
            self._ends_its_task = bool(getattr(handler, "ends_its_task", False))
        if self._start_nowait is not None:
            started = self._start_nowait(stream)
            if started is not None:
                self.tasks[started] = stream
                return started
        return self._run_task(handler(stream), stream, self._ends_its_task)

    def task_ended(self) -> None:
        """The handler running in the current Task ends (its ``finally``): the Task
        leaves :attr:`tasks` (see ``ends_its_task`` in :meth:`start_handler`).

        A Task cancelled before its first step never runs its handler, so whoever
        cancels one also calls :meth:`forget_when_done`.
        """
        loop = self.loop
        current = _CURRENT_TASKS.get(loop) if _CURRENT_TASKS is not None and loop is not None \
            else _current_task(loop)
        self.tasks.pop(current, None)

    def forget_when_done(self, task: asyncio.Future[None]) -> None:
        """``task``, one of :attr:`tasks`, is being cancelled: it leaves :attr:`tasks`
        once done, even if its handler never started (see :meth:`task_ended`)."""
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Future[None]) -> None:
        self.tasks.pop(task, None)

    def run_task(self, coro: Coroutine[Any, Any, None],
                 stream: Stream) -> asyncio.Task[None] | None:
        """Run ``coro``, the handling of ``stream``, in a Task counted in :attr:`tasks`
        (see :meth:`start_handler`); None if it finished in its eager first step."""
        return self._run_task(coro, stream, False)

    def _run_task(self, coro: Coroutine[Any, Any, None], stream: Stream,
                  ends_itself: bool) -> asyncio.Task[None] | None:
        """:meth:`run_task` (compiled: an inline C call from :meth:`start_handler`)."""
        loop = self.loop or asyncio.get_running_loop()
        # --reset-contextvars: an empty context instead of a copy of the server's.
        context = (contextvars.Context() if self._reset_contextvars
                   else self._base_context.copy())
        if loop.get_task_factory() is not None:  # the app's own (instrumentation, say)
            task = (loop.create_task(coro, name=_TASK_NAME, context=context)  # type: ignore[arg-type]
                    if _TASK_CONTEXT
                    else context.run(loop.create_task, coro, name=_TASK_NAME))  # type: ignore[arg-type]
        elif _EAGER:
            # The stream whose Task is in its first step, for the --loop-warn watchdog:
            # the Task is in self.tasks only once that step returns.
            outer, self.eager_stream = self.eager_stream, stream
            try:
                task = _Task(coro, loop=loop, eager_start=True, context=context,
                             name=_TASK_NAME)
            finally:
                self.eager_stream = outer
            if task.done():
                if not task.cancelled() and task.exception() is not None:
                    _report(task.exception())  # type: ignore[arg-type]
                return None
        elif _TASK_CONTEXT:  # what the loop's create_task() does, one call fewer
            # A name given: Python 3.11 formats a new "Task-<n>" for each one otherwise.
            # The loop given: without it the Task asks for the running loop, which on
            # Python 3.11 costs a getpid() system call every time.
            task = _Task(coro, loop=loop, context=context, name=_TASK_NAME)
        else:  # Python 3.10's Task takes no context: create it inside the new one
            task = context.run(loop.create_task, coro, name=_TASK_NAME)  # type: ignore[arg-type]
        self.tasks[task] = stream
        if not ends_itself:
            task.add_done_callback(self._task_done_cb)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            _report(task.exception())  # type: ignore[arg-type]


_EAGER = sys.version_info >= (3, 12)
_TASK_CONTEXT = sys.version_info >= (3, 11)  # asyncio.Task(..., context=)
_Task = asyncio.Task
# Every request's Task has this name (asyncio.current_task().get_name()): it tells a
# request handler from the app's own Tasks in a dump of asyncio.all_tasks().
_TASK_NAME = "bivio-request"
_current_task = asyncio.current_task
# Python 3.11's current_task() is Python code around this dict (3.12's is C, and
# the dict may go): read directly where it is one, about 1,000 instructions less.
# (Compiled, the name is a C variable typed dict (context.pxd): only a dict or None
# may be assigned to it.)
_found = getattr(asyncio.tasks, "_current_tasks", None)
_CURRENT_TASKS: dict[Any, Any] | None = (
    _found if isinstance(_found, dict) and sys.version_info < (3, 12) else None)
del _found


def _report(exc: BaseException) -> None:
    """An error escaping the handler itself: let the loop report (or re-raise) it."""
    loop = asyncio.get_running_loop()
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        loop.call_soon(_reraise, exc)
        return
    loop.call_exception_handler({"message": "Unhandled exception in a request handler",
                                 "exception": exc})


def _reraise(exc: BaseException) -> None:
    raise exc
