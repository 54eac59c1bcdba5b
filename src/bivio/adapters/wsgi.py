"""The WSGI adapter: runs a PEP 3333 application over any stream, on a thread pool.

Like :mod:`bivio.asgi` it sits on the stream contract (:mod:`bivio.stream`) and
knows nothing about HTTP/1.1 framing, so it runs unchanged over HTTP/2 later.

How a request flows, and why it is shaped this way:

- No thread is given to a request before its body is in hand. A request with a
  body is first read whole on the event loop (:func:`_read_body`): into memory up
  to ``SPOOL_MEMORY``, into a temporary file beyond, within the protocol's
  ``--limit-request-body``. A client that trickles its body, or leaves in the
  middle, costs a buffer and no thread; the app then gets ``wsgi.input`` as a
  file positioned at 0 and ``CONTENT_LENGTH`` set to the real size (so chunked
  uploads have one too). ``--wsgi-body stream`` keeps the old way for bodies of
  known length: the app pulls ``wsgi.input`` from the socket as it reads (see
  :class:`WSGIInput`), holding its thread for as long as the client takes.
  Chunked bodies are read on the loop first in both modes.
- The loop-side handler then hands the call to the worker's thread pool. When
  every thread is busy the call waits in the pool's queue, and a thread that
  finishes takes the next call itself, with the GIL it already holds: under
  saturation requests run back to back without a context switch to the loop and
  back for each (waiting on the loop for a free thread cost 1.3 context switches
  and about a quarter of the CPU a request on WSGI hello; 0.13 now). Once more than
  ``QUEUE_BEFORE_PAUSE`` calls wait there, the handler asks the server context to
  pause intake (:meth:`bivio.context.ServerContext.pause_intake`): connections
  stop reading new requests at their next request boundary, so a flood leaves
  unread requests in the kernel's socket buffers instead of an unbounded queue in
  memory. Intake resumes once the queue is down to half that (hysteresis: a
  saturated pool does not flip per request). Below the mark a queued call costs a
  few kilobytes; pausing costs two epoll changes and some Python per connection
  and request, which is why the pause waits for a real flood (an HTTP/1.1 client
  has at most one request waiting anyway). A call whose client left while it was
  queued is not run.
- The app runs in a pool thread; everything the app does that needs the socket
  (reading ``wsgi.input``, writing the response) goes through one small
  :class:`_Exchange` per request: the thread appends items (head, data, file,
  read request, end) under a lock and wakes the loop only when the loop side is
  idle; the loop side drains every queued item in one go. The wake-ups of all
  requests go through one queue per loop (:class:`_Wakeups`): threads that finish
  while the loop is busy share one ``call_soon_threadsafe``. A small response
  that is a list of bytes (or Django's ``HttpResponse``, a list underneath) is
  one ``_WHOLE`` item; for a plain list it travels with ``_END``, so the whole
  request costs one hand-off to the thread and one back. A generator costs one
  hop per chunk only when the loop keeps up, because chunks produced while the
  loop is busy travel together.
- Backpressure both ways: the thread waits once ``HIGH_WATER`` response bytes are
  queued and resumes at ``LOW_WATER``. A client that pushes back meanwhile (the
  loop's send to it is suspended: the socket's buffer is above its high-water
  mark) does not hold the thread: the thread writes the rest of the body to a
  per-response temporary file (``--wsgi-response-buffer`` bytes at most, and
  ``--wsgi-spool-max`` for the whole worker, then it blocks as before) and
  finishes; its slot is released when it is done, while the loop sends the spool
  (``os.pread``, in order) as the client reads. The rule is an event (a send that
  waits), not a clock, so a busy loop never makes a spool for a client that
  reads. Small responses and clients that keep up never touch a file. A
  ``wsgi.file_wrapper`` over a regular file is handed to the loop (a duplicate of
  its descriptor) and sent from there; the thread does not wait for it. In stream mode
  ``wsgi.input`` holds at most one chunk beyond what the app asked for, and the
  protocol pauses the socket while the stream's own buffer is full.
- Bounded copies: no more than ``JOIN_MAX`` response bytes are ever joined into
  one new ``bytes``. A large list response goes out item by item (the app's own
  objects, no second copy of the body); a small one is joined and costs one hop.
- A client that goes away turns the app's next ``wsgi.input`` read or
  ``write``/yield into :class:`bivio.stream.ClientDisconnected` (an ``OSError``),
  so a thread blocked on a vanished client is freed; ``close()`` is always called
  in the app's thread.
"""

from __future__ import annotations

import asyncio
import io
import os
import queue
import re
import stat
import tempfile
import threading
import types
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable, Iterator
from types import TracebackType
from typing import Any

from ..core.config import Config
from ..core.context import ServerContext
from ..core.headers import valid_name, valid_value
from ..core.logs import logger
from ..core.paths import app_path
from ..core.stream import ClientDisconnected, Headers, Stream, send_plain

HIGH_WATER = 256 * 1024  # queued response bytes before the app's write/yield blocks
LOW_WATER = 64 * 1024
SPOOL_MEMORY = 1024 * 1024  # request body kept in memory before spilling to a temporary file
SPILL_WRITE = 256 * 1024  # bytes gathered before each write to that file (few, large writes)
JOIN_MAX = 64 * 1024  # most response bytes joined into one new bytes object
RESPONSE_BUFFER = 64 * 1024 * 1024  # --wsgi-response-buffer default: a response's spool cap
SPOOL_MAX = 1024 * 1024 * 1024  # --wsgi-spool-max default: all the spools of a worker
SPOOL_READ = 64 * 1024  # bytes the loop reads from a response spool per send
QUEUE_BEFORE_PAUSE = 256  # calls waiting for a thread before intake pauses (a few KB each)

# Items an app thread posts to the loop (first element of each tuple). ``_LAST`` follows
# the last ``_DATA`` of a body the thread knows is complete (a list response), in the
# same post, so the stream learns the body ended with it without waiting for ``_END``.
# ``_WHOLE`` is a head and a complete body in one item (``_START``, ``_DATA``, ``_LAST``
# in one): what a small list response, the common case, posts.
_START, _DATA, _FILE, _READ, _END, _FAIL, _LAST, _SPOOL, _WHOLE = range(9)

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "trailers", "transfer-encoding", "upgrade",
})
_STATUS = re.compile(r"([2-9][0-9][0-9])(?: [^\x00-\x1f\x7f]*)?")

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def default_threads() -> int:
    """``--threads`` default: Python's own choice for I/O-bound pools (ThreadPoolExecutor)."""
    return min(32, (os.cpu_count() or 1) + 4)


class WSGIError(Exception):
    """The application broke the WSGI contract; the message is the log line."""


# -- the loop <-> thread hand-off ---------------------------------------------------------


def _wake(fut: asyncio.Future[None]) -> None:
    try:
        fut.set_result(None)
    except asyncio.InvalidStateError:  # cancelled meanwhile (given up): nobody waits
        return
    if type(fut) is _FirstPost:
        # A request started without a Task: answered here, in this same callback
        # (compiled, ``exchange`` is typed: a direct call, no bound method made).
        exchange = fut.exchange
        exchange._first_posted(fut)


class _FirstPost(asyncio.Future):  # type: ignore[type-arg]
    """What stands for a request started without a Task (:meth:`WSGIHandler.start_nowait`)
    in ``ctx.tasks``, until the thread's first post: a future nobody awaits.

    The thread's wake-up answers the request itself (:func:`_wake`) instead of
    completing the future and letting a done callback answer one loop round trip
    later, and cancelling it (a forced shutdown) gives the request up at once.
    Neither needs a callback: one fewer per request, and one fewer trip through
    the loop.
    """

    __slots__ = ("exchange",)
    exchange: _Exchange  # set by its maker (an __init__ of its own costs a super() call)

    def cancel(self, msg: Any = None) -> bool:
        if not super().cancel(msg):
            return False  # answered already (or cancelled before)
        self.exchange._first_cancelled(self)
        return True


