"""The HTTP/1.1 connection state machine, driven byte by byte over a FakeTransport.

No sockets and no wall-clock waits: every step is fed, the loop is advanced,
and the exact bytes written (and whether reading paused or the transport
closed) are checked. Only the timeout tests wait, on timeouts of 50 ms.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import pytest
from fakes import FakeTransport

from bivio.adapters.asgi import ASGIHandler
from bivio.adapters.wsgi import _watch_rest
from bivio.core.config import Config
from bivio.core.context import ResponseInfo, ServerContext
from bivio.core.stream import ClientDisconnected
from bivio.protocols.http1 import HIGH_WATER, H1Connection
from bivio.protocols.websocket import WRITE_BATCH

Handler = Callable[[Any], Awaitable[None]]


def phrase(status: int) -> bytes:
    """``413 Content Too Large``: the phrase is Python's (RFC 9110's names from 3.13 on)."""
    return b"%d %s" % (status, HTTPStatus(status).phrase.encode())


# -- harness ------------------------------------------------------------------------------


def run(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test body on a fresh event loop."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return wrapper


def connect(handler: Handler, **options: Any) -> tuple[ServerContext, FakeTransport, Any]:
    """A context (no Date/Server headers, so bytes are exact) and one connection on it."""
    ctx = ServerContext(Config(date_header=False, server_header=False, **options), handler)
    t = FakeTransport()
    conn = t.connect(H1Connection(ctx))
    return ctx, t, conn


async def settle(rounds: int = 20) -> None:
    """Let ready callbacks and handler tasks run (no wall-clock time passes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def until(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    """Poll for a state a configured (tiny) timeout brings about; fail after ``limit`` s."""

    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), limit)


def request(path: bytes = b"/", method: bytes = b"GET", version: bytes = b"1.1",
            headers: bytes = b"", body: bytes = b"") -> bytes:
    host = b"host: test\r\n" if version == b"1.1" else b""
    return (method + b" " + path + b" HTTP/" + version + b"\r\n" + host + headers + b"\r\n"
            + body)


def ok(body: bytes, extra: bytes = b"") -> bytes:
    """What :func:`echo_path` (or any plain text 200) writes for ``body``."""
    return (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n"
            % len(body) + extra + b"\r\n" + body)


def assert_lingering_close(t: FakeTransport) -> None:
    """After an error answer the write side is shut down (the client reads the answer,
    then EOF) and unread request bytes are drained; the client's EOF closes it."""
    assert t.eof_written and not t.closed
    t.feed_eof()
    assert t.closed


async def answer(stream: Any, body: bytes) -> None:
    await stream.start_response(200, [(b"content-type", b"text/plain")])
    await stream.send_body(body, False)


async def echo_path(stream: Any) -> None:
    stream.interface = "test"
    await answer(stream, stream.raw_path)


async def echo_body(stream: Any) -> None:
    body = b""
    while True:
        chunk, more = await stream.receive_body()
        body += chunk
        if not more:
            break
    await answer(stream, body)


def held(release: asyncio.Event, started: list[Any] | None = None) -> Handler:
    """Echo the path, but ``/slow`` only once ``release`` is set."""

    async def handler(stream: Any) -> None:
        if started is not None:
            started.append(stream)
        if stream.raw_path == b"/slow":
            await release.wait()
        await answer(stream, stream.raw_path)

    return handler


def status_of(data: bytes) -> bytes:
    return data.split(b"\r\n", 1)[0]


# -- keep-alive ----------------------------------------------------------------------------


@run
async def test_keep_alive_serves_two_requests_on_one_connection():
    """A persistent connection answers each request and stays open for the next."""
    _, t, _ = connect(echo_path)
    t.feed(request(b"/one"))
    await settle()
    assert t.take() == ok(b"/one")
    assert not t.closed and t.reading
    t.feed(request(b"/two"))
    await settle()
    assert t.take() == ok(b"/two")
    assert not t.closed and t.reading


@run
async def test_connection_close_request_closes_after_response():
    _, t, _ = connect(echo_path)
    t.feed(request(headers=b"connection: close\r\n"))
    await settle()
    assert t.take() == ok(b"/", b"connection: close\r\n")
    assert t.closed


@run
async def test_http10_without_keep_alive_closes():
    _, t, _ = connect(echo_path)
    t.feed(request(version=b"1.0"))
    await settle()
    assert t.take() == ok(b"/", b"connection: close\r\n")
    assert t.closed


