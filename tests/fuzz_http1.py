"""Fuzzing the HTTP/1.1 request path in-process: the harness shared by the short run
(``tests/test_fuzz_http1.py``, in ``make test``) and the long one (``scripts/fuzz.py``,
``make fuzz``).

One :class:`Case` is the bytes a client sends, where they are cut into reads, what the
client does last (EOF, silence, reset), how fast it reads, which app answers and which
limits apply. :func:`check` plays it against an :class:`~bivio.protocols.http1.H1Connection`
over a :class:`FuzzTransport` (no socket) on a real event loop whose clock the harness
can move forward (:class:`FuzzLoop`: timeouts fire at once), and raises
:class:`Violation` if an invariant breaks:

1. **Nothing raises out of the protocol**: not ``data_received``, ``eof_received`` or
   ``connection_lost``, not a timer, callback or handler task (the loop's exception
   handler is never called), and the adapters log no error (the apps here are correct,
   so an error logged means the protocol broke the stream contract under them).
2. **Every request gets at most one response**: what was written parses as a
   sequence of well-formed HTTP/1.1 responses (then WebSocket frames after a 101);
   final responses (1xx excluded, the 101 included) are matched in order with the
   requests started (the handler's, plus a 503 of ``--limit-concurrency``): each app
   response carries its request's number (``x-fuzz``) and must be the one expected
   next, and at most one response more may follow, the server's own 4xx/5xx, with the
   connection closing (or half-closed: the lingering close after an error).
3. **The connection answers or closes**: once everything is fed and the loop is
   quiet, a request whose body is complete has its answer, and an idle open
   connection has answered every request sent (counted by a fresh llhttp parser on
   the same bytes); after EOF or a reset the transport closes at once (to a client
   that reads), after silence once the timeouts fired; then no handler task is left.
   Reading that stays paused with client bytes waiting and nothing in progress is a
   stall, a loop that never goes quiet a busy loop.
4. **Nothing unbounded**: the bytes written are at most
   ``OUT_BASE + OUT_PER_INPUT_BYTE * len(input) + OUT_PER_REQUEST * requests``, and
   the context holds no connection once it closed.

Inputs (:data:`STRATEGIES`) are decoded from one hypothesis draw each, a tape of bytes
(:class:`Tape`), by a grammar of HTTP/1.1 requests (:func:`requests_case`: pipelines,
odd methods, targets, versions, header fields, framing), by the llhttp corpus in
``tests/data`` (:func:`llhttp_case`) and by WebSocket upgrades followed by frames
(:func:`websocket_case`); each is then mutated at the byte level (flip, insert, delete,
duplicate, splice a token) and cut into several ``data_received`` calls.

Bugs found and reported but not fixed yet are listed in :data:`KNOWN_ISSUES`;
:func:`replay` reruns one case and :func:`minimize` shrinks a failing one, for a
reproducer.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import json
import logging
import re
import traceback
import zlib
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httptools
from fakes import FakeTransport
from hypothesis import strategies as st

from bivio.adapters.asgi import ASGIHandler
from bivio.core.config import Config
from bivio.core.context import ServerContext
from bivio.protocols.http1 import H1Connection

CORPUS_PATH = Path(__file__).resolve().parent / "data" / "llhttp-requests.json"

OUT_BASE = 4096
OUT_PER_INPUT_BYTE = 8  # WebSocket echoes; error bodies quote the input (handshake errors)
OUT_PER_REQUEST = 1024  # a head, a short body, a 100 Continue, a 103
QUIET_ROUNDS = 5000  # loop iterations before "never quiet" (a busy loop) is a violation


class Violation(AssertionError):
    """An invariant broke; ``invariant`` is its number in the module docstring."""

    def __init__(self, invariant: int, text: str) -> None:
        super().__init__(f"invariant {invariant}: {text}")
        self.invariant = invariant


# -- cases ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One input: ``data`` cut at ``cuts`` into reads; ``settle[i]``: run the loop until
    quiet before read ``i`` (else the read follows at once, tasks still pending).

    ``ending``: after the last read the client sends EOF (``eof``), goes ``silent`` for
    good, or vanishes (``reset``). ``reader``: the client reads what it is sent at once
    (``fast``: writing never pauses), between its reads (``slow``: the transport pauses
    writing past :data:`SLOW_HIGH_WATER` bytes unread), or never (``stuck``).
    ``shutdown_at``: the worker shuts down gracefully (SIGTERM) before read
    ``shutdown_at`` (after the last read if it is past it; -1: never).
    """

    data: bytes
    cuts: tuple[int, ...] = ()
    settle: tuple[bool, ...] = ()
    handler: str = "echo"
    limits: str = "default"
    ending: str = "eof"
    reader: str = "fast"
    shutdown_at: int = -1

    def to_json(self) -> str:
        fields = {**self.__dict__, "data": self.data.decode("latin-1")}
        return json.dumps(fields)

    @classmethod
    def from_json(cls, text: str) -> Case:
        fields = json.loads(text)
        fields["data"] = fields["data"].encode("latin-1")
        fields["cuts"], fields["settle"] = tuple(fields["cuts"]), tuple(fields["settle"])
        return cls(**fields)

    def pieces(self) -> list[bytes]:
        bounds = [0, *sorted(c for c in self.cuts if 0 < c < len(self.data)), len(self.data)]
        return [self.data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a] \
            or [b""]


def _config(**options: Any) -> Config:
    base = {"date_header": False, "server_header": False}
    return Config.from_options({**base, **options}, env={})


# Limits and options the cases run under: the defaults, tight limits (every 413/414/431
# and the WebSocket 1009 path is near), no WebSocket support, an untrusted peer (no
# X-Forwarded-*), and --limit-concurrency 1 (the server's own 503 between requests).
CONFIGS: dict[str, Config] = {
    "default": _config(),
    "tight": _config(limit_request_line=64, limit_request_fields=10,
                     limit_request_field_size=96, limit_request_body=48, ws_max_size=64),
    "nows": _config(ws="none", ws_per_message_deflate=False),
    "untrusted": _config(forwarded_allow_ips="10.9.9.9", ws_per_message_deflate=False),
    "concurrency1": _config(limit_concurrency=1),
}

# -- the apps ---------------------------------------------------------------------------------

