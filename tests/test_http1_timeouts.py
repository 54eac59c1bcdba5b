"""Slow and hostile clients on one HTTP/1.1 connection, without sockets.

``--timeout-request-body``, ``--timeout-send`` (the WebSocket's too), the
per-connection buffer ceiling of large sends, the lingering close after an
error answer, and the RTSP/ICE request-line check, each driven over a
FakeTransport.

Timeouts run on a fake clock (:class:`Clock`): the loop's ``time()`` is moved
by hand, so a 30 s timeout is tested exactly, without waiting and whatever the
machine's load, and "nothing happened yet" is a fact, not a guess. Only
:func:`test_body_timeout_on_the_real_clock` waits, on a 50 ms timeout polled
with a bound.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterator
from http import HTTPStatus
from typing import Any

import pytest
from fakes import FakeTransport

from bivio.core.config import Config
from bivio.core.context import ServerContext
from bivio.core.stream import ClientDisconnected
from bivio.protocols.flow import LINGER_BYTES, LINGER_SECONDS, WriteFlow
from bivio.protocols.http1 import HIGH_WATER, SEND_SLICE, H1Connection

Handler = Callable[[Any], Awaitable[None]]


def phrase(status: int) -> bytes:
    """``413 Content Too Large``: the phrase is Python's (RFC 9110's names from 3.13 on)."""
    return b"%d %s" % (status, HTTPStatus(status).phrase.encode())


# -- harness ------------------------------------------------------------------------------


def run(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return wrapper


class Clock:
    """The running loop's clock, moved by hand: timers fire when :meth:`advance` passes them."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.now = loop.time()
        loop.time = lambda: self.now  # type: ignore[method-assign]

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        await settle()


async def settle(rounds: int = 20) -> None:
    """Let ready callbacks and handler tasks run (no time passes on the fake clock)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def connect(handler: Handler, transport: FakeTransport | None = None,
            **options: Any) -> tuple[FakeTransport, H1Connection]:
    ctx = ServerContext(Config(date_header=False, server_header=False, **options), handler)
    t = transport or FakeTransport()
    conn = t.connect(H1Connection(ctx))
    return t, conn


def status_of(data: bytes) -> bytes:
    return data.split(b"\r\n", 1)[0]


def post(length: int | None, body: bytes = b"", extra: bytes = b"") -> bytes:
    framing = (b"transfer-encoding: chunked\r\n" if length is None
               else b"content-length: %d\r\n" % length)
    return b"POST /up HTTP/1.1\r\nhost: test\r\n" + framing + extra + b"\r\n" + body


async def answer(stream: Any, body: bytes) -> None:
    await stream.start_response(200, [(b"content-type", b"text/plain")])
    await stream.send_body(body, False)


def ok(body: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n"
            % len(body) + body)


class Reader:
    """A handler that reads the body (once ``go`` is set) and echoes it; records the outcome."""

    def __init__(self, wait: bool = False) -> None:
        self.go = asyncio.Event()
        if not wait:
            self.go.set()
        self.body = b""
        self.outcome: str | None = None  # "complete" or "disconnected"

    async def __call__(self, stream: Any) -> None:
        await self.go.wait()
        try:
            while True:
                chunk, more = await stream.receive_body()
                self.body += chunk
                if not more:
                    break
        except ClientDisconnected:
            self.outcome = "disconnected"
            return
        self.outcome = "complete"
        await answer(stream, self.body)


@pytest.fixture
def info_log() -> Iterator[list[str]]:
    """The server log's info lines (``bivio.error``), whatever its propagation."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("bivio.error")
    handler = Collect(logging.INFO)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(old_level)


# -- --timeout-request-body ----------------------------------------------------------------


