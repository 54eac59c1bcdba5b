"""HTTP/2 connections (RFC 9113) over the python-hyper ``h2`` state machine.

Like :mod:`bivio.protocols.http1`, this module knows bytes, frames, limits and
timeouts and nothing about ASGI or WSGI: each request becomes an
:class:`H2Stream`, the same stream contract (:mod:`bivio.core.stream`) the
adapters already speak, so ASGI, WSGI, static files and hybrid mode run over
it unchanged.

How a connection gets here: over TLS, ALPN chose ``h2``; in cleartext, the
client opened with the ``PRI * HTTP/2.0`` preface (prior knowledge) or asked
for ``Upgrade: h2c`` on an HTTP/1.1 request. :class:`~bivio.protocols.http1.H1Connection`
sees all three first and hands the transport over (:meth:`H2Connection.take_over`).

``h2`` parses frames, keeps the stream states, HPACK and the flow-control
windows, validates request headers (RFC 9113 §8: upper-case names,
connection-specific fields, pseudo-headers) and answers SETTINGS and PING on
its own. What a server must add, it does not do, so it is here:

- **Backpressure both ways.** A request body's window is reopened only as the
  handler reads (:meth:`H2Stream.receive_body` acknowledges what it took), so
  unread bodies are bounded by the windows we advertise
  (``--h2-initial-window-size`` per stream, four times that per connection).
  A response waits for its stream's and the connection's window, and for the
  socket's write buffer: a send returns once *this stream* can take more.
- **Fair use of a WSGI pool.** A connection runs at most
  ``ctx.streams_per_connection`` handlers at once (half the WSGI pool; all
  ``--h2-max-concurrent-streams`` for ASGI); further streams wait their turn,
  as do all new streams while the worker has paused intake.
- **Attack limits** (RFC 9113 §10.5, CVE-2023-44487): frames that carry no
  request cost *flood credits*, earned back by requests and response data
  (``--h2-max-control-frames``); streams reset by the client before their
  response completed count against the responses it let complete
  (``--h2-max-reset-streams``); handlers still running after a reset keep
  their place in the per-connection limit; the decoded header list is
  bounded (``--h2-max-header-list-size``); a connection's life is bounded
  (``--h2-max-requests``). Crossing a limit ends the connection with
  GOAWAY ``ENHANCE_YOUR_CALM``.
- **Timeouts**: keep-alive (no stream for ``--timeout-keep-alive``), request
  body progress (``--timeout-request-body``, 408), a client that opens no
  window for ``--timeout-send``, and PING liveness (``--h2-ping-interval``).
  One watchdog timer per connection checks them all.
- **Graceful GOAWAY**: on shutdown, or when a handler asks for
  :meth:`~H2Stream.close_after_response`, bivio sends GOAWAY (``NO_ERROR``,
  the last stream it took) and lets the streams in flight finish. ``h2``
  refuses to send anything after its own ``close_connection``, so this
  GOAWAY is written as a raw frame and ``h2`` goes on carrying the
  remaining streams.

WebSockets over HTTP/2 (RFC 8441): bivio announces
``SETTINGS_ENABLE_CONNECT_PROTOCOL``; an extended CONNECT with
``:protocol websocket`` becomes a stream with ``upgrade == "websocket"``,
and :meth:`H2Stream.open_websocket` runs the same
:class:`~bivio.protocols.websocket.WebSocket` session as HTTP/1.1 over a
:class:`_StreamChannel` (the stream's DATA frames). The handshake answer is a
200 HEADERS frame instead of a 101.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

from ..core.context import ServerContext
from ..core.headers import check_headers
from ..core.logs import logger
from ..core.stream import ClientDisconnected, Headers, TLSInfo, plain_response
from .flow import Linger, StreamWaiters, WriteFlow, peer_name
from .proxy import Proxied, apply_proxy_headers
from .tls import connection_tls

if TYPE_CHECKING:
    from .websocket import WebSocket

PROTOCOL = "h2"  # the ALPN name, for the per-response hook

# Response header fields HTTP/2 forbids (RFC 9113 §8.2.2): an app's are dropped.
CONNECTION_SPECIFIC = frozenset({b"connection", b"keep-alive", b"proxy-connection",
                                 b"transfer-encoding", b"upgrade"})
NO_BODY_STATUS = frozenset({204, 304})
# The WebSocket session's channel asks its writer to wait above this many
# buffered bytes (like a transport's high-water mark) and resumes below LOW.
CHANNEL_HIGH = 64 * 1024
CHANNEL_LOW = 16 * 1024
FILE_CHUNK = 64 * 1024  # send_file reads the file in pieces of this size

_CONFIG = h2.config.H2Configuration(
    client_side=False,
    header_encoding=None,
    # Response headers are checked by bivio's one validator (core.headers) and
    # lower-cased and filtered here; h2's second pass would cost every response.
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
    validate_inbound_headers=True,
    normalize_inbound_headers=True,
)
_S = h2.settings.SettingCodes

_RequestReceived = h2.events.RequestReceived
_DataReceived = h2.events.DataReceived
_StreamEnded = h2.events.StreamEnded
_StreamReset = h2.events.StreamReset
_WindowUpdated = h2.events.WindowUpdated
_ConnectionTerminated = h2.events.ConnectionTerminated
_PingAckReceived = h2.events.PingAckReceived
# Frames that carry no request: each costs a flood credit.
_CONTROL_EVENTS = (h2.events.PingReceived, h2.events.RemoteSettingsChanged,
                   h2.events.PriorityUpdated, h2.events.UnknownFrameReceived)


class H2Stream(StreamWaiters):
    """One request/response on an HTTP/2 connection (see :mod:`bivio.core.stream`)."""

    # The request head and the response's flags are StreamBase's fields.
    __slots__ = (
        "conn", "stream_id", "target", "body_complete", "head_only", "sent", "received",
        "_body", "_unacked", "_status", "_resp_headers", "_trailers", "_head_sent", "_no_body",
        "_out", "_out_size", "_out_end", "_ended", "_started_at", "_last_body", "_task",
        "_counted", "_websocket", "_send_deadline",
    )

    def __init__(self, conn: H2Connection, stream_id: int, method: str, target: bytes,
                 headers: Headers, body_length: int | None) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.method = method
        self.http_version = "2"
        self.scheme = conn.scheme
        self.target = target
        path, _, query = target.partition(b"?")
        self.raw_path = path
        self.query_string = query
        self.headers = headers
        self.client = conn.client
        self.server = conn.server
        self.tls = conn.tls
        self.body_length = body_length
        self.upgrade: str | None = None
        self.interface = "-"
        self.sends_nowait = False  # every send goes through the connection's coroutines
        self.response_started = False
        self.response_complete = False
        self.disconnected = False
        self.body_complete = body_length == 0
        self.head_only = method == "HEAD"
        self.sent = 0
        self.received = 0
        self._body: list[bytes] = []
        self._unacked = 0  # flow-controlled bytes received but not yet acknowledged
        self._waiters: list[asyncio.Future[None]] = []
        self._status = 0
        self._resp_headers: Headers = []
        self._trailers = False
        self._head_sent = False
        self._no_body = False
        self._out: deque[bytes | memoryview] = deque()  # DATA waiting for a window
        self._out_size = 0
        self._out_end = False  # END_STREAM follows the buffered data
        self._ended = False  # END_STREAM sent
        self._started_at = time.monotonic()
        self._last_body = conn.loop.time()  # body progress, for --timeout-request-body
        self._task: asyncio.Task[None] | None = None
        self._counted = False  # holds a place in the connection's running handlers
        self._websocket: WebSocket | None = None
        self._send_deadline = 0.0

    # -- request body ---------------------------------------------------------------

    def _feed(self, data: bytes, flow_length: int) -> None:
        if data:
            self._body.append(data)
        self._unacked += flow_length
        self._last_body = self.conn.loop.time()
        self._wake()

    async def receive_body(self) -> tuple[bytes, bool]:
        while True:
            if self._body:
                body = self._body
                chunk = body[0] if len(body) == 1 else b"".join(body)
                self._body = []
                self.conn._acknowledge(self)  # reading reopens the window
                return chunk, not self.body_complete
            if self.body_complete:
                return b"", False
            if self.disconnected:
                raise ClientDisconnected("client disconnected while sending the body")
            if self._unacked:
                self.conn._acknowledge(self)
            await self._wait()

    async def wait_closed(self) -> None:
        while not (self.disconnected or self.response_complete):
            await self._wait()

    # -- response -------------------------------------------------------------------

    async def send_informational(self, status: int, headers: Headers) -> None:
        if self.disconnected:
            raise ClientDisconnected()
        if self.response_started:
            raise RuntimeError("informational response after the response started")
        check_headers(headers)
        block = [(b":status", b"%d" % status)]
        block += [(n.lower(), v) for n, v in headers if n.lower() not in CONNECTION_SPECIFIC]
        self.conn._send_headers(self, block, False)
        self.conn.flush()

    async def start_response(self, status: int, headers: Headers, trailers: bool = False) -> None:
        if self.disconnected:
            raise ClientDisconnected()
        if self.response_started:
            raise RuntimeError("response already started")
        if not 200 <= status <= 999:
            raise ValueError(f"invalid response status {status!r}")
        check_headers(headers)
        self.response_started = True
        self._status = status
        self._resp_headers = headers
        self._trailers = trailers
        self._no_body = self.head_only or status in NO_BODY_STATUS

    def _head(self, known_length: int | None) -> list[tuple[bytes, bytes]]:
        """The response's header block: lower-case names, no connection fields, defaults."""
        block = [(b":status", b"%d" % self._status)]
        append = block.append
        own_server = own_date = has_length = False
        for name, value in self._resp_headers:
            name = name.lower()
            if name in CONNECTION_SPECIFIC:
                continue
            if name == b"content-length":
                has_length = True
            elif name == b"server":
                own_server = True
            elif name == b"date":
                own_date = True
            append((name, value))
        if known_length is not None and not has_length and not self._no_body:
            append((b"content-length", b"%d" % known_length))
        for name, value in self.conn.ctx.default_header_pairs:
            if (name == b"server" and own_server) or (name == b"date" and own_date):
                continue
            append((name, value))
        self._head_sent = True
        return block

    async def send_body(self, data: bytes, more: bool) -> None:
        if self.response_complete:
            return
        if self.disconnected:
            raise ClientDisconnected()
        if not self.response_started:
            raise RuntimeError("body sent before the response started")
        conn = self.conn
        end = not more and not self._trailers
        if self._no_body:
            data = b""
        if not self._head_sent:
            head = self._head(None if more else len(data))
            conn._send_headers(self, head, end and not data)
            if end and not data:
                self._ended = True
                conn.flush()
                self._finish()
                return
        if data or end:
            self.sent += len(data)
            await self._write(data, end)
        if end:
            self._finish()
        elif conn.write_paused:
            await conn.drain()

    async def _write(self, data: bytes | memoryview, end: bool) -> None:
        """Queue ``data`` (then END_STREAM if ``end``) and wait until it is all framed."""
        conn = self.conn
        if data:
            self._out.append(data)
            self._out_size += len(data)
        if end:
            self._out_end = True
        conn._pump(self)
        conn.flush()
        if self._out_size or (self._out_end and not self._ended):
            await self._wait_window()
        if conn.write_paused:
            await conn.drain()

    async def _wait_window(self) -> None:
        """Wait until the client's windows have taken everything queued (``--timeout-send``)."""
        conn = self.conn
        timeout = conn.config.timeout_send
        self._send_deadline = conn.loop.time() + timeout if timeout > 0 else 0.0
        try:
            while self._out_size or (self._out_end and not self._ended):
                if self.disconnected:
                    raise ClientDisconnected()
                await self._wait()
        finally:
            self._send_deadline = 0.0
        if self.disconnected and not self._ended:
            raise ClientDisconnected()

    async def send_trailers(self, headers: Headers) -> None:
        if self.response_complete:
            return
        if self.disconnected:
            raise ClientDisconnected()
        if not self._trailers:
            raise RuntimeError("trailers sent but not announced in start_response")
        check_headers(headers)
        conn = self.conn
        if not self._head_sent:
            conn._send_headers(self, self._head(None), False)
        if self._out_size:
            await self._wait_window()
        block = [(n.lower(), v) for n, v in headers if n.lower() not in CONNECTION_SPECIFIC]
        conn._send_headers(self, block, True)
        self._ended = True
        conn.flush()
        self._finish()

    async def send_file(self, fd: int, offset: int, count: int) -> None:
        """Send ``count`` bytes of ``fd`` from ``offset`` as the whole body (DATA frames)."""
        if self.disconnected:
            raise ClientDisconnected()
        trailers, self._trailers = self._trailers, False
        conn = self.conn
        if not self._head_sent:
            end = self._no_body or count == 0
            conn._send_headers(self, self._head(count), end and not trailers)
            if end and not trailers:
                self._ended = True
                conn.flush()
                self._finish()
                return
        while count > 0 and not self._no_body:
            chunk = os.pread(fd, min(count, FILE_CHUNK), offset)
            if not chunk:
                self.abort()
                raise RuntimeError("file ended before its announced length")
            offset += len(chunk)
            count -= len(chunk)
            self.sent += len(chunk)
            await self._write(chunk, count == 0 and not trailers)
        if trailers:
            conn._send_headers(self, [], True)  # an empty trailer block ends the stream
            self._ended = True
            conn.flush()
        self._finish()

    def _finish(self) -> None:
        if self.response_complete:
            return
        self.response_complete = True
        self._wake()
        self.conn._response_done(self)

    def close_after_response(self) -> None:
        """Take no new streams on this connection (GOAWAY); the others finish."""
        self.conn.close_after_streams()

    def abort(self) -> None:
        """Reset this stream (RST_STREAM INTERNAL_ERROR); the connection carries on."""
        if not self.disconnected:
            self.conn._reset(self, ErrorCodes.INTERNAL_ERROR)

    def open_websocket(self) -> WebSocket:
        """The WebSocket of this extended CONNECT (RFC 8441), over the stream's DATA frames."""
        if self.upgrade != "websocket":
            raise RuntimeError("not a WebSocket request")
        from .websocket import WebSocket

        conn = self.conn
        # websockets validates an HTTP/1.1 handshake; RFC 8441 drops its Upgrade,
        # Connection and key, so the library is shown the equivalent request.
        key = base64.b64encode(os.urandom(16))
        handshake = [*self.headers, (b"upgrade", b"websocket"), (b"connection", b"upgrade"),
                     (b"sec-websocket-key", key)]
        return WebSocket(conn.config, _StreamChannel(self), conn.loop,
                         self.target.decode("latin-1"), self.headers, conn._accept_websocket,
                         handshake_headers=handshake)