class _Wakeups:
    """The loop's wake-ups from app threads, one loop callback for all that come together.

    A thread's post wakes the loop side with :func:`_wake` on the waiting future
    (see :meth:`_Exchange.post`). Each ``call_soon_threadsafe`` is a handle made, queued,
    run and freed, and on asyncio's own loop a byte written to its self-pipe (a system
    call, which also lets the GIL go): per request, at every request. Here a thread
    queues the future, and only the one that finds no drain scheduled calls the loop;
    the drain wakes every future queued by then. Under load that is one call for a
    batch of requests, where each of the pool's threads finishes one.

    No wake-up is lost: the drain clears :attr:`scheduled` before it looks at the
    queue, so a future queued after that look finds the flag clear and schedules the
    next drain. (``deque.append`` and ``popleft`` are atomic under the GIL.)

    A closed loop raises for the post that finds no drain scheduled, as
    ``call_soon_threadsafe`` always did. If the loop closes with a drain still queued
    (a forced shutdown), later posts find :attr:`scheduled` set and return quietly;
    nothing waits on them, since that shutdown abandons every exchange (which wakes
    any thread waiting in ``_wait``) and the pool's threads are daemons. The same
    window existed before batching, between a successful ``call_soon_threadsafe``
    and the loop closing.
    """

    __slots__ = ("loop", "ready", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ready: deque[asyncio.Future[None]] = deque()
        self.scheduled = False  # a drain is in the loop's queue (set by threads, cleared by it)

    def post(self, fut: asyncio.Future[None]) -> None:
        """Thread side: wake ``fut``'s waiter on the loop. RuntimeError: the loop is closed."""
        self.ready.append(fut)
        if not self.scheduled:
            self.scheduled = True
            try:
                self.loop.call_soon_threadsafe(self.drain)
            except RuntimeError:
                self.scheduled = False
                raise

    def drain(self) -> None:
        """Loop side: wake the futures queued so far (later ones schedule their own drain,
        so a stream of posts never keeps the loop in this callback)."""
        self.scheduled = False
        ready = self.ready
        for _ in range(len(ready)):
            fut = ready.popleft()
            try:
                _wake(fut)
            except Exception as exc:  # a bug: report it as the loop would, wake the others
                self.loop.call_exception_handler({
                    "message": "WSGI wake-up failed", "exception": exc, "future": fut})


def _first_step(send: Awaitable[None]) -> tuple[Any, Any] | None:
    """Run a send's first step here: None when it is done, else ``(coroutine, what it yielded)``.

    A stream's send returns at once while the client takes what it is given and
    suspends when the client pushes back (the socket's buffer is above its
    high-water mark, an HTTP/2 window is shut). That suspension, an event and not
    a clock, is what tells the app thread to spool instead of waiting, so the
    pump must see it: it steps the send itself and, only when it suspends, awaits
    the rest through :func:`_watch_rest`. A send the client takes at once (the
    usual case) costs no wrapper at all.
    """
    coro = send if type(send) is _COROUTINE else send.__await__()
    try:
        return coro, coro.send(None)  # type: ignore[union-attr]
    except StopIteration:
        return None


_COROUTINE = types.CoroutineType


@types.coroutine
def _watch_rest(coro: Any, yielded: Any,
                on_block: Callable[[bool], None]) -> Generator[Any, Any, None]:
    """Await the rest of a send whose first step suspended (it yielded ``yielded``), telling
    ``on_block(True)`` now and ``on_block(False)`` once it is over (see :func:`_first_step`)."""
    on_block(True)
    try:
        while True:
            try:
                value = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # CancelledError (forced shutdown) goes on in
                try:
                    yielded = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    yielded = coro.send(value)
                except StopIteration:
                    return
    finally:
        on_block(False)


class _SpoolBudget:
    """The disk all of a worker's response spools may hold together (``--wsgi-spool-max``).

    Shared by the app threads (which take before they write) and the loop (which
    gives back when a spool is closed), hence the lock. A thread refused here
    stops spooling and waits for its client, as it would beyond its own
    ``--wsgi-response-buffer``: many slow readers of large responses cannot fill
    the disk.
    """

    __slots__ = ("lock", "left")

    def __init__(self, total: int) -> None:
        self.lock = threading.Lock()
        self.left = total

    def take(self, size: int) -> bool:
        """Reserve ``size`` bytes; False (nothing reserved) when they are not there."""
        with self.lock:
            if size > self.left:
                return False
            self.left -= size
            return True

    def give(self, size: int) -> None:
        with self.lock:
            self.left += size


# Looked up once: ``threading.Lock`` is a module attribute lookup per request.
_new_lock = threading.Lock


class _Exchange:
    """One request's mailbox between its app thread and the loop.

    The thread calls :meth:`post`, :meth:`read` and :meth:`send_file`; the loop
    runs :meth:`pump`. Only ``items``/``pending``/``waiter``/``result`` are shared,
    always under ``lock``; a thread that must wait uses a condition created on
    first need (most requests never wait).

    The response spool (``spool_cap`` > 0, ``--wsgi-response-buffer``): when
    ``HIGH_WATER`` bytes are queued and the loop's send to the client is
    suspended (``blocked``: the stream pushes back because the client does not
    read) before they drained to ``LOW_WATER``, the thread stops waiting and
    writes the rest of the body into an anonymous temporary file, itself, up to
    ``spool_cap`` bytes and within the worker's ``budget`` (then it blocks as
    before), posting ``_SPOOL`` ranges that the loop reads back with
    ``os.pread`` and sends as the client reads. No clock decides: a client that
    reads never blocks a send, however late the loop gets to it.
    The thread thus finishes (and ``close()`` runs) when the app is done
    producing; ``on_done`` (the handler's slot release) is then called on the
    loop at once, not when the pump ends. The file is closed by whichever side
    finishes last (``thread_done``/``pump_done``, under ``lock``), so it is never
    closed under the thread's writes.

    A ``wsgi.file_wrapper`` file (:meth:`post_file`): the thread hands the loop
    a duplicate descriptor (``file_fd``, the loop's alone to close, once) and
    does not wait for it to be sent, so the same early release applies.
    """

    __slots__ = ("loop", "stream", "lock", "cond", "items", "pending", "waiter", "gone",
                 "result", "has_result", "thread_waiting", "spool", "spool_cap", "spooled",
                 "spooling", "thread_done", "pump_done", "on_done", "released", "budget",
                 "blocked", "file_fd", "nowait", "ctx", "wakeups")

    def __init__(self, loop: asyncio.AbstractEventLoop, stream: Stream, spool_cap: int = 0,
                 on_done: Callable[[], None] | None = None,
                 budget: _SpoolBudget | None = None) -> None:
        _init_exchange(self, loop, stream, spool_cap, on_done, budget, _Wakeups(loop))

    # -- thread side -----------------------------------------------------------------

    def post(self, *items: tuple[Any, ...], size: int = 0) -> None:
        """Queue items for the loop; block while too much response data is queued."""
        with self.lock:
            if self.gone or self.stream.disconnected:
                self.gone = True
                raise ClientDisconnected("client disconnected")
            self.items.extend(items)
            self.pending += size
            fut, self.waiter = self.waiter, None
            full = self.pending > HIGH_WATER
        if fut is not None:
            self._wake_loop(fut)
        if full:
            if self.spooled < self.spool_cap:
                # A client that reads drains the queue: no file, however slow the loop.
                # One that pushes back (a send waits on it) makes the thread spool the
                # rest instead of waiting for it.
                self._wait(lambda: self.pending <= LOW_WATER or self.blocked)
                with self.lock:
                    self.spooling = self.pending > LOW_WATER
                return
            self._wait(lambda: self.pending <= LOW_WATER)

    def post_data(self, data: bytes, last: bool = False) -> None:
        """Queue response bytes: in memory, or in the spool once the client stopped reading.

        ``last``: the body is complete with these bytes (``_LAST`` goes with them).
        """
        if self.spooling and self._spool(data, last):
            return
        if last:
            self.post((_DATA, data), (_LAST,), size=len(data))
        else:
            self.post((_DATA, data), size=len(data))

    def _spool(self, data: bytes, last: bool) -> bool:
        """Write ``data`` to the spool and post its range; False: over the cap (or no file)."""
        size = len(data)
        offset = self.spooled
        budget = self.budget
        if offset + size > self.spool_cap or (budget is not None and not budget.take(size)):
            # A cap (this response's, or the worker's): from here on the thread
            # waits for the client.
            self.spooling = False
            self.spool_cap = 0
            return False
        spool = self.spool
        try:
            if spool is None:
                spool = tempfile.TemporaryFile(prefix="bivio-response-",  # noqa: SIM115
                                               buffering=0)
                with self.lock:
                    self.spool = spool  # closed by finish() or pump(), whichever is last
            fd = spool.fileno()
            view = memoryview(data)
            done = 0
            while done < size:
                done += os.pwrite(fd, view[done:], offset + done)
        except OSError as exc:  # disk full, no $TMPDIR: wait for the client instead
            logger.error("WSGI response could not be spooled: %s", exc)
            if budget is not None:
                budget.give(size)
            self.spooling = False
            self.spool_cap = 0
            return False
        with self.lock:
            self.spooled = offset + size  # what the budget gets back when the file closes
        with self.lock:
            if self.gone or self.stream.disconnected:
                self.gone = True
                raise ClientDisconnected("client disconnected")
            self.items.append((_SPOOL, offset, size))
            if last:
                self.items.append((_LAST,))
            fut, self.waiter = self.waiter, None
        if fut is not None:
            self._wake_loop(fut)
        return True

    def post_file(self, head: tuple[Any, ...], fd: int, offset: int, count: int) -> None:
        """Hand a file_wrapper's file to the loop, with the head; do not wait for it.

        ``fd`` is a duplicate descriptor the loop now owns (it closes it once the
        file is sent, or the response is abandoned): the app's ``close()`` can run
        at once and the thread go back to the pool while a slow client still reads
        (:meth:`finish` then releases the slot early, as for a spool). On
        ``ClientDisconnected`` nothing was handed over: the caller closes ``fd``.
        """
        with self.lock:
            if self.gone or self.pump_done or self.stream.disconnected:
                self.gone = True
                raise ClientDisconnected("client disconnected")
            self.file_fd = fd
            self.items.extend((head, (_FILE, fd, offset, count)))
            fut, self.waiter = self.waiter, None
        if fut is not None:
            self._wake_loop(fut)

    def _drop_file(self) -> None:
        """Close the file_wrapper's duplicate descriptor, once (whoever comes first)."""
        with self.lock:
            fd, self.file_fd = self.file_fd, -1
        if fd >= 0:
            os.close(fd)

    def finish(self, *items: tuple[Any, ...], final: bool = False, size: int = 0) -> None:
        """Post the last items (``_FAIL``, ``_END``), even after the client left; never raises.

        ``size``: response bytes among them (a whole small response posted with
        ``_END``); the pump subtracts them as it sends, as for :meth:`post`.

        ``final``: the thread is done with this exchange (it posts ``_END``). With a
        spool or a file the loop may still be sending, so the slot is released now
        (one more hop to the loop, only then) and a spool is closed if the pump
        ended first.
        """
        self._finish(items, final, size)

    def _finish(self, items: tuple[tuple[Any, ...], ...], final: bool, size: int) -> None:
        """:meth:`finish` with its items in one tuple (the thread's own, cheaper call)."""
        spool = None
        release = False
        # acquire() and release() rather than ``with``: compiled, a ``with`` binds the
        # lock's __enter__ and __exit__ anew each time (two method objects made and
        # freed, once per request here); a method call binds nothing.
        lock = self.lock
        lock.acquire()
        try:
            self.items.extend(items)
            self.pending += size
            fut, self.waiter = self.waiter, None
            if final:
                self.thread_done = True
                if self.spool is not None and self.pump_done:
                    spool, self.spool = self.spool, None
                    self._give_back()
                elif fut is None and not self.pump_done and (self.spool is not None
                                                             or self.file_fd >= 0):
                    release = True  # the pump is busy (sending a spool, a file): free the slot
        finally:
            lock.release()
        if fut is not None:
            self._wake_loop(fut)
        elif release:
            try:
                self.loop.call_soon_threadsafe(self.release)
            except RuntimeError:  # the loop is closed: nothing left to release
                pass
        if spool is not None:
            spool.close()

    def _wake_loop(self, fut: asyncio.Future[None]) -> None:
        """Wake the loop side; a loop already closed (forced shutdown) has no one to wake."""
        try:
            self.wakeups.post(fut)
        except RuntimeError:  # the loop is closed: the pump was cancelled long ago
            with self.lock:
                self.gone = True
            self._drop_file()  # nobody is left to send it

    def _wait(self, ready: Callable[[], bool]) -> None:
        """Wait until ``ready()``, with no deadline: only the loop's events end it."""
        with self.lock:
            if self.cond is None:
                self.cond = threading.Condition(self.lock)
            self.thread_waiting = True
            try:
                while not ready() and not self.gone:
                    self.cond.wait()
            finally:
                self.thread_waiting = False
            if self.gone and not self.has_result:
                raise ClientDisconnected("client disconnected")

    def call(self, item: tuple[Any, ...]) -> Any:
        """Post ``item`` and wait for the loop's answer (a body chunk)."""
        self.post(item)
        self._wait(lambda: self.has_result)
        with self.lock:
            result, self.result, self.has_result = self.result, None, False
        if isinstance(result, BaseException):
            raise result
        return result

    # -- loop side ---------------------------------------------------------------------

    def release(self) -> None:
        """Call ``on_done`` once: when the thread finished, or at the latest when the pump did."""
        if not self.released:
            self.released = True
            if self.on_done is not None:
                self.on_done()

    def end_pump(self) -> None:
        """The pump is over: close what the loop owns (a file_wrapper's descriptor not
        sent) and the spool if the thread is done with it."""
        if self.thread_done and self.spool is None and self.file_fd < 0:
            # The usual end: the thread is done (it set thread_done under the lock this
            # side took since) and left nothing for the loop to close.
            self.pump_done = True
            return
        spool = None
        with self.lock:
            self.pump_done = True
            if self.thread_done and self.spool is not None:
                spool, self.spool = self.spool, None
                self._give_back()
        self._drop_file()
        if spool is not None:
            spool.close()

    def _give_back(self) -> None:
        """The spool is being closed (under ``lock``): its bytes go back to the worker's budget."""
        if self.budget is not None and self.spooled:
            self.budget.give(self.spooled)
            self.spooled = 0

    def _set_blocked(self, blocked: bool) -> None:
        """The loop's send waits on the client (or no longer does): wake a thread that
        waits for either the queue to drain or this."""
        with self.lock:
            self.blocked = blocked
            if blocked and self.thread_waiting and self.cond is not None:
                self.cond.notify_all()

    async def _send_spool(self, offset: int, size: int, last: bool) -> None:
        """Send a spooled range, ``SPOOL_READ`` bytes at a time, as the client reads."""
        fd = self.spool.fileno()
        end = offset + size
        send = self.stream.send_body
        while offset < end:
            chunk = os.pread(fd, min(SPOOL_READ, end - offset), offset)
            if not chunk:
                raise OSError("the response spool is shorter than what was written to it")
            offset += len(chunk)
            await send(chunk, not last or offset < end)

    def _answer(self, result: Any) -> None:
        with self.lock:
            self.result = result
            self.has_result = True
            if self.cond is not None:
                self.cond.notify_all()

    def _abandon(self, error: BaseException | None = None) -> None:
        """The response can go no further: wake a waiting thread so it sees why.

        With ``error`` the thread's pending :meth:`call` (a body read) gets it
        as its answer, set under the same lock as ``gone``, so the
        thread raises the real error (and logs it) rather than "client gone".
        The loop side stops waiting for more: a stale waiter is dropped, so a
        thread that outlives a cancelled pump never wakes a loop that is gone.
        """
        with self.lock:
            self.gone = True
            self.waiter = None
            if error is not None and not self.has_result:
                self.result = error
                self.has_result = True
            if self.cond is not None:
                self.cond.notify_all()

    def _sent(self, size: int) -> None:
        with self.lock:
            self.pending -= size
            if self.thread_waiting and self.pending <= LOW_WATER and self.cond is not None:
                self.cond.notify_all()

    def _send_first(self, data: bytes, more: bool) -> tuple[Any, Any] | None:
        """Send response bytes the thread posted (unless the response is given up) as far
        as they go at once: None when done, else the rest to await (:meth:`_send_rest`).

        A stream that can send without a coroutine (HTTP/1.1's ``send_body_nowait``)
        is asked that way: a send the client takes at once then costs no coroutine.
        """
        if self.gone:
            return None
        try:
            if self.nowait:
                waiter = self.stream.send_body_nowait(data, more)
                return None if waiter is None else _first_step(waiter)
            return _first_step(self.stream.send_body(data, more))
        except ClientDisconnected:
            self._abandon()
        except Exception as exc:  # e.g. more than the announced Content-Length
            self._send_failed(exc)
        return None

    async def _send_rest(self, step: tuple[Any, Any]) -> None:
        """Await the rest of a send whose first step suspended (see :func:`_first_step`)."""
        try:
            await _watch_rest(step[0], step[1], self._set_blocked)
        except ClientDisconnected:
            self._abandon()
        except Exception as exc:
            self._send_failed(exc)

    def _take_whole(self) -> tuple[Any, ...] | None:
        """The usual request's items, ``[_WHOLE, _END]`` (a small whole response, then the
        thread's end), taken for :meth:`_send_whole` when the stream sends without a
        coroutine; None: anything else, left where it is for :meth:`pump`.

        Without the lock (two lock calls, 2 % of a hello request): this runs once, on
        the loop's first wake-up (:meth:`_reply_first`), which the thread schedules
        only after the locked block of its first post. Items that are exactly
        ``[_WHOLE, _END]`` were that first post, whole (the thread posts them
        together, and ``_END`` is its last post): the thread is done with them, and
        nobody else writes them. Anything else is only read (a list's length and
        items are read whole under the GIL) and left for the pump, which locks.
        """
        if not self.nowait:
            return None
        items = self.items
        if len(items) != 2 or items[0][0] != _WHOLE or items[1][0] != _END:
            return None
        self.items = []
        return items[0]

    def _send_whole(self, item: tuple[Any, ...]) -> tuple[Any, Any] | None:
        """A ``_WHOLE`` item on a stream that sends without a coroutine: the head, then
        the body as far as it goes at once (the rest, if any: :meth:`_send_rest`)."""
        if not self.gone:
            stream = self.stream
            if item[3]:  # the app said Connection: close
                stream.close_after_response()
            try:
                stream.start_response_nowait(item[1], item[2])
            except ClientDisconnected:
                self._abandon()
        return self._send_first(item[4], False)

    def _reply_first(self) -> Coroutine[Any, Any, None] | None:
        """After the thread's first post: the usual request answered at once (None), or
        the coroutine that carries out the rest (the pump; the caller awaits it, then
        calls :meth:`end_pump` and :meth:`release`)."""
        whole = self._take_whole()
        if whole is None:
            return self.pump()
        # The usual request, as the pump would carry it out but without its coroutine:
        # a small whole response, then the thread's end.
        size = len(whole[4])
        step = self._send_whole(whole)
        if step is not None:
            return self._send_whole_rest(step, size)
        return self._after_whole(size)

    async def _send_whole_rest(self, step: tuple[Any, Any], size: int) -> None:
        """:meth:`_reply_first` when the client pushed back during the whole response."""
        await self._send_rest(step)
        rest = self._after_whole(size)
        if rest is not None:
            await rest

    def _after_whole(self, size: int) -> Coroutine[Any, Any, None] | None:
        """The whole response (``size`` bytes) is with the stream: None when that ended
        it, else the pump for the thread's end, the only item left."""
        self.pending -= size
        stream = self.stream
        if stream.response_complete or stream.disconnected:
            return None
        self.items = [(_END,)]
        return self.pump()

    def _give_up(self) -> None:
        """Forced shutdown (or a bug) on the loop's side: the thread cannot be stopped,
        only told the client is gone (it then finishes on its own), and the response
        is aborted."""
        self._abandon()
        self.stream.abort()

    def _first_posted(self, first: asyncio.Future[None]) -> None:
        """The loop side of a request started without a Task (:meth:`WSGIHandler.start_nowait`):
        the thread's first post arrived (:func:`_wake` completed ``first``). The usual
        request is answered here; anything more goes on in a Task, counted in
        ``first``'s place."""
        ctx = self.ctx
        assert ctx is not None
        del ctx.tasks[first]
        rest = None
        try:
            rest = self._reply_first()
        except BaseException:  # a bug: give the response up, let the loop report it
            self._give_up()
            raise
        finally:
            if rest is None:
                self.end_pump()
                self.release()
        if rest is not None:
            ctx.run_task(self._carry_on(rest), self.stream)

    def _first_cancelled(self, first: asyncio.Future[None]) -> None:
        """A request started without a Task is given up before the thread's first post
        (``first`` cancelled: a forced shutdown, or no thread to run it)."""
        ctx = self.ctx
        assert ctx is not None
        ctx.tasks.pop(first, None)
        try:
            self._give_up()
        finally:
            self.end_pump()
            self.release()

    async def _carry_on(self, rest: Coroutine[Any, Any, None]) -> None:
        """The rest of a request started without a Task (see :meth:`_first_posted`)."""
        try:
            await rest
        except BaseException:
            self._give_up()
            raise
        finally:
            self.end_pump()
            self.release()

    def _send_failed(self, exc: Exception) -> None:
        logger.error("WSGI response could not be sent: %s", exc)
        self._give_up()

    async def _send_data(self, data: bytes, more: bool, finished: bool) -> None:
        """Send response bytes the thread posted, then take them off the queued count.
        ``finished``: the thread is done, so nobody else writes the count or waits on
        it (no lock, no wake-up)."""
        step = self._send_first(data, more)
        if step is not None:
            await self._send_rest(step)
        self._count_sent(len(data), finished)

    def _count_sent(self, size: int, finished: bool) -> None:
        """``size`` response bytes are with the stream: off the queued count (see
        :meth:`_send_data` for ``finished``)."""
        if finished:
            self.pending -= size
        else:
            self._sent(size)

    async def pump(self, first: asyncio.Future[None] | None = None) -> None:
        """Carry out what the thread posts until it posts ``_END``.

        ``first``: the waiter the caller set before the thread was started (the
        thread cannot have posted yet, so there is nothing to look at before it).
        The caller then calls :meth:`end_pump` (closes a spool the thread is done with).
        """
        stream = self.stream
        lock = self.lock
        if first is not None:
            await first
        while True:
            with lock:
                items = self.items
                if items:
                    self.items = []
                else:
                    fut = self.waiter = self.loop.create_future()
            if not items:
                await fut
                continue
            # _END comes last, posted by a thread that is done: no more posts, no waits.
            finished = items[-1][0] == _END
            i = 0
            count = len(items)
            while i < count:
                item = items[i]
                tag = item[0]
                i += 1
                # The usual tags first: a small response is [_WHOLE, _END].
                if tag == _WHOLE:
                    data = item[4]
                    if self.nowait:
                        step = self._send_whole(item)
                    else:
                        if not self.gone:
                            if item[3]:  # the app said Connection: close
                                stream.close_after_response()
                            try:
                                await stream.start_response(item[1], item[2])
                            except ClientDisconnected:
                                self._abandon()
                        step = self._send_first(data, False)
                    if step is not None:
                        await self._send_rest(step)
                    self._count_sent(len(data), finished)
                elif tag == _DATA:
                    data = item[1]
                    if i < count and items[i][0] == _DATA:
                        # Coalesce what is already here, but never more than JOIN_MAX
                        # bytes into one copy (a large item goes out as itself).
                        parts = [data]
                        size = len(data)
                        while i < count:
                            nxt = items[i]
                            if nxt[0] != _DATA or size + len(nxt[1]) > JOIN_MAX:
                                break
                            parts.append(nxt[1])
                            size += len(nxt[1])
                            i += 1
                        if len(parts) > 1:
                            data = b"".join(parts)
                    last = i < count and (items[i][0] == _END or items[i][0] == _LAST)
                    await self._send_data(data, not last, finished)
                elif tag == _SPOOL:
                    offset, size = item[1], item[2]
                    while i < count and items[i][0] == _SPOOL:  # contiguous: one range
                        size += items[i][2]
                        i += 1
                    last = i < count and (items[i][0] == _END or items[i][0] == _LAST)
                    if not self.gone:
                        try:
                            await self._send_spool(offset, size, last)
                        except ClientDisconnected:
                            self._abandon()
                        except Exception as exc:
                            self._send_failed(exc)
                elif tag == _END:
                    if stream.response_complete or stream.disconnected:
                        return
                    try:
                        if not stream.response_started:
                            # Only when the app swallowed a broken read and then stopped.
                            await send_plain(stream, 500, "Internal Server Error", close=True)
                        elif self.gone:
                            stream.abort()
                        else:
                            await stream.send_body(b"", False)
                    except (ClientDisconnected, RuntimeError, ValueError):
                        stream.abort()
                    return
                elif tag == _START:
                    if not self.gone:
                        if item[3]:  # the app said Connection: close
                            stream.close_after_response()
                        try:
                            if self.nowait:
                                stream.start_response_nowait(item[1], item[2])
                            else:
                                await stream.start_response(item[1], item[2])
                        except ClientDisconnected:
                            self._abandon()
                elif tag == _READ:
                    try:
                        self._answer(await stream.receive_body())
                    except ClientDisconnected as exc:
                        self._answer(exc)
                elif tag == _FILE:
                    # The thread did not wait for this (post_file): failures end here.
                    try:
                        if not self.gone:
                            await stream.send_file(item[1], item[2], item[3])
                    except ClientDisconnected:
                        self._abandon()
                    except Exception as exc:  # the file shrank, a Content-Length that lies
                        self._send_failed(exc)
                    finally:
                        self._drop_file()
                elif tag == _LAST:
                    pass  # read with the _DATA before it
                elif tag == _FAIL:
                    self._abandon()
                    if not stream.disconnected:
                        if stream.response_started:
                            stream.abort()  # the head is out: only closing tells the client
                        else:
                            try:
                                await send_plain(stream, 500, "Internal Server Error",
                                                 close=True)
                            except (ClientDisconnected, RuntimeError, ValueError):
                                stream.abort()


# -- wsgi.input ----------------------------------------------------------------------------


class WSGIInput:
    """``wsgi.input`` with ``--wsgi-body stream``: the body, pulled from the socket as
    the app reads (and the empty body of a request without one).

    Holds at most one chunk beyond what the app asked for; ``read()`` without a
    size reads everything, because the app asked for everything. Reading past the
    end returns ``b""``. A client that disconnects mid-body raises
    :class:`bivio.stream.ClientDisconnected` (an ``OSError``, what Django and
    Werkzeug expect from a broken upload).
    """

    def __init__(self, exchange: _Exchange | None) -> None:
        _init_input(self, exchange)

    def _fill(self) -> bool:
        """Fetch one more chunk; False at the end of the body."""
        while not self._eof:
            chunk, more = self._exchange.call((_READ,))  # type: ignore[union-attr]
            if not more:
                self._eof = True
            if chunk:
                self._buf += chunk
                return True
        return False

    def _take(self, n: int) -> bytes:
        buf = self._buf
        if n >= len(buf):
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:n])
            del buf[:n]
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            return self._take(len(self._buf))
        while len(self._buf) < size and self._fill():
            pass
        return self._take(size)

    def read1(self, size: int = -1) -> bytes:
        """At most one chunk, without waiting for more."""
        if not self._buf:
            self._fill()
        return self._take(len(self._buf) if size is None or size < 0 else size)

    def readline(self, limit: int | None = -1) -> bytes:
        if limit is None:
            limit = -1
        start = 0
        while True:
            pos = self._buf.find(b"\n", start)
            if pos >= 0:
                end = pos + 1
                break
            start = len(self._buf)
            if 0 <= limit <= start or not self._fill():
                end = len(self._buf)
                break
        if 0 <= limit < end:
            end = limit
        return self._take(end)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