@run
async def test_http10_keep_alive_is_confirmed_and_kept():
    """HTTP/1.0 persistence must be announced, or the client waits for the close."""
    _, t, _ = connect(echo_path)
    t.feed(request(version=b"1.0", headers=b"connection: keep-alive\r\n"))
    await settle()
    assert t.take() == ok(b"/", b"connection: keep-alive\r\n")
    assert not t.closed
    t.feed(request(b"/again", version=b"1.0", headers=b"connection: keep-alive\r\n"))
    await settle()
    assert t.take() == ok(b"/again", b"connection: keep-alive\r\n")


# -- pipelining ------------------------------------------------------------------------------


@run
async def test_pipelined_responses_keep_request_order():
    """A fast second request must not overtake a slow first one."""
    release = asyncio.Event()
    _, t, _ = connect(held(release))
    t.feed(request(b"/slow") + request(b"/fast"))
    await settle()
    assert t.take() == b""  # /fast waits for /slow, which waits for the event
    release.set()
    await settle()
    assert t.take() == ok(b"/slow") + ok(b"/fast")
    assert not t.closed


@run
async def test_three_pipelined_requests_in_one_read():
    started: list[Any] = []
    _, t, _ = connect(held(asyncio.Event(), started))
    t.feed(request(b"/a") + request(b"/b") + request(b"/c"))
    await settle()
    assert t.take() == ok(b"/a") + ok(b"/b") + ok(b"/c")
    assert [s.raw_path for s in started] == [b"/a", b"/b", b"/c"]


# The version is read off the request line when that line is known to start the read
# (H1Connection.on_headers_complete); every other request asks llhttp. Each case below
# puts "HTTP/1.1" CRLF where a wrong guess would read it.
_VERSION_READS = {
    "pipelined, same line but the version": [request() + request(version=b"1.0")],
    "after a body's end in the same read": [
        request(b"/", b"POST", headers=b"content-length: 16\r\n", body=b"123456HTTP/1.1\r\n")
        + request(version=b"1.0")],
    "after a body's end that began the read": [
        request(b"/", b"POST", headers=b"content-length: 16\r\n"),
        b"123456HTTP/1.1\r\n" + request(version=b"1.0")],
    "after empty lines": [request(), b"\r\n" + request(version=b"1.0")],
    "a head over two reads": [request(), b"GET / HTTP/1.0\r\n", b"\r\n"],
    "byte by byte": [bytes([b]) for b in request() + request(version=b"1.0")],
}


@pytest.mark.parametrize("reads", _VERSION_READS.values(), ids=_VERSION_READS.keys())
@run
async def test_each_request_gets_its_own_http_version(reads: list[bytes]):
    versions: list[str] = []

    async def handler(stream: Any) -> None:
        versions.append(stream.http_version)
        while (await stream.receive_body())[1]:
            pass
        await answer(stream, b"")

    _, t, _ = connect(handler)
    for data in reads:
        t.feed(data)
        await settle()
    assert versions == ["1.1", "1.0"]
    assert t.take().count(b"HTTP/1.1 200") == 2  # (a 1.0 request is answered as 1.1)
    assert t.closed  # HTTP/1.0 without keep-alive


@run
async def test_reading_pauses_while_requests_are_pending():
    """Queued requests bound the buffering: no more is read until the queue drains."""
    release = asyncio.Event()
    started: list[Any] = []
    _, t, _ = connect(held(release, started))
    t.feed(request(b"/slow") + request(b"/next"))
    await settle()
    assert not t.reading
    assert [s.raw_path for s in started] == [b"/slow"]  # the second is not started yet
    release.set()
    await settle()
    assert t.reading
    assert [s.raw_path for s in started] == [b"/slow", b"/next"]


# -- response framing ---------------------------------------------------------------------


@run
async def test_single_send_gets_content_length():
    async def handler(stream: Any) -> None:
        await stream.start_response(200, [])
        await stream.send_body(b"hello", False)

    _, t, _ = connect(handler)
    t.feed(request())
    await settle()
    assert t.take() == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"