class _StreamChannel:
    """One stream's DATA frames as a :class:`~bivio.core.stream.ByteChannel` (RFC 8441).

    The WebSocket session writes to it like a transport and is called back as
    an :class:`asyncio.Protocol`: writes are queued on the stream and framed as
    its window allows (``pause_writing`` above :data:`CHANNEL_HIGH`); reading
    paused means the stream's window is not reopened.
    """

    def __init__(self, stream: H2Stream) -> None:
        self.stream = stream
        self.conn = stream.conn
        self.reading_paused = False
        self.write_paused = False
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.conn.transport.get_extra_info(name, default)

    def write(self, data: bytes) -> None:
        stream = self.stream
        if self.closed or stream._ended or stream.disconnected or not data:
            return
        stream._out.append(data)
        stream._out_size += len(data)
        self.conn._pump(stream)
        self.conn.flush()
        self._check_paused()

    def _check_paused(self) -> None:
        ws = self.stream._websocket
        if ws is None:
            return
        size = self.stream._out_size
        if not self.write_paused and (size > CHANNEL_HIGH or self.conn.write_paused):
            self.write_paused = True
            ws.pause_writing()
        elif self.write_paused and size <= CHANNEL_LOW and not self.conn.write_paused:
            self.write_paused = False
            ws.resume_writing()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        stream = self.stream
        if not stream._ended and not stream.disconnected:
            stream._out_end = True
            self.conn._pump(stream)
            self.conn.flush()

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False
        if self.stream._unacked:
            self.conn._acknowledge(self.stream)

    def close(self) -> None:
        """End our side; a client that has not ended its side is reset (NO_ERROR)."""
        if self.closed:
            return
        self.closed = True
        stream = self.stream
        if not stream.disconnected:
            if not stream.body_complete:
                self.conn._reset(stream, ErrorCodes.NO_ERROR)
            else:
                self.write_eof()
        self.conn._channel_closed(stream)

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        if not self.stream.disconnected:
            self.conn._reset(self.stream, ErrorCodes.CANCEL)
        self.conn._channel_closed(self.stream)