def _init_input(self: WSGIInput, exchange: _Exchange | None) -> None:
    """WSGIInput.__init__, callable on ``WSGIInput.__new__(WSGIInput)`` (compiled: no
    argument parsing; one per request)."""
    self._exchange = exchange
    self._buf = bytearray()
    self._eof = exchange is None


class ErrorStream:
    """``wsgi.errors``: text written by the app goes to the server log, one record a line.

    One per request, and most are never written to (compiled: an extension type,
    made without a Python-level call).
    """

    def __init__(self) -> None:
        self._partial = ""  # the unfinished line

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"wsgi.errors.write() takes str, not {type(text).__name__}")
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            logger.error("%s", line)
        return len(text)

    def writelines(self, seq: Iterable[str]) -> None:
        for text in seq:
            self.write(text)

    def flush(self) -> None:
        if self._partial:
            logger.error("%s", self._partial)
            self._partial = ""


class FileWrapper:
    """``wsgi.file_wrapper``: a real file goes out with ``os.sendfile``; others are read."""

    def __init__(self, filelike: Any, blksize: int = 8192) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration


def _real_file(wrapper: FileWrapper) -> tuple[int, int, int] | None:
    """``(fd, offset, size left)`` when the wrapped object is a regular file, else None."""
    filelike = wrapper.filelike
    try:
        fd = filelike.fileno()
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        offset = filelike.tell() if hasattr(filelike, "tell") else 0
        return fd, offset, max(0, os.fstat(fd).st_size - offset)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