@run
async def test_streamed_response_is_chunked_on_http11():
    async def handler(stream: Any) -> None:
        await stream.start_response(200, [])
        await stream.send_body(b"ab", True)
        await stream.send_body(b"cde", False)

    _, t, _ = connect(handler)
    t.feed(request())
    await settle()
    assert t.take() == (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                        b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n")
    assert not t.closed


@run
async def test_streamed_response_on_http10_is_delimited_by_close():
    """HTTP/1.0 has no chunking: the body ends where the connection does."""

    async def handler(stream: Any) -> None:
        await stream.start_response(200, [])
        await stream.send_body(b"ab", True)
        await stream.send_body(b"cd", False)

    _, t, _ = connect(handler)
    t.feed(request(version=b"1.0", headers=b"connection: keep-alive\r\n"))
    await settle()
    assert t.take() == b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nabcd"
    assert t.closed


@run
async def test_head_gets_headers_without_body():
    async def handler(stream: Any) -> None:
        await stream.start_response(200, [(b"content-length", b"5")])
        await stream.send_body(b"hello", False)

    _, t, _ = connect(handler)
    t.feed(request(method=b"HEAD") + request(method=b"HEAD"))
    await settle()
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"
    assert t.take() == head + head  # the second proves no body bytes were counted
    assert not t.closed


@pytest.mark.parametrize("status, line", [(204, b"204 No Content"), (304, b"304 Not Modified")])
@run
async def test_no_body_statuses_get_no_body(status: int, line: bytes):
    async def handler(stream: Any) -> None:
        await stream.start_response(status, [])
        await stream.send_body(b"", False)

    _, t, _ = connect(handler)
    t.feed(request() + request())
    await settle()
    assert t.take() == (b"HTTP/1.1 " + line + b"\r\n\r\n") * 2
    assert not t.closed


# -- request body ------------------------------------------------------------------------------


@run
async def test_content_length_body_through_receive_body():
    _, t, _ = connect(echo_body)
    t.feed(request(method=b"POST", headers=b"content-length: 10\r\n", body=b"hello"))
    await settle()
    assert t.take() == b""
    t.feed(b"world")
    await settle()
    assert t.take() == ok(b"helloworld")
    assert not t.closed


@run
async def test_chunked_body_through_receive_body():
    _, t, _ = connect(echo_body)
    t.feed(request(method=b"POST", headers=b"transfer-encoding: chunked\r\n",
                   body=b"5\r\nhello\r\n"))
    await settle()
    assert t.take() == b""
    t.feed(b"6\r\n world\r\n0\r\n\r\n")
    await settle()
    assert t.take() == ok(b"hello world")
    assert not t.closed


@pytest.mark.parametrize("headers, expected", [
    (b"", 0),
    (b"content-length: 5\r\n", 5),
    (b"transfer-encoding: chunked\r\n", None),
])
@run
async def test_body_length_reports_the_framing(headers: bytes, expected: int | None):
    seen: list[int | None] = []

    async def handler(stream: Any) -> None:
        seen.append(stream.body_length)
        await echo_body(stream)

    _, t, _ = connect(handler)
    body = b"hello" if expected == 5 else b"5\r\nhello\r\n0\r\n\r\n" if expected is None else b""
    t.feed(request(method=b"POST", headers=headers, body=body))
    await settle()
    assert seen == [expected]
    assert t.take() == ok(b"hello" if body else b"")


@run
async def test_early_answer_discards_the_rest_of_the_body_and_keeps_the_connection():
    """An app may answer without reading; the unread body must not parse as a request."""
    _, t, _ = connect(echo_path)
    t.feed(request(b"/a", method=b"POST", headers=b"content-length: 10\r\n", body=b"abc"))
    await settle()
    assert t.take() == ok(b"/a")
    t.feed(b"GET / H" + request(b"/b"))  # the 7 body bytes left, then a request
    await settle()
    assert t.take() == ok(b"/b")
    assert not t.closed


@run
async def test_unread_body_past_high_water_pauses_reading():
    """A slow reader holds the client back instead of growing the buffer."""
    go = asyncio.Event()

    async def handler(stream: Any) -> None:
        await go.wait()
        await echo_body(stream)

    _, t, _ = connect(handler)
    size = HIGH_WATER + 10
    t.feed(request(method=b"POST", headers=b"content-length: %d\r\n" % (size + 1),
                   body=b"x" * size))
    await settle()
    assert not t.reading
    go.set()
    await settle()
    assert t.reading  # reading drained the buffer
    t.feed(b"y")
    await settle()
    assert t.take() == ok(b"x" * size + b"y")


# -- close_after_response ----------------------------------------------------------------------


@run
async def test_close_after_response_says_close_and_closes():
    async def handler(stream: Any) -> None:
        stream.close_after_response()
        await answer(stream, b"bye")

    _, t, _ = connect(handler)
    t.feed(request() + request(b"/never"))
    await settle()
    assert t.take() == ok(b"bye", b"connection: close\r\n")  # the pipelined one is dropped
    assert t.closed


@run
async def test_short_response_body_closes_the_connection():
    """Fewer bytes than Content-Length: the client would wait forever on a reused one."""

    async def handler(stream: Any) -> None:
        await stream.start_response(200, [(b"content-length", b"5")])
        await stream.send_body(b"abc", False)

    _, t, _ = connect(handler)
    t.feed(request())
    await settle()
    assert t.take() == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nabc"
    assert t.closed


# -- 100-continue -----------------------------------------------------------------------------


@run
async def test_100_continue_is_sent_when_the_handler_reads():
    go = asyncio.Event()

    async def handler(stream: Any) -> None:
        await go.wait()
        await echo_body(stream)

    _, t, _ = connect(handler)
    t.feed(request(method=b"POST", headers=b"expect: 100-continue\r\ncontent-length: 5\r\n"))
    await settle()
    assert t.take() == b""  # no 100 until the app asks for the body
    go.set()
    await settle()
    assert t.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    t.feed(b"hello")
    await settle()
    assert t.take() == ok(b"hello")
    assert not t.closed


@run
async def test_answer_without_reading_skips_100_and_closes():
    """The client may or may not send the body now: the connection cannot be reused."""

    async def handler(stream: Any) -> None:
        await answer(stream, b"no")

    _, t, _ = connect(handler)
    t.feed(request(method=b"POST", headers=b"expect: 100-continue\r\ncontent-length: 5\r\n"))
    await settle()
    assert t.take() == ok(b"no", b"connection: close\r\n")
    assert t.closed


# -- limits and parse errors ----------------------------------------------------------------


async def expect_error(data: bytes, line: bytes, **options: Any) -> bytes:
    """Feed ``data``; the server itself answers ``line`` and closes."""
    _, t, _ = connect(echo_body, **options)
    t.feed(data)
    await settle()
    out = t.take()
    assert status_of(out) == b"HTTP/1.1 " + line
    assert b"connection: close\r\n" in out
    assert_lingering_close(t)
    return out


@run
async def test_414_request_line_too_long():
    await expect_error(request(b"/" + b"x" * 40), phrase(414),
                       limit_request_line=20)


@run
async def test_431_too_many_header_fields():
    await expect_error(request(headers=b"a: 1\r\nb: 2\r\n"),
                       b"431 Request Header Fields Too Large", limit_request_fields=2)


@run
async def test_431_header_field_too_large():
    await expect_error(request(headers=b"x-big: " + b"v" * 30 + b"\r\n"),
                       b"431 Request Header Fields Too Large", limit_request_field_size=20)


@run
async def test_413_content_length_above_limit():
    await expect_error(request(method=b"POST", headers=b"content-length: 11\r\n"),
                       phrase(413), limit_request_body=10)


@run
async def test_413_chunked_body_growing_past_limit():
    body = b"8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n"

    async def handler(stream: Any) -> None:
        try:
            await echo_body(stream)
        except ClientDisconnected:
            pass

    _, t, _ = connect(handler, limit_request_body=10)
    t.feed(request(method=b"POST", headers=b"transfer-encoding: chunked\r\n", body=body))
    await settle()
    out = t.take()
    assert status_of(out) == b"HTTP/1.1 " + phrase(413)
    assert_lingering_close(t)


@run
async def test_400_malformed_request_line():
    await expect_error(b"NOT A REQUEST\r\n\r\n", b"400 Bad Request")


@run
async def test_400_missing_host_on_http11():
    out = await expect_error(b"GET / HTTP/1.1\r\n\r\n", b"400 Bad Request")
    assert out.endswith(b"Missing Host header")


@run
async def test_400_chunked_not_the_final_coding():
    await expect_error(request(method=b"POST", headers=b"transfer-encoding: chunked, gzip\r\n"),
                       b"400 Bad Request")


@run
async def test_501_unsupported_transfer_coding():
    await expect_error(request(method=b"POST", headers=b"transfer-encoding: gzip, chunked\r\n"),
                       b"501 Not Implemented")


@run
async def test_505_http2_request_line():
    await expect_error(b"GET / HTTP/2.0\r\nhost: test\r\n\r\n", b"505 HTTP Version Not Supported")


@run
async def test_408_request_header_timeout():
    _, t, _ = connect(echo_path, timeout_request_header=0.05)
    t.feed(b"GET / HTTP/1.1\r\nhost: te")
    await until(lambda: t.eof_written)
    assert status_of(t.take()) == b"HTTP/1.1 408 Request Timeout"
    assert_lingering_close(t)


@run
async def test_keep_alive_timeout_closes_an_idle_connection():
    _, t, _ = connect(echo_path, timeout_keep_alive=0.05)
    t.feed(request())
    await settle()
    assert t.take() == ok(b"/")
    await until(lambda: t.closed)
    assert t.take() == b""  # closed silently: no request to answer


@run
async def test_valid_request_before_a_malformed_one_is_answered_first():
    release = asyncio.Event()
    _, t, _ = connect(held(release))
    t.feed(request(b"/slow") + b"NOT A REQUEST\r\n\r\n")
    await settle()
    assert t.take() == b""  # the 400 waits for the valid request's answer
    assert not t.closed
    release.set()
    await settle()
    out = t.take()
    assert out.startswith(ok(b"/slow"))
    assert status_of(out[len(ok(b"/slow")):]) == b"HTTP/1.1 400 Bad Request"
    assert_lingering_close(t)


@run
async def test_503_over_limit_concurrency():
    """The server answers itself while the one allowed request is in flight."""
    release = asyncio.Event()
    ctx, busy, _ = connect(held(release), limit_concurrency=1)
    busy.feed(request(b"/slow"))
    await settle()
    other = FakeTransport(peer=("127.0.0.1", 50001))
    other.connect(H1Connection(ctx))
    other.feed(request(b"/x"))
    await settle()
    out = other.take()
    assert status_of(out) == b"HTTP/1.1 503 Service Unavailable"
    assert out.endswith(b"\r\n\r\nService Unavailable")
    release.set()
    await settle()
    assert busy.take() == ok(b"/slow")
    other.feed(request(b"/x"))  # capacity is back
    await settle()
    assert other.take() == ok(b"/x")


@run
async def test_503_to_expect_continue_announces_the_close():
    """The body may or may not follow a 503 sent instead of 100: say the connection ends."""
    release = asyncio.Event()
    ctx, busy, _ = connect(held(release), limit_concurrency=1)
    busy.feed(request(b"/slow"))
    await settle()
    other = FakeTransport()
    other.connect(H1Connection(ctx))
    other.feed(request(method=b"POST",
                       headers=b"expect: 100-continue\r\ncontent-length: 5\r\n"))
    await settle()
    out = other.take()
    assert status_of(out) == b"HTTP/1.1 503 Service Unavailable"
    assert b"100 Continue" not in out
    assert b"\r\nconnection: close\r\n" in out
    assert other.closed


# -- half-close and disconnects ----------------------------------------------------------------


@run
async def test_eof_after_request_still_gets_the_response():
    release = asyncio.Event()
    _, t, _ = connect(held(release))
    t.feed(request(b"/slow"))
    t.feed_eof()
    await settle()
    assert not t.closed  # half-closed: the answer is still owed
    release.set()
    await settle()
    assert t.take() == ok(b"/slow", b"connection: close\r\n")
    assert t.closed


@run
async def test_eof_after_pipelined_requests_answers_all_then_closes():
    release = asyncio.Event()
    _, t, _ = connect(held(release))
    t.feed(request(b"/slow") + request(b"/fast"))
    t.feed_eof()
    await settle()
    assert not t.closed
    release.set()
    await settle()
    assert t.take() == ok(b"/slow") + ok(b"/fast", b"connection: close\r\n")
    assert t.closed


@run
async def test_eof_mid_body_of_a_pipelined_request_still_answers_the_earlier_one():
    """The EOF cuts a later request's body short: that request can never complete,
    but the complete one before it is still answered, and only then the connection closes."""
    release = asyncio.Event()
    started: list[Any] = []
    _, t, _ = connect(held(release, started))
    t.feed(request(b"/slow") + request(b"/cut", b"POST", headers=b"content-length: 10\r\n",
                                       body=b"abc"))
    t.feed_eof()
    await settle()
    assert not t.closed  # the answer to /slow is still owed
    release.set()
    await settle()
    assert t.take() == ok(b"/slow", b"connection: close\r\n")
    assert t.closed
    assert [s.raw_path for s in started] == [b"/slow"]  # /cut never reached the app


@run
async def test_eof_mid_body_raises_client_disconnected():
    got: list[bytes] = []
    errors: list[BaseException] = []

    async def handler(stream: Any) -> None:
        try:
            while True:
                chunk, more = await stream.receive_body()
                got.append(chunk)
                if not more:
                    break
        except ClientDisconnected as exc:
            errors.append(exc)

    _, t, _ = connect(handler)
    t.feed(request(method=b"POST", headers=b"content-length: 10\r\n", body=b"abc"))
    await settle()
    t.feed_eof()
    await settle()
    assert got == [b"abc"]
    assert len(errors) == 1
    assert t.closed


@run
async def test_lost_connection_wakes_wait_closed():
    waiting = asyncio.Event()
    woke: list[bool] = []

    async def handler(stream: Any) -> None:
        waiting.set()
        await stream.wait_closed()
        woke.append(stream.disconnected)

    _, t, _ = connect(handler)
    t.feed(request())
    await waiting.wait()
    await settle()
    assert woke == []
    t.lose()
    await settle()
    assert woke == [True]


@run
async def test_send_after_lost_connection_raises():
    release = asyncio.Event()
    errors: list[BaseException] = []

    async def handler(stream: Any) -> None:
        await stream.start_response(200, [])
        await stream.send_body(b"first", True)
        await release.wait()
        try:
            await stream.send_body(b"second", False)
        except ClientDisconnected as exc:
            errors.append(exc)

    _, t, _ = connect(handler)
    t.feed(request())
    await settle()
    assert t.take().endswith(b"5\r\nfirst\r\n")
    t.lose()
    release.set()
    await settle()
    assert len(errors) == 1
    assert t.take() == b""


# -- response header validation ------------------------------------------------------------------


@run
async def test_header_injection_refused_before_anything_is_written():
    """A CR LF in a value would split the response; it is refused and nothing goes out."""
    seen: list[Any] = []

    async def handler(stream: Any) -> None:
        try:
            await stream.start_response(200, [(b"x-bad", b"a\r\nx-injected: 1")])
        except ValueError as exc:
            seen.append((exc, stream.response_started, bytes(t.written)))
        await stream.start_response(500, [])  # the stream is still usable for an error
        await stream.send_body(b"", False)

    _, t, _ = connect(handler)
    t.feed(request())
    await settle()
    assert len(seen) == 1
    _, started, written = seen[0]
    assert not started and written == b""
    assert t.take() == b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n"


# -- the per-response hook ---------------------------------------------------------------------


def hooked(ctx: ServerContext) -> list[ResponseInfo]:
    infos: list[ResponseInfo] = []
    ctx.response_hooks.append(infos.append)
    return infos


@run
async def test_hook_reports_each_response_once():
    ctx, t, _ = connect(echo_path)
    infos = hooked(ctx)
    t.feed(request(b"/p?q=1", method=b"POST", headers=b"content-length: 0\r\n"))
    await settle()
    assert t.take() == ok(b"/p")
    assert len(infos) == 1
    info = infos[0]
    assert (info.method, info.target, info.http_version, info.status, info.sent) == (
        "POST", "/p?q=1", "1.1", 200, 2)
    assert (info.protocol, info.interface, info.client) == (
        "http/1.1", "test", ("127.0.0.1", 50000))
    assert info.duration >= 0


@run
async def test_hook_reports_asgi_interface():
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"made"})

    ctx, t, _ = connect(ASGIHandler(app))
    infos = hooked(ctx)
    t.feed(request(b"/new"))
    await settle()
    assert t.take() == b"HTTP/1.1 201 Created\r\ncontent-length: 4\r\n\r\nmade"
    assert [(i.status, i.sent, i.interface, i.target) for i in infos] == [
        (201, 4, "asgi", "/new")]