class H2Connection(WriteFlow, asyncio.Protocol):
    """One HTTP/2 connection: frames in, streams to the handler, frames out."""

    #: ``(client, server)`` from a PROXY protocol header, set before connection_made.
    proxied: Proxied = None

    def __init__(self, ctx: ServerContext, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.ctx = ctx
        cfg = self.config = ctx.config
        self.loop = loop or asyncio.get_running_loop()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None
        self.scheme = "http"
        self.tls: TLSInfo | None = None
        self.trusted_proxy = False
        self._init_write_flow(cfg.timeout_send)
        self.counts = self.ctx
        conn = self.h2 = h2.connection.H2Connection(config=_CONFIG)
        conn.local_settings = h2.settings.Settings(client=False, initial_values={
            _S.MAX_CONCURRENT_STREAMS: cfg.h2_max_concurrent_streams,
            _S.INITIAL_WINDOW_SIZE: cfg.h2_initial_window_size,
            _S.MAX_FRAME_SIZE: cfg.h2_max_frame_size,
            _S.MAX_HEADER_LIST_SIZE: cfg.h2_max_header_list_size,
            _S.ENABLE_CONNECT_PROTOCOL: 0 if cfg.ws == "none" else 1,
        })
        # Bound the decoded header list from the first frame, not only once the
        # client has acknowledged our SETTINGS (an HPACK bomb ends in h2's
        # DenialOfServiceError: GOAWAY ENHANCE_YOUR_CALM).
        conn.decoder.max_header_list_size = cfg.h2_max_header_list_size
        # h2 reads its inbound frame limit from the settings it was built with.
        conn.max_inbound_frame_size = cfg.h2_max_frame_size
        # Frames h2 handles without an event (DATA or WINDOW_UPDATE on a closed
        # stream, which it may answer with RST_STREAM) are counted here and
        # charged as control frames (a reset flood, CVE-2019-9514).
        self._silent = 0
        self._got_settings = False
        receive_frame = conn._receive_frame

        def counting_receive_frame(frame: Any) -> Any:
            if not self._got_settings:
                # RFC 9113 §3.4: the client's preface ends with a SETTINGS frame
                # (h2 does not check; its ProtocolError becomes GOAWAY PROTOCOL_ERROR).
                if frame.type != 0x4:
                    raise h2.exceptions.ProtocolError("the first frame is not SETTINGS")
                self._got_settings = True
            events = receive_frame(frame)
            if not events:
                self._silent += 1
            return events

        conn._receive_frame = counting_receive_frame  # type: ignore[method-assign]
        self.streams: dict[int, H2Stream] = {}
        self._queued: deque[H2Stream] = deque()
        self._blocked: set[H2Stream] = set()  # streams with DATA waiting for a window
        self._channels: set[H2Stream] = set()  # streams carrying a WebSocket
        self._running = 0
        self._starting = False
        self._start_soon = False  # _start_freed is scheduled
        self._admitting: list[H2Stream] | None = None  # see data_received
        cap = ctx.streams_per_connection
        self._cap = min(cfg.h2_max_concurrent_streams, cap) if cap else \
            cfg.h2_max_concurrent_streams
        self._intake_held = False  # the context's pause is read when a stream would start
        self._closed = False
        self._served = False
        self._requests = 0
        self._completed = 0
        self._early_resets = 0
        self._flood = 0
        self._flush_pending = False
        self._goaway_last: int | None = None  # set once a graceful GOAWAY went out
        self._idle_since = self.loop.time()
        self._ping_sent_at = 0.0
        self._ping_acked_at = self._idle_since
        self._watchdog: asyncio.TimerHandle | None = None
        timeouts = [t for t in (cfg.timeout_keep_alive, cfg.timeout_request_body,
                                cfg.timeout_send, cfg.h2_ping_interval) if t > 0]
        self._tick = min(1.0, max(0.05, min(timeouts) / 4)) if timeouts else 1.0

    # -- set-up ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """A TLS connection whose ALPN chose h2, or a cleartext one taken over (see take_over)."""
        self._adopt(transport)
        self.h2.initiate_connection()
        self._open_connection_window()
        self.flush()

    def _adopt(self, transport: Any) -> None:
        self.transport = transport
        if self.proxied is not None:  # from a PROXY protocol header (proxy_protocol.py)
            self.client, self.server = self.proxied
        else:
            self.client = _address(transport.get_extra_info("peername"))
            self.server = _address(transport.get_extra_info("sockname"))
        if self.config.tls:
            self.tls = connection_tls(transport, self.ctx.tls_server_cert)
            self.scheme = "https"
        self.trusted_proxy = self.config.is_trusted_proxy(
            self.client[0] if self.client else "unix:")
        self.ctx.connections.add(self)
        self._watchdog = self.loop.call_later(self._tick, self._on_watchdog)

    def _open_connection_window(self) -> None:
        # The connection's window starts at 65,535 bytes whatever SETTINGS say.
        increment = 4 * self.config.h2_initial_window_size - 65535
        if increment > 0:
            self.h2.increment_flow_control_window(increment)

    @classmethod
    def take_over(cls, ctx: ServerContext, loop: asyncio.AbstractEventLoop, transport: Any,
                  data: bytes = b"", upgrade: tuple[bytes, str, bytes, Headers] | None = None,
                  proxied: Proxied = None) -> H2Connection:
        """Take a connection over from HTTP/1.1 (prior knowledge or ``Upgrade: h2c``).

        ``data``: bytes already read that belong to HTTP/2 (from the preface
        on). ``upgrade``: the HTTP/1.1 request that asked for h2c, as
        ``(HTTP2-Settings value, method, target, headers)``: it becomes stream
        1, and the caller has already written the 101.
        """
        self = cls(ctx, loop)
        self.proxied = proxied
        self._adopt(transport)
        transport.set_protocol(self)
        if upgrade is not None:
            settings, method, target, headers = upgrade
            self.h2.initiate_upgrade_connection(settings)
            self._open_connection_window()
            self._served = True
            self._requests = 1
            stream = H2Stream(self, 1, method, target, headers, 0)
            stream.body_complete = True
            if self.trusted_proxy:
                apply_proxy_headers(stream, self.config)
            self.streams[1] = stream
            self._admit(stream)
        else:
            self.h2.initiate_connection()
            self._open_connection_window()
        self.flush()
        if data:
            self.data_received(data)
        return self

    # -- transport events -------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self.ctx.received_bytes += len(data)
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            logger.debug("%s: HTTP/2 protocol error: %s", peer_name(self.transport), exc)
            self._close(linger=True)  # after the GOAWAY h2 queued with the fitting code
            return
        silent, self._silent = self._silent, 0
        for _ in range(silent):
            self._charge()
        # Handlers admitted from these events start once all of them are taken in
        # (_start): h2 has already read every frame of this read, so a handler that
        # ran at once (an eager Task, Python >= 3.12) would find its stream reset
        # by a frame whose event is not processed yet (a rapid reset not counted),
        # or answer before its body's DATA events were.
        self._admitting = admitted = []
        try:
            self._on_events(events)
        finally:
            self._admitting = None
        for stream in admitted:
            if not stream.disconnected and not self._closed:
                stream._task = self.ctx.start_handler(stream)
        if not self._closed:
            self.flush()

    def _on_events(self, events: list[h2.events.Event]) -> None:
        for event in events:
            if self._closed:
                return
            kind = type(event)
            if kind is _DataReceived:
                self._on_data(event)
            elif kind is _RequestReceived:
                self._on_request(event)
            elif kind is _StreamEnded:
                self._on_stream_ended(event.stream_id)
            elif kind is _WindowUpdated:
                self._on_window_updated(event.stream_id)
            elif kind is _StreamReset:
                self._on_reset(event.stream_id)
            elif kind is _PingAckReceived:
                self._ping_sent_at = 0.0
                self._ping_acked_at = self.loop.time()
            elif kind is _ConnectionTerminated:
                self.flush()
                self._close()
                return
            elif isinstance(event, _CONTROL_EVENTS):
                self._charge()
                if kind is h2.events.RemoteSettingsChanged:
                    self._pump_all()  # a new initial window may unblock streams

    def eof_received(self) -> bool | None:
        return None  # HTTP/2 has no half-close: the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.ctx.connections.discard(self)
        self.ctx.held.discard(self)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        for stream in list(self.streams.values()):
            self._lose(stream)
        self.streams.clear()
        self._queued.clear()
        self._blocked.clear()
        self.write_paused = False
        self._release_writers()

    def pause_writing(self) -> None:
        super().pause_writing()
        for stream in list(self._channels):
            if stream._websocket is not None:
                _channel_of(stream)._check_paused()

    def resume_writing(self) -> None:
        super().resume_writing()
        for stream in list(self._channels):
            if stream._websocket is not None:
                _channel_of(stream)._check_paused()

    def flush(self) -> None:
        """Write what h2 has framed, once per loop iteration.

        Every response of a burst (a client with 100 streams in flight gets
        100 answers in one iteration) goes out in one write instead of one
        system call each; the write happens at the end of this iteration.
        """
        if not self._flush_pending and not self._closed:
            self._flush_pending = True
            self.loop.call_soon(self.flush_now)

    def flush_now(self) -> None:
        """Write what h2 has framed, now (before a raw frame, before closing)."""
        self._flush_pending = False
        data = self.h2.data_to_send()
        if data and not self._closed:
            self.transport.write(data)

    async def drain(self) -> None:
        if self._closed:
            raise ClientDisconnected()
        if self.write_paused:
            await self.wait_writable()
            if self._closed:
                raise ClientDisconnected()

    # -- requests -----------------------------------------------------------------------------

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        sid = event.stream_id
        self._served = True
        self._requests += 1
        if self._flood:
            self._flood -= 1
        if self._goaway_last is not None and sid > self._goaway_last:
            self._refuse(sid)  # after our GOAWAY: the client retries elsewhere
            return
        method = target = authority = protocol = b""
        headers: Headers = []
        cookies: list[bytes] = []
        host = False
        for name, value in event.headers:  # type: ignore[union-attr]
            if name[0] == 58:  # b":"
                if name == b":method":
                    method = value
                elif name == b":path":
                    target = value
                elif name == b":authority":
                    authority = value
                elif name == b":protocol":
                    protocol = value
            elif name == b"cookie":
                cookies.append(value)  # HTTP/2 may split it in crumbs (RFC 9113 §8.2.3)
            else:
                if name == b"host":
                    host = True
                headers.append((name, value))
        if cookies:
            headers.append((b"cookie", b"; ".join(cookies)))
        if authority and not host:
            headers.insert(0, (b"host", authority))
        body_length: int | None = 0 if event.stream_ended else None
        for name, value in headers:
            if name == b"content-length":
                try:
                    body_length = int(value)
                except ValueError:
                    body_length = None
        stream = H2Stream(self, sid, method.decode("ascii", "replace"), target, headers,
                          body_length)
        if event.stream_ended:
            stream.body_complete = True
        self.streams[sid] = stream
        if self.trusted_proxy:
            apply_proxy_headers(stream, self.config)
        if self._requests >= self.config.h2_max_requests or self.ctx.shutting_down:
            self._send_goaway(sid)  # this one is served, none after it
        error = self._check_request(stream, protocol)
        if error is not None:
            self._reply_error(stream, *error)
            return
        self._admit(stream)

    def _check_request(self, stream: H2Stream, protocol: bytes) -> tuple[int, str] | None:
        """The limits HTTP/1.1 enforces in its parser, for this stream's head."""
        cfg = self.config
        if stream.method == "CONNECT":
            if protocol.lower() == b"websocket" and cfg.ws != "none":
                stream.upgrade = "websocket"
            else:
                return 501, "CONNECT is not supported"
        if len(stream.target) > cfg.limit_request_line:
            return 414, "Request-URI too long"
        if len(stream.headers) > cfg.limit_request_fields:
            return 431, "Too many header fields"
        size = cfg.limit_request_field_size
        for name, value in stream.headers:
            if len(name) + len(value) > size and name != b"cookie":
                return 431, "Request header field too large"
        limit = cfg.limit_request_body
        if limit and stream.body_length is not None and stream.body_length > limit:
            return 413, "Request body too large"
        return None

    def _admit(self, stream: H2Stream) -> None:
        """Start the stream's handler now, or queue it behind the connection's running ones."""
        if self.ctx.intake_paused and not self._intake_held:
            self.pause_intake()  # the context pauses lazily: this connection holds back now
        if self._running < self._cap and not self._intake_held and not self._queued:
            self._start(stream)
        else:
            self._queued.append(stream)

    def _start(self, stream: H2Stream) -> None:
        if self.ctx.over_capacity():  # --limit-concurrency: answered, never counted
            self.ctx.limit_hit("limit-concurrency")
            self._reply_error(stream, 503, "Service Unavailable")
            return
        self._running += 1
        stream._counted = True  # its place is taken now, its handler may start later
        if self._admitting is not None:
            self._admitting.append(stream)  # once this read's events are all in
        else:
            stream._task = self.ctx.start_handler(stream)

    def _start_queued(self) -> None:
        if self._starting:
            return  # re-entered from a stream answered at once: the outer loop goes on
        self._starting = True
        if self.ctx.intake_paused and not self._intake_held:
            self.pause_intake()
        try:
            queued = self._queued
            while queued and self._running < self._cap and not self._intake_held \
                    and not self._closed:
                stream = queued.popleft()
                if not stream.disconnected:
                    self._start(stream)
        finally:
            self._starting = False

    def _reply_error(self, stream: H2Stream, status: int, reason: str) -> None:
        """Answer a stream without the handler (a limit, 503): the one error shape.

        A handler already running for it keeps its place until it returns: the
        server's answer must not let a client start more work than the cap.
        """
        self._hold_place_until_return(stream)
        headers, body = plain_response(reason)
        stream.response_started = True
        stream._status = status
        stream._resp_headers = headers
        stream._no_body = stream.head_only
        try:
            self._send_headers(stream, stream._head(len(body)), stream._no_body)
        except ClientDisconnected:
            self._forget(stream)
            return
        if not stream._no_body:
            stream._out.append(body)
            stream._out_size = len(body)
            stream._out_end = True
            stream.sent = len(body)
            self._pump(stream)
        else:
            stream._ended = True
        stream._finish()

    def _on_data(self, event: h2.events.DataReceived) -> None:
        sid = event.stream_id
        data = event.data or b""
        length = event.flow_controlled_length or 0
        stream = self.streams.get(sid)
        if not data and not event.stream_ended:
            self._charge()  # an empty DATA frame carries nothing
        if stream is None or stream.disconnected or (stream.response_complete
                                                     and stream._websocket is None):
            if length:  # nobody will read it: give the window back at once
                self.h2.acknowledge_received_data(length, sid)
            return
        stream.received += len(data)
        limit = self.config.limit_request_body
        if limit and stream.received > limit and stream.upgrade is None:
            logger.info("%s: HTTP/2 request body larger than --limit-request-body: 413",
                        peer_name(self.transport))
            self.ctx.limit_hit("limit-request-body")
            self.h2.acknowledge_received_data(length, sid)
            self._give_up(stream, 413, "Request body too large")
            return
        ws = stream._websocket
        if ws is not None:
            stream._unacked += length
            if not _channel_of(stream).reading_paused:
                self._acknowledge(stream)
            ws.data_received(data)
            return
        stream._feed(data, length)

    def _give_up(self, stream: H2Stream, status: int, reason: str) -> None:
        """A request that broke a limit mid-body: answer ``status`` if still possible, else reset.

        The answer ends with RST_STREAM NO_ERROR (the body is not wanted), and a
        handler that is running sees the client gone at its next read or send.
        """
        if not stream.response_started:
            self._reply_error(stream, status, reason)
        if not stream.disconnected:
            self._reset(stream, ErrorCodes.CANCEL)

    def _acknowledge(self, stream: H2Stream) -> None:
        """The handler took the buffered body: reopen the windows for that much."""
        length, stream._unacked = stream._unacked, 0
        if length and not self._closed:
            try:
                self.h2.acknowledge_received_data(length, stream.stream_id)
            except h2.exceptions.ProtocolError:
                return
            self.flush()

    def _on_stream_ended(self, sid: int) -> None:
        stream = self.streams.get(sid)
        if stream is None:
            return
        stream.body_complete = True
        stream._wake()
        ws = stream._websocket
        if ws is not None:
            ws.eof_received()
            _channel_of(stream).close()
        else:
            self._maybe_forget(stream)

    def _on_reset(self, sid: int) -> None:
        self._charge()
        stream = self.streams.get(sid)
        if stream is None:
            return
        if not stream.response_complete:
            self._early_resets += 1
            if self._early_resets > self._completed + self.config.h2_max_reset_streams:
                self._calm("rapid reset (--h2-max-reset-streams)", "h2-max-reset-streams")
                return
        self._lose(stream)
        self._forget(stream)

    def _lose(self, stream: H2Stream) -> None:
        """The client (or the connection) is gone for this stream."""
        if stream.disconnected:
            return
        stream.disconnected = True
        stream._wake()
        ws = stream._websocket
        if ws is not None:
            stream._websocket = None
            self._channels.discard(stream)
            ws.connection_lost(None)

    def _maybe_forget(self, stream: H2Stream) -> None:
        """Forget the stream once both sides are over (or the client is gone)."""
        if stream.disconnected or (stream.body_complete and stream._ended
                                   and stream._websocket is None
                                   and stream not in self._channels):
            self._forget(stream)

    def _forget(self, stream: H2Stream) -> None:
        """The stream is over on both sides: free its place."""
        if self.streams.pop(stream.stream_id, None) is None:
            return
        self._blocked.discard(stream)
        self._channels.discard(stream)
        if stream in self._queued:
            self._queued.remove(stream)
        if not stream.response_complete:
            # Reset while its handler still runs: it keeps its place until it
            # returns, so resets cannot start unbounded work (CVE-2023-44487).
            self._hold_place_until_return(stream)
        if stream._counted:
            stream._counted = False
            self._handler_gone()
        if not self.streams:
            self._idle_since = self.loop.time()
            if self._goaway_last is not None:
                self.flush()
                self._close()

    def _hold_place_until_return(self, stream: H2Stream) -> None:
        task = stream._task
        if stream._counted and task is not None and not task.done():
            stream._counted = False
            task.add_done_callback(lambda _task: self._handler_gone())

    def _handler_gone(self) -> None:
        self._running -= 1
        if self._queued and not self._closed and not self._start_soon:
            # The queued streams start from the loop, not from here: this is often
            # inside a handler's last send, and an eagerly started handler (Python >=
            # 3.12) would run nested in it, before it returned.
            self._start_soon = True
            self.loop.call_soon(self._start_freed)

    def _start_freed(self) -> None:
        """Places freed since the last iteration: start queued streams in them."""
        self._start_soon = False
        if self._queued and not self._closed:
            self._start_queued()
            self.flush()

    # -- responses -------------------------------------------------------------------------------

    def _send_headers(self, stream: H2Stream, block: list[tuple[bytes, bytes]],
                      end: bool) -> None:
        try:
            self.h2.send_headers(stream.stream_id, block, end_stream=end)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self._lose(stream)
            raise ClientDisconnected("the stream was closed") from None

    def _pump(self, stream: H2Stream) -> None:
        """Frame as much of ``stream``'s queued DATA as the windows allow."""
        h2c = self.h2
        sid = stream.stream_id
        out = stream._out
        try:
            while out:
                window = h2c.local_flow_control_window(sid)
                if window <= 0:
                    break
                chunk = out[0]
                size = len(chunk)
                n = min(size, window, h2c.max_outbound_frame_size)
                if n < size:
                    view = chunk if isinstance(chunk, memoryview) else memoryview(chunk)
                    out[0] = view[n:]
                    piece: bytes | memoryview = view[:n]
                else:
                    out.popleft()
                    piece = chunk
                stream._out_size -= n
                last = stream._out_end and not out
                h2c.send_data(sid, piece if type(piece) is bytes else bytes(piece),
                              end_stream=last)
                if last:
                    stream._ended = True
                    if stream.response_complete:
                        self._maybe_forget(stream)
                if self._flood:
                    self._flood -= 1
            if not out and stream._out_end and not stream._ended:
                h2c.end_stream(sid)
                stream._ended = True
                if stream.response_complete:
                    self._maybe_forget(stream)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self._lose(stream)
            out.clear()
            stream._out_size = 0
        if out:
            self._blocked.add(stream)
        else:
            self._blocked.discard(stream)
            stream._wake()
            if stream._websocket is not None:
                _channel_of(stream)._check_paused()

    def _pump_all(self) -> None:
        for stream in list(self._blocked):
            self._pump(stream)

    def _on_window_updated(self, sid: int) -> None:
        if sid == 0:
            if not self._blocked:
                self._charge()  # nothing was waiting for it
            self._pump_all()
            return
        stream = self.streams.get(sid)
        if stream is not None and stream in self._blocked:
            self._pump(stream)
        else:
            self._charge()

    def _response_done(self, stream: H2Stream) -> None:
        self._completed += 1
        if self.ctx.response_hooks:
            self.ctx.record(stream.client, stream.method, stream.target.decode("latin-1"),
                            "2", stream._status, stream.sent,
                            time.monotonic() - stream._started_at, PROTOCOL, stream.interface,
                            stream.headers)
        if self._queued and self.config.limit_concurrency is not None:
            # The handler's task still counts against --limit-concurrency until it
            # returns: starting the queued streams now would answer them 503.
            self._hold_place_until_return(stream)
        if stream._counted:  # the handler's place is free (its last DATA may wait)
            stream._counted = False
            self._handler_gone()
        if not stream.body_complete and not stream.disconnected and stream._ended:
            # Answered without reading the whole body: stop the client sending it.
            self._reset(stream, ErrorCodes.NO_ERROR)
            return
        self._maybe_forget(stream)

    def _reset(self, stream: H2Stream, code: ErrorCodes) -> None:
        if not self._closed:
            try:
                self.h2.reset_stream(stream.stream_id, code)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                pass
            self.flush()
        self._lose(stream)
        self._forget(stream)

    def _refuse(self, sid: int) -> None:
        try:
            self.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass

    # -- WebSockets over HTTP/2 -------------------------------------------------------------------

    def _accept_websocket(self, ws: WebSocket, headers: Headers) -> bytes:
        """An accepted WebSocket: answer 200 with ``headers``; the stream carries frames now."""
        channel = ws.transport
        stream = channel.stream if isinstance(channel, _StreamChannel) else None
        if stream is None or stream.disconnected or self._closed:
            raise ClientDisconnected("client disconnected before the WebSocket handshake")
        block = [(b":status", b"200")]
        block += [(n, v) for n, v in headers
                  if n not in CONNECTION_SPECIFIC and n != b"sec-websocket-accept"]
        block += self.ctx.default_header_pairs
        self._send_headers(stream, block, False)
        self.flush()
        stream.response_started = True
        stream._head_sent = True
        stream._status = 200
        stream._websocket = ws
        self._channels.add(stream)
        if stream._counted:  # a WebSocket does not hold a request's place
            stream._counted = False
            self._handler_gone()
        if self.ctx.response_hooks:
            self.ctx.record(stream.client, stream.method, stream.target.decode("latin-1"),
                            "2", 200, 0, time.monotonic() - stream._started_at, "websocket",
                            stream.interface, stream.headers)
        leftover = b"".join(stream._body)
        stream._body = []
        return leftover

    def _channel_closed(self, stream: H2Stream) -> None:
        ws = stream._websocket
        self._channels.discard(stream)
        if ws is not None:
            stream._websocket = None
            self.loop.call_soon(ws.connection_lost, None)
        if stream._ended and (stream.body_complete or stream.disconnected):
            self._forget(stream)

    # -- limits ------------------------------------------------------------------------------------

    def _charge(self) -> None:
        """One frame that carried no request: a flood credit (see the module docstring)."""
        self._flood += 1
        if self._flood > self.config.h2_max_control_frames:
            self._calm("flood of control frames (--h2-max-control-frames)",
                       "h2-max-control-frames")

    def _calm(self, reason: str, flag: str) -> None:
        """End the connection with GOAWAY ENHANCE_YOUR_CALM: it crossed an attack limit."""
        if self._closed:
            return
        self.ctx.limit_hit(flag)
        logger.info("%s: HTTP/2 %s: GOAWAY ENHANCE_YOUR_CALM", peer_name(self.transport), reason)
        try:
            self.h2.close_connection(ErrorCodes.ENHANCE_YOUR_CALM)
        except h2.exceptions.ProtocolError:
            pass
        self._close(linger=True)

    def _send_goaway(self, last: int) -> None:
        """Graceful GOAWAY (NO_ERROR): streams up to ``last`` finish, none after."""
        if self._goaway_last is not None or self._closed:
            return
        self._goaway_last = last
        self.flush_now()  # what h2 framed before it goes first
        frame = GoAwayFrame(0, last_stream_id=last, error_code=ErrorCodes.NO_ERROR)
        self.transport.write(frame.serialize())

    def close_after_streams(self) -> None:
        """GOAWAY now; close once the streams in flight are done."""
        self._send_goaway(self.h2.highest_inbound_stream_id)
        if not self.streams:
            self._close()

    def _close(self, linger: bool = False) -> None:
        """Close after what is framed; ``linger`` after an error GOAWAY.

        Closing a socket with unread input makes the kernel reset it, which can
        destroy the GOAWAY (behind thousands of PING acknowledgements, say)
        before the client read it: after an error, the write side is shut down
        and what the client still sends is read and dropped for a bounded time
        (:class:`~bivio.protocols.flow.Linger`, as HTTP/1.1 does after a 4xx).
        """
        if self._closed:
            return
        self.flush_now()
        transport = self.transport
        if linger and transport.can_write_eof():
            lingering = Linger(transport, self.loop, self._send_timeout)
            self._hand_over_write_flow(lingering)
            transport.write_eof()
            transport.set_protocol(lingering)
            self.connection_lost(None)  # this protocol is done with the connection
            transport.resume_reading()
            return
        self._closed = True
        transport.close()

    # -- timeouts ---------------------------------------------------------------------

    def _on_watchdog(self) -> None:
        """Every tick: keep-alive, body progress, send windows, PING liveness."""
        self._watchdog = None
        if self._closed:
            return
        now = self.loop.time()
        cfg = self.config
        if not self.streams and not self._queued:
            if cfg.timeout_keep_alive > 0 and now - self._idle_since >= cfg.timeout_keep_alive:
                self._send_goaway(self.h2.highest_inbound_stream_id)
                self._close()
                return
        else:
            self._check_streams(now)
            interval = cfg.h2_ping_interval
            if interval > 0 and not self._closed:
                if self._ping_sent_at:
                    if now - self._ping_sent_at >= cfg.h2_ping_timeout:
                        logger.info("%s: HTTP/2 PING unanswered for %g s: connection closed",
                                    peer_name(self.transport), cfg.h2_ping_timeout)
                        self.ctx.limit_hit("h2-ping-timeout")
                        self._close()
                        return
                elif now - self._ping_acked_at >= interval:
                    self._ping_sent_at = now
                    self.h2.ping(os.urandom(8))
                    self.flush()
        if not self._closed:
            self._watchdog = self.loop.call_later(self._tick, self._on_watchdog)

    def _check_streams(self, now: float) -> None:
        body_timeout = self.config.timeout_request_body
        for stream in list(self.streams.values()):
            if stream.disconnected:
                continue
            if body_timeout > 0 and not stream.body_complete and stream._websocket is None \
                    and stream.upgrade is None:
                if stream._unacked:  # bivio has not read what came: the clock stops
                    stream._last_body = now
                elif now - stream._last_body >= body_timeout:
                    logger.info("%s: HTTP/2 stream %d sent no body for --timeout-request-body "
                                "%g s: %s", peer_name(self.transport), stream.stream_id,
                                body_timeout, "reset" if stream.response_started else "408")
                    self.ctx.limit_hit("timeout-request-body")
                    self._give_up(stream, 408, "Request body timeout")
                    continue
            deadline = stream._send_deadline
            if deadline and now >= deadline and stream._out_size:
                logger.info("%s: HTTP/2 stream %d: the client opened no window for "
                            "--timeout-send %g s: stream reset", peer_name(self.transport),
                            stream.stream_id, self.config.timeout_send)
                self.ctx.limit_hit("timeout-send")
                self._reset(stream, ErrorCodes.CANCEL)

    # -- the worker's view -------------------------------------------------------------

    def is_idle(self) -> bool:
        return not self.streams and not self._queued

    @property
    def open_websockets(self) -> int:
        """WebSocket sessions (RFC 8441) running on this connection now (for the metrics)."""
        return len(self._channels)

    @property
    def awaiting_first_request(self) -> bool:
        return not self._served and not self._closed

    def pause_intake(self) -> None:
        """New streams wait in the queue (reading goes on: windows, pings, other bodies)."""
        self._intake_held = True
        self.ctx.held.add(self)

    def resume_intake(self) -> None:
        if self._intake_held:
            self._intake_held = False
            if self._queued and not self._closed:
                self._start_queued()
                self.flush()

    def shutdown(self) -> None:
        """Graceful shutdown: GOAWAY, let the streams in flight finish, then close."""
        if self._closed:
            return
        if self._served or self.streams:
            self._send_goaway(self.h2.highest_inbound_stream_id)
            if not self.streams:
                self._close()
            for stream in list(self._channels):
                ws = stream._websocket
                if ws is not None:
                    ws.shutdown()

    def close_now(self) -> None:
        self._close()


def _channel_of(stream: H2Stream) -> _StreamChannel:
    ws = stream._websocket
    return ws.transport  # type: ignore[union-attr,return-value]


def _address(info: Any) -> tuple[str, int] | None:
    if isinstance(info, tuple) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    return None