# -- the request body, read on the loop before a thread is taken ----------------------------


async def _read_body(stream: Stream) -> tuple[Any, int]:
    """Read the whole request body; return ``(file, size)``, the file positioned at 0.

    Runs on the event loop, before the request gets a thread, so a client that
    sends slowly (or never finishes) holds a buffer, not a thread. The body is
    kept in memory up to ``SPOOL_MEMORY`` (a :class:`io.BytesIO` over the bytes,
    no copy for a body that came in one chunk) and goes to an anonymous
    temporary file beyond it; a body announced larger than that goes to the file
    from its first byte, so a connection never holds more than about
    ``SPILL_WRITE`` bytes of it in memory. The protocol enforces
    ``--limit-request-body`` (413) and raises :class:`ClientDisconnected` when the
    client leaves mid-body; the caller then answers nothing.

    The file is written here, on the loop, in writes of ``SPILL_WRITE`` bytes.
    That is acceptable because such a write copies into the kernel's page cache
    and returns; it does not wait for the disk (nothing here calls ``fsync``,
    and the file is unlinked from the start), so each costs a memcpy of
    ``SPILL_WRITE`` bytes. nginx (``client_body_temp_path``) and waitress
    (its ``inbuf_overflow`` file) write request bodies from their event loop the
    same way. The file is in ``$TMPDIR``; it is closed (and gone) when the call
    ends, however it ends.
    """
    parts: list[bytes] = []
    held = 0  # bytes in parts
    total = 0
    spill: Any = None
    length = stream.body_length
    try:
        if length is not None and length > SPOOL_MEMORY:
            spill = tempfile.TemporaryFile(prefix="bivio-body-")  # noqa: SIM115 (returned)
        more = True
        while more:
            chunk, more = await stream.receive_body()
            if not chunk:
                continue
            parts.append(chunk)
            held += len(chunk)
            total += len(chunk)
            if spill is None:
                if held <= SPOOL_MEMORY:
                    continue
                spill = tempfile.TemporaryFile(prefix="bivio-body-")  # noqa: SIM115 (returned)
            if held >= SPILL_WRITE:
                spill.write(parts[0] if len(parts) == 1 else b"".join(parts))
                parts.clear()
                held = 0
        if spill is None:
            return io.BytesIO(parts[0] if len(parts) == 1 else b"".join(parts)), total
        if parts:
            spill.write(b"".join(parts))
        spill.seek(0)
        return spill, total
    except BaseException:
        if spill is not None:
            spill.close()
        raise