@run
async def test_hook_reports_server_written_400():
    ctx, t, _ = connect(echo_path)
    infos = hooked(ctx)
    t.feed(b"NOT A REQUEST\r\n\r\n")
    await settle()
    body = t.take().split(b"\r\n\r\n", 1)[1]
    assert len(infos) == 1
    info = infos[0]
    assert (info.status, info.sent, info.interface, info.protocol) == (
        400, len(body), "-", "http/1.1")
    assert (info.method, info.target) == ("-", "-")  # no request head was ever complete


@run
async def test_hook_reports_503():
    release = asyncio.Event()
    ctx, busy, _ = connect(held(release), limit_concurrency=1)
    infos = hooked(ctx)
    busy.feed(request(b"/slow"))
    await settle()
    other = FakeTransport()
    other.connect(H1Connection(ctx))
    other.feed(request(b"/x"))
    await settle()
    assert [(i.status, i.method, i.target, i.interface) for i in infos] == [
        (503, "GET", "/x", "-")]
    release.set()
    await settle()
    assert [i.status for i in infos] == [503, 200]


# -- intake -------------------------------------------------------------------------------------


@run
async def test_pause_intake_when_idle_pauses_reading():
    _, t, conn = connect(echo_path)
    conn.pause_intake()
    assert not t.reading
    conn.resume_intake()
    assert t.reading
    t.feed(request())
    await settle()
    assert t.take() == ok(b"/")