REQUEST_NO: contextvars.ContextVar[int] = contextvars.ContextVar("fuzz_request_no", default=-1)


def _tag() -> tuple[bytes, bytes]:
    return (b"x-fuzz", b"%d" % REQUEST_NO.get())


async def _ws_deny(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Apps that do not speak WebSocket refuse it (a 403, or their own HTTP answer)."""
    await receive()  # websocket.connect
    if scope["path"].endswith("/respond"):
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [_tag(), (b"content-length", b"6")]})
        await send({"type": "websocket.http.response.body", "body": b"denied"})
    else:
        await send({"type": "websocket.close"})


async def app_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Read the whole body, answer with its length."""
    if scope["type"] != "http":
        await _ws_deny(scope, receive, send)
        return
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    await send({"type": "http.response.start", "status": 200,
                "headers": [_tag(), (b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"read %d" % size})


async def app_noread(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answer at once without reading the body (its own Content-Length)."""
    if scope["type"] != "http":
        await _ws_deny(scope, receive, send)
        return
    status = 204 if scope["path"].endswith("/204") else 200
    headers = [_tag()] + ([] if status == 204 else [(b"content-length", b"2")])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if status == 204 else b"ok"})


async def app_stream(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A 103, then a streamed answer (chunked, or until close on 1.0) while reading."""
    if scope["type"] != "http":
        await _ws_deny(scope, receive, send)
        return
    await send({"type": "http.response.early_hint", "links": [b"</a.css>; rel=preload"]})
    trailers = scope["path"].endswith("/trailers")
    await send({"type": "http.response.start", "status": 200, "trailers": trailers,
                "headers": [_tag(), (b"content-type", b"text/plain")]})
    more = True
    for part in range(3):
        if more:
            message = await receive()
            more = message["type"] == "http.request" and message.get("more_body", False)
        await send({"type": "http.response.body", "body": b"part %d;" % part, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    if trailers:
        await send({"type": "http.response.trailers", "headers": [(b"x-done", b"1")]})


async def app_ws(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accept every WebSocket and echo its messages; plain HTTP is :func:`app_echo`."""
    if scope["type"] == "http":
        await app_echo(scope, receive, send)
        return
    await receive()  # websocket.connect
    if scope["path"].endswith("/deny"):
        await send({"type": "websocket.close"})
        return
    await send({"type": "websocket.accept", "headers": [_tag()]})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
        if message.get("text") == "bye":
            await send({"type": "websocket.close", "code": 1000})


APPS = {"echo": app_echo, "noread": app_noread, "stream": app_stream, "ws": app_ws}


class FuzzContext(ServerContext):
    """The worker context, recording every request started, in order.

    ``started[i]`` is the i-th stream handed to the handler, or ``None`` for a
    request the server answered itself with 503 (``--limit-concurrency``).
    """

    def __init__(self, config: Config, handler: Any) -> None:
        super().__init__(config, handler)
        self.started: list[Any] = []

    def over_capacity(self) -> bool:
        over = super().over_capacity()
        if over:
            self.started.append(None)
        return over

    def start_handler(self, stream: Any) -> Any:
        self.started.append(stream)
        return super().start_handler(stream)


def make_handler(app: Any, started: list[Any]) -> Any:
    asgi = ASGIHandler(app)

    async def handler(stream: Any) -> None:
        REQUEST_NO.set(next(i for i, s in enumerate(started) if s is stream))
        await asgi(stream)

    return handler


# -- the transport ----------------------------------------------------------------------------


SLOW_HIGH_WATER = 64  # unread bytes past which a slow or stuck client pauses writing
TIME_STEPS = 500  # timers fired, at most, while waiting for a connection to close


class FuzzTransport(FakeTransport):
    """A :class:`FakeTransport` that behaves like asyncio's socket transport where it
    matters to a fuzzer: ``connection_lost`` comes from the loop after ``close()`` (not
    inside it), ``write()`` after ``write_eof()`` raises, and a client that does not read
    makes the transport pause the protocol's writing (``pause_writing``) past a
    high-water mark, and resume it once the client read (:meth:`client_reads`)."""

    def __init__(self, reader: str = "fast") -> None:
        super().__init__()
        self.high_water = None if reader == "fast" else SLOW_HIGH_WATER
        self.unread = 0
        self.write_paused = False
        self.flow_errors: list[str] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.eof_written:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self.closed or not data:
            return
        self.written += data
        self.unread += len(data)
        if self.high_water is not None and self.unread > self.high_water \
                and not self.write_paused:
            self.write_paused = True
            self._flow("pause_writing")

    def get_write_buffer_size(self) -> int:
        return 0 if self.high_water is None else self.unread

    def client_reads(self) -> None:
        self.unread = 0
        if self.write_paused and not self.closed:
            self.write_paused = False
            self._flow("resume_writing")

    def _flow(self, name: str) -> None:
        # asyncio reports a failing pause_writing/resume_writing to the loop's handler.
        try:
            getattr(self.protocol, name)()
        except Exception as exc:
            self.flow_errors.append(f"protocol.{name}() failed: "
                                    + "".join(traceback.format_exception(exc)))

    def write_eof(self) -> None:
        if not self.closed:
            self.eof_written = True

    def close(self) -> None:
        self._lose(None)

    def lose(self) -> None:
        self._lose(ConnectionResetError("the client vanished"))

    def _lose(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: Exception | None) -> None:
        if self.protocol is not None:
            self.protocol.connection_lost(exc)


class FuzzLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock the harness moves forward to fire timeouts at once."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = 0.0

    def time(self) -> float:
        return super().time() + self.offset

    def next_timer(self) -> float | None:
        handles = [h for h in self._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
        return min(h.when() for h in handles) if handles else None

    def advance_to(self, when: float) -> None:
        now = self.time()
        if when > now:
            self.offset += when - now + 1e-6


# -- playing a case ---------------------------------------------------------------------------


@dataclass
class Outcome:
    """What happened: for the checks, and for a reproducer's report."""

    case: Case
    written: bytes = b""
    closed: bool = False
    shut: bool = False  # closed, or the write side shut down (a lingering close)
    started: list[Any] = field(default_factory=list)
    finals: list[tuple[int, int | None]] = field(default_factory=list)  # (status, x-fuzz)
    informational: int = 0
    switched: bool = False

    def summary(self) -> str:
        methods = [("-" if s is None else s.method) for s in self.started]
        return (f"started={methods} finals={self.finals} 1xx={self.informational} "
                f"switched={self.switched} closed={self.closed} shut={self.shut} "
                f"written={self.written!r}")


# Bugs this fuzzer found that are reported but not fixed yet (src/ is not the fuzzer's to
# change). While ``TOLERATE_KNOWN`` is set a match is counted in ``KNOWN_HITS`` instead of
# failing, so the runs keep looking for new bugs; tests/test_fuzz_http1.py holds each
# reproducer as a strict xfail, which fails once the bug is fixed: then drop the entry
# here and its matcher below.
KNOWN_ISSUES: dict[str, str] = {
    # None open. Fixed, with their reproducers now plain tests in test_fuzz_http1.py:
    # "send-after-server-answered" (an app's send after the server answered a 400
    # raised RuntimeError, logged as an app error, not ClientDisconnected) and
    # "expect-continue-no-body-clock" (no request-body timeout once the response
    # started before a body announced with Expect: 100-continue).
}
TOLERATE_KNOWN = True
KNOWN_HITS: Counter[str] = Counter()


def _known_error(exc: BaseException | None) -> str | None:
    """The known issue an error logged by an adapter is, if any (none open)."""
    return None


def _known_open(started: list[Any]) -> str | None:
    """The known issue a connection that never closes is, if any (none open)."""
    return None


class _LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        known = _known_error(exc)
        if known is not None:
            KNOWN_HITS[known] += 1
            return
        text = record.getMessage()
        if exc is not None:
            text += ": " + "".join(traceback.format_exception(exc))
        self.records.append(text)


_bivio_log = logging.getLogger("bivio.error")


def check(case: Case, apps: dict[str, Any] | None = None) -> Outcome:
    """Play ``case``; raise :class:`Violation` if an invariant breaks."""
    loop = FuzzLoop()
    errors: list[str] = []

    def on_error(_loop: Any, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        text = context.get("message", "")
        if exc is not None:
            text += ": " + "".join(traceback.format_exception(exc))
        errors.append(text)

    loop.set_exception_handler(on_error)
    capture = _LogCapture()
    _bivio_log.addHandler(capture)
    try:
        return loop.run_until_complete(_play(case, apps or APPS, errors, capture))
    finally:
        _bivio_log.removeHandler(capture)
        try:
            loop.run_until_complete(_cancel_leftovers())
        finally:
            loop.close()


async def _cancel_leftovers() -> None:
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


async def quiet() -> None:
    """Run the loop until nothing is ready to run (no time passes)."""
    loop: Any = asyncio.get_running_loop()
    for _ in range(QUIET_ROUNDS):
        await asyncio.sleep(0)
        if not loop._ready:
            scheduled = loop._scheduled
            if not scheduled or scheduled[0].when() > loop.time():
                return
    raise Violation(3, f"the loop never goes quiet ({QUIET_ROUNDS} rounds): a busy loop")


async def _settle(t: FuzzTransport, case: Case) -> None:
    """Quiet, with a slow client reading what it was sent until nothing more comes."""
    await quiet()
    while case.reader == "slow" and t.write_paused and not t.closed:
        t.client_reads()
        await quiet()


async def _pass_time(t: FuzzTransport) -> None:
    """Fire the timers one after the other until the connection closes or none is left."""
    loop: Any = asyncio.get_running_loop()
    for _ in range(TIME_STEPS):
        if t.closed:
            return
        when = loop.next_timer()
        if when is None:
            return
        loop.advance_to(when)
        await quiet()


def _protocol_call(what: str, call: Any) -> Any:
    try:
        return call()
    except Exception as exc:
        raise Violation(1, f"{what} raised: " + "".join(traceback.format_exception(exc))) from exc


async def _play(case: Case, apps: dict[str, Any], errors: list[str],
                capture: _LogCapture) -> Outcome:
    ctx = FuzzContext(CONFIGS[case.limits], None)  # type: ignore[arg-type]
    ctx.handler = make_handler(apps[case.handler], ctx.started)
    t = FuzzTransport(case.reader)
    conn = H1Connection(ctx)
    _protocol_call("connection_made", lambda: t.connect(conn))
    out = Outcome(case, started=ctx.started)

    def raised() -> None:
        if errors or t.flow_errors:
            raise Violation(1, "the loop's exception handler was called: "
                            + (errors or t.flow_errors)[0])
        if capture.records:
            raise Violation(1, "an error was logged: " + capture.records[0])

    pieces = case.pieces()
    for index, piece in enumerate(pieces):
        if index < len(case.settle) and case.settle[index]:
            await _settle(t, case)
        if index == case.shutdown_at:
            _graceful_shutdown(ctx)
        if not t.closed and not t.reading:
            await _settle(t, case)  # a real transport delivers nothing while reading is paused
        raised()
        if t.closed or (not t.reading and t.write_paused):
            break  # gone; or the client does not read and the server waits for it to
        if not t.reading:
            _stalled(out, t, ctx, f"before read {index + 1} of {len(pieces)}")
        protocol = t.protocol
        _protocol_call("data_received", lambda p=protocol, d=piece: p.data_received(d))
    await _settle(t, case)
    if case.shutdown_at >= len(pieces):
        _graceful_shutdown(ctx)
        await _settle(t, case)
    raised()
    _snapshot(out, t)
    _check_responses(out)
    if not t.write_paused and case.shutdown_at < 0:
        _check_answered(out, t, ctx)
    # The client's last move, then the connection must close: at once after an EOF or a
    # reset (to a client that reads), else once its timeouts ran out.
    if not t.closed:
        if case.ending == "reset":
            t.lose()
        elif case.ending == "eof" and t.reading:
            protocol = t.protocol
            keep_open = _protocol_call("eof_received", lambda: protocol.eof_received())
            if not keep_open:
                t.close()
        elif case.ending == "eof" and not t.write_paused:
            _stalled(out, t, ctx, "before EOF")
    await _settle(t, case)
    raised()
    if not t.closed and (case.ending == "silent" or case.reader == "stuck"):
        await _pass_time(t)
        raised()
    _snapshot(out, t)
    _check_responses(out)
    if not t.closed:
        known = _known_open(ctx.started)
        if known is not None:
            KNOWN_HITS[known] += 1
            return out
        what = {"eof": "EOF fed", "reset": "reset", "silent": "every timer fired"}[case.ending]
        raise Violation(3, f"{what} and the loop quiet, but the connection is still open: "
                        + out.summary())
    if ctx.tasks:
        raise Violation(3, f"{len(ctx.tasks)} handler task(s) still running after the close: "
                        + out.summary())
    if ctx.connections:
        raise Violation(4, "the context still holds a connection after the close")
    inputs = len(case.data)
    bound = OUT_BASE + OUT_PER_INPUT_BYTE * inputs + OUT_PER_REQUEST * len(ctx.started)
    if len(out.written) > bound:
        raise Violation(4, f"{len(out.written)} bytes written for {inputs} bytes in and "
                        f"{len(ctx.started)} requests (bound {bound})")
    return out


def _graceful_shutdown(ctx: FuzzContext) -> None:
    """What the worker does on SIGTERM (process/server.py): every connection finishes
    what is in progress and takes nothing new."""
    ctx.shutting_down = True
    for conn in list(ctx.connections):
        _protocol_call("shutdown", conn.shutdown)


def _snapshot(out: Outcome, t: FuzzTransport) -> None:
    out.written, out.closed, out.shut = bytes(t.written), t.closed, t.closed or t.eof_written


def _stalled(out: Outcome, t: FuzzTransport, ctx: FuzzContext, when: str) -> None:
    _snapshot(out, t)
    raise Violation(3, f"reading stays paused {when} with client bytes waiting and nothing "
                    f"in progress ({len(ctx.tasks)} tasks): " + out.summary())


def _check_answered(out: Outcome, t: FuzzTransport, ctx: FuzzContext) -> None:
    """Invariant 3 before EOF: complete requests are answered; idle means all answered."""
    if t.closed or out.switched:
        return
    for number, stream in enumerate(ctx.started):
        if stream is None or stream.response_complete or stream.disconnected:
            continue
        if stream.body_complete:
            raise Violation(3, f"request {number} is complete but unanswered with the loop "
                            "quiet: " + out.summary())
    conn = t.protocol
    if isinstance(conn, H1Connection) and conn.is_idle():
        # Idle and open: nothing was refused, so every request sent was answered, once.
        # Counted independently of the server: llhttp alone on the same bytes.
        sent = count_requests(out.case.data)
        if len(out.finals) != len(ctx.started) or (sent is not None and sent != len(out.finals)):
            raise Violation(3, f"idle open connection: {len(out.finals)} final responses for "
                            f"{len(ctx.started)} requests started and {sent} sent: "
                            + out.summary())


class _MessageCounter:
    def __init__(self) -> None:
        self.complete = 0

    def on_message_complete(self) -> None:
        self.complete += 1


def count_requests(data: bytes) -> int | None:
    """Complete requests in ``data`` by a fresh llhttp parser; None if it stops at an error."""
    counter = _MessageCounter()
    try:
        httptools.HttpRequestParser(counter).feed_data(data)
    except httptools.HttpParserUpgrade:
        pass
    except httptools.HttpParserError:
        return None
    return counter.complete


# -- reading what was written -----------------------------------------------------------------

_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-9][0-9][0-9]) [^\r\n\x00]*")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CHUNK_SIZE = re.compile(rb"([0-9a-f]+)\r\n")


def _check_responses(out: Outcome) -> None:
    """Invariant 2: parse ``out.written`` into responses and match them to the requests."""
    data, started = out.written, out.started
    pos, finals, informational = 0, [], 0
    out.switched = False

    def bad(text: str) -> Violation:
        return Violation(2, f"{text} at byte {pos}: " + out.summary())

    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:  # a head is written whole, never cut
            raise bad("a response head that never ends")
        lines = data[pos:end].split(b"\r\n")
        match = _STATUS_LINE.fullmatch(lines[0])
        if match is None:
            raise bad(f"not a status line: {lines[0][:80]!r}")
        status = int(match.group(1))
        headers: dict[bytes, list[bytes]] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b": ")
            if not sep or not _TOKEN.fullmatch(name) or re.search(rb"[\x00-\x08\x0a-\x1f\x7f]",
                                                                    value):
                raise bad(f"malformed header line {line[:80]!r}")
            headers.setdefault(name.lower(), []).append(value)
        pos = end + 4
        if status < 200 and status != 101:
            informational += 1
            continue
        number = len(finals)
        tag = headers.get(b"x-fuzz")
        finals.append((status, int(tag[0]) if tag else None))
        if status == 101:
            out.switched = True
            _check_frames(out, data[pos:], bad)
            pos = len(data)
            break
        lengths = headers.get(b"content-length", [])
        chunked = headers.get(b"transfer-encoding", [])
        if lengths and chunked:
            raise bad("both content-length and transfer-encoding")
        if len(lengths) > 1 or (lengths and not lengths[0].isdigit()):
            raise bad(f"bad content-length {lengths!r}")
        if chunked and chunked != [b"chunked"]:
            raise bad(f"bad transfer-encoding {chunked!r}")
        if number >= len(started):  # the server's error for a request never started
            has_body = True
        elif started[number] is not None:
            has_body = not started[number].head_only
        else:  # the server's 503, maybe to a HEAD: no body if a response or nothing follows
            has_body = not (pos == len(data) or data.startswith(b"HTTP/1.1 ", pos))
        if status in (204, 304) or not has_body:
            continue
        # Each write is whole (a head, a chunk with its CRLF, the last chunk with its
        # trailers), so a body can only stop short at the end: a response still going
        # on, or cut by a close. Anything else malformed is a violation.
        if lengths:
            pos = min(pos + int(lengths[0]), len(data))
        elif chunked:
            while pos < len(data):
                size = _CHUNK_SIZE.match(data, pos)
                if size is None:
                    raise bad(f"bad chunk size line {data[pos:pos + 20]!r}")
                length, pos = int(size.group(1), 16), size.end()
                if length == 0:  # the last chunk: trailer fields, then an empty line
                    end = data.find(b"\r\n\r\n", pos - 2)
                    if end < 0:
                        raise bad("an unfinished last chunk")
                    for line in data[pos:end].split(b"\r\n") if end > pos else ():
                        name, sep, _ = line.partition(b": ")
                        if not sep or not _TOKEN.fullmatch(name):
                            raise bad(f"malformed trailer {line[:80]!r}")
                    pos = end + 4
                    break
                if data[pos + length:pos + length + 2] != b"\r\n":
                    raise bad("a chunk not followed by CRLF")
                pos += length + 2
        else:  # delimited by the close (HTTP/1.0): the rest is its body
            pos = len(data)
    out.finals, out.informational = finals, informational
    # Match final responses to requests: in order, at most one each.
    for number, (status, tag) in enumerate(finals):
        if number < len(started):
            if started[number] is None:
                if tag is not None or status != 503:
                    raise bad(f"response {number} should be the server's 503, got {status}")
            elif tag is not None and tag != number:
                raise bad(f"response {number} is the app's answer to request {tag}")
        elif number == len(started):
            if tag is not None or status < 400:
                raise bad(f"a response ({status}, x-fuzz {tag}) with no request left to answer")
        else:
            raise bad(f"{len(finals)} final responses for {len(started)} requests")
    if len(finals) > len(started) and not out.shut:
        raise bad("an extra error response without closing the connection")


def _check_frames(out: Outcome, data: bytes, bad: Any) -> None:
    """After a 101: whole, unmasked frames with valid opcodes (each frame is one write)."""
    pos = 0
    while pos < len(data):
        if len(data) - pos < 2:
            raise bad("a partial WebSocket frame header")
        first, second = data[pos], data[pos + 1]
        opcode = first & 0x0F
        if opcode not in (0, 1, 2, 8, 9, 10) or first & 0x30:
            raise bad(f"bad frame byte 0x{first:02x} from the server")
        if second & 0x80:
            raise bad("a masked frame from the server")
        length = second & 0x7F
        pos += 2
        if length == 126:
            length = int.from_bytes(data[pos:pos + 2], "big")
            pos += 2
        elif length == 127:
            length = int.from_bytes(data[pos:pos + 8], "big")
            pos += 8
        if opcode >= 8 and (length > 125 or not first & 0x80):
            raise bad("a bad control frame from the server")
        pos += length
        if pos > len(data):
            raise bad("a partial WebSocket frame")


def replay(case: Case, apps: dict[str, Any] | None = None) -> str:
    """Play ``case`` and describe the result: the reproducer's report."""
    try:
        outcome = check(case, apps)
    except Violation as exc:
        return f"VIOLATION {exc}"
    return "ok: " + outcome.summary()


# -- generating inputs ------------------------------------------------------------------------
#
# Every case is decoded from one hypothesis draw: a tape of bytes that the grammar below
# reads its choices from (a generator of bytes in the style of a fuzzer's). One draw per
# case keeps hypothesis' cost per input small enough for 10**6 inputs, and shrinking the
# tape towards zero bytes shrinks every choice towards the first (simplest) alternative:
# index 0 of each list below is the plain, valid choice.

TAPE_SIZE = 384


class Tape:
    """Choices read from bytes; past the end every choice is 0 (the simplest).

    ``rate`` sets how odd a case is: :meth:`odd` takes the valid default except
    one time in ``rate`` (never when 0), so most inputs are valid requests with a
    few odd parts, and some are odd throughout.
    """

    __slots__ = ("data", "pos", "rate")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.rate = 0

    def below(self, n: int) -> int:
        """An integer in ``range(n)``."""
        if n <= 1:
            return 0
        data, pos = self.data, self.pos
        value = data[pos] if pos < len(data) else 0
        if n > 256:
            value = value << 8 | (data[pos + 1] if pos + 1 < len(data) else 0)
            pos += 1
        self.pos = pos + 1
        return value % n

    def pick(self, items: list[Any]) -> Any:
        return items[self.below(len(items))]

    def chance(self, n: int) -> bool:
        """True one time in ``n``."""
        return self.below(n) == n - 1

    def odd(self, default: Any, items: list[Any]) -> Any:
        """``default``, or one of ``items`` one time in ``rate``."""
        if self.rate and self.chance(self.rate):
            return self.pick(items)
        return default

    def set_rate(self) -> None:
        self.rate = self.pick([0, 0, 0, 40, 16, 6, 2])

    def blob(self, max_size: int) -> bytes:
        size = self.below(max_size + 1)
        start = min(self.pos, len(self.data))
        self.pos += size
        return self.data[start:self.pos].ljust(size, b"\x00")


METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE",
           b"CONNECT", b"PRI", b"get", b"SOURCE", b"ANNOUNCE", b"M-SEARCH", b"PROPFIND",
           b"QUERY", b"G\x00T", b"GE T", b"", b"X" * 40]
COMMON_METHODS = [b"GET", b"GET", b"POST", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS"]
TARGETS = [b"/a?b=c", b"/204", b"/trailers", b"/respond", b"/deny", b"*", b"http://h/p?q=1",
           b"https://h:443/204", b"http://h", b"h:80", b"//x//y", b"/%00", b"/a b", b"/\x7f",
           b"/\xff\xfe", b"/a#frag", b"/?", b"/a?" + b"q" * 70, b"", b"/" + b"p" * 80,
           b"http://[::1]:8/x", b"http://user@h/", b"/\t"]
COMMON_TARGETS = [b"/", b"/", b"/a?b=c", b"/204", b"/trailers", b"/x/y"]
VERSIONS = [b"HTTP/1.0", b"HTTP/0.9", b"HTTP/2.0", b"HTTP/1.2", b"HTTP/2", b"http/1.1",
            b"HTTP/11", b"RTSP/1.0", b"ICE/1.0", b"HTTP/1.1 ", b"HTTP/9.9", b"HTTP/1.1x", b""]
EOLS = [b"\n", b"\r", b"\r\r\n", b"\n\r"]
SPACES = [b"  ", b"\t", b""]
HOSTS = [b"a:80", b"", b"a b", b"[::1]", b"a\x00", b"a, b"]
NAMES = [b"X-A", b"Accept", b"Cookie", b"X-Forwarded-For", b"X-Forwarded-Proto",
         b"X-Forwarded-Host", b"Forwarded", b"Content-Type", b"Keep-Alive", b"Trailer", b"TE",
         b"Via", b"Proxy-Connection", b"Sec-WebSocket-Key"]
ODD_NAMES = [b"X A", b"X\tA", b"X:A", b"", b"X\x00A", b"\xff", b"Content-Length\x00",
             b" Host", b"Transfer_Encoding", b"x" * 70]
VALUES = [b"1", b"", b" v ", b"a\tb", b"127.0.0.1, 10.0.0.1", b"https", b"http", b"wss",
          b"[::1]:80", b"unknown", b"for=1.2.3.4;proto=https", b"\"q\"", b"\xe9"]
ODD_VALUES = [b"a\x00b", b"a\x01b", b"a\x7fb", b"a\rb", b"a\nb", b"v" * 100]
SEPARATORS = [b":", b" : ", b":\t", b"::", b" :"]
FOLDS = [b"\r\n folded", b"\r\n\tfolded", b"\r\n ", b"\n folded"]
CONTENT_LENGTHS = [b"0", b"1", b"4", b"5", b"10", b"64", b"100", b"-1", b"+4", b" 4", b"4 ",
                   b"0x4", b"4.0", b"04", b"4, 4", b"4,5", b"", b"abc", b"1e3",
                   b"99999999999999999999", b"18446744073709551616", b"9223372036854775807"]
CODINGS = [b"Chunked", b" chunked", b"chunked ", b"gzip, chunked", b"chunked, gzip",
           b"chunked, chunked", b"identity", b"gzip", b"", b"chunked;q=1", b"chunked\x00",
           b"xchunked", b"chun\tked", b"deflate,chunked", b"chunked,"]
CONNECTIONS = [b"keep-alive", b"close", b"Upgrade", b"upgrade, keep-alive", b"close, upgrade",
               b"Keep-Alive", b"te", b"CLOSE"]
EXPECTS = [b"100-continue", b"100-Continue", b"100-continue, foo", b"200-ok", b""]
UPGRADES = [b"websocket", b"h2c", b"WebSocket", b"websocket, foo", b"foo", b"h2c, websocket"]
FRAMINGS = ["none", "length", "chunked", "none", "length", "chunked", "none", "length",
            "chunked"]
ODD_FRAMINGS = ["both", "lengths", "lie", "cl-te-lie"]
CHUNK_EXTENSIONS = [b";a=b", b";a", b"; a = b", b";", b";a=\"q\"", b";\x01", b"\t;a"]
CHUNK_ENDS = [b"\n", b"", b"\r\nXX", b"\r"]
LAST_CHUNKS = [b"00\r\n", b"0;ext\r\n", b"0\n", b"", b"0 \r\n"]
TRAILERS = [b"X-T: 1\r\n", b"Content-Length: 1\r\n", b"bad trailer\r\n",
            b"X-T: 1\r\n folded\r\n", b"X-T: a\x00b\r\n"]
FINAL_EOLS = [b"", b"\n"]
FILLER = [b"\r\n", b"\n", b"\r", b"\x00", b":", b" ", b"\t", b"0", b"\r\n\r\n", b"chunked",
          b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n", b"HTTP/1.1",
          b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"0\r\n\r\n", b"\x81\x80", b"\xff", b";", b","]


def header_lines(tape: Tape) -> list[bytes]:
    """Zero or more other header fields, with odd names, values and obs-fold."""
    lines = []
    for _ in range(tape.pick([0, 0, 0, 1, 1, 2, 3])):
        name = tape.odd(tape.pick(NAMES), ODD_NAMES)
        value = tape.odd(tape.pick(VALUES), ODD_VALUES)
        line = name + tape.odd(b": ", SEPARATORS) + value
        lines.append(line + tape.odd(b"", FOLDS))
    return lines


def chunked_body(tape: Tape) -> bytes:
    """Chunked framing: good chunks, bad sizes, extensions, trailers, short or long data."""
    out = b""
    for _ in range(tape.pick([1, 0, 1, 2, 3])):
        data = tape.blob(20)
        n = len(data)
        size = tape.odd(b"%x" % n, [b"%X" % n, b"%x" % (n + 1), b"%x" % max(n - 1, 0), b"g",
                                    b"-1", b" %x" % n, b"0x%x" % n, b"%x " % n, b"",
                                    b"fffffffffffffffff", b"%x\x00" % n, b"%016x" % n])
        out += size + tape.odd(b"", CHUNK_EXTENSIONS) + b"\r\n" + data
        out += tape.odd(b"\r\n", CHUNK_ENDS)
    return (out + tape.odd(b"0\r\n", LAST_CHUNKS) + tape.odd(b"", TRAILERS)
            + tape.odd(b"\r\n", FINAL_EOLS))


def one_request(tape: Tape) -> bytes:
    """One request from the grammar: valid, with odd parts as often as the tape's rate."""
    tape.set_rate()
    eol = tape.odd(b"\r\n", EOLS)
    sp = tape.odd(b" ", SPACES)
    method = tape.odd(tape.pick(COMMON_METHODS), METHODS)
    target = tape.odd(tape.pick(COMMON_TARGETS), TARGETS)
    head = [method + sp + target + b" " + tape.odd(b"HTTP/1.1", VERSIONS)]
    for _ in range(tape.odd(1, [0, 2])):
        head.append(b"Host: " + tape.odd(b"a", HOSTS))
    framing = tape.odd(tape.pick(FRAMINGS), ODD_FRAMINGS)
    if method in (b"GET", b"HEAD") and framing != "none" and not tape.chance(4):
        framing = "none"
    body = b""
    if framing in ("length", "lie", "both", "lengths", "cl-te-lie"):
        body = tape.blob(40)
        declared = tape.pick(CONTENT_LENGTHS) if framing == "lie" else b"%d" % len(body)
        head.append(b"Content-Length: " + declared)
        if framing == "lengths":
            head.append(b"Content-Length: " + tape.pick([declared, b"0", b"3", b" " + declared]))
    if framing in ("chunked", "both", "cl-te-lie"):
        for _ in range(tape.odd(1, [2])):
            head.append(b"Transfer-Encoding: " + tape.odd(b"chunked", CODINGS))
        chunks = chunked_body(tape)
        body = chunks if framing != "cl-te-lie" else body + chunks
    if tape.chance(5):
        head.append(b"Connection: " + tape.pick(CONNECTIONS))
    if body and tape.chance(5):
        head.append(b"Expect: " + tape.odd(b"100-continue", EXPECTS))
    if tape.chance(12):
        head.append(b"Upgrade: " + tape.pick(UPGRADES))
    head += header_lines(tape)
    fields = head[1:]
    if len(fields) > 1 and tape.chance(4):
        fields.insert(0, fields.pop(tape.below(len(fields))))
    return eol.join([head[0], *fields]) + eol + eol + body


def mutate(tape: Tape, data: bytes) -> bytes:
    """Byte-level mutations: flip, insert, delete, duplicate a slice, splice a token."""
    buf = bytearray(data)
    for _ in range(tape.pick([0, 0, 0, 0, 0, 0, 1, 1, 2, 3])):
        op = tape.below(5)
        at = tape.below(len(buf) + 1)
        if op == 0 and buf:
            at = min(at, len(buf) - 1)
            buf[at] ^= 1 << tape.below(8)
        elif op == 1:
            buf[at:at] = tape.blob(4) or b"\x00"
        elif op == 2:
            del buf[at:at + 1 + tape.below(8)]
        elif op == 3:
            buf[at:at] = buf[at:at + 1 + tape.below(24)]
        else:
            buf[at:at] = tape.pick(FILLER)
    return bytes(buf)


def split(tape: Tape, data: bytes, handlers: list[str], limits: list[str]) -> Case:
    """Cut points (several reads), settling between reads, the handler and the limits."""
    ending = tape.pick(ENDINGS)
    if ending != "eof" and tape.chance(2):
        data = data[:tape.below(len(data) + 1)]  # gone quiet mid-request: the timeouts' turn
    count = tape.pick([0, 0, 1, 1, 2, 3, 5])
    cuts = tuple(tape.below(len(data) + 1) for _ in range(count))
    settle = tuple(not tape.chance(3) for _ in range(count + 1))
    shutdown_at = tape.below(count + 2) if tape.chance(8) else -1
    return Case(data, cuts, settle, tape.pick(handlers), tape.pick(limits), ending,
                tape.pick(READERS), shutdown_at)


ENDINGS = ["eof", "eof", "eof", "eof", "silent", "silent", "reset"]
READERS = ["fast", "fast", "fast", "fast", "slow", "slow", "stuck"]
HTTP_HANDLERS = ["echo", "noread", "stream", "ws"]
ALL_LIMITS = list(CONFIGS)


def requests_case(raw: bytes) -> Case:
    """A pipeline of 1-4 grammar requests, maybe with trailing junk, then mutated."""
    tape = Tape(raw)
    data = b"".join(one_request(tape) for _ in range(tape.pick([1, 1, 2, 2, 3, 4])))
    if tape.chance(8):
        data += tape.pick(FILLER)
    return split(tape, mutate(tape, data), HTTP_HANDLERS, ALL_LIMITS)


def _load_corpus() -> list[bytes]:
    cases = json.loads(CORPUS_PATH.read_text(encoding="utf-8"))
    out = []
    for case in cases:
        raw = case["raw"].encode("latin-1")
        if case["http11_no_host"]:
            raw = raw.replace(b" HTTP/1.1\r\n", b" HTTP/1.1\r\nHost: a\r\n")
        out.append(raw)
    return out


CORPUS = _load_corpus()


def llhttp_case(raw: bytes) -> Case:
    """A case of llhttp's own test suite (or two, pipelined), then mutated."""
    tape = Tape(raw)
    data = tape.pick(CORPUS)
    if tape.chance(5):
        data += tape.pick(CORPUS)
    return split(tape, mutate(tape, data), HTTP_HANDLERS, ALL_LIMITS)


WS_KEY = base64.b64encode(b"0123456789abcdef")
WS_TARGETS = [b"/", b"/chat?x=1", b"/deny", b"/respond", b"/", b"/"]
ODD_WS_TARGETS = [b"*", b"http://h/ws", b"h:80"]
ODD_WS_VERSIONS = [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9"]
ODD_WS_METHODS = [b"POST", b"HEAD", b"CONNECT", b"PUT", b"OPTIONS"]
ODD_WS_UPGRADES = [b"WebSocket", b"h2c", b"websocket, x", b"x, websocket", None]
ODD_WS_CONNECTIONS = [b"keep-alive, Upgrade", b"keep-alive", b"close, upgrade", b"close", None]
ODD_WS_KEYS = [b"", None, b"short", base64.b64encode(b"x" * 15), b"!!!!" * 6, WS_KEY + b"=",
               WS_KEY + b", " + WS_KEY]
ODD_WS_VERSIONS_HEADER = [b"8", b"", b"13, 8", b"x", None]
WS_EXTENSIONS = [None, b"permessage-deflate", None, b"permessage-deflate",
                 b"permessage-deflate; client_max_window_bits",
                 b"permessage-deflate; server_no_context_takeover; client_no_context_takeover"]
ODD_WS_EXTENSIONS = [b"permessage-deflate; server_max_window_bits=8", b"permessage-deflate; x=1",
                     b"x-webkit-deflate-frame", b"permessage-deflate; client_max_window_bits=99",
                     b"permessage-deflate, permessage-deflate", b"permessage-deflate;"]
WS_PROTOCOLS = [b"chat", b"a, b", b"", b"a b", b",,"]
FRAME_KINDS = ["text", "binary", "text", "binary", "text", "binary", "cont", "close", "ping",
               "pong", "bye"]
OPCODES = {"text": 1, "bye": 1, "binary": 2, "cont": 0, "close": 8, "ping": 9, "pong": 10}
CLOSE_CODES = [1000, 1001, 3000, 4999]
ODD_CLOSE_CODES = [1005, 1006, 999, 1015, 1016, 2999, 5000, 65535, None]
CLOSE_REASONS = [b"", b"done", b"\xff", b"r" * 124]
BAD_UTF8 = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90"]
LENGTH_FORMS = ["16", "64", "over", "under"]


def ws_frame(tape: Tape, deflate: bool) -> bytes:
    """One client frame: any opcode, fin and rsv bits, masked or not, lengths true or not."""
    kind = tape.pick(FRAME_KINDS)
    fin = tape.odd(True, [False])
    rsv = 0
    opcode = tape.odd(OPCODES[kind], [3, 4, 7, 11, 15])
    if kind == "text":
        payload = tape.blob(16).decode("latin-1").encode("utf-8") + tape.odd(b"", BAD_UTF8)
    elif kind == "bye":
        payload = b"bye"
    elif kind == "close":
        code = tape.odd(tape.pick(CLOSE_CODES), ODD_CLOSE_CODES)
        payload = b"" if code is None else code.to_bytes(2, "big") + tape.pick(CLOSE_REASONS)
        payload = tape.odd(payload, [b"\x03"])  # a one-byte close payload
    elif kind in ("ping", "pong"):
        payload = tape.odd(tape.blob(8), [b"p" * 126])
    else:
        payload = tape.blob(32)
    if deflate and opcode in (1, 2) and tape.chance(2):
        rsv = 0x40
        compressor = zlib.compressobj(wbits=-12)
        payload = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if tape.odd(True, [False]):
            payload = payload.removesuffix(b"\x00\x00\xff\xff")
    else:
        rsv = tape.odd(0, [0x10, 0x20, 0x40, 0x70])
    masked = tape.odd(True, [False])
    length = len(payload)
    form = tape.odd("min", LENGTH_FORMS)
    if form == "over":
        length += 1 + tape.below(5)
    elif form == "under":
        length = max(0, length - 1 - tape.below(5))
    mask_bit = 0x80 if masked else 0
    if form == "16" or (form != "64" and 126 <= length < 65536):
        ext = bytes([mask_bit | 126]) + length.to_bytes(2, "big")
    elif form == "64" or length >= 65536:
        ext = bytes([mask_bit | 127]) + length.to_bytes(8, "big")
    else:
        ext = bytes([mask_bit | length])
    head = bytes([(0x80 if fin else 0) | rsv | opcode]) + ext
    if not masked:
        return head + payload
    mask = tape.blob(4).rjust(4, b"\x00")[:4]
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def websocket_case(raw: bytes) -> Case:
    """An Upgrade: websocket request (valid or not), then client frames, then mutated."""
    tape = Tape(raw)
    tape.set_rate()
    method = tape.odd(b"GET", ODD_WS_METHODS)
    target = tape.odd(tape.pick(WS_TARGETS), ODD_WS_TARGETS)
    head = [method + b" " + target + b" " + tape.odd(b"HTTP/1.1", ODD_WS_VERSIONS), b"Host: a"]
    extensions = tape.odd(tape.pick(WS_EXTENSIONS), ODD_WS_EXTENSIONS)
    optional = [(b"Upgrade", tape.odd(b"websocket", ODD_WS_UPGRADES)),
                (b"Connection", tape.odd(b"Upgrade", ODD_WS_CONNECTIONS)),
                (b"Sec-WebSocket-Key", tape.odd(WS_KEY, ODD_WS_KEYS)),
                (b"Sec-WebSocket-Version", tape.odd(b"13", ODD_WS_VERSIONS_HEADER)),
                (b"Sec-WebSocket-Extensions", extensions),
                (b"Sec-WebSocket-Protocol", tape.pick(WS_PROTOCOLS) if tape.chance(5) else None),
                (b"Content-Length", tape.odd(None, [b"0", b"3"]))]
    head += [name + b": " + value for name, value in optional if value is not None]
    head += header_lines(tape)
    deflate = extensions is not None and extensions.startswith(b"permessage-deflate")
    frames = b"".join(ws_frame(tape, deflate) for _ in range(tape.pick([1, 2, 3, 0, 4, 6])))
    head_bytes = b"\r\n".join(head) + b"\r\n\r\n"
    if tape.chance(3):
        data = mutate(tape, head_bytes) + frames
    else:
        data = head_bytes + mutate(tape, frames)
    return split(tape, data, ["ws", "ws", "ws", "ws", "echo", "stream"],
                 ["default", "default", "tight", "nows"])


# The properties' inputs: each a hypothesis strategy of Case.
_TAPES = st.binary(min_size=TAPE_SIZE, max_size=TAPE_SIZE)
STRATEGIES: dict[str, st.SearchStrategy[Case]] = {
    "requests": _TAPES.map(requests_case),
    "llhttp": _TAPES.map(llhttp_case),
    "websocket": _TAPES.map(websocket_case),
}


def minimize(case: Case, violation: Violation, apps: dict[str, Any] | None = None,
             budget: int = 3000) -> Case:
    """Shrink a failing case further, keeping the same invariant broken: simpler options,
    fewer cuts, then whole lines and slices of the data (ddmin-like). For the report."""
    tries = 0

    def fails(candidate: Case) -> bool:
        nonlocal tries
        tries += 1
        try:
            check(candidate, apps)
        except Violation as exc:
            return exc.invariant == violation.invariant
        return False

    best = case
    for option, simple in (("limits", "default"), ("reader", "fast"), ("ending", "eof"),
                           ("shutdown_at", -1), ("handler", "echo")):
        if getattr(best, option) != simple and fails(replace(best, **{option: simple})):
            best = replace(best, **{option: simple})
    if any(not flag for flag in best.settle):
        candidate = replace(best, settle=tuple(True for _ in best.settle))
        if fails(candidate):
            best = candidate
    for index in range(len(best.cuts) - 1, -1, -1):
        candidate = replace(best, cuts=best.cuts[:index] + best.cuts[index + 1:],
                            settle=best.settle[:index] + best.settle[index + 1:])
        if fails(candidate):
            best = candidate

    def without(start: int, size: int) -> Case:
        cuts = tuple(c if c <= start else max(start, c - size) for c in best.cuts)
        return replace(best, data=best.data[:start] + best.data[start + size:], cuts=cuts)

    lines = best.data.splitlines(keepends=True)
    start = 0
    for line in lines:
        if tries >= budget:
            break
        candidate = without(start, len(line))
        if fails(candidate):
            best = candidate
        else:
            start += len(line)
    size = max(1, len(best.data) // 2)
    while size >= 1 and tries < budget:
        start = 0
        while start < len(best.data) and tries < budget:
            candidate = without(start, size)
            if fails(candidate):
                best = candidate
            else:
                start += size
        size //= 2
    return best