# -- the thread pool ---------------------------------------------------------------------


class ThreadPool:
    """Threads started on demand up to ``size``; jobs beyond wait in the queue (FIFO).

    Compiled, an extension type (``wsgi.pxd``): :meth:`submit` runs once per request,
    and its attributes are C fields. A test that needs another ``submit`` subclasses
    it (an instance's methods cannot be replaced).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._put = self.jobs.put
        self.threads: list[threading.Thread] = []

    def submit(self, job: Callable[[], None], busy: int) -> None:
        """Queue ``job``; ``busy`` (calls given to the pool, this one included) starts a
        thread while there are fewer than that and than ``size``."""
        if busy > len(self.threads) < self.size:
            thread = threading.Thread(target=self._work, daemon=True,
                                      name=f"bivio-wsgi-{len(self.threads) + 1}")
            self.threads.append(thread)
            thread.start()
        self._put(job)

    def _work(self) -> None:
        get = self.jobs.get
        while True:
            job = get()
            if job is None:
                return
            job()
            del job

    def shutdown(self) -> None:
        for _ in self.threads:
            self.jobs.put(None)
        self.threads = []


def _init_exchange(self: _Exchange, loop: asyncio.AbstractEventLoop, stream: Stream,
                   spool_cap: int, on_done: Callable[[], None] | None,
                   budget: _SpoolBudget | None, wakeups: _Wakeups) -> None:
    """_Exchange.__init__, callable on ``_Exchange.__new__(_Exchange)`` (compiled: no
    argument parsing; one per request). ``wakeups``: its loop's (the handler's, so
    that the wake-ups of requests that finish together are batched)."""
    self.loop = loop
    self.wakeups = wakeups
    self.stream = stream
    self.lock = _new_lock()
    self.cond = None
    self.items = []
    self.pending = 0  # response bytes posted but not yet handed to the stream
    self.waiter = None
    self.gone = False  # client disconnected or response aborted: posts raise
    self.result = None
    self.has_result = False
    self.thread_waiting = False
    self.spool = None  # the response spool file, created by the thread on first need
    self.spool_cap = spool_cap  # thread only: spool bytes allowed (0: never spool)
    self.spooled = 0  # thread only: bytes written to the spool
    self.spooling = False  # thread only: the client stopped reading, data goes to the spool
    self.thread_done = False
    self.pump_done = False
    self.on_done = on_done  # loop side: called once, when the thread is done or the pump
    self.released = False
    # The worker's disk allowance for spools; None: unlimited (tests, embedding).
    self.budget = budget
    self.blocked = False  # the loop's send is suspended: the client pushes back
    self.file_fd = -1  # a file_wrapper's duplicate descriptor, the loop's to close
    # The stream sends without a coroutine when nothing waits (HTTP/1.1: see
    # :meth:`bivio.protocols.http1.H1Stream.send_body_nowait`): the pump's fast path.
    self.nowait = stream.sends_nowait
    # The server context of a request started without a Task (it is counted there:
    # see WSGIHandler.start_nowait); None when a Task runs it.
    self.ctx = None


# -- the handler ---------------------------------------------------------------------------


# Header name -> environ key, filled as names are seen (names with "_" never enter).
_KEYS: dict[bytes, str] = {b"content-type": "CONTENT_TYPE", b"content-length": "CONTENT_LENGTH"}


def _environ_key(name: bytes) -> str:
    key = _KEYS.get(name)
    if key is None:
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        if len(_KEYS) < 1024:
            _KEYS[name] = key
    return key


class WSGIHandler:
    """Turns each stream into a WSGI call on the pool (see the module docstring)."""

    def __init__(self, app: Any, config: Config) -> None:
        self.app = app
        self.config = config
        self.root_path = config.root_path
        self.size = config.threads or default_threads()
        self.buffer_bodies = config.wsgi_body != "stream"
        self.response_buffer = config.wsgi_response_buffer
        self.spool_budget = _SpoolBudget(config.wsgi_spool_max)
        self.pool = ThreadPool(self.size)
        # Calls given to the pool and not yet released: running, or queued behind the
        # busy threads (see :attr:`free` and :attr:`queued`). The loop alone counts.
        self.busy = 0
        # Intake pauses above this many busy calls, resumes at or below resume_at.
        self.pause_above = self.size + QUEUE_BEFORE_PAUSE
        self.resume_at = self.size + QUEUE_BEFORE_PAUSE // 2
        self.ctx: ServerContext | None = None
        # The class of each request's mailbox: tests hook a subclass in here (compiled,
        # the module's classes cannot be patched).
        self.exchange_type: Callable[..., _Exchange] = _Exchange
        # Calls started without a Task, for the pool at the end of the loop iteration.
        self.starts: list[_Call] = []
        self.wakeups: _Wakeups | None = None  # the loop's, made with the first exchange
        # Each exchange's on_done, bound once (not a method object made per request).
        self._slot_released = self._release_slot
        logger.info("WSGI application: %d thread%s per worker", self.size,
                    "" if self.size == 1 else "s")
        self.base_environ: dict[str, Any] = {
            "SCRIPT_NAME": self.root_path,
            "wsgi.version": (1, 0),
            "wsgi.multithread": self.size > 1,
            # A supervised worker's own options have ``workers`` cleared: the
            # supervisor marks its workers instead (Config.multiprocess).
            "wsgi.multiprocess": config.multiprocess or (config.workers or 1) > 1,
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
            "wsgi.input_terminated": True,
            # What environ() sets for every request, there from the start: in each
            # request's copy they are replaced, not added, and the copy's table has
            # room left for a few headers (no resize; the copy keeps the table's size).
            "REQUEST_METHOD": "", "PATH_INFO": "", "QUERY_STRING": "", "SERVER_PROTOCOL": "",
            "wsgi.url_scheme": "", "wsgi.errors": None, "SERVER_NAME": "", "SERVER_PORT": "",
            "REMOTE_ADDR": "", "REMOTE_PORT": "",
        }

    def bind(self, ctx: ServerContext) -> None:
        """Give the handler the server context, for pausing intake while saturated.

        It also bounds what one multiplexed (HTTP/2) connection may run at once
        to half the pool, so one client cannot take every thread.
        """
        self.ctx = ctx
        ctx.streams_per_connection = max(1, self.size // 2)
        ctx.thread_pool = self.pool_usage  # for the metrics

    def pool_usage(self) -> tuple[int, int]:
        """The pool's size and how many of its threads run an app now."""
        return self.size, self.size - self.free

    @property
    def free(self) -> int:
        """Threads with no call to run."""
        return max(0, self.size - self.busy)

    @property
    def queued(self) -> int:
        """Calls waiting in the pool's queue for a thread."""
        return max(0, self.busy - self.size)

    def shutdown(self) -> None:
        self.pool.shutdown()

    # -- the count of calls -----------------------------------------------------------

    def _release_slot(self) -> None:
        """A call is done with its thread (called once per call, on the loop)."""
        self.busy -= 1
        ctx = self.ctx
        if ctx is not None and ctx.intake_paused and self.busy <= self.resume_at:
            ctx.resume_intake()

    # -- a request -----------------------------------------------------------------------

    def start_nowait(self, stream: Stream) -> asyncio.Future[None] | None:
        """Start a bodiless HTTP/1.1 request without a Task (see
        :meth:`bivio.core.context.ServerContext.start_handler`); None: anything else,
        which :meth:`__call__` runs in a Task.

        A WSGI request needs no coroutine on the loop while its app runs on a
        thread: the call goes to the pool at the end of this loop iteration
        (:meth:`_submit_starts`), and the thread's first post (for the
        usual request, the whole response and its end at once) wakes the loop,
        which sends the answer in that same callback (:func:`_wake`,
        :meth:`_Exchange._first_posted`). The returned future (a :class:`_FirstPost`)
        only stands for the request in ``ctx.tasks``. No Task is created, stepped,
        woken and finished: a fifth of the instructions of a WSGI hello request. A
        body, or an HTTP/2 stream (it sends through coroutines), takes the Task.
        """
        if (stream.body_length != 0 or stream.disconnected
                or not stream.sends_nowait):
            return None  # (a client gone: the Task path says so, and returns at once)
        stream.interface = "wsgi"
        ctx = self.ctx
        loop = (ctx and ctx.loop) or asyncio.get_running_loop()
        exchange = self._new_exchange(loop, stream)
        exchange.ctx = ctx
        self.busy += 1
        busy = self.busy
        if busy > self.pause_above and ctx is not None:
            ctx.pause_intake()
        # loop= given: without it the future asks for the running loop, which on Python
        # 3.11 costs a getpid() system call every time.
        exchange.waiter = first = _FirstPost(loop=loop)
        first.exchange = exchange
        # To the pool at the end of this loop iteration, with the others started in it
        # (as their Tasks' first steps would be). Handed over one by one between the
        # connections' reads, each woken thread took the GIL whenever a read let go of
        # it, and the two sides passed it back and forth: 11 futex calls a request
        # instead of 1.
        starts = self.starts
        call = _Call.__new__(_Call)
        _init_call(call, self, stream, exchange, None, 0, busy > self.size)
        starts.append(call)
        if len(starts) == 1:
            loop.call_soon(self._submit_starts)
        return first

    def _submit_starts(self) -> None:
        """Give the pool the calls :meth:`start_nowait` started in the last loop iteration."""
        starts, self.starts = self.starts, []
        busy = self.busy - len(starts)
        for call in starts:
            busy += 1
            try:
                self.pool.submit(call, busy)
            except Exception as exc:  # no thread could be started (the process is out of them)
                logger.error("WSGI request not run: %s", exc)
                first = call.exchange.waiter
                if first is not None:
                    first.cancel()  # given up: see _FirstPost.cancel

    async def __call__(self, stream: Stream) -> None:
        stream.interface = "wsgi"
        body = None
        size = 0
        length = stream.body_length
        if length != 0 and (length is None or self.buffer_bodies):
            # The whole body first, on the loop: no thread waits for a slow client.
            try:
                body, size = await _read_body(stream)
            except ClientDisconnected:
                return  # gone mid-body, or refused by the protocol (413): nothing to answer
            except OSError as exc:  # the temporary file: disk full, no $TMPDIR
                logger.error("WSGI request body could not be buffered: %s", exc)
                try:
                    await send_plain(stream, 500, "Internal Server Error", close=True)
                except (ClientDisconnected, RuntimeError):
                    stream.abort()
                return
        if stream.disconnected:
            _not_run(stream)  # gone while its body was read: nobody to answer
            if body is not None:
                body.close()
            return
        # The call is counted until it is released, once: when the thread is done (a
        # spooled response or a file may still be going out), or at the latest when the
        # pump ends (the finally below).
        loop = (self.ctx and self.ctx.loop) or asyncio.get_running_loop()
        exchange = self._new_exchange(loop, stream)
        self.busy += 1
        busy = self.busy
        if busy > self.pause_above and self.ctx is not None:
            self.ctx.pause_intake()  # a flood: the queue is long enough, read no more for now
        # The loop waits from the start: the thread's first post wakes it, and the
        # pump does not look for items before there can be any.
        exchange.waiter = first = loop.create_future()
        try:
            call = _Call(self, stream, exchange, body, size, busy > self.size)
            try:
                self.pool.submit(call, busy)
            except BaseException:
                if body is not None:
                    body.close()
                raise
            # From here on the call's thread closes the body, whatever happens.
            try:
                await first
                rest = exchange._reply_first()
                if rest is not None:
                    await rest
            except BaseException:
                exchange._give_up()
                raise
        finally:
            exchange.end_pump()
            exchange.release()

    def _new_exchange(self, loop: asyncio.AbstractEventLoop, stream: Stream) -> _Exchange:
        """The request's mailbox, of :attr:`exchange_type` (compiled: a typed one)."""
        if self.exchange_type is _Exchange:
            wakeups = self.wakeups
            if wakeups is None or wakeups.loop is not loop:
                wakeups = self.wakeups = _Wakeups(loop)
            exchange = _Exchange.__new__(_Exchange)
            _init_exchange(exchange, loop, stream, self.response_buffer, self._slot_released,
                           self.spool_budget, wakeups)
            return exchange
        return self.exchange_type(loop, stream, self.response_buffer, self._slot_released,
                                  self.spool_budget)

    def environ(self, stream: Stream) -> dict[str, Any]:
        """The PEP 3333 environ (``wsgi.input`` is set by the caller).

        It runs for every request, in the app's thread, and every step of it holds
        the GIL the loop waits for: the few values that repeat (the protocol, the
        port, the environ key of a header name) are made once, and a byte is looked
        for as an integer (``b"%" in path`` first tries the byte as an integer, and
        raising and clearing that error costs more than the search).
        """
        raw_path = stream.raw_path
        root = self.root_path
        version = stream.http_version
        env = self.base_environ.copy()
        env["REQUEST_METHOD"] = stream.method
        # A prefix the proxy kept belongs in SCRIPT_NAME, not PATH_INFO.
        env["PATH_INFO"] = (app_path(raw_path, root) if root or 0x25 in raw_path  # b"%"
                            else raw_path.decode("latin-1"))
        query = stream.query_string
        env["QUERY_STRING"] = query.decode("latin-1")
        protocols = _PROTOCOLS
        env["SERVER_PROTOCOL"] = protocols.get(version) or "HTTP/" + version
        env["wsgi.url_scheme"] = stream.scheme
        env["wsgi.errors"] = ErrorStream()
        if stream.tls is not None:
            env["HTTPS"] = "on"  # the CGI variable some frameworks read instead
        ports = _PORTS
        client = stream.client
        if client is not None:
            env["REMOTE_ADDR"] = client[0]
            port = client[1]
            env["REMOTE_PORT"] = ports.get(port) or _port_text(port)
        else:  # a UNIX socket: no client address
            del env["REMOTE_ADDR"], env["REMOTE_PORT"]
        keys = _KEYS
        for name, value in stream.headers:
            key = keys.get(name)
            if key is None:
                if name.find(b"_") >= 0:
                    continue  # X-Auth_User must not pass for X-Auth-User (-> HTTP_X_AUTH_USER)
                key = _environ_key(name)
            text = value.decode("latin-1")
            size = len(env)
            first = env.setdefault(key, text)  # one lookup for the usual, first, line
            if len(env) == size:  # the field was there already: this is one more line
                # RFC 9110 5.3; cookies are the exception (RFC 9113 8.2.3).
                env[key] = first + ("; " if key == "HTTP_COOKIE" else ", ") + text
        server = stream.server
        if server is not None:
            env["SERVER_NAME"] = server[0]
            port = server[1]
            env["SERVER_PORT"] = ports.get(port) or _port_text(port)
        else:  # a UNIX socket: the Host header is all there is
            host = env.get("HTTP_HOST", "localhost")
            host_name, _, text = (host.rpartition(":") if not host.endswith("]")
                                  else (host, "", ""))
            if not host_name or not text.isdigit():
                host_name, text = host, "443" if stream.scheme == "https" else "80"
            env["SERVER_NAME"], env["SERVER_PORT"] = host_name, text
        return env