@run
async def test_intake_pause_never_starves_a_body_in_progress():
    """Intake stops *between* requests: the running request keeps reading its body."""
    ctx, t, _ = connect(echo_body)
    t.feed(request(method=b"POST", headers=b"content-length: 6\r\n", body=b"abc"))
    await settle()
    ctx.pause_intake()
    assert t.reading
    t.feed(b"def")
    await settle()
    assert t.take() == ok(b"abcdef")
    assert not t.reading  # now idle: the pause takes effect
    ctx.resume_intake()
    assert t.reading


@run
async def test_the_context_pauses_lazily_and_resumes_only_connections_that_held_back():
    """A pause touches no connection (a saturated WSGI pool flips it every few requests):
    each one holds back at its next request boundary, and a resume reaches those alone."""
    ctx, t1, c1 = connect(echo_path)
    t2 = FakeTransport(peer=("127.0.0.1", 50001))
    t2.connect(H1Connection(ctx))
    ctx.pause_intake()
    assert t1.reading and t2.reading and not ctx.held  # nothing was visited
    t1.feed(request())
    await settle()
    assert t1.take() == ok(b"/")  # one request read during the pause is still answered
    assert not t1.reading and ctx.held == {c1}  # then the connection holds back
    assert t2.reading  # the one that sent nothing was never touched
    ctx.resume_intake()
    assert t1.reading and not ctx.held
    t1.feed(request(b"/next"))
    await settle()
    assert t1.take() == ok(b"/next")
    c1.pause_intake()
    assert ctx.held == {c1}
    t1.lose()  # a lost connection leaves the held set
    assert not ctx.held


