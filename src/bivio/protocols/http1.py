"""HTTP/1.1 connections over httptools (llhttp).

This module knows bytes, framing, limits and timeouts; it knows nothing about
ASGI or WSGI. Each request becomes an :class:`H1Stream` (the stream contract
of :mod:`bivio.stream`) handed to the context's handler.

Pipelining: httptools parses every request in a read, so a request that
arrives while another is being answered waits in ``_pending`` with its body
buffered, and reading pauses until the queue drains. Responses therefore go
out in request order, and buffering stays bounded by one read.

Errors found by the parser after valid pipelined requests are deferred: the
earlier requests are answered first, then the 4xx, then the connection closes.
An error answer is followed by a *lingering* close (see :class:`~bivio.protocols.flow.Linger`): the
write side is shut down and what the client still sends is read and dropped
for a bounded time, so unread request bytes do not make the kernel reset the
connection before the client has read the answer.

Timeouts share the connection's one lazily re-armed timer (:meth:`H1Connection._set_timer`):
keep-alive (idle between requests), request header (from the first byte of a
head), request body (no body byte for ``--timeout-request-body``; the clock
stops while bivio itself does not read). ``--timeout-send`` is write-side flow
control (:mod:`bivio.protocols.flow`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import httptools

from ..core.context import ServerContext
from ..core.headers import check_headers
from ..core.logs import logger
from ..core.stream import ClientDisconnected, Headers, TLSInfo, plain_response
from .flow import Linger, StreamWaiters, WriteFlow, peer_name
from .proxy import Proxied, apply_proxy_headers
from .tls import connection_tls

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from .websocket import WebSocket

PROTOCOL = "http/1.1"  # the ALPN name, for the per-response hook
STATUS_LINES: dict[int, bytes] = {
    s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus
}

HIGH_WATER = 64 * 1024  # request body buffered before reading pauses
# Looked up once: ``time.monotonic`` is a module attribute lookup per request.
_monotonic = time.monotonic
# A send_body larger than this is written in slices of this size, waiting for the
# write buffer between them: a connection buffers at most its high-water mark plus
# one slice, whatever the app hands over at once.
SEND_SLICE = 256 * 1024
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # HTTP/2 prior knowledge (RFC 9113 3.4)


# The headers apply_proxy_headers reads: without any of them it changes nothing, so
# it is called only when one is present (most requests, even from a trusted proxy's
# address, such as the default 127.0.0.1, carry none).
_PROXY_HEADERS = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"forwarded"})
# The response fields _head treats apart (framing, connection, the defaults): any
# other is copied as it is after one set lookup.
_FRAMING_FIELDS = frozenset({b"content-length", b"connection", b"transfer-encoding",
                             b"keep-alive", b"server", b"date"})
# Encoded "content-length: N" lines of small bodies, filled as they are seen: the
# bytes %-format is about as costly as the rest of the head (bounded: N < max).
_LENGTH_LINES: dict[int, bytes] = {}
_LENGTH_LINES_MAX = 4096
# Response field names lower-cased, by the very name an app sends (the same few
# objects: constants, the WSGI adapter's cache): lower() makes a new bytes object,
# whose hash the set lookup then computes; a hit on the app's own object needs neither.
_LOWER: dict[bytes, bytes] = {}
_LOWER_MAX = 1024
# Content-Length values as numbers, by the value sent: int() of bytes costs a tenth
# of a small head, and the same few values repeat (bounded, as the lines above).
_LENGTHS: dict[bytes, int] = {}
# The common methods' names as str, decoded once (llhttp's methods are all ASCII).
_METHODS = {m: m.decode("ascii") for m in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE",
                                           b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE")}
# What the connection's one timer is for (H1Connection._timer_due): a number, not
# the bound method to call, which would be made anew each time a request re-arms it.
_DUE_NONE, _DUE_HEADER, _DUE_BODY, _DUE_IDLE = 0, 1, 2, 3
# Every field on_headers_complete looks at (framing, host, upgrade, the proxy's).
_HEAD_FIELDS = frozenset({b"host", b"expect", b"transfer-encoding", b"content-length",
                          b"upgrade"}) | _PROXY_HEADERS


def status_line(status: int) -> bytes:
    line = STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d \r\n" % status
    return line


_LIMIT_OF_STATUS = {413: "limit-request-body", 414: "limit-request-line",
                    431: "limit-request-fields"}
"""What an error answer counts as in the metrics (``limit_hit``); anything else a
parser refused is a malformed request."""


class _Reject(Exception):
    """Raised inside a parser callback to stop parsing with an HTTP error."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class H1Stream(StreamWaiters):
    """One request/response on an HTTP/1.1 connection (see :mod:`bivio.stream`)."""

    # The request head and the response's flags are StreamBase's fields.
    __slots__ = (
        "conn", "target", "keep_alive", "expect_continue", "head_only", "body_complete",
        "_body", "_status", "_resp_headers", "_head_written", "_mode",
        "_length", "_trailers", "sent", "_started_at", "received",
    )

    def __init__(self, conn: H1Connection, method: str, version: str, target: bytes,
                 headers: Headers, keep_alive: bool, expect_continue: bool,
                 body_length: int | None = 0) -> None:
        _init_stream(self, conn, method, version, target, headers, keep_alive, expect_continue,
                     body_length)

    # -- request body ---------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self._body += data
        self._wake()

    async def receive_body(self) -> tuple[bytes, bool]:
        while True:
            if self._body:
                chunk = bytes(self._body)
                self._body.clear()
                self.conn._body_consumed(self)
                return chunk, not self.body_complete
            if self.body_complete:
                return b"", False
            if self.disconnected:
                raise ClientDisconnected("client disconnected while sending the body")
            if self.expect_continue:
                self.expect_continue = False
                if not self.response_started:
                    self.conn.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    self.conn._arm_body_timer()  # the client may send the body now
            self.conn._body_consumed(self)
            await self._wait()

    async def wait_closed(self) -> None:
        # A client that sent EOF after its whole request has left as far as the app
        # can tell (uvicorn and Go's net/http agree); an answer is still delivered.
        while not (self.disconnected or self.response_complete
                   or (self.body_complete and self.conn._eof)):
            await self._wait()

    # -- response -------------------------------------------------------------------

    async def send_informational(self, status: int, headers: Headers) -> None:
        if self.disconnected:  # first: the server may have answered itself (a 400, a 408)
            raise ClientDisconnected()
        if self.response_started:
            raise RuntimeError("informational response after the response started")
        if self.http_version == "1.0":
            return  # HTTP/1.0 clients do not understand 1xx
        check_headers(headers)
        self.conn.transport.write(
            status_line(status) + b"".join(n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n"
        )

    async def start_response(self, status: int, headers: Headers, trailers: bool = False) -> None:
        self.start_response_nowait(status, headers, trailers)

    def start_response_nowait(self, status: int, headers: Headers,
                              trailers: bool = False) -> None:
        """start_response() without the coroutine: it never waits (an adapter's fast path)."""
        if self.disconnected:  # first: the server may have answered itself (a 400, a 408)
            raise ClientDisconnected()
        if self.response_started:
            raise RuntimeError("response already started")
        if not 200 <= status <= 999:
            raise ValueError(f"invalid response status {status!r}")
        check_headers(headers)
        self.response_started = True
        if self.expect_continue and not self.body_complete:
            # Answered without 100 Continue: the client may or may not send the
            # body now, so the connection cannot be reused (RFC 9110 10.1.1).
            self.keep_alive = False
            self.expect_continue = False
            self.conn._arm_body_timer()  # no 100 will come: the body is due now, or never
        self.expect_continue = False
        self._status = status
        self._resp_headers = headers
        self._trailers = trailers

    def _head(self, known_length: int | None) -> bytes:
        """Encode the status line and headers and pick the body framing."""
        conn = self.conn
        status = self._status
        parts = [STATUS_LINES.get(status) or status_line(status)]
        # A field's four pieces go to the final join as they are: no bytes object
        # made per field (three concatenations, a third of this method's cost).
        # Calls on ``parts`` itself, not on bound methods: compiled, they are C calls.
        defaults = conn.ctx.default_headers
        lowered = _LOWER
        for name, value in self._resp_headers:
            lname = lowered.get(name)
            if lname is None:
                lname = name.lower()
                if len(lowered) < _LOWER_MAX:
                    lowered[name] = lname
            if lname not in _FRAMING_FIELDS:  # one set lookup for the usual field
                parts.extend((name, b": ", value, b"\r\n"))
                continue
            if lname == b"content-length":
                length = _LENGTHS.get(value)
                if length is None:
                    try:
                        length = int(value)
                    except ValueError:
                        raise ValueError(f"invalid content-length {value!r}") from None
                    if len(_LENGTHS) < _LENGTH_LINES_MAX:
                        _LENGTHS[value] = length
                self._length = length
            elif lname == b"connection":
                if b"close" in value.lower():
                    self.keep_alive = False
                continue
            elif lname in (b"transfer-encoding", b"keep-alive"):
                continue  # framing is ours
            elif lname == b"server" or lname == b"date":
                defaults = _without(defaults, lname)
            parts.extend((name, b": ", value, b"\r\n"))
        # 204 and 304 have no body (RFC 9110 6.4.1): integer compares, no set lookup
        if self.head_only or status == 204 or status == 304 or status < 200:
            self._mode = 3
        elif self._length is not None:
            self._mode = 0
        elif self._trailers and self.http_version == "1.1":
            self._mode = 1
        elif known_length is not None:
            self._length = known_length
            self._mode = 0
            line = _LENGTH_LINES.get(known_length)
            if line is None:
                line = b"content-length: %d\r\n" % known_length
                if known_length < _LENGTH_LINES_MAX:
                    _LENGTH_LINES[known_length] = line
            parts.append(line)
        elif self.http_version == "1.1":
            self._mode = 1
        else:
            self._mode = 2
            self.keep_alive = False
        if self._mode == 1:
            parts.append(b"transfer-encoding: chunked\r\n")
        if conn.ctx.shutting_down or conn.closing_after_current(self):
            self.keep_alive = False
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        elif self.http_version == "1.0":
            parts.append(b"connection: keep-alive\r\n")
        parts.append(defaults)
        parts.append(b"\r\n")
        self._head_written = True
        return b"".join(parts)

    async def send_body(self, data: bytes, more: bool) -> None:
        state = self._send_body_now(data, more)
        if state == 1:
            await self.conn.drain()
        elif state == 2:
            await self._send_body_slow(data, more)

    def send_body_nowait(self, data: bytes, more: bool) -> Awaitable[None] | None:
        """send_body() without a coroutine when nothing waits (an adapter's fast path).

        None: done; otherwise an awaitable the caller must await (the write flow's
        drain, or the rest of a large body).
        """
        state = self._send_body_now(data, more)
        if state == 0:
            return None
        if state == 1:
            return self.conn.drain()
        return self._send_body_slow(data, more)

    def _send_body_now(self, data: bytes, more: bool) -> int:
        """send_body() as far as it goes without waiting.

        0: done; 1: written, but the caller must ``await conn.drain()``; 2: nothing
        done, a large body: the caller must ``await _send_body_slow()``.
        """
        if self.response_complete:
            return 0
        if self.disconnected:
            raise ClientDisconnected()
        if not self.response_started:
            raise RuntimeError("body sent before the response started")
        if len(data) > SEND_SLICE:
            return 2
        out = b"" if self._head_written else self._head(None if more else len(data))
        mode = self._mode
        if data:
            if mode == 0:
                self.sent += len(data)
                if self.sent > self._length:  # type: ignore[operator]
                    self.abort()
                    raise RuntimeError("response body longer than its Content-Length")
                out += data
            elif mode == 1:
                self.sent += len(data)
                out += b"%x\r\n" % len(data) + data + b"\r\n"
            elif mode == 2:
                self.sent += len(data)
                out += data
        return self._write_end(out, more)

    def _write_end(self, out: bytes, more: bool) -> int:
        """Write what is left of a send (``out``); end the response when it is complete.

        1: the caller must ``await conn.drain()`` (the client reads slowly); else 0.
        """
        conn = self.conn
        if not more and not self._trailers:
            if self._mode == 1:
                out += b"0\r\n\r\n"
            conn.transport.write(out)
            self._finish()
            return 0
        if out:
            conn.transport.write(out)
        return 1 if conn.write_paused else 0

    async def _send_body_slow(self, data: bytes, more: bool) -> None:
        """A body larger than :data:`SEND_SLICE`: written in slices as the client reads
        (after :meth:`_send_body_now`'s checks)."""
        out = b"" if self._head_written else self._head(None if more else len(data))
        if self._mode != 3:
            out = await self._send_sliced(out, data)
        if self._write_end(out, more):
            await self.conn.drain()

    async def _send_sliced(self, out: bytes, data: bytes) -> bytes:
        """Write ``out`` and a large ``data`` in :data:`SEND_SLICE` pieces.

        Between pieces, wait while the transport's buffer is above its
        high-water mark, so one connection never holds a whole large body in
        its buffer. Returns what still follows the data (a chunk's CRLF).
        """
        size = len(data)
        mode = self._mode
        self.sent += size
        if mode == 0 and self.sent > self._length:  # type: ignore[operator]
            self.abort()
            raise RuntimeError("response body longer than its Content-Length")
        if mode == 1:
            out += b"%x\r\n" % size
        conn = self.conn
        view = memoryview(data)
        for start in range(0, size, SEND_SLICE):
            if start:
                if conn.write_paused:
                    await conn.drain()  # ClientDisconnected once the client is gone
                out = b""
            conn.transport.write(out + view[start:start + SEND_SLICE])
        return b"\r\n" if mode == 1 else b""

    async def send_trailers(self, headers: Headers) -> None:
        if self.response_complete:
            return
        if self.disconnected:
            raise ClientDisconnected()
        if not self._trailers:
            raise RuntimeError("trailers sent but not announced in start_response")
        check_headers(headers)
        out = b"" if self._head_written else self._head(None)
        if self._mode == 1:
            out += b"0\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n"
        if out:
            self.conn.transport.write(out)
        self._finish()

    async def send_file(self, fd: int, offset: int, count: int) -> None:
        """Send ``count`` bytes of ``fd`` from ``offset`` as the whole body, zero-copy."""
        if self.disconnected:
            raise ClientDisconnected()
        conn = self.conn
        trailers, self._trailers = self._trailers, False
        head = self._head(count)
        if self._mode == 0 and self._length != count:
            self.abort()
            raise RuntimeError("content-length does not match the file size")
        conn.transport.write(head)
        if self._mode != 3:
            await conn.sendfile(fd, offset, count)
            self.sent = count
        if trailers and self._mode == 1:
            conn.transport.write(b"0\r\n\r\n")
        self._finish()

    def _finish(self) -> None:
        if self._mode == 0 and self.sent < (self._length or 0):
            self.keep_alive = False  # the client would wait for the missing bytes
        self.response_complete = True
        if self._waiters:  # _wake(), called only when someone waits (wait_closed, a reader)
            self._wake()
        self.conn._response_done(self)

    def close_after_response(self) -> None:
        """Close the connection once this response is complete (``connection: close``)."""
        self.keep_alive = False

    def abort(self) -> None:
        """Reset this stream: on HTTP/1.1 the only way is to drop the connection."""
        if not self.disconnected:
            self.conn.transport.close()

    def open_websocket(self) -> WebSocket:
        """The WebSocket for this upgrade request (only when ``upgrade == "websocket"``).

        The handler decides: an adapter that cannot speak WebSocket (WSGI) never
        calls this and answers the request as plain HTTP. Until the returned
        WebSocket is accepted, this stream's response methods answer (deny) over HTTP.
        """
        if self.upgrade != "websocket":
            raise RuntimeError("not a WebSocket upgrade request")
        conn = self.conn
        # Imported on the first upgrade: the websockets library costs a worker
        # about a quarter of its start-up time, and most apps never upgrade.
        from .websocket import WebSocket

        return WebSocket(conn.ctx.config, conn.transport, conn.loop,
                         self.target.decode("latin-1"), self.headers, conn._switch_to_websocket)


def _init_stream(self: H1Stream, conn: H1Connection, method: str, version: str, target: bytes,
                 headers: Headers, keep_alive: bool, expect_continue: bool,
                 body_length: int | None) -> None:
    """H1Stream.__init__, callable on ``H1Stream.__new__(H1Stream)`` (compiled: no
    argument parsing, the connection's hot path)."""
    self.conn = conn
    self.method = method
    self.http_version = version
    self.scheme = conn.scheme
    self.target = target
    self.headers = headers
    self.client = conn.client
    self.server = conn.server
    self.tls = conn.tls
    self.keep_alive = keep_alive
    self.expect_continue = expect_continue
    self.head_only = method == "HEAD"
    self.response_started = False
    self.response_complete = False
    self.disconnected = False
    self.body_complete = False
    self._body = bytearray()
    self._waiters: list[asyncio.Future[None]] = []
    self._status = 0
    self._resp_headers: Headers = []
    self._head_written = False
    self._mode = 0  # 0 length, 1 chunked, 2 until close, 3 no body
    self._length: int | None = None
    self._trailers = False
    self.sent = 0
    self._started_at = _monotonic()
    self.received = 0  # request body bytes so far, for --limit-request-body
    self.upgrade: str | None = None  # "websocket": the handler may open_websocket()
    self.body_length = body_length  # 0: none, N: Content-Length, None: chunked
    self.interface = "-"  # set by the handler that answers
    self.sends_nowait = True  # start_response_nowait, send_body_nowait
    path, _, query = target.partition(b"?")
    self.raw_path = path
    self.query_string = query


def _without(defaults: bytes, name: bytes) -> bytes:
    """Drop one default header (the app set its own)."""
    start = defaults.find(name + b": ")
    if start < 0:
        return defaults
    end = defaults.index(b"\r\n", start) + 2
    return defaults[:start] + defaults[end:]


class H1Connection(WriteFlow):
    """One HTTP/1.1 connection: parse, enforce limits, frame responses.

    An asyncio protocol by its methods (the loop needs no asyncio.Protocol base):
    compiled, this is an extension type, which cannot inherit a Python class.
    """

    def __init__(self, ctx: ServerContext, loop: asyncio.AbstractEventLoop | None = None) -> None:
        #: ``(client, server)`` from a PROXY protocol header, set before connection_made.
        self.proxied: Proxied = None
        self.ctx = ctx
        self.config = ctx.config
        self.loop = loop or asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None
        self.scheme = "http"
        self.tls: TLSInfo | None = None
        self.trusted_proxy = False
        self._init_write_flow(ctx.config.timeout_send)
        self.counts = ctx
        self._reading_paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0  # when the pending handle fires
        self._timer_at = 0.0  # when the timeout is due (never before _timer_when)
        self._timer_due = _DUE_NONE  # which timeout is due then (_DUE_*)
        self._current: H1Stream | None = None
        self._pending: deque[H1Stream] = deque()
        self._parsing: H1Stream | None = None
        self._url = b""
        self._headers: Headers = []
        self._head_bytes = 0
        self._in_head = False
        self._closed = False
        self._deferred_error: tuple[int, str] | None = None
        self._upgrade_seen = False
        self._upgrade_tail = b""
        self._h2c: tuple[bytes, str, bytes, Headers] | None = None  # an Upgrade: h2c request
        self._upgrading: H1Stream | None = None  # first in line, started once the parser stops
        self._raw_left = 0  # body bytes still due after an upgrade we did not take
        self._eof = False
        self._served = False  # no request yet: see awaiting_first_request
        self._intake_held = False  # reading paused by ctx.pause_intake() between requests
        self._linger_on_close = False  # an error answer was written: close lingering
        # The request-line check (RTSP/ICE, see on_headers_complete): the read being
        # parsed, and the earlier reads of a head that spans several (bounded).
        self._chunk = b""
        self._line_parts: list[bytes] | None = None
        self._line_room = 0  # how much more of a head _line_parts may keep
        # The read being parsed began between two messages (its first byte is the next
        # request's), and the head being parsed is the first begun in it: its request
        # line starts the read (see on_headers_complete).
        self._read_between = False
        self._line_starts_read = False
        cfg = self.config
        self._line_cap = cfg.limit_request_line + 1024  # a request line fits in this
        # The limits the parser callbacks check on every request (Config is frozen):
        # read once here, not through two attribute lookups per header.
        self._max_line = cfg.limit_request_line
        self._max_fields = cfg.limit_request_fields
        self._max_field_size = cfg.limit_request_field_size
        self._body_timeout = cfg.timeout_request_body
        self._keep_alive = cfg.timeout_keep_alive
        self._head_limit = (cfg.limit_request_line + 2
                            + cfg.limit_request_fields * (cfg.limit_request_field_size + 4) + 2)
        if cfg.h11_max_incomplete_event_size is not None:  # uvicorn's cap on a head
            self._head_limit = min(self._head_limit, cfg.h11_max_incomplete_event_size)

    # -- transport events -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.proxied is not None:  # from a PROXY protocol header (proxy_protocol.py)
            self.client, self.server = self.proxied
        else:
            self.client = _address(transport.get_extra_info("peername"))
            self.server = _address(transport.get_extra_info("sockname"))
        if self.config.tls:
            self.tls = connection_tls(transport, self.ctx.tls_server_cert)
            self.scheme = "https"
            if self.tls is not None and self.tls.alpn == "h2":
                self._to_h2(b"")  # ALPN chose HTTP/2
                return
        self.trusted_proxy = self.config.is_trusted_proxy(
            self.client[0] if self.client else "unix:"
        )
        self.ctx.connections.add(self)
        self._set_timer(self.config.timeout_keep_alive, _DUE_IDLE)
        if self.ctx.intake_paused:
            self.pause_intake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.ctx.connections.discard(self)
        if self._intake_held:
            self.ctx.held.discard(self)
        self._cancel_timer()
        for stream in (self._current, self._parsing, *self._pending):
            if stream is not None and not stream.disconnected:
                stream.disconnected = True
                stream._wake()
        self._pending.clear()
        self.write_paused = False
        self._release_writers()

    def eof_received(self) -> bool | None:
        # A half-closed client still gets its answers; we close after the last one.
        # A request body cut short by the EOF can never complete, though: close now,
        # so its handler sees the disconnect instead of waiting for the body forever.
        self._eof = True
        broken = self._parsing
        if broken is not None:
            if broken is self._current or broken not in self._pending:
                return None
            # A later pipelined request cut short: it is dropped (never started, it has
            # no handler to tell), but the complete requests before it are still owed
            # their answers; the connection closes after the last (closing_after_current).
            self._parsing = None
            self._pending.remove(broken)
            broken.disconnected = True
        if self._current is not None:
            self._current._wake()  # wait_closed(): http.disconnect for the app
        return True if self._current is not None else None

    def data_received(self, data: bytes) -> None:
        self.ctx.received_bytes += len(data)
        if self._raw_left:
            self._raw_feed(data)
            return
        self._chunk = data  # for the request-line check (on_headers_complete)
        between = not self._in_head and self._parsing is None
        self._read_between = between
        if between or self._in_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._on_upgrade(data[exc.args[0]:] if exc.args else b"")
        except httptools.HttpParserError as exc:
            if self.parser.get_method() == b"PRI":
                head = b"".join(self._line_parts or ()) + data
                if not (head.startswith(_PREFACE) or _PREFACE.startswith(head)):
                    self._fail(400, "Bad Request: invalid HTTP/2 preface")
                elif self._prior_knowledge():
                    self._to_h2(head)
                else:
                    self._fail(505, "HTTP/2 is not served on this connection")
                return
            reject = exc.__context__ if isinstance(exc.__context__, _Reject) else None
            if reject is not None:
                self._fail(reject.status, reject.reason)
            else:
                self._fail(400, _parser_reason(exc))
            return
        self._chunk = b""  # not kept past the read: it may be a large body read
        if self._in_head:
            if self._head_bytes > self._head_limit:
                self._fail(431, "Request header fields too large")
                return
            # The head goes on in the next read: keep this part for the line check.
            if self._line_parts is None:
                # The read in which this head began: its clock starts (once per head).
                self._set_timer(self.config.timeout_request_header, _DUE_HEADER)
                self._line_parts = [data]
                self._line_room = self._line_cap - len(data)
            elif self._line_room > 0:
                self._line_parts.append(data)
                self._line_room -= len(data)
        elif self._parsing is not None:
            # A body is on its way and this read brought some of it (or its head):
            # progress. Once per read, not per chunk: restart the body clock.
            self._arm_body_timer()

    def _prior_knowledge(self) -> bool:
        """The connection opened with HTTP/2's ``PRI * HTTP/2.0`` preface (llhttp pauses there)."""
        return not self._served and self._current is None and self.config.http != "h1"

    def _to_h2(self, data: bytes, upgrade: Any = None) -> None:
        """Hand the transport over to HTTP/2 (ALPN, prior knowledge, or h2c after the 101).

        ``data``: what was read that belongs to HTTP/2; ``upgrade``: the h2c
        request, which becomes stream 1 (see :meth:`H2Connection.take_over`).
        """
        from .http2 import H2Connection  # h2 costs 45 ms to import: only when used

        self._closed = True  # this protocol is done; HTTP/2 owns the transport now
        self._cancel_timer()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.ctx.connections.discard(self)
        self.ctx.held.discard(self)
        conn = H2Connection.take_over(self.ctx, self.loop, self.transport, data, upgrade,
                                      proxied=self.proxied)
        self._hand_over_write_flow(conn)

    async def drain(self) -> None:
        if self._closed:
            raise ClientDisconnected()
        if self.write_paused:
            await self.wait_writable()
            if self._closed:
                raise ClientDisconnected()

    # -- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        # The header clock starts only if the head does not end in this read (see the
        # end of data_received): almost every head arrives whole, and then arming the
        # clock here only for on_headers_complete to stop it is wasted work.
        self._url = b""
        self._headers = []
        self._in_head = True
        self._line_starts_read, self._read_between = self._read_between, False

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._max_line:
            raise _Reject(414, "Request-URI too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._headers
        if len(headers) >= self._max_fields:
            raise _Reject(431, "Too many header fields")
        if len(name) + len(value) > self._max_field_size:
            raise _Reject(431, "Request header field too large")
        headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._timer_due = _DUE_NONE  # _cancel_timer(), inline: the header clock stops
        if self._closed:
            self._cancel_timer()
        parser = self.parser
        raw_method = parser.get_method()
        method = _METHODS.get(raw_method) or raw_method.decode("ascii")
        target = self._url
        # The version, read off the request line where it is known to start this read
        # (the usual request: the first one of a read that began between requests, its
        # head whole in it): llhttp's get_http_version() formats a new string every
        # time, 3 % of a hello request. Anything else, or anything but exactly
        # "HTTP/1.1" CRLF after "METHOD SP target SP" (leading empty lines, say), asks it.
        version = None
        if self._line_starts_read and self._line_parts is None:
            version = _version_on_line(self._chunk, len(raw_method) + len(target) + 2)
        if version is None:
            version = parser.get_http_version()
        # llhttp also accepts RTSP/x.y and ICE/x.y request lines and reports their
        # version as HTTP's; it does not expose the protocol name, so look at the
        # line. RTSP and ICE are 1.0 (or 2.0, refused below as a version), so only
        # an HTTP/1.0 request is looked at: HTTP/1.1 pays nothing.
        parts, self._line_parts = self._line_parts, None
        if version == "1.0":
            self._check_protocol([*parts, self._chunk] if parts else [self._chunk])
        headers = self._headers
        host_count = 0
        expect_continue = False
        upgrade = None
        transfer_codings = None
        content_length = None
        proxy_headers = False
        for name, value in headers:
            if name not in _HEAD_FIELDS:
                continue  # one set lookup for the many fields framing does not look at
            if name == b"host":
                host_count += 1
            elif name == b"expect":
                if value.lower() == b"100-continue":
                    expect_continue = True
            elif name == b"transfer-encoding":
                transfer_codings = (transfer_codings or b"") + b"," + value.lower()
            elif name == b"content-length":
                content_length = int(value)
            elif name == b"upgrade":
                upgrade = value
            elif name in _PROXY_HEADERS:
                proxy_headers = True
        if version != "1.1" and version != "1.0":
            # llhttp also accepts 0.9 ("GET /") and 2.0; neither is HTTP/1.x framing.
            raise _Reject(505, "HTTP Version Not Supported")
        if version == "1.1" and host_count != 1:
            raise _Reject(400, "Missing Host header" if not host_count else "Multiple Host headers")
        body_length: int | None = 0  # the stream contract: 0 none, N bytes, None chunked
        if transfer_codings is not None:
            codings = [c.strip() for c in transfer_codings.split(b",") if c.strip()]
            if not codings or codings[-1] != b"chunked" or codings.count(b"chunked") > 1:
                # RFC 9112 6.3: chunked not final (or applied twice): length unknown, 400.
                raise _Reject(400, "Invalid Transfer-Encoding")
            if len(codings) > 1:
                raise _Reject(501, "Unsupported Transfer-Encoding")
            body_length = None
        elif content_length is not None:
            limit = self.config.limit_request_body
            if limit and content_length > limit:
                raise _Reject(413, "Request body too large")
            body_length = content_length
        stream = H1Stream.__new__(H1Stream)
        _init_stream(stream, self, method, version, target, headers,
                     parser.should_keep_alive(), expect_continue and version == "1.1",
                     body_length)
        if not _origin_form(target) and target != b"*":
            _absolute_form(stream, target)
        upgrading = upgrade is not None and version == "1.1" and parser.should_upgrade()
        if upgrading:
            kind = upgrade.lower()
            if b"websocket" in kind and self.config.ws != "none":
                stream.upgrade = "websocket"
            elif b"h2c" in kind and self._h2c_allowed(stream):
                return  # switched once the parser stops at the upgrade (_on_upgrade)
        if proxy_headers and self.trusted_proxy:
            apply_proxy_headers(stream, self.config)
        self._parsing = stream
        if self._current is None:
            if upgrading:
                # The parser stops at the end of this message (HttpParserUpgrade): the
                # handler starts there (_on_upgrade), once the bytes after the head are
                # known. Started from this callback, a handler that runs at once (an
                # eager Task, Python >= 3.12) would answer before the parser stopped: a
                # refusal left the connection open with reading paused, and an accepted
                # WebSocket missed the frames sent along with the handshake.
                self._upgrading = stream
            else:
                self._start(stream)
        else:
            self._pending.append(stream)
            self._pause_reading()

    def on_body(self, body: bytes) -> None:
        stream = self._parsing
        if stream is None:
            return
        limit = self.config.limit_request_body
        # The whole body counts, not what is buffered: an app reading as the body
        # arrives keeps the buffer empty.
        stream.received += len(body)
        if limit and stream.received > limit:
            raise _Reject(413, "Request body too large")
        if stream.response_complete or stream.disconnected:
            return  # the app answered without reading; the connection will close
        stream._feed(body)
        if len(stream._body) > HIGH_WATER:
            self._pause_reading()

    def on_message_complete(self) -> None:
        stream = self._parsing
        if stream is None:
            return
        if stream.body_length and stream.received < stream.body_length:
            # An Upgrade request we do not take (h2c with a body, an unknown
            # protocol): llhttp hands its body over as upgraded bytes, which
            # _on_upgrade then feeds as the body (see _raw_feed).
            return
        self._parsing = None
        stream.body_complete = True
        if stream._waiters:  # _wake() only when a reader waits (rarely: the body came whole)
            stream._wake()
        if stream.response_complete and stream is self._current:
            self._next_request(stream)

    # -- request lifecycle ---------------------------------------------------------------

    def _start(self, stream: H1Stream) -> None:
        self._current = stream
        self._served = True
        if self.ctx.over_capacity():
            self.ctx.limit_hit("limit-concurrency")
            self._reply_error(stream, 503, "Service Unavailable")
            return
        self.ctx.start_handler(stream)

    def _start_turn(self, stream: H1Stream) -> None:
        """Start a pipelined request whose turn came (see :meth:`_next_request`)."""
        if stream is self._current and not self._closed and not stream.disconnected:
            self._start(stream)

    def closing_after_current(self, stream: H1Stream) -> bool:
        """True when no request can follow this one on the connection."""
        return self._upgrade_seen or (self._eof and not self._pending)

    def _response_done(self, stream: H1Stream) -> None:
        if stream is not self._current:
            return
        if self.ctx.response_hooks:
            self._record(stream, stream._status, stream.sent)
        self._next_request(stream)

    def _record(self, stream: H1Stream, status: int, sent: int, protocol: str = PROTOCOL) -> None:
        self.ctx.record(stream.client, stream.method, stream.target.decode("latin-1"),
                        stream.http_version, status, sent,
                        time.monotonic() - stream._started_at, protocol, stream.interface,
                        stream.headers)

    def _next_request(self, stream: H1Stream) -> None:
        """The current response is complete: close, or move on to the next request."""
        if not stream.body_complete:
            if stream is self._parsing and stream.keep_alive and not stream.expect_continue:
                # The app answered without reading the whole body: discard the rest,
                # then on_message_complete brings us back here.
                stream._body.clear()
                self._resume_reading()
                return
            self.close_now()
            return
        self._current = None
        if not stream.keep_alive or self._closed:
            self.close_now()
            return
        if self._pending:
            stream = self._pending.popleft()
            self._current = stream  # its turn: what the parser reads next queues behind it
            # Its handler starts from the loop, not from here: this runs inside the
            # previous handler's last send, and with eager Tasks (Python >= 3.12) each
            # handler that answers at once would start the next a level deeper
            # (thousands pipelined behind a slow request: RecursionError).
            self.loop.call_soon(self._start_turn, stream)
            if not self._pending:
                self._resume_reading()
            return
        if self._deferred_error is not None:
            status, reason = self._deferred_error
            self._write_error(status, reason)
            return
        if self._upgrade_seen or self._eof:
            self.close_now()
            return
        if self.ctx.intake_paused and self.is_idle():
            self.pause_intake()
            return
        if self._reading_paused:
            self._resume_reading()
        if self._parsing is None and not self._in_head:
            self._set_timer(self._keep_alive, _DUE_IDLE)

    def _switch_to_websocket(self, ws: WebSocket, headers: Headers) -> bytes:
        """An accepted WebSocket: write the 101 with ``headers``, hand the socket over.

        Returns the bytes read past the request head (the client's first frames).
        """
        stream = self._current
        if self._closed or stream is None or stream.disconnected:
            raise ClientDisconnected("client disconnected before the WebSocket handshake")
        check_headers(headers)
        self.transport.write(status_line(101)
                             + b"".join(n + b": " + v + b"\r\n" for n, v in headers)
                             + self.ctx.default_headers + b"\r\n")
        self._cancel_timer()
        self._closed = True  # this protocol is done; the WebSocket owns the transport now
        ctx = self.ctx
        ctx.connections.discard(self)
        ctx.connections.add(ws)  # graceful shutdown closes it with 1012
        ws.counts = ctx  # its bytes count as received from now on (metrics)
        ws.on_lost = ctx.connections.discard
        self._hand_over_write_flow(ws)  # a full buffer stays paused, on the WebSocket's clock
        self.transport.set_protocol(ws)
        stream.response_started = stream.response_complete = True
        stream._status = 101
        if ctx.response_hooks:
            self._record(stream, 101, 0, "websocket")
        tail, self._upgrade_tail = self._upgrade_tail, b""
        return tail

    def _check_protocol(self, parts: list[bytes]) -> None:
        """The request-line check of an HTTP/1.0 request (see :meth:`on_headers_complete`).

        ``parts`` are the reads holding this request's head (the earlier ones
        bounded by ``--limit-request-line``): its request line is the line that
        starts ``METHOD SP target SP`` (as llhttp reported them); RTSP/ICE after
        that is refused. Where the request begins in its read is not known for a
        pipelined one, so a line of that exact form in an earlier request's body
        in the same read counts too: only a client that sends such a body and
        such a request together is refused wrongly.
        """
        buf = parts[0] if len(parts) == 1 else b"".join(parts)
        if b"RTSP/" not in buf and b"ICE/" not in buf:
            return
        needle = self.parser.get_method() + b" " + self._url + b" "
        at = buf.find(needle)
        while at >= 0:
            if (at == 0 or buf[at - 1] == 10) and buf.startswith((b"RTSP/", b"ICE/"),
                                                                at + len(needle)):
                raise _Reject(505, "HTTP Version Not Supported")
            at = buf.find(needle, at + 1)

    def _body_consumed(self, stream: H1Stream) -> None:
        if self._reading_paused and not self._pending and len(stream._body) <= HIGH_WATER:
            self._resume_reading()

    def _raw_feed(self, data: bytes) -> None:
        """The Content-Length body of an Upgrade request we answer over HTTP/1.1.

        The parser stopped at the upgrade, so the body's bytes are counted here;
        what follows it is not read (the connection closes after the answer).
        """
        stream = self._parsing
        if stream is None:
            return
        chunk = data[:self._raw_left]
        self._raw_left -= len(chunk)
        if chunk:
            stream.received += len(chunk)
            if not (stream.response_complete or stream.disconnected):
                stream._feed(chunk)
                if len(stream._body) > HIGH_WATER:
                    self._pause_reading()
        if self._raw_left:
            self._arm_body_timer()
            return
        self._pause_reading()
        self._parsing = None
        stream.body_complete = True
        stream._wake()
        if stream.response_complete and stream is self._current:
            self._next_request(stream)

    def _h2c_allowed(self, stream: H1Stream) -> bool:
        """``Upgrade: h2c`` (RFC 7540 §3.2): take it for a bodiless first-in-line request.

        A request with a body is answered over HTTP/1.1 (the upgrade is only
        an offer). Otherwise the request is kept for HTTP/2's stream 1 and the
        101 is written when the parser stops at the upgrade.
        """
        if (self.config.http == "h1" or self.config.tls or self._current is not None
                or stream.body_length != 0):
            return False
        settings = None
        for name, value in stream.headers:
            if name == b"http2-settings":
                settings = value
        if settings is None:
            return False
        headers = [(n, v) for n, v in stream.headers
                   if n not in (b"connection", b"upgrade", b"http2-settings", b"keep-alive")]
        self._h2c = (settings, stream.method, stream.target, headers)
        self._served = True
        return True

    def _on_upgrade(self, tail: bytes) -> None:
        """An Upgrade request: the parser stops here; the handler decides what follows.

        A WebSocket upgrade the handler accepts switches the connection (see
        :meth:`_switch_to_websocket`, which gets ``tail``, the bytes after the
        head); any other answer is plain HTTP and the connection closes after it.
        """
        if self._h2c is not None:
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\n"
                                 b"connection: Upgrade\r\nupgrade: h2c\r\n\r\n")
            self._to_h2(tail, self._h2c)
            return
        self._upgrade_seen = True  # the parser cannot continue: close after the answer
        start, self._upgrading = self._upgrading, None
        stream = self._parsing
        if stream is not None and stream.upgrade is None and stream.body_length:
            if start is not None:
                self._start(start)
            self._raw_left = stream.body_length - stream.received
            self._raw_feed(tail)
            return
        self._upgrade_tail = tail
        self._pause_reading()
        if stream is not None:
            self._parsing = None
            stream.body_complete = True
            stream._wake()
            if stream.response_complete and stream is self._current:
                self._next_request(stream)
        if start is not None:
            self._start(start)

    # -- errors and timeouts ----------------------------------------------------------------

    def _fail(self, status: int, reason: str) -> None:
        """The connection can no longer be trusted: answer what is valid, then the error."""
        if status != 408:  # the timeouts count themselves: they know which one it was
            self.ctx.limit_hit(_LIMIT_OF_STATUS.get(status, "malformed-request"))
        self._pause_reading()
        self._cancel_timer()
        broken = self._parsing
        self._parsing = None
        self._in_head = False
        if broken is not None:
            if broken in self._pending:
                self._pending.remove(broken)
            elif broken is self._current:
                broken.disconnected = True
                broken._wake()
                if not broken.response_started:
                    self._write_error(status, reason, broken)
                else:
                    self.close_now()
                return
        if self._current is None and not self._pending:
            self._write_error(status, reason)
        else:
            self._deferred_error = (status, reason)

    def _reply_error(self, stream: H1Stream, status: int, reason: str) -> None:
        """Answer a request without the app (503), then carry on like any response.

        The same :func:`~bivio.core.stream.plain_response` as every other error,
        written synchronously: this runs in a parser callback, not in a task.
        """
        headers, body = plain_response(reason)
        if stream.expect_continue and not stream.body_complete:
            # As in start_response: answered instead of 100, the body may or may
            # not follow, so the connection closes and the head must say so.
            stream.keep_alive = False
        stream.expect_continue = False
        stream.response_started = True
        stream._status = status
        stream._resp_headers = headers
        self.transport.write(stream._head(len(body)) + body)
        stream.sent = len(body)
        stream._finish()

    def _write_error(self, status: int, reason: str, stream: H1Stream | None = None) -> None:
        """A request the connection cannot carry on from (4xx): answer it, then close."""
        if self._closed:
            return
        if stream is None:  # the head was never complete: answer as HTTP/1.1, no request
            stream = H1Stream(self, "-", "1.1", b"-", [], False, False)
        stream.keep_alive = False
        stream.head_only = False
        self._current = stream
        self._linger_on_close = True  # the close that follows the answer lingers
        self._reply_error(stream, status, reason)
        self.close_now()

    def _close_lingering(self) -> None:
        """Close after an error answer without a reset destroying the answer.

        Closing a socket with unread bytes (the rest of a too-large head, a body
        the client is still sending) makes the kernel send a RST, which can
        discard the answer before the client has read it. So: shut the write
        side down (the client reads the answer, then EOF), hand the transport to
        a :class:`~bivio.protocols.flow.Linger` that reads and drops what still comes, and close on
        the client's EOF, after :data:`LINGER_BYTES` or after
        :data:`LINGER_SECONDS`, whichever comes first. Without a half-close
        (TLS) or after the client's EOF, close at once.
        """
        self._linger_on_close = False
        transport = self.transport
        if self._eof or not transport.can_write_eof():
            self.close_now()
            return
        linger = Linger(transport, self.loop, self._send_timeout)
        self._hand_over_write_flow(linger)
        transport.write_eof()
        transport.set_protocol(linger)
        self.connection_lost(None)  # this protocol is done with the connection
        transport.resume_reading()

    def _on_idle_timeout(self) -> None:
        self._timer = None
        if self._current is None and self._parsing is None and not self._in_head:
            self.close_now()

    def _on_header_timeout(self) -> None:
        self._timer = None
        if self._in_head:
            self.ctx.limit_hit("timeout-request-header")
            logger.info("%s timed out sending the request head (--timeout-request-header %g): "
                        "408", peer_name(self.transport), self.config.timeout_request_header)
            self._fail(408, "Request header timeout")

    def _arm_body_timer(self) -> None:
        """Start the body clock: a body is due and bivio is reading it.

        Not while reading is paused (the app has not read what is buffered, or
        pipelined requests wait) nor before ``100 Continue`` was sent: the
        client is not at fault then. :meth:`_resume_reading` and
        :meth:`H1Stream.receive_body` start it again.
        """
        stream = self._parsing
        if (stream is not None and not stream.expect_continue and not self._reading_paused
                and not self._closed):
            self._set_timer(self._body_timeout, _DUE_BODY)

    def _on_body_timeout(self) -> None:
        stream = self._parsing
        if stream is None or self._reading_paused or self._closed:
            return  # the clock does not run while bivio itself is not reading
        answer = "connection closed" if stream.response_started else "408"
        self.ctx.limit_hit("timeout-request-body")
        logger.info("%s timed out sending the request body (--timeout-request-body %g): %s",
                    peer_name(self.transport), self._body_timeout, answer)
        self._fail(408, "Request body timeout")

    def _set_timer(self, delay: float, due: int) -> None:
        """Arm the connection's one timeout (header, body, keep-alive) ``delay`` s from now.

        Every request re-arms it twice, so the loop's timer is moved lazily: an
        armed handle that fires no later than the new deadline is kept, and when
        it fires early it re-arms for the rest. A keep-alive connection then
        costs one timer per timeout period instead of a create and a cancel per
        request (about a tenth of the per-request CPU on a hello benchmark).
        """
        if delay <= 0:
            self._timer_due = _DUE_NONE
            return
        loop = self.loop
        at = loop.time() + delay
        self._timer_at = at
        self._timer_due = due
        handle = self._timer
        if handle is None or self._timer_when > at:
            if handle is not None:
                handle.cancel()
            self._timer_when = at
            self._timer = loop.call_at(at, self._on_timer)

    def _cancel_timer(self) -> None:
        self._timer_due = _DUE_NONE
        if self._closed and self._timer is not None:
            self._timer.cancel()  # a closed connection must not linger until it fires
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        due = self._timer_due
        if due == _DUE_NONE or self._closed:
            return
        at = self._timer_at
        if self.loop.time() < at - 0.001:  # re-armed since: not due yet
            self._timer_when = at
            self._timer = self.loop.call_at(at, self._on_timer)
            return
        self._timer_due = _DUE_NONE
        if due == _DUE_IDLE:
            self._on_idle_timeout()
        elif due == _DUE_HEADER:
            self._on_header_timeout()
        else:
            self._on_body_timeout()

    def _pause_reading(self) -> None:
        if not self._reading_paused and not self._closed:
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and not self._closed and self._deferred_error is None:
            self._reading_paused = False
            self.transport.resume_reading()
            if self._parsing is not None:
                self._arm_body_timer()  # the client can send again: its clock restarts

    def close_now(self) -> None:
        if not self._closed:
            if self._linger_on_close:
                self._close_lingering()
                return
            self._closed = True
            self._cancel_timer()
            self.transport.close()

    # -- shutdown -------------------------------------------------------------------------

    def pause_intake(self) -> None:
        """The server is saturated: between requests, stop reading until resume_intake().

        A request the client already sent then waits in the socket buffer; the
        keep-alive timer stops too, so such a request is never dropped as idle.
        """
        if self.is_idle() and not self._closed and not self._intake_held:
            self._intake_held = True
            self.ctx.held.add(self)
            self._cancel_timer()
            self._pause_reading()

    def resume_intake(self) -> None:
        if self._intake_held:
            self._intake_held = False
            self._resume_reading()
            if self.is_idle():
                self._set_timer(self.config.timeout_keep_alive, _DUE_IDLE)

    def is_idle(self) -> bool:
        return self._current is None and not self._in_head and self._parsing is None

    @property
    def awaiting_first_request(self) -> bool:
        """Accepted, but no request seen yet: graceful shutdown leaves it open.

        The client connected just before the listener closed and its request
        may already be in the socket buffer (a rolling restart under load hits
        this every time); closing it would lose that request. The keep-alive
        timer set on accept still closes it if nothing comes.
        """
        return not self._served and not self._closed and self.is_idle()

    def shutdown(self) -> None:
        """Graceful shutdown: close now if idle, else after the current response."""
        if self.is_idle() and self._served:
            self.close_now()

    # -- zero-copy file sending ---------------------------------------------------------------

    async def sendfile(self, fd: int, offset: int, count: int) -> None:
        transport = self.transport
        if transport.get_write_buffer_size():
            transport.set_write_buffer_limits(high=0, low=0)
            try:
                await self.drain()
            finally:
                transport.set_write_buffer_limits()
        sock = transport.get_extra_info("socket")
        # Over TLS the socket carries records, not the file's bytes: copy instead.
        if sock is None or self.tls is not None or not hasattr(os, "sendfile"):
            await self._copy_file(fd, offset, count)
            return
        out = sock.fileno()
        watch = -1
        try:
            while count > 0:
                if self._closed:
                    raise ClientDisconnected()
                try:
                    sent = os.sendfile(out, fd, offset, count)
                except BlockingIOError:
                    if watch < 0:
                        # A duplicate descriptor: the loop refuses to watch the
                        # transport's own fd, and the duplicate shares its socket.
                        watch = os.dup(out)
                    await self._writable(watch)
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    raise ClientDisconnected() from None
                except OSError:
                    if offset == 0:
                        await self._copy_file(fd, offset, count)
                        return
                    raise
                if sent == 0:
                    self.close_now()  # the file shrank under us; the length is now wrong
                    raise RuntimeError("file ended before its announced length")
                offset += sent
                count -= sent
        finally:
            if watch >= 0:
                os.close(watch)

    async def _writable(self, fd: int) -> None:
        """Wait until the socket takes more; bounded by ``--timeout-send`` like any send."""
        loop = self.loop
        fut: asyncio.Future[bool] = loop.create_future()
        loop.add_writer(fd, _set_result, fut, True)
        timeout = self._send_timeout
        timer = loop.call_later(timeout, _set_result, fut, False) if timeout > 0 else None
        try:
            writable = await fut
        finally:
            loop.remove_writer(fd)
            if timer is not None:
                timer.cancel()
        if not writable:
            self._drop_slow_reader()
            raise ClientDisconnected("the client read nothing for --timeout-send seconds")

    async def _copy_file(self, fd: int, offset: int, count: int) -> None:
        while count > 0:
            chunk = os.pread(fd, min(count, 256 * 1024), offset)
            if not chunk:
                self.close_now()
                raise RuntimeError("file ended before its announced length")
            self.transport.write(chunk)
            offset += len(chunk)
            count -= len(chunk)
            await self.drain()


def _set_result(fut: asyncio.Future[bool], value: bool) -> None:
    if not fut.done():
        fut.set_result(value)


def _address(info: Any) -> tuple[str, int] | None:
    if isinstance(info, tuple) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    return None


def _version_on_line(line: bytes, at: int) -> str | None:
    """"1.1" if ``line`` has exactly ``HTTP/1.1`` CRLF at ``at``, else None (compiled:
    typed, so the slice is a copy of ten bytes and not a generic sequence slice)."""
    return "1.1" if line[at:at + 10] == b"HTTP/1.1\r\n" else None


def _origin_form(target: bytes) -> bool:
    """The request target starts with "/" (compiled: a byte compare, no slice)."""
    return len(target) > 0 and target[0] == 47


def _absolute_form(stream: H1Stream, target: bytes) -> None:
    """``GET http://host/path?q HTTP/1.1``: keep the path and query (RFC 9112 3.2.2)."""
    try:
        url = httptools.parse_url(target)
    except httptools.HttpParserInvalidURLError:
        raise _Reject(400, "Invalid request target") from None
    stream.raw_path = url.path or b"/"
    stream.query_string = url.query or b""


def _parser_reason(exc: Exception) -> str:
    text = str(exc).strip()
    return f"Bad Request: {text}" if text else "Bad Request"