# SERVER_PROTOCOL by the stream's version, and SERVER_PORT and REMOTE_PORT by the
# port: the same values request after request (the listening port; a keep-alive
# client's), so the strings are made once.
_PROTOCOLS = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0", "2": "HTTP/2"}
_PORTS: dict[int, str] = {}
_PORTS_MAX = 4096  # then it starts over: clients' ports come and go


def _port_text(port: int) -> str:
    text = str(port)
    if len(_PORTS) >= _PORTS_MAX:
        _PORTS.clear()
    _PORTS[port] = text
    return text


def _not_run(stream: Stream) -> None:
    logger.info("%s left before a thread was free: %s %s not run", _client_name(stream),
                stream.method, stream.raw_path.decode("latin-1"))


def _client_name(stream: Stream) -> str:
    """``host:port`` of the stream's client, for a log line (``-`` when unknown)."""
    client = stream.client
    if client is None:
        return "-"
    host = str(client[0])
    return f"[{host}]:{client[1]}" if ":" in host else f"{host}:{client[1]}"


def _body_kind(stream: Stream) -> str:
    """``"none"``, ``"length"`` or ``"unknown"`` (chunked, or HTTP/2 without a length).

    The protocol knows the framing (``stream.body_length``); the adapter never
    guesses it from headers or the HTTP version.
    """
    length = stream.body_length
    if length is None:
        return "unknown"
    return "length" if length else "none"