# -- graceful shutdown -----------------------------------------------------------------------------


@run
async def test_shutdown_closes_an_idle_served_connection():
    ctx, t, conn = connect(echo_path)
    t.feed(request())
    await settle()
    assert t.take() == ok(b"/")
    ctx.shutting_down = True
    conn.shutdown()
    assert t.closed


@run
async def test_shutdown_spares_a_connection_awaiting_its_first_request():
    """Its request may already be in the socket buffer; closing would lose it."""
    ctx, t, conn = connect(echo_path)
    ctx.shutting_down = True
    conn.shutdown()
    assert not t.closed
    t.feed(request())
    await settle()
    assert t.take() == ok(b"/", b"connection: close\r\n")
    assert t.closed


@run
async def test_shutdown_closes_a_busy_connection_after_its_response():
    release = asyncio.Event()
    ctx, t, conn = connect(held(release))
    t.feed(request(b"/slow"))
    await settle()
    ctx.shutting_down = True
    conn.shutdown()
    assert not t.closed
    release.set()
    await settle()
    assert t.take() == ok(b"/slow", b"connection: close\r\n")
    assert t.closed


# -- upgrade requests and handlers that run at once ----------------------------------------


async def _resume(coro: Any, yielded: Any) -> None:
    """The rest of ``coro``, whose first step (already run) yielded ``yielded``."""
    await _watch_rest(coro, yielded, lambda blocked: None)