@run
async def test_stalled_body_gets_408_and_the_app_sees_the_disconnect(info_log):
    clock = Clock()
    app = Reader()
    t, _ = connect(app, timeout_request_body=30)
    t.feed(post(100, b"x"))
    await clock.advance(29.9)
    assert t.take() == b"" and app.outcome is None  # not yet
    await clock.advance(0.2)
    out = t.take()
    assert status_of(out) == b"HTTP/1.1 408 Request Timeout"
    assert b"connection: close\r\n" in out and out.endswith(b"Request body timeout")
    assert app.outcome == "disconnected"  # receive_body raised ClientDisconnected
    assert t.eof_written  # lingering close: the 408 is read before the socket goes
    assert any("127.0.0.1:50000 timed out sending the request body" in line
               for line in info_log), info_log


@run
async def test_body_progress_restarts_the_clock():
    clock = Clock()
    app = Reader()
    t, _ = connect(app, timeout_request_body=10)
    t.feed(post(3, b"a"))
    for byte in (b"b", b"c"):
        await clock.advance(8)  # 16 s in all, but never 10 s without a byte
        assert t.take() == b""
        t.feed(byte)
    await settle()
    assert t.take() == ok(b"abc")
    await clock.advance(100)  # the body is complete: its clock stopped (no 408)
    assert t.take() == b""


@run
async def test_a_complete_body_has_no_clock():
    """The app may take its time once the body is in: that is not the client's fault."""
    clock = Clock()
    go = asyncio.Event()

    async def handler(stream: Any) -> None:
        body = b""
        while True:
            chunk, more = await stream.receive_body()
            body += chunk
            if not more:
                break
        await go.wait()
        await answer(stream, body)

    t, _ = connect(handler, timeout_request_body=5)
    t.feed(post(4, b"ab"))
    await clock.advance(3)
    t.feed(b"cd")
    await clock.advance(100)
    assert t.take() == b"" and not t.closed
    go.set()
    await settle()
    assert t.take() == ok(b"abcd")


@run
async def test_chunked_body_that_stalls_gets_408():
    clock = Clock()
    app = Reader()
    t, _ = connect(app, timeout_request_body=5)
    t.feed(post(None, b"3\r\nabc\r\n"))
    await clock.advance(4)
    t.feed(b"2\r\nde\r\n")
    await clock.advance(4)
    assert t.take() == b""
    await clock.advance(1.1)
    assert status_of(t.take()) == b"HTTP/1.1 408 Request Timeout"
    assert app.outcome == "disconnected" and app.body == b"abcde"


@run
async def test_no_body_timeout_while_bivio_does_not_read():
    """Backpressure: the app has not read, so bivio paused reading; the client is not at fault."""
    clock = Clock()
    app = Reader(wait=True)
    t, _ = connect(app, timeout_request_body=5)
    t.feed(post(HIGH_WATER * 4, b"x" * (HIGH_WATER + 1)))
    await settle()
    assert not t.reading  # paused: more than HIGH_WATER buffered
    await clock.advance(60)
    assert t.take() == b"" and not t.closed and app.outcome is None
    app.go.set()  # the app reads: reading resumes and the clock starts again from zero
    await settle()
    assert t.reading
    await clock.advance(4.9)
    assert t.take() == b"" and not t.closed
    await clock.advance(0.2)
    assert status_of(t.take()) == b"HTTP/1.1 408 Request Timeout"
    assert app.outcome == "disconnected"


@run
async def test_no_body_timeout_before_100_continue_is_sent():
    """``Expect: 100-continue``: the client waits for us until the app reads."""
    clock = Clock()
    app = Reader(wait=True)
    t, _ = connect(app, timeout_request_body=5)
    t.feed(post(10, extra=b"expect: 100-continue\r\n"))
    await clock.advance(60)
    assert t.take() == b"" and not t.closed
    app.go.set()
    await settle()
    assert t.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    await clock.advance(5.1)
    assert status_of(t.take()) == b"HTTP/1.1 408 Request Timeout"