class _Call:
    """One WSGI call, run in a pool thread: environ, start_response, the iterable, close()."""

    __slots__ = ("handler", "stream", "exchange", "body", "body_size", "status", "headers",
                 "headers_sent", "content_length", "close", "held", "queued")

    def __init__(self, handler: WSGIHandler, stream: Stream, exchange: _Exchange,
                 body: Any = None, body_size: int = 0, queued: bool = False) -> None:
        _init_call(self, handler, stream, exchange, body, body_size, queued)

    # -- start_response and write ---------------------------------------------------------

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: ExcInfo | None = None) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # PEP 3333: avoid the traceback reference cycle
        elif self.status is not None:
            raise WSGIError("start_response() called a second time without exc_info")
        self._start(status, headers)
        return self.write

    def _start(self, status: str, headers: list[tuple[str, str]]) -> None:
        """start_response's checks and encoding (compiled: typed, a direct call)."""
        codes = _CODES
        code = codes.get(status) if type(status) is str else None
        if code is None:
            code = _status_code(status)
        encoded: Headers = []
        length: bytes | None = None
        close = False
        cache = _ENCODED
        for pair in headers:
            try:
                hit = cache.get(pair)
            except TypeError:  # not hashable: not a (str, str) tuple, refused below
                hit = None
            if hit is not None:  # a plain header seen before: valid, already encoded
                if hit[0] is _CONTENT_LENGTH:
                    length = hit[1]
                encoded.append(hit)
                continue
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise WSGIError(f"start_response(): header {pair!r} is not a (name, value) tuple")
            name, value = pair
            if not isinstance(name, str) or not isinstance(value, str):
                raise WSGIError(f"start_response(): header {pair!r}: name and value must be str")
            # The one header rule (bivio.core.headers), applied to the encoded bytes.
            lname = name.lower()
            bname = lname.encode("ascii", "replace")
            if not valid_name(bname):
                raise WSGIError(f"start_response(): invalid header name {name!r}")
            try:
                bvalue = value.encode("latin-1")
            except UnicodeEncodeError:
                raise WSGIError(f"start_response(): header {name!r} is not latin-1") from None
            if not valid_value(bvalue):
                raise WSGIError(f"start_response(): control character in header {name!r}")
            if lname in HOP_BY_HOP:
                if lname == "connection" and value.strip().lower() == "close":
                    close = True  # honoured through the stream: close afterwards
                else:
                    _warn_hop_by_hop(name)
                continue
            if lname == "content-length":
                if not value.strip().isdigit():
                    raise WSGIError(f"start_response(): invalid Content-Length {value!r}")
                length = bvalue
                bname = _CONTENT_LENGTH  # the cached pair is known by this very object
            if len(cache) >= _ENCODED_MAX:
                cache.clear()  # bounded: per-response values (cookies, etags) churn it
            cache[pair] = (bname, bvalue)
            encoded.append((bname, bvalue))
        self.status = code
        self.headers = encoded
        self.content_length = length
        self.close = close

    def write(self, data: bytes) -> None:
        """The legacy ``write()`` callable; also used for each item of the iterable."""
        if type(data) is not bytes:
            if not isinstance(data, bytes):
                raise WSGIError(f"the WSGI application sent {type(data).__name__}, not bytes")
            data = bytes(data)
        if self.headers_sent:
            if data:
                self.exchange.post_data(data)
            return
        if self.status is None:
            raise WSGIError("write() or a response body before start_response()")
        if data:
            self.headers_sent = True
            self.exchange.post((_START, self.status, self.headers, self.close), (_DATA, data),
                               size=len(data))

    # -- the call ------------------------------------------------------------------------------

    def __call__(self) -> None:
        """The pool's job is the call itself (:meth:`run`): queued as it is, with no
        bound method made for it per request."""
        self.run()

    def run(self) -> None:
        """Thread entry: never raises; always ends with ``_END`` posted."""
        exchange = self.exchange
        body = self.body
        try:
            stream = self.stream
            if self.queued and (stream.disconnected or exchange.gone):
                # The client left (or a forced shutdown gave the request up) while the
                # call waited in the queue: nobody is there to answer, and running the
                # app anyway would do the work (a payment, a write) for nobody while
                # other requests wait for the thread.
                _not_run(stream)
                return
            env = self.handler.environ(stream)
            if body is not None:
                # Read whole on the loop; the real size, also for a chunked body
                # (Django reads a missing CONTENT_LENGTH as an empty body).
                env["wsgi.input"] = body
                env["CONTENT_LENGTH"] = str(self.body_size)
            else:
                # No body, or (--wsgi-body stream) one of known length read as the app
                # reads; one of unknown length was read on the loop (body above).
                wsgi_input = WSGIInput.__new__(WSGIInput)
                _init_input(wsgi_input, exchange if self.stream.body_length else None)
                env["wsgi.input"] = wsgi_input
            self._respond(env)
        except ClientDisconnected:
            pass  # the client left; nothing to answer and nothing worth a traceback
        except BaseException as exc:
            self._fail(exc)
        finally:
            if body is not None:
                self.body = None
                body.close()
            held = self.held
            if held is None:
                exchange._finish(((_END,),), True, 0)
            else:  # the response and the end: one hand-off for the whole request
                self.held = None
                exchange._finish((held, (_END,)), True, len(held[4]))

    def _respond(self, env: dict[str, Any]) -> None:
        result = self.handler.app(env, self.start_response)
        try:
            if type(result) is list or type(result) is tuple:  # the usual answer first
                self._send_sequence(result, hold=True)
                return
            if isinstance(result, FileWrapper) and self.status is not None:
                target = _real_file(result)
                if target is not None:
                    self._send_file(*target)
                    return
            try:
                iterator = iter(result)
            except TypeError:
                if asyncio.iscoroutine(result):
                    result.close()
                    raise WSGIError("the WSGI application returned a coroutine: it looks like "
                                    "an ASGI application (serve it with --interface asgi3)") \
                        from None
                raise WSGIError(f"the WSGI application returned a non-iterable "
                                f"{type(result).__name__} object") from None
            if type(iterator) is _LIST_ITERATOR and self.status is not None:
                # Django's HttpResponse iterates over its own list: the items are all
                # there already (iterating runs no app code), so they are sent as a list
                # is, in one post, instead of one post per item.
                self._send_sequence(list(iterator))
                return
            write = self.write
            for data in iterator:
                write(data)
            if self.status is None:
                raise WSGIError("the WSGI application returned without calling start_response()")
            if not self.headers_sent:
                self.headers_sent = True
                self.exchange.post((_START, self.status, self.headers, self.close))
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:
                    logger.error("Exception in the WSGI response's close()", exc_info=exc)

    def _send_sequence(self, items: list[bytes] | tuple[bytes, ...], hold: bool = False) -> None:
        """A list of bytes (the common case): one post, hence one hop to the loop.

        Up to ``JOIN_MAX`` bytes the items are joined into one body (the stream
        then knows the length). Beyond, each item is posted as itself: joining
        would hold a second copy of the whole body for as long as the client
        takes to read it.

        ``hold``: nothing of the app's runs between this and the thread's end (a
        plain list or tuple has no ``close()``), so a small whole response is kept
        for :meth:`run` to post together with ``_END``: the loop is woken once for
        the request, and finds it complete.
        """
        total = 0
        for data in items:
            if type(data) is not bytes and not isinstance(data, bytes):
                raise WSGIError(f"the WSGI application sent {type(data).__name__}, not bytes")
            total += len(data)
        if self.status is None:
            raise WSGIError("the WSGI application returned without calling start_response()")
        if total > JOIN_MAX and len(items) > 1:
            self._send_items(items, total)
            return
        body = items[0] if len(items) == 1 else b"".join(items)
        if self.headers_sent:
            if body:
                self.exchange.post((_DATA, body), (_LAST,), size=len(body))
            return
        self.headers_sent = True
        whole = (_WHOLE, self.status, self.headers, self.close, body)
        if hold and len(body) <= HIGH_WATER:
            self.held = whole
        else:
            self.exchange.post(whole, size=len(body))

    def _send_items(self, items: list[bytes] | tuple[bytes, ...], total: int) -> None:
        """A large list, no copy; the length is said up front.

        The first ``HIGH_WATER`` bytes (at least one item) go in one post with the
        head; the rest item by item, so that a client that stops reading gets the
        rest spooled (:meth:`_Exchange.post_data`) rather than holding the thread.
        """
        datas = [data if type(data) is bytes else bytes(data) for data in items if data]
        first = 1
        size = len(datas[0])
        while first < len(datas) and size + len(datas[first]) <= HIGH_WATER:
            size += len(datas[first])
            first += 1
        posts: list[tuple[Any, ...]] = [(_DATA, data) for data in datas[:first]]
        if first == len(datas):
            posts.append((_LAST,))
        if self.headers_sent:
            self.exchange.post(*posts, size=size)
        else:
            self.headers_sent = True
            headers = self.headers
            if self.content_length is None and self.status not in (204, 304):
                # What a joined body would have told the stream, said here (as for a file).
                headers = [*headers, (b"content-length", b"%d" % total)]
            self.exchange.post((_START, self.status, headers, self.close), *posts, size=size)
        last = len(datas) - 1
        post_data = self.exchange.post_data
        for index in range(first, len(datas)):
            post_data(datas[index], index == last)

    def _send_file(self, fd: int, offset: int, size: int) -> None:
        """Hand the file to the loop and return: the thread does not wait for the client.

        The loop gets a duplicate of the descriptor, so the app's ``close()`` (run
        next, in this thread: Django's fires ``request_finished``, which must run
        where the view ran) cannot pull the file from under the send, and the
        thread goes back to the pool while a slow client is still reading.
        """
        count = size if self.content_length is None else int(self.content_length)
        if self.headers_sent:  # write() already sent part of the body: no zero-copy here
            raise WSGIError("wsgi.file_wrapper returned after write(): not supported")
        own = os.dup(fd)
        self.headers_sent = True
        headers = self.headers
        if self.content_length is None:  # said here so that HEAD gets it too
            headers = [*headers, (b"content-length", str(count).encode("ascii"))]
        try:
            self.exchange.post_file((_START, self.status, headers, self.close), own, offset,
                                    count)
        except BaseException:
            os.close(own)  # not handed over
            raise

    def _fail(self, exc: BaseException) -> None:
        if isinstance(exc, WSGIError):
            logger.error("%s", exc)
        else:
            logger.error("Exception in WSGI application", exc_info=exc)
        self.exchange._finish(((_FAIL,),), False, 0)