class EagerContext(ServerContext):
    """Starts each handler as Python >= 3.12's eager Tasks do, whatever the Python: its
    first step runs inside ``start_handler``, so a handler that never waits is done
    before the connection's callback returns. A handler that waits goes on in a Task,
    and its stream is listed in ``suspended``."""

    def start_handler(self, stream: Any) -> Any:
        self.requests += 1
        coro = self.handler(stream)
        try:
            yielded = coro.send(None)
        except StopIteration:
            return None
        self.suspended.append(stream)
        task = asyncio.get_running_loop().create_task(_resume(coro, yielded))
        self.tasks[task] = stream
        task.add_done_callback(self._task_done)
        return task


class TaskContext(ServerContext):
    """The usual start (a Task; eager only on Python >= 3.12), with ``suspended``."""


UPGRADE = request(headers=b"upgrade: websocket\r\nconnection: Upgrade\r\n"
                          b"sec-websocket-key: MDEyMzQ1Njc4OWFiY2RlZg==\r\n"
                          b"sec-websocket-version: 13\r\n")
HI_FRAME = b"\x81\x82\x00\x00\x00\x00hi"  # a masked text frame "hi" (mask key 0)


def connect_with(context: type[ServerContext], handler: Handler) -> tuple[Any, FakeTransport]:
    ctx = context(Config(date_header=False, server_header=False), handler)
    ctx.suspended = []  # type: ignore[attr-defined]
    t = FakeTransport()
    t.connect(H1Connection(ctx))
    return ctx, t


@pytest.mark.parametrize("context", [TaskContext, EagerContext], ids=["task", "eager"])
@run
async def test_a_refused_upgrade_with_bytes_after_the_head_is_answered_then_closed(context):
    """The parser cannot go on past an upgrade: after the refusal the connection closes,
    even when the handler answered before the parser stopped (eager start)."""
    async def refuse(stream: Any) -> None:
        await stream.start_response(401, [(b"content-length", b"6")])
        await stream.send_body(b"denied", False)

    ctx, t = connect_with(context, refuse)
    t.feed(UPGRADE + HI_FRAME)
    await settle()
    assert t.take() == (b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 6\r\n"
                        b"connection: close\r\n\r\ndenied")
    assert t.closed
    assert not ctx.suspended