@run
async def test_body_clock_starts_when_the_app_answers_before_100_continue():
    """No 100 will be sent once the response started: the body is due now, or never."""
    clock = Clock()
    outcome: list[str] = []

    async def handler(stream: Any) -> None:
        await stream.start_response(200, [])
        await stream.send_body(b"early ", True)
        try:
            await stream.receive_body()
        except ClientDisconnected:
            outcome.append("disconnected")

    t, _ = connect(handler, timeout_request_body=5)
    t.feed(post(10, extra=b"expect: 100-continue\r\n"))
    await settle()
    assert b"100 Continue" not in t.take()
    await clock.advance(4.9)
    assert not t.closed
    await clock.advance(0.2)
    assert t.closed and outcome == ["disconnected"]  # the response had started: just close


@run
async def test_an_app_answering_after_the_server_did_sees_a_disconnect():
    """The server answered (408) while the app was busy: the app's response raises
    ClientDisconnected (the adapters swallow it), not RuntimeError (an app error)."""
    clock = Clock()
    go = asyncio.Event()
    raised: list[BaseException] = []

    async def handler(stream: Any) -> None:
        await go.wait()
        for send in (lambda: stream.send_informational(103, [(b"link", b"</a>")]),
                     lambda: stream.start_response(200, [])):
            try:
                await send()
            except Exception as exc:  # which one is the point
                raised.append(exc)

    t, _ = connect(handler, timeout_request_body=5)
    t.feed(post(10, b"x"))
    await clock.advance(5.1)
    assert status_of(t.take()) == b"HTTP/1.1 408 Request Timeout"
    go.set()
    await settle()
    assert [type(exc) for exc in raised] == [ClientDisconnected, ClientDisconnected]


@run
async def test_no_body_timeout_for_a_pipelined_request_waiting_its_turn():
    """Reading is paused while the first request is answered: the second's body waits."""
    clock = Clock()
    release = asyncio.Event()

    async def handler(stream: Any) -> None:
        if stream.raw_path == b"/slow":
            await release.wait()
            await answer(stream, b"slow")
            return
        await Reader()(stream)

    t, _ = connect(handler, timeout_request_body=5)
    t.feed(b"GET /slow HTTP/1.1\r\nhost: test\r\n\r\n" + post(4, b"ab"))
    await clock.advance(60)
    assert t.take() == b"" and not t.closed
    release.set()
    await settle()
    assert t.take() == ok(b"slow")
    t.feed(b"cd")
    await settle()
    assert t.take() == ok(b"abcd")


@run
async def test_body_timeout_after_an_early_answer_just_closes():
    """The app answered without reading; the rest of the body never comes: close, no 408."""
    clock = Clock()

    async def handler(stream: Any) -> None:
        await answer(stream, b"early")

    t, _ = connect(handler, timeout_request_body=5)
    t.feed(post(100, b"x"))
    await settle()
    assert t.take() == ok(b"early")
    assert not t.closed  # keep-alive: the rest of the body is read and dropped
    await clock.advance(5.1)
    assert t.closed and t.take() == b""


@run
async def test_body_timeout_0_never_fires():
    clock = Clock()
    app = Reader()
    t, _ = connect(app, timeout_request_body=0)
    t.feed(post(2, b"a"))
    await clock.advance(10_000)
    assert t.take() == b"" and not t.closed
    t.feed(b"b")
    await settle()
    assert t.take() == ok(b"ab")