def _init_call(self: _Call, handler: WSGIHandler, stream: Stream, exchange: _Exchange,
               body: Any, body_size: int, queued: bool) -> None:
    """_Call.__init__, callable on ``_Call.__new__(_Call)`` (compiled: no argument
    parsing; one per request)."""
    self.handler = handler
    # Handed over while every thread was busy: it waited in the pool's queue, and
    # the client may have left meanwhile (looked at first, on the thread).
    self.queued = queued
    self.stream = stream
    self.exchange = exchange
    self.body = body  # the body read by _read_body (a file at 0), or None: not read
    self.body_size = body_size
    self.status = None
    self.headers = []
    self.headers_sent = False
    # The app's Content-Length, as sent (digits, checked); parsed only where a
    # number is needed (a file's count): the stream parses the header anyway.
    self.content_length = None
    self.close = False  # the app sent Connection: close
    # A whole small response kept for the final post (see _send_sequence).
    self.held = None


_LIST_ITERATOR = type(iter([]))

# Plain response headers already checked and encoded, by their (name, value) str
# pair: apps send the same few headers on every response, and a dict lookup is
# several times cheaper than encoding and checking them again. Hop-by-hop headers
# are never cached (they mean more than their bytes: a warning, a close). A
# Content-Length pair is cached with ``_CONTENT_LENGTH`` itself as its name, so a
# hit is recognised by identity and its value parsed (it was checked to be digits).
_ENCODED: dict[tuple[str, str], tuple[bytes, bytes]] = {}
_ENCODED_MAX = 4096
_CONTENT_LENGTH = b"content-length"

# Status lines already checked, to their code: apps send a handful ("200 OK",
# "404 Not Found"), and a dict lookup is much cheaper than the regular expression.
_CODES: dict[str, int] = {}
_CODES_MAX = 256


def _status_code(status: Any) -> int:
    """Check a status line the app gave ``start_response``; its code (and remember it)."""
    if not isinstance(status, str):
        raise WSGIError(f"start_response(): status must be a str, not {type(status).__name__}")
    match = _STATUS.fullmatch(status)
    if match is None:
        raise WSGIError(f"start_response(): invalid status {status!r} "
                        "(expected 'NNN Reason' with NNN from 200 to 999)")
    code = int(match.group(1))
    if type(status) is str:  # a str subclass may compare equal and mean something else
        if len(_CODES) >= _CODES_MAX:
            _CODES.clear()  # bounded: odd reason phrases cannot grow it
        _CODES[status] = code
    return code

_warned: set[str] = set()


def _warn_hop_by_hop(name: str) -> None:
    """PEP 3333 forbids hop-by-hop headers from apps: drop them, say so once per name."""
    if name.lower() not in _warned:
        _warned.add(name.lower())
        logger.warning("WSGI application set the hop-by-hop header %r: dropped "
                       "(framing and connection handling are the server's job)", name)


__all__ = ["WSGIHandler", "WSGIInput", "ErrorStream", "FileWrapper", "default_threads"]