@pytest.mark.parametrize("context", [TaskContext, EagerContext], ids=["task", "eager"])
@run
async def test_an_accepted_websocket_gets_the_frames_sent_with_its_handshake(context):
    """Frames read along with the upgrade request reach the WebSocket, also when the
    handler accepts before the parser stopped (eager start)."""
    got: list[Any] = []

    async def accept(stream: Any) -> None:
        ws = stream.open_websocket()
        await ws.accept(None, [])
        got.append(await ws.receive())
        ws.abort()

    ctx, t = connect_with(context, accept)
    t.feed(UPGRADE + HI_FRAME)
    await settle()
    assert t.take().startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert got == ["hi"]
    assert not ctx.suspended


@run
async def test_the_websocket_messages_of_one_task_step_leave_in_one_write():
    """What an app sends in one step is written once the step ends, in one write and in
    order; a message of WRITE_BATCH bytes is written at once; close_now() writes what
    waits before closing."""
    seen: dict[str, Any] = {}
    holder: list[FakeTransport] = []

    async def handler(stream: Any) -> None:
        t = holder[0]
        ws = stream.open_websocket()
        await ws.accept(None, [])
        t.take()
        before = t.write_calls
        for text in ("a", "b", "c"):
            await ws.send(text)
        seen["in the step"] = t.take()
        await asyncio.sleep(0)  # the step ends
        seen["after the step"] = (t.write_calls - before, t.take())
        await ws.send("x" * WRITE_BATCH)
        seen["large"] = len(t.take())
        await ws.send("z")
        ws.close_now()
        seen["closing"] = (t.take(), t.closed)

    _, t = connect_with(TaskContext, handler)
    holder.append(t)
    t.feed(UPGRADE)
    await settle()
    assert seen["in the step"] == b""
    assert seen["after the step"] == (1, b"\x81\x01a\x81\x01b\x81\x01c")
    assert seen["large"] == 4 + WRITE_BATCH  # written before the next send: no wait
    assert seen["closing"] == (b"\x81\x01z", True)


# -- each request's context ------------------------------------------------------------------

REQUEST_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("request_var", default="-")


@run
async def test_a_pipelined_request_does_not_inherit_the_context_of_the_one_before():
    """The next pipelined request is started from the previous handler's last send, in
    that handler's context: its Task must still get the server's context, not a copy
    of the request before (a context variable set by one request never shows in another)."""
    seen: list[str] = []
    release = asyncio.Event()

    async def handler(stream: Any) -> None:
        seen.append(REQUEST_VAR.get())
        REQUEST_VAR.set(stream.raw_path.decode())
        if stream.raw_path == b"/first":
            await release.wait()  # the second request waits behind this one
        await stream.start_response(200, [(b"content-length", b"2")])
        await stream.send_body(b"ok", False)

    _, t, _ = connect(handler)
    t.feed(request(b"/first") + request(b"/second"))
    await settle()
    assert seen == ["-"]
    release.set()
    await settle()
    assert seen == ["-", "-"]
    assert t.take().count(b"HTTP/1.1 200 OK") == 2


@run
async def test_an_app_task_factory_makes_the_handler_tasks():
    """A task factory the app set on the loop (instrumentation, say) is used, with the
    server's context."""
    made: list[Any] = []
    loop = asyncio.get_running_loop()

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        made.append(kwargs.get("context"))
        return asyncio.Task(coro, loop=loop, **kwargs)

    seen: list[str] = []

    async def handler(stream: Any) -> None:
        seen.append(REQUEST_VAR.get())
        await stream.start_response(200, [(b"content-length", b"2")])
        await stream.send_body(b"ok", False)

    loop.set_task_factory(factory)
    try:
        _, t, _ = connect(handler)
        REQUEST_VAR.set("set while serving")  # not in the server's context
        t.feed(request())
        await settle()
    finally:
        loop.set_task_factory(None)
    assert len(made) == 1 and seen == ["-"]
    assert t.take().startswith(b"HTTP/1.1 200 OK")


@pytest.mark.parametrize("context", [TaskContext, EagerContext], ids=["task", "eager"])
@run
async def test_a_thousand_pipelined_requests_behind_a_slow_one_are_all_answered(context):
    """Each pipelined request starts when the one before is answered, from the loop: not
    from inside the previous handler's send, where eagerly started handlers that answer
    at once would nest a level deeper each (RecursionError on Python >= 3.12)."""
    release = asyncio.Event()

    async def handler(stream: Any) -> None:
        if stream.raw_path == b"/slow":
            await release.wait()
        await stream.start_response(200, [(b"content-length", b"2")])
        await stream.send_body(b"ok", False)

    ctx, t = connect_with(context, handler)
    t.feed(request(b"/slow") + request() * 1000)
    await settle()
    release.set()
    await settle(3000)
    assert t.take().count(b"HTTP/1.1 200 OK\r\n") == 1001
    assert not t.closed and ctx.requests == 1001