@run
async def test_a_request_without_body_arms_no_body_clock():
    """Between requests the keep-alive timeout applies, not the body's."""
    clock = Clock()

    async def handler(stream: Any) -> None:
        await answer(stream, b"hi")

    t, _ = connect(handler, timeout_request_body=1, timeout_keep_alive=50)
    t.feed(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
    await settle()
    assert t.take() == ok(b"hi")
    await clock.advance(10)
    assert not t.closed  # the keep-alive timer (50 s) governs the idle connection
    await clock.advance(41)
    assert t.closed and t.take() == b""


@run
async def test_body_timeout_on_the_real_clock():
    """The same 408, on the real loop clock: a 50 ms timeout, polled with a bound."""
    app = Reader()
    t, _ = connect(app, timeout_request_body=0.05)
    t.feed(post(100, b"x"))

    async def answered() -> None:
        # Both: the 408 is written in the timer's callback, and the app's Task wakes
        # after it. (From Python 3.12, wait_for() runs this coroutine in the test's own
        # Task, which could otherwise resume in the timer's iteration, before the app.)
        while not t.written or app.outcome is None:
            await asyncio.sleep(0.005)

    await asyncio.wait_for(answered(), 5)
    assert status_of(t.take()) == b"HTTP/1.1 408 Request Timeout"
    assert app.outcome == "disconnected"


# -- --timeout-send ------------------------------------------------------------------------


def sender(started: asyncio.Event, outcome: list[str], chunks: int = 3) -> Handler:
    """Start a chunked response, then send ``chunks`` more pieces; record how it ended."""

    async def handler(stream: Any) -> None:
        await stream.start_response(200, [])
        started.set()
        try:
            for _ in range(chunks):
                await stream.send_body(b"data", True)
            await stream.send_body(b"", False)
        except ClientDisconnected:
            outcome.append("disconnected")
            return
        outcome.append("complete")

    return handler


@run
async def test_send_timeout_drops_a_client_that_reads_nothing(info_log):
    clock = Clock()
    started = asyncio.Event()
    outcome: list[str] = []
    t, conn = connect(sender(started, outcome), timeout_send=60)
    conn.pause_writing()  # the client's window is full: the transport's buffer stays high
    t.feed(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
    await settle()
    assert started.is_set() and outcome == []  # waiting on backpressure
    await clock.advance(59.9)
    assert not t.aborted and outcome == []
    await clock.advance(0.2)
    assert t.aborted  # abort, not close: nothing more is flushed to a client that won't read
    assert outcome == ["disconnected"]
    assert any("127.0.0.1:50000 timed out reading the response" in line for line in info_log)


@run
async def test_resume_in_time_prevents_the_send_timeout():
    clock = Clock()
    started = asyncio.Event()
    outcome: list[str] = []
    t, conn = connect(sender(started, outcome), timeout_send=10)
    conn.pause_writing()
    t.feed(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
    await settle()
    for _ in range(3):  # paused 9 s at a time: 27 s in all, never 10 s in a row
        await clock.advance(9)
        assert outcome == []
        conn.resume_writing()
        conn.pause_writing()
    conn.resume_writing()
    await settle()
    assert outcome == ["complete"] and not t.aborted
    await clock.advance(100)
    assert not t.aborted


@run
async def test_send_timeout_0_never_drops():
    clock = Clock()
    started = asyncio.Event()
    outcome: list[str] = []
    t, conn = connect(sender(started, outcome), timeout_send=0)
    conn.pause_writing()
    t.feed(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
    await clock.advance(10_000)
    assert not t.aborted and outcome == []
    conn.resume_writing()
    await settle()
    assert outcome == ["complete"]


@run
async def test_send_timeout_while_no_sender_waits():
    """The last piece of a response is written without waiting: the buffer still
    stays full for a client that reads nothing, and the connection is dropped."""
    clock = Clock()

    async def handler(stream: Any) -> None:
        await answer(stream, b"all at once")

    t, conn = connect(handler, timeout_send=5, timeout_keep_alive=100)
    t.feed(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
    await settle()
    conn.pause_writing()  # the transport could not flush it
    await clock.advance(5.1)
    assert t.aborted


class Flow(WriteFlow):
    """WriteFlow alone, as any protocol mixes it in."""

    def __init__(self, transport: FakeTransport, timeout: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport = transport
        self._init_write_flow(timeout)
        transport.protocol = self

    def connection_lost(self, exc: Exception | None) -> None:
        self.write_paused = False
        self._release_writers()


@run
async def test_write_flow_timeout_raises_in_every_waiting_sender():
    clock = Clock()
    t = FakeTransport()
    flow = Flow(t, 3)
    flow.pause_writing()
    waiters = [asyncio.ensure_future(flow.wait_writable()) for _ in range(3)]
    await clock.advance(3.1)
    assert t.aborted
    for waiter in waiters:
        assert isinstance(waiter.exception(), ClientDisconnected)


@run
async def test_write_flow_hand_over_moves_the_pause_and_its_clock():
    clock = Clock()
    t = FakeTransport()
    old, new = Flow(t, 3), Flow(t, 3)
    old.pause_writing()
    await clock.advance(2)
    old._hand_over_write_flow(new)
    assert new.write_paused
    await clock.advance(2)  # 4 s since the first pause: the old clock would have fired
    assert not t.aborted
    new.resume_writing()  # only the new protocol hears it now
    await clock.advance(10)
    assert not t.aborted


WS_REQUEST = (b"GET /ws HTTP/1.1\r\nhost: test\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
              b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n")


@run
async def test_websocket_send_timeout():
    """The WebSocket protocol shares WriteFlow: a client that reads no message is dropped."""
    clock = Clock()
    accepted = asyncio.Event()
    outcome: list[str] = []

    async def handler(stream: Any) -> None:
        ws = stream.open_websocket()
        await ws.accept(None, [])
        accepted.set()
        try:
            for _ in range(3):
                await ws.send(b"message")
        except ClientDisconnected:
            outcome.append("disconnected")
            return
        outcome.append("complete")

    t = FakeTransport()
    connect(handler, transport=t, timeout_send=7, ws_ping_interval=0)
    t.protocol.pause_writing()  # paused before the switch: the WebSocket inherits it
    t.feed(WS_REQUEST)
    await settle()
    assert accepted.is_set() and t.take().startswith(b"HTTP/1.1 101 ")
    assert type(t.protocol).__name__ == "WebSocket" and t.protocol.write_paused
    await clock.advance(6.9)
    assert outcome == [] and not t.aborted
    await clock.advance(0.2)
    assert t.aborted and outcome == ["disconnected"]


@run
async def test_websocket_that_reads_after_the_switch_is_not_dropped():
    """The pause moves to the WebSocket with the socket: its resume_writing cancels the clock."""
    clock = Clock()
    done = asyncio.Event()

    async def handler(stream: Any) -> None:
        ws = stream.open_websocket()
        await ws.accept(None, [])
        await ws.send(b"message")
        done.set()
        await asyncio.Event().wait()  # stay open

    t = FakeTransport()
    connect(handler, transport=t, timeout_send=7, ws_ping_interval=0)
    t.protocol.pause_writing()
    t.feed(WS_REQUEST)
    await settle()
    await clock.advance(5)
    t.protocol.resume_writing()  # the client reads: only the WebSocket hears it
    await settle()
    assert done.is_set()
    await clock.advance(30)
    assert not t.aborted and not t.closed


# -- sendfile under --timeout-send --------------------------------------------------------------


@run
async def test_sendfile_wait_for_a_writable_socket_is_bounded(info_log, monkeypatch):
    """The zero-copy path waits on the socket itself, not the transport's buffer."""
    clock = Clock()
    t, conn = connect(lambda stream: asyncio.sleep(0), timeout_send=4)
    registered: list[int] = []
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "add_writer", lambda fd, *args: registered.append(fd))
    monkeypatch.setattr(loop, "remove_writer", lambda fd: True)
    waiting = asyncio.ensure_future(conn._writable(99))  # a socket that never drains
    await settle()
    await clock.advance(3.9)
    assert registered == [99] and not waiting.done()
    await clock.advance(0.2)
    assert isinstance(waiting.exception(), ClientDisconnected)
    assert t.aborted
    assert any("timed out reading the response" in line for line in info_log)


# -- the buffer ceiling: large sends go out in slices --------------------------------------------


class FullTransport(FakeTransport):
    """A transport whose buffer is above its high-water mark after every write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[int] = []

    def write(self, data: Any) -> None:
        super().write(data)
        self.writes.append(len(data))
        if self.protocol is not None and not self.protocol.write_paused:
            self.protocol.pause_writing()


def unchunk(body: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert body == b"\r\n"
            return out
        out += body[:size]
        assert body[size:size + 2] == b"\r\n"
        body = body[size + 2:]


@pytest.mark.parametrize("more", [False, True], ids=["content-length", "chunked"])
@run
async def test_a_large_send_body_is_written_in_slices(more):
    big = bytes(range(256)) * (4 * SEND_SLICE // 256) + b"tail"  # 4 slices and a bit
    done = asyncio.Event()

    async def handler(stream: Any) -> None:
        await stream.start_response(200, [])
        await stream.send_body(big, more)
        if more:
            await stream.send_body(b"", False)
        done.set()

    t = FullTransport()
    connect(handler, transport=t)
    t.feed(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
    await settle()
    head_len = len(bytes(t.written).partition(b"\r\n\r\n")[0]) + 4
    rounds = 0
    while not done.is_set():
        # One slice per writable period: never more than a slice (and its framing) at once.
        assert t.writes[-1] <= SEND_SLICE + head_len + 16
        rounds += 1
        t.protocol.resume_writing()
        await settle()
    assert rounds >= 4
    head, _, body = bytes(t.written).partition(b"\r\n\r\n")
    if more:
        assert b"transfer-encoding: chunked" in head
        assert unchunk(body) == big
    else:
        assert b"content-length: %d" % len(big) in head
        assert body == big


@run
async def test_a_small_response_is_one_write_without_waiting():
    """The hot path stays as it was: head and body in one write, even when paused."""
    done = asyncio.Event()

    async def handler(stream: Any) -> None:
        await answer(stream, b"x" * 1000)
        done.set()

    t = FullTransport()
    connect(handler, transport=t)
    t.protocol.pause_writing()
    t.feed(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
    await settle()
    assert done.is_set() and len(t.writes) == 1
    assert t.take() == ok(b"x" * 1000)


@run
async def test_a_large_send_stops_when_the_client_leaves():
    outcome: list[str] = []

    async def handler(stream: Any) -> None:
        await stream.start_response(200, [])
        try:
            await stream.send_body(b"x" * (3 * SEND_SLICE), False)
        except ClientDisconnected:
            outcome.append("disconnected")

    t = FullTransport()
    connect(handler, transport=t)
    t.feed(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
    await settle()
    assert len(t.writes) == 1
    t.lose()
    await settle()
    assert outcome == ["disconnected"] and len(t.writes) == 1


# -- error answers: write, shut the write side, drain, close ------------------------------------


TOO_MANY_FIELDS = b"GET / HTTP/1.1\r\nhost: test\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n"


async def noop(stream: Any) -> None:
    await answer(stream, b"never")


@run
async def test_431_is_followed_by_write_eof_then_close_on_the_clients_eof():
    t, _ = connect(noop, limit_request_fields=2)
    t.feed(TOO_MANY_FIELDS)
    await settle()
    out = t.take()
    assert status_of(out) == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert t.eof_written and not t.closed  # the answer goes out, then EOF
    assert t.reading  # the rest of the request is read and dropped, not left to cause a RST
    t.feed(b"x-more: " + b"y" * 1000 + b"\r\n")
    assert t.take() == b"" and not t.closed
    t.feed_eof()  # the client read the answer and closed
    assert t.closed


@run
async def test_414_lingers_at_most_linger_bytes():
    t, _ = connect(noop, limit_request_line=64)
    t.feed(b"GET /" + b"a" * 100)
    await settle()
    assert status_of(t.take()) == b"HTTP/1.1 " + phrase(414)
    assert t.eof_written and not t.closed
    t.feed(b"a" * (LINGER_BYTES - 1))
    assert not t.closed
    t.feed(b"a")
    assert t.closed


@run
async def test_an_error_lingers_at_most_linger_seconds():
    clock = Clock()
    t, _ = connect(noop, limit_request_fields=2)
    t.feed(TOO_MANY_FIELDS)
    await clock.advance(LINGER_SECONDS - 0.1)
    assert t.eof_written and not t.closed
    await clock.advance(0.2)
    assert t.closed


@run
async def test_an_error_after_the_clients_eof_closes_at_once():
    t, conn = connect(noop)
    conn.eof_received()  # the client half-closed first: nothing more can come
    t.feed(b"GET / HTTP/1.1\r\n\r\n")  # no Host: 400
    await settle()
    assert status_of(t.take()) == b"HTTP/1.1 400 Bad Request"
    assert t.closed and not t.eof_written


class NoHalfClose(FakeTransport):
    """A transport that cannot shut down its write side alone (TLS)."""

    def can_write_eof(self) -> bool:
        return False


@run
async def test_an_error_closes_at_once_without_half_close():
    t, _ = connect(noop, transport=NoHalfClose(), limit_request_fields=2)
    t.feed(TOO_MANY_FIELDS)
    await settle()
    assert status_of(t.take()) == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert t.closed and not t.eof_written


@run
async def test_a_lingering_connection_is_no_longer_a_server_connection():
    """Graceful shutdown need not wait for it: it closes by itself within the bound."""
    ctx = ServerContext(Config(limit_request_fields=2), noop)
    t = FakeTransport()
    conn = t.connect(H1Connection(ctx))
    assert conn in ctx.connections
    t.feed(TOO_MANY_FIELDS)
    await settle()
    assert t.eof_written and conn not in ctx.connections


# -- RTSP and ICE request lines ------------------------------------------------------------------


def assert_505(t: FakeTransport) -> None:
    out = t.take()
    assert status_of(out) == b"HTTP/1.1 505 HTTP Version Not Supported", out
    assert t.eof_written


@pytest.mark.parametrize("line", [
    b"ANNOUNCE /x RTSP/1.0\r\nCSeq: 1\r\n\r\n",
    b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n",
    b"SOURCE /x ICE/1.0\r\n\r\n",
    b"\r\nPLAY /x RTSP/1.0\r\n\r\n",  # after a leading CRLF
], ids=["announce", "options", "ice-source", "leading-crlf"])
@run
async def test_rtsp_and_ice_request_lines_get_505(line):
    seen: list[Any] = []

    async def handler(stream: Any) -> None:
        seen.append(stream)
        await answer(stream, b"served")

    t, _ = connect(handler)
    t.feed(line)
    await settle()
    assert_505(t)
    assert seen == []  # the app never saw it


@run
async def test_an_rtsp_line_split_over_reads_gets_505():
    for pieces in ([b"GET / RT", b"SP/1.0\r\nCSeq: 1\r\n\r\n"],
                   [bytes([b]) for b in b"SOURCE /x ICE/1.0\r\n\r\n"]):
        t, _ = connect(noop)
        for piece in pieces:
            t.feed(piece)
        await settle()
        assert_505(t)


@run
async def test_a_pipelined_rtsp_request_gets_505_after_the_valid_one():
    async def handler(stream: Any) -> None:
        await answer(stream, stream.raw_path)

    t, _ = connect(handler)
    t.feed(b"GET /first HTTP/1.1\r\nhost: test\r\n\r\nDESCRIBE /x RTSP/1.0\r\n\r\n")
    await settle()
    out = t.take()
    assert out.startswith(ok(b"/first"))
    assert status_of(out[len(ok(b"/first")):]) == b"HTTP/1.1 505 HTTP Version Not Supported"


@pytest.mark.parametrize("raw", [
    b"GET / HTTP/1.1\r\nhost: test\r\nx-via: RTSP/1.0 ICE/1.0\r\n\r\n",
    b"\r\nGET / HTTP/1.1\r\nhost: test\r\nx-via: GET / RTSP/1.0\r\n\r\n",
    b"GET /a HTTP/1.1\r\nhost: test\r\n\r\nGET / HTTP/1.1\r\nhost: test\r\nx: RTSP/1.0\r\n\r\n",
], ids=["header", "header-after-crlf", "pipelined-header"])
@run
async def test_http_requests_that_mention_rtsp_are_served(raw):
    async def handler(stream: Any) -> None:
        await answer(stream, b"ok")

    t, _ = connect(handler)
    t.feed(raw)
    await settle()
    out = t.take()
    assert out.count(b"HTTP/1.1 200 OK") == raw.count(b" HTTP/1.1\r\n"), out
    assert not t.closed

