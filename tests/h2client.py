"""A small blocking HTTP/2 client for the tests, for what curl, httpx and nghttp do not do.

It is built on python-hyper's ``h2`` state machine (the same library bivio's
server side uses), with ``hyperframe`` and a few lines of HPACK for the raw
frames ``h2`` refuses to send. Everything is synchronous: one blocking socket
(TCP, or TLS with ALPN ``h2``), timeouts everywhere, no threads.

Well-formed traffic (``h2`` mode)::

    with H2Client.connect("127.0.0.1", port) as client:
        response = client.request("POST", "/echo", body=b"x" * 1000)
        assert response.status == 200
        # or stream by stream, interleaved:
        one = client.send_headers(client.request_headers("GET", "/slow"))
        two = client.send_headers(client.request_headers("GET", "/"), end_stream=True)
        client.read_events(until=lambda c: c.streams[two].ended)

What the server sends is kept per stream (:attr:`H2Client.streams`: status,
headers, informational responses, body so far, trailers, ``ended``, and the
error code of a RST_STREAM) and per connection (:attr:`H2Client.goaway`,
:attr:`H2Client.closed`, :attr:`H2Client.server_settings`). Received DATA is
acknowledged at once (``auto_window=False`` leaves windows closed, to test
the server's backpressure). :meth:`H2Client.poll` processes what has arrived
without waiting. A send on a connection the server closed raises
``BrokenPipeError``/``ConnectionResetError`` (and sets ``write_failed``).

A GOAWAY frame is handled here, not by ``h2``: once ``h2`` has seen GOAWAY its
connection state machine is CLOSED and it raises ``ProtocolError`` on any
further frame, which makes a graceful shutdown (GOAWAY, then the last
streams' DATA) unreadable. The client reports it as an
``h2.events.ConnectionTerminated`` event and lets ``h2`` carry on.

Raw mode, for attacks and malformed input::

    client = H2Client.connect("127.0.0.1", port)
    client.flood(ping() for _ in range(20_000))
    goaway = client.read_until_goaway()
    assert goaway.error_code == ENHANCE_YOUR_CALM

The first :meth:`H2Client.send_raw` (or :meth:`H2Client.flood`) switches the
client to raw mode for good: from then on ``h2`` is no longer told anything
(the raw bytes may have changed the server's view of the connection: stream
ids, the HPACK dynamic table), frames are parsed here with ``hyperframe``, the
server's SETTINGS and PINGs are acknowledged, HEADERS are decoded with the
connection's HPACK decoder and the per-stream state above is kept up to date,
and :meth:`H2Client.read_frames` returns ``hyperframe`` frames. The frame
builders (:func:`ping`, :func:`settings`, :func:`priority`,
:func:`window_update`, :func:`rst_stream`, :func:`data`, :func:`headers`,
:func:`continuation`, :func:`goaway`, :func:`frame` for anything at all) and
the header-block builders (:func:`header_block`, :func:`request_block`,
:func:`hpack_bomb_block`) return bytes. :func:`header_block` writes literal
fields exactly as given (no lower-casing, no validation, no dynamic table), so
it can say what ``h2`` will not: upper-case names, ``connection: keep-alive``,
a missing ``:path``, duplicate or unknown pseudo-headers, ``:protocol``
without ``SETTINGS_ENABLE_CONNECT_PROTOCOL``. ``H2Client.connect(...,
handshake=False)`` sends nothing at all, for a bad preface.

:func:`h2c_upgrade` makes an HTTP/1.1 request with ``Upgrade: h2c`` and, on a
``101``, reads the answer to it as stream 1 of the HTTP/2 connection.

WebSockets over HTTP/2 (RFC 8441): :func:`websocket_over_h2` sends the
extended CONNECT and returns an :class:`H2WebSocket` framing messages into the
stream's DATA frames. The framing is ``wsproto``'s ``Connection``, not
``websockets.client.ClientProtocol``:

- wsproto's documentation ("Advanced usage") has ``wsproto.connection.Connection``
  for exactly this: the handshake done elsewhere (here, by HTTP/2), the
  connection starting OPEN, the negotiated extensions passed to its
  constructor, their parameters given to ``PerMessageDeflate.finalize`` (the
  public method wsproto's own handshake calls). ``ClientProtocol(state=OPEN)``
  works too, but the negotiated extensions must then be assigned to its
  ``extensions`` attribute, which only its own HTTP/1.1 handshake code sets;
- bivio's server side is ``websockets``' ``ServerProtocol``: a client from
  the other library does not share its bugs or its reading of RFC 6455/7692.
"""

from __future__ import annotations

import base64
import json
import select
import socket
import ssl
import struct
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.extensions import PerMessageDeflate

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
TIMEOUT = 10.0  # the default bound for anything the server should do "now"

# Error codes (RFC 9113 §7), as plain ints for assertions.
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB

# Setting codes (RFC 9113 §6.5.2, RFC 8441 §3).
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6
ENABLE_CONNECT_PROTOCOL = 0x8

_GOAWAY_TYPE = 0x7
_HeaderList = list[tuple[bytes, bytes]]


def error_name(code: int | None) -> str:
    """``ENHANCE_YOUR_CALM (0xb)`` for 11; for messages."""
    if code is None:
        return "none"
    try:
        return f"{ErrorCodes(code).name} ({code:#x})"
    except ValueError:
        return f"unknown ({code:#x})"


def _b(value: bytes | str | int) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("latin-1")


def _header_list(headers: Iterable[tuple[Any, Any]]) -> _HeaderList:
    return [(_b(name), _b(value)) for name, value in headers]


# -- what the server sent ---------------------------------------------------------------------


@dataclass
class Stream:
    """Everything the server sent on one stream so far."""

    stream_id: int
    status: int | None = None
    headers: _HeaderList = field(default_factory=list)  # without pseudo-headers
    informational: list[tuple[int, _HeaderList]] = field(default_factory=list)  # 1xx
    body: bytearray = field(default_factory=bytearray)
    trailers: _HeaderList = field(default_factory=list)
    ended: bool = False  # END_STREAM received
    reset: int | None = None  # error code of the server's RST_STREAM

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None


@dataclass
class Response:
    """A finished (or reset) stream, or an HTTP/1.1 answer to :func:`h2c_upgrade`."""

    status: int | None
    headers: _HeaderList
    body: bytes
    trailers: _HeaderList
    stream_id: int
    informational: list[tuple[int, _HeaderList]] = field(default_factory=list)
    reset: int | None = None
    http_version: str = "2"

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lower case), decoded, or None."""
        wanted = name.lower().encode("latin-1")
        for key, value in self.headers:
            if key == wanted:
                return value.decode("latin-1")
        return None

    def header_dict(self) -> dict[str, str]:
        return {k.decode("latin-1"): v.decode("latin-1") for k, v in self.headers}

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)

    @classmethod
    def of(cls, stream: Stream) -> Response:
        return cls(stream.status, list(stream.headers), bytes(stream.body),
                   list(stream.trailers), stream.stream_id, list(stream.informational),
                   stream.reset)


@dataclass
class GoAway:
    """How the server ended the connection: its GOAWAY, and whether the socket closed.

    ``error_code`` is None when the connection closed without a GOAWAY;
    ``reset``: the close was a TCP RST (which can destroy a GOAWAY still in
    flight: a server that closes with unread input sends RST, and the kernel
    drops what it had not sent yet).
    """

    error_code: int | None
    last_stream_id: int | None = None
    additional_data: bytes = b""
    closed: bool = False
    reset: bool = False

    def __repr__(self) -> str:
        return (f"GoAway(error={error_name(self.error_code)}, last_stream_id="
                f"{self.last_stream_id}, data={self.additional_data[:80]!r}, "
                f"closed={self.closed}, reset={self.reset})")


@dataclass
class SocketClosed:
    """An event of ours: the server closed the connection (``reset``: with a TCP RST)."""

    reset: bool = False


class StreamIncomplete(ConnectionError):
    """The connection ended (or the wait timed out) before the stream finished."""


# -- the client ----------------------------------------------------------------------------------


class H2Client:
    """One HTTP/2 connection; see the module docstring."""

    def __init__(self, sock: socket.socket, *, authority: str, scheme: str,
                 auto_window: bool = True) -> None:
        self.sock = sock
        self.authority = authority
        self.scheme = scheme
        self.auto_window = auto_window
        self.conn = h2.connection.H2Connection(config=h2.config.H2Configuration(
            client_side=True, header_encoding=None))
        self.raw = False
        self.streams: dict[int, Stream] = {}
        self.events: list[Any] = []  # every h2 event, ours included (h2 mode)
        # What arrived, by name: h2 events (h2 mode), hyperframe frames (raw mode).
        self.received: Counter[str] = Counter()
        self.server_settings: dict[int, int] = {}  # the server's first SETTINGS frame
        self.settings_received = False
        self.goaway: GoAway | None = None
        self.closed = False  # the server closed the socket
        self.reset_by_peer = False
        self.write_failed = False  # a send found the socket closed
        self.ping_acks: list[bytes] = []
        self.bytes_sent = 0
        self._inbuf = bytearray()
        self._header_frames: list[Frame] = []  # raw mode: a header block in progress
        self._next_raw_stream_id = 1
        self._flooding = False
        self._replies: list[bytes] = []  # raw mode: ACKs held back during a flood

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def connect(cls, host: str, port: int, *, tls_context: ssl.SSLContext | None = None,
                settings: dict[int, int] | None = None, server_hostname: str | None = None,
                timeout: float = TIMEOUT, handshake: bool = True,
                auto_window: bool = True) -> H2Client:
        """Connect; send the preface and our SETTINGS; read the server's SETTINGS.

        ``tls_context``: TLS, offering ALPN ``h2`` only (this sets the context's
        ALPN protocols); ``ConnectionError`` if the server selects anything else.
        ``settings``: our SETTINGS (h2's defaults otherwise), e.g.
        ``{INITIAL_WINDOW_SIZE: 1 << 20}``. ``handshake=False``: send nothing,
        in raw mode (for a bad preface).
        """
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        scheme = "http"
        if tls_context is not None:
            tls_context.set_alpn_protocols(["h2"])
            sock = tls_context.wrap_socket(sock, server_hostname=server_hostname or host)
            if sock.selected_alpn_protocol() != "h2":
                sock.close()
                raise ConnectionError(f"ALPN: the server chose {sock.selected_alpn_protocol()!r}")
            scheme = "https"
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        client = cls(sock, authority=authority, scheme=scheme, auto_window=auto_window)
        if not handshake:
            client.raw = True
            return client
        try:
            client.start(settings, timeout=timeout)
        except BaseException:
            sock.close()
            raise
        return client

    def start(self, settings: dict[int, int] | None = None, timeout: float = TIMEOUT) -> None:
        """Send the preface and SETTINGS, then wait for the server's SETTINGS."""
        if settings:
            self.conn.local_settings = h2.settings.Settings(client=True,
                                                            initial_values=settings)
        self.conn.initiate_connection()
        self.flush()
        self.read_events(until=lambda c: c.settings_received, timeout=timeout)

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Send GOAWAY (h2 mode, if the connection is still up) and close the socket."""
        if not self.raw and not self.closed and not self.write_failed:
            try:
                self.conn.close_connection()
                self.flush()
            except (h2.exceptions.ProtocolError, OSError):
                pass
        try:
            self.sock.close()
        except OSError:
            pass

    # -- sending, h2 mode ----------------------------------------------------------------

    def _check_h2(self) -> None:
        if self.raw:
            raise RuntimeError("this client is in raw mode: h2 no longer knows the connection")

    def _write(self, data: bytes) -> None:
        try:
            self.sock.settimeout(TIMEOUT)
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            self.write_failed = True
            raise
        self.bytes_sent += len(data)

    def flush(self) -> None:
        """Send what h2 has queued (frames, ACKs, WINDOW_UPDATEs)."""
        data = self.conn.data_to_send()
        if data:
            self._write(data)

    def request_headers(self, method: str, path: str, headers: Iterable[tuple[Any, Any]] = (),
                        *, authority: str | None = None, scheme: str | None = None
                        ) -> _HeaderList:
        """The pseudo-headers of a request, then ``headers``."""
        return [(b":method", _b(method)), (b":scheme", _b(scheme or self.scheme)),
                (b":authority", _b(authority if authority is not None else self.authority)),
                (b":path", _b(path)), *_header_list(headers)]

    def send_headers(self, headers: Iterable[tuple[Any, Any]], *, end_stream: bool = False,
                     stream_id: int | None = None) -> int:
        """Open a stream with these headers (pseudo-headers included); its id."""
        self._check_h2()
        if stream_id is None:
            stream_id = self.conn.get_next_available_stream_id()
        self.streams.setdefault(stream_id, Stream(stream_id))
        self.conn.send_headers(stream_id, _header_list(headers), end_stream=end_stream)
        self.flush()
        return stream_id

    def send_trailers(self, stream_id: int, trailers: Iterable[tuple[Any, Any]]) -> None:
        self._check_h2()
        self.conn.send_headers(stream_id, _header_list(trailers), end_stream=True)
        self.flush()

    def send_data(self, stream_id: int, data: bytes, *, end_stream: bool = False,
                  timeout: float = TIMEOUT) -> None:
        """Send ``data`` as the windows allow, reading (and waiting) for WINDOW_UPDATEs.

        Stops early, without error, if the server resets the stream.
        """
        self._check_h2()
        view = memoryview(data)
        offset = 0
        deadline = time.monotonic() + timeout
        stream = self.streams.setdefault(stream_id, Stream(stream_id))
        while offset < len(view):
            if stream.reset is not None:
                return
            window = self.conn.local_flow_control_window(stream_id)
            if window <= 0:
                self.read_events(until=lambda c: (
                    stream.reset is not None or c.conn.local_flow_control_window(stream_id) > 0),
                    timeout=deadline - time.monotonic())
                continue
            size = self.conn.max_outbound_frame_size
            end = min(len(view), offset + window)
            while offset < end:
                piece = view[offset:min(end, offset + size)]
                offset += len(piece)
                self.conn.send_data(stream_id, bytes(piece),
                                    end_stream=end_stream and offset == len(view))
            self.flush()
            self.poll()  # take the server's WINDOW_UPDATEs and any answer so far
        if end_stream and not data:
            self.conn.end_stream(stream_id)
            self.flush()

    def end_stream(self, stream_id: int) -> None:
        self._check_h2()
        self.conn.end_stream(stream_id)
        self.flush()

    def reset_stream(self, stream_id: int, error_code: int = CANCEL) -> None:
        self._check_h2()
        self.conn.reset_stream(stream_id, error_code)
        self.flush()

    def ping(self, payload: bytes = b"h2client", timeout: float = TIMEOUT) -> float:
        """PING and wait for the ACK; the round trip in seconds."""
        self._check_h2()
        start = time.monotonic()
        self.conn.ping(payload)
        self.flush()
        self.read_events(until=lambda c: payload in c.ping_acks, timeout=timeout)
        self.ping_acks.remove(payload)
        return time.monotonic() - start

    # -- requests ------------------------------------------------------------------------

    def request(self, method: str, path: str, headers: Iterable[tuple[Any, Any]] = (),
                body: bytes = b"", *, authority: str | None = None,
                trailers: Iterable[tuple[Any, Any]] | None = None,
                timeout: float = TIMEOUT) -> Response:
        """One request on a new stream, waiting for the whole response.

        A ``content-length`` is added for a body unless ``headers`` has one.
        """
        headers = _header_list(headers)
        if body and not any(name == b"content-length" for name, _ in headers):
            headers.append((b"content-length", b"%d" % len(body)))
        stream_id = self.send_headers(
            self.request_headers(method, path, headers, authority=authority),
            end_stream=not body and trailers is None)
        if body:
            self.send_data(stream_id, body, end_stream=trailers is None, timeout=timeout)
        if trailers is not None:
            self.send_trailers(stream_id, trailers)
        return self.response(stream_id, timeout=timeout)

    def response(self, stream_id: int, timeout: float = TIMEOUT) -> Response:
        """Wait until the stream ends or is reset; its :class:`Response`.

        ``StreamIncomplete`` if the connection ends (or ``timeout`` passes) first.
        """
        stream = self.streams.setdefault(stream_id, Stream(stream_id))
        try:
            self.read_events(until=lambda c: stream.done, timeout=timeout)
        except (ConnectionError, TimeoutError) as exc:
            raise StreamIncomplete(
                f"stream {stream_id} unfinished ({exc}); status={stream.status}, "
                f"{len(stream.body)} body bytes so far, goaway={self.goaway}") from exc
        return Response.of(stream)

    # -- receiving -----------------------------------------------------------------------

    def read_events(self, until: Callable[[H2Client], bool] | None = None,
                    timeout: float = TIMEOUT) -> list[Any]:
        """Read and process what the server sends; the events (h2 mode) or frames (raw mode).

        With ``until``: read until ``until(self)`` is true (it is checked first);
        ``TimeoutError`` after ``timeout``, ``ConnectionError`` if the server
        closes first. Without: return once something arrived (the first batch),
        or ``[]`` if nothing did within ``timeout`` or the connection is closed.
        A :class:`SocketClosed` event marks the end of the connection.
        """
        collected: list[Any] = []
        deadline = time.monotonic() + timeout
        while True:
            if until is not None and until(self):
                return collected
            if until is None and collected:
                return collected
            if self.closed:
                if until is None:
                    return collected
                raise ConnectionError(f"the server closed the connection; goaway={self.goaway}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if until is None:
                    return collected
                raise TimeoutError(f"nothing satisfied the wait within {timeout}s; "
                                   f"goaway={self.goaway}, frames={dict(self.received)}")
            collected += self._receive(remaining) or []

    def read_frames(self, until: Callable[[H2Client], bool] | None = None,
                    timeout: float = TIMEOUT) -> list[Any]:
        """:meth:`read_events` by its raw-mode name: the frames received."""
        return self.read_events(until=until, timeout=timeout)

    def read_until_goaway(self, timeout: float = TIMEOUT) -> GoAway:
        """Read until a GOAWAY arrives or the connection closes; how it ended.

        ``error_code`` is None if the server closed without a GOAWAY;
        ``TimeoutError`` if neither happened within ``timeout``.
        """
        try:
            self.read_events(until=lambda c: c.goaway is not None or c.closed, timeout=timeout)
        except ConnectionError:
            pass
        if self.goaway is not None:
            self.goaway.closed, self.goaway.reset = self.closed, self.reset_by_peer
            return self.goaway
        return GoAway(None, closed=True, reset=self.reset_by_peer)

    def wait_closed(self, timeout: float = TIMEOUT) -> bool:
        """Read (and process) until the server closes the socket; whether it did."""
        try:
            self.read_events(until=lambda c: c.closed, timeout=timeout)
        except (TimeoutError, ConnectionError):
            pass
        if self.goaway is not None:
            self.goaway.closed, self.goaway.reset = self.closed, self.reset_by_peer
        return self.closed

    def _recv(self, timeout: float) -> bytes | None:
        """Bytes from the socket; b"" when it closed, None if nothing came in ``timeout``."""
        try:
            if not (isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()):
                readable, _, _ = select.select([self.sock], [], [], max(timeout, 0))
                if not readable:
                    return None
            self.sock.settimeout(max(timeout, 0.001))
            return self.sock.recv(1 << 18)
        except (TimeoutError, ssl.SSLWantReadError, BlockingIOError):
            return None
        except (ConnectionResetError, ConnectionAbortedError):
            self.reset_by_peer = True
            return b""
        except ssl.SSLError:
            return b""

    def _receive(self, timeout: float) -> list[Any] | None:
        """One read, processed; None if nothing came within ``timeout``."""
        data = self._recv(timeout)
        if data is None:
            return None
        if not data:
            self.closed = True
            event = SocketClosed(self.reset_by_peer)
            self.events.append(event)
            return [event]
        return self._feed(data)

    def poll(self) -> list[Any]:
        """Process whatever the server has sent by now, without waiting."""
        collected: list[Any] = []
        while not self.closed:
            got = self._receive(0)
            if got is None:
                break
            collected += got
        return collected

    def _feed(self, data: bytes) -> list[Any]:
        """Cut complete frames off the input; hand them to h2, or parse them (raw mode)."""
        self._inbuf += data
        collected: list[Any] = []
        start = offset = 0
        buf = self._inbuf
        while len(buf) - offset >= 9:
            length = int.from_bytes(buf[offset:offset + 3], "big")
            end = offset + 9 + length
            if len(buf) < end:
                break
            kind = buf[offset + 3]
            if self.raw:
                collected += self._raw_frame(bytes(buf[offset:end]))
                start = end
            elif kind == _GOAWAY_TYPE:
                collected += self._to_h2(bytes(buf[start:offset]))
                collected += self._goaway_event(bytes(buf[offset:end]))
                start = end
            offset = end
        if not self.raw:
            collected += self._to_h2(bytes(buf[start:offset]))
            start = offset
        del self._inbuf[:start]
        return collected

    def _to_h2(self, data: bytes) -> list[Any]:
        if not data:
            return []
        events = self.conn.receive_data(data)
        for event in events:
            self._on_event(event)
        self.events += events
        try:
            self.flush()
        except OSError:
            pass
        return events

    def _goaway_event(self, data: bytes) -> list[Any]:
        frame = _parse_frame(data)
        assert isinstance(frame, GoAwayFrame)
        self.received["GoAwayFrame"] += 1
        self.goaway = GoAway(frame.error_code, frame.last_stream_id, frame.additional_data,
                             self.closed)
        event = h2.events.ConnectionTerminated()
        event.error_code = _error_code(frame.error_code)
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data
        self.events.append(event)
        return [event]

    def stream(self, stream_id: int) -> Stream:
        """The state of stream ``stream_id`` (created empty if nothing came yet)."""
        return self.streams.setdefault(stream_id, Stream(stream_id))

    def _on_event(self, event: Any) -> None:
        self.received[type(event).__name__] += 1
        if isinstance(event, (h2.events.ResponseReceived,
                              h2.events.InformationalResponseReceived)):
            self._set_headers(self.stream(event.stream_id), event.headers)
        elif isinstance(event, h2.events.TrailersReceived):
            self.stream(event.stream_id).trailers += list(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            self.stream(event.stream_id).body += event.data
            if self.auto_window and event.flow_controlled_length:
                self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                    event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.stream(event.stream_id).ended = True
        elif isinstance(event, h2.events.StreamReset):
            if event.remote_reset:
                self.stream(event.stream_id).reset = int(event.error_code)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            if not self.settings_received:
                self.server_settings = {int(k): v.new_value
                                        for k, v in event.changed_settings.items()}
            self.settings_received = True
        elif isinstance(event, h2.events.PingAckReceived):
            self.ping_acks.append(event.ping_data)

    @staticmethod
    def _set_headers(stream: Stream, headers: Iterable[tuple[bytes, bytes]]) -> None:
        regular: _HeaderList = []
        status = None
        for name, value in headers:
            if name == b":status":
                status = int(value)
            elif not name.startswith(b":"):
                regular.append((name, value))
        if status is None:  # trailers (raw mode cannot tell otherwise)
            stream.trailers += regular
        elif 100 <= status < 200:
            stream.informational.append((status, regular))
        else:
            stream.status = status
            stream.headers = regular

    # -- raw mode ------------------------------------------------------------------------

    def new_stream_id(self) -> int:
        """A client stream id above any used so far (for raw HEADERS)."""
        highest = max(self.conn.highest_outbound_stream_id,
                      max((s for s in self.streams if s % 2), default=0))
        stream_id = max(self._next_raw_stream_id, highest + 2 if highest else 1)
        self._next_raw_stream_id = stream_id + 2
        return stream_id

    def send_raw(self, data: bytes) -> bool:
        """Send bytes as they are (raw mode from now on); False if the socket is closed."""
        self.raw = True
        try:
            self._write(data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def flood(self, frames: bytes | Iterable[bytes], *, stop_on_goaway: bool = True,
              timeout: float = 30.0, chunk: int = 64 * 1024) -> int:
        """Send ``frames`` as fast as the server takes them, reading all the while.

        Stops at a GOAWAY (``stop_on_goaway``), when the connection closes,
        when the server stops reading for ``timeout`` seconds in all, or when
        ``frames`` (bytes, or any iterable of bytes: a generator may be
        endless) is exhausted. Raw mode from now on. Returns the bytes sent.
        """
        self.raw = True
        deadline = time.monotonic() + timeout
        self._flooding = True  # our ACKs wait for a frame boundary (see _raw_reply)
        try:
            sent, whole = self._flood(frames, deadline, stop_on_goaway, chunk)
        finally:
            self._flooding = False
        if self._replies and whole:  # (after a piece cut short, no frame boundary is known)
            self._raw_reply(b"".join(self._replies))
        self._replies.clear()
        return sent

    def _flood(self, frames: bytes | Iterable[bytes], deadline: float, stop_on_goaway: bool,
               chunk: int) -> tuple[int, bool]:
        """The bytes sent, and whether every piece went out whole."""
        sent = 0
        for piece in _chunks(frames, chunk):
            if self._replies:
                piece = b"".join(self._replies) + piece
                self._replies.clear()
            view = memoryview(piece)
            offset = 0
            while offset < len(view):
                self.poll()
                if self.closed or self.write_failed or (stop_on_goaway and self.goaway):
                    return sent, offset == 0
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return sent, offset == 0
                _, writable, _ = select.select([], [self.sock], [], min(remaining, 0.05))
                if not writable:
                    continue
                try:
                    self.sock.settimeout(1.0)
                    n = self.sock.send(view[offset:])
                except (BlockingIOError, ssl.SSLWantWriteError, TimeoutError):
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    self.write_failed = True
                    return sent, False
                offset += n
                sent += n
                self.bytes_sent += n
        self.poll()
        return sent, True

    def _raw_frame(self, data: bytes) -> list[Any]:
        try:
            frame = _parse_frame(data)
        except Exception as exc:  # a frame hyperframe cannot parse: report it as such
            self.received["unparsable"] += 1
            return [exc]
        self.received[type(frame).__name__] += 1
        if isinstance(frame, SettingsFrame):
            if "ACK" not in frame.flags:
                if not self.settings_received:
                    self.server_settings = dict(frame.settings)
                self.settings_received = True
                self._raw_reply(SettingsFrame(0, flags=["ACK"]).serialize())
        elif isinstance(frame, PingFrame):
            if "ACK" in frame.flags:
                self.ping_acks.append(frame.opaque_data)
            else:
                self._raw_reply(PingFrame(0, opaque_data=frame.opaque_data,
                                          flags=["ACK"]).serialize())
        elif isinstance(frame, GoAwayFrame):
            self.goaway = GoAway(frame.error_code, frame.last_stream_id,
                                 frame.additional_data, self.closed)
        elif isinstance(frame, RstStreamFrame):
            self.stream(frame.stream_id).reset = frame.error_code
        elif isinstance(frame, (HeadersFrame, ContinuationFrame)):
            self._header_frames.append(frame)
            if "END_HEADERS" in frame.flags:
                first = self._header_frames[0]
                block = b"".join(f.data for f in self._header_frames)
                self._header_frames = []
                stream = self.stream(first.stream_id)
                try:
                    self._set_headers(stream, self.conn.decoder.decode(block, raw=True))
                except Exception as exc:
                    return [frame, exc]
                if "END_STREAM" in first.flags:
                    stream.ended = True
        elif isinstance(frame, DataFrame):
            stream = self.stream(frame.stream_id)
            stream.body += frame.data
            if "END_STREAM" in frame.flags:
                stream.ended = True
        return [frame]

    def _raw_reply(self, data: bytes) -> None:
        """Send an ACK now, or, in a flood, before its next piece (whole frames)."""
        if self.closed or self.write_failed:
            return
        if self._flooding:
            self._replies.append(data)
            return
        try:
            self._write(data)
        except OSError:
            pass


def _error_code(code: int) -> ErrorCodes | int:
    try:
        return ErrorCodes(code)
    except ValueError:
        return code


def _parse_frame(data: bytes) -> Frame:
    frame, length = Frame.parse_frame_header(memoryview(data[:9]))
    frame.parse_body(memoryview(data[9:9 + length]))
    return frame


def _chunks(frames: bytes | Iterable[bytes], size: int) -> Iterator[bytes]:
    """Pieces of about ``size`` bytes, each made of whole frames (bytes are cut at frame
    boundaries, read from the frame headers; an iterable is taken one item a frame)."""
    if isinstance(frames, (bytes, bytearray, memoryview)):
        data = bytes(frames)
        start = offset = 0
        while offset + 9 <= len(data):
            offset += 9 + int.from_bytes(data[offset:offset + 3], "big")
            if offset - start >= size:
                yield data[start:offset]
                start = offset
        if start < len(data):
            yield data[start:]
        return
    pending: list[bytes] = []
    length = 0
    for piece in frames:
        pending.append(piece)
        length += len(piece)
        if length >= size:
            yield b"".join(pending)
            pending, length = [], 0
    if pending:
        yield b"".join(pending)


# -- frame builders (bytes on the wire) -------------------------------------------------------


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """Any frame at all, unchecked: type, flag byte, stream id, payload."""
    return (len(payload).to_bytes(3, "big") + bytes([kind, flags])
            + struct.pack("!L", stream_id & 0x7FFFFFFF) + payload)


def ping(payload: bytes = b"\0" * 8, ack: bool = False) -> bytes:
    return PingFrame(0, opaque_data=payload, flags=["ACK"] if ack else []).serialize()


def settings(values: dict[int, int] | None = None, ack: bool = False) -> bytes:
    if ack:
        return SettingsFrame(0, flags=["ACK"]).serialize()
    return SettingsFrame(0, settings=dict(values or {})).serialize()


def priority(stream_id: int, depends_on: int = 0, weight: int = 15,
             exclusive: bool = False) -> bytes:
    """A PRIORITY frame (``weight`` is the wire value, 0-255)."""
    return PriorityFrame(stream_id, depends_on=depends_on, stream_weight=weight,
                         exclusive=exclusive).serialize()


def window_update(stream_id: int = 0, increment: int = 1) -> bytes:
    """A WINDOW_UPDATE; any increment, 0 and over 2**31-1 included (unchecked)."""
    return frame(WindowUpdateFrame.type, 0, stream_id, struct.pack("!L", increment))


def rst_stream(stream_id: int, error_code: int = CANCEL) -> bytes:
    return RstStreamFrame(stream_id, error_code=error_code).serialize()


def data(stream_id: int, payload: bytes = b"", end_stream: bool = False) -> bytes:
    return DataFrame(stream_id, data=payload,
                     flags=["END_STREAM"] if end_stream else []).serialize()


def headers(stream_id: int, block: bytes, *, end_stream: bool = True,
            end_headers: bool = True) -> bytes:
    flags = (["END_STREAM"] if end_stream else []) + (["END_HEADERS"] if end_headers else [])
    return HeadersFrame(stream_id, data=block, flags=flags).serialize()


def continuation(stream_id: int, block: bytes, *, end_headers: bool = False) -> bytes:
    return ContinuationFrame(stream_id, data=block,
                             flags=["END_HEADERS"] if end_headers else []).serialize()


def goaway(last_stream_id: int = 0, error_code: int = NO_ERROR, additional: bytes = b"") -> bytes:
    return GoAwayFrame(0, last_stream_id=last_stream_id, error_code=error_code,
                       additional_data=additional).serialize()


# -- HPACK, by hand: literal fields exactly as given ------------------------------------------


def hpack_int(value: int, prefix_bits: int, flags: int = 0) -> bytes:
    """An HPACK integer (RFC 7541 §5.1) with ``flags`` in the first byte's high bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([flags | value])
    out = bytearray([flags | limit])
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_string(value: bytes) -> bytes:
    return hpack_int(len(value), 7) + value  # no Huffman


def literal(name: bytes | str, value: bytes | str, *, index: bool = False) -> bytes:
    """One literal field with a literal name: "without indexing", or "with incremental
    indexing" (``index``: the server adds it to its dynamic table)."""
    prefix = hpack_int(0, 6, 0x40) if index else hpack_int(0, 4, 0x00)
    return prefix + hpack_string(_b(name)) + hpack_string(_b(value))


def indexed(index: int) -> bytes:
    """An indexed field (RFC 7541 §6.1): static 1-61, dynamic from 62 (newest first)."""
    return hpack_int(index, 7, 0x80)


def header_block(fields: Iterable[tuple[Any, Any]], *, index: bool = False) -> bytes:
    """A header block of literal fields exactly as given, in order.

    Without ``index`` nothing enters the server's dynamic table, so the block
    does not disturb a connection whose other header blocks h2 encoded.
    """
    return b"".join(literal(name, value, index=index) for name, value in fields)


def request_block(method: str = "GET", path: str | None = "/", *, authority: str = "localhost",
                  scheme: str = "http", extra: Iterable[tuple[Any, Any]] = (),
                  pseudo: Iterable[tuple[Any, Any]] = ()) -> bytes:
    """A request's header block: ``:method :scheme :authority :path`` (``path=None``
    leaves ``:path`` out), then ``pseudo`` (more pseudo-headers), then ``extra``."""
    fields: list[tuple[Any, Any]] = [(":method", method), (":scheme", scheme),
                                     (":authority", authority)]
    if path is not None:
        fields.append((":path", path))
    return header_block([*fields, *pseudo, *extra])


def hpack_bomb_block(references: int = 12_000, value_size: int = 4000, *,
                     path: str = "/") -> bytes:
    """A small header block that decodes to a huge header list.

    One literal field of ``value_size`` bytes is inserted in the dynamic table,
    then referenced by index 62 ``references`` times (one byte each): about
    16 KiB on the wire, ``references * (value_size + 6)`` bytes decoded
    (48 MB with the defaults), within the default 4,096-byte table.
    """
    return (request_block("GET", path)
            + literal("x-bomb", b"a" * value_size, index=True)
            + indexed(62) * references)


def request_frames(stream_id: int, block: bytes, *, max_frame: int = 16384,
                   end_stream: bool = True) -> bytes:
    """HEADERS, plus CONTINUATION frames if ``block`` is larger than ``max_frame``."""
    pieces = [block[i:i + max_frame] for i in range(0, len(block), max_frame)] or [b""]
    out = [headers(stream_id, pieces[0], end_stream=end_stream,
                   end_headers=len(pieces) == 1)]
    for i, piece in enumerate(pieces[1:], start=2):
        out.append(continuation(stream_id, piece, end_headers=i == len(pieces)))
    return b"".join(out)


def rapid_reset(first_stream_id: int, count: int, *, path: str = "/",
                authority: str = "localhost", error_code: int = CANCEL) -> bytes:
    """``count`` streams, each a HEADERS (END_STREAM) at once followed by RST_STREAM
    (CVE-2023-44487)."""
    block = request_block("GET", path, authority=authority)
    return b"".join(headers(sid, block) + rst_stream(sid, error_code)
                    for sid in range(first_stream_id, first_stream_id + 2 * count, 2))


def continuation_flood(stream_id: int, *, frame_size: int = 16384,
                       frames: int | None = None) -> Iterator[bytes]:
    """A HEADERS without END_HEADERS, then CONTINUATION frames without end (or
    ``frames`` of them), each ``frame_size`` bytes of valid literal fields."""
    yield headers(stream_id, request_block("GET", "/"), end_stream=True, end_headers=False)
    field_bytes = literal("x-flood", "f" * 100)
    payload = (field_bytes * (frame_size // len(field_bytes) + 1))[:frame_size]
    one = continuation(stream_id, payload)
    sent = 0
    while frames is None or sent < frames:
        sent += 1
        yield one


# -- h2c upgrade -------------------------------------------------------------------------------


def h2c_upgrade(host: str, port: int, path: str = "/", *, method: str = "GET",
                headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
                timeout: float = TIMEOUT) -> tuple[Response, H2Client | None]:
    """An HTTP/1.1 request offering ``Upgrade: h2c``; the response and the client.

    On ``101 Switching Protocols`` the client sends the preface and its
    SETTINGS and reads the response to the request as stream 1 over HTTP/2:
    returns it with the (open) :class:`H2Client`. Otherwise returns the
    HTTP/1.1 response (``http_version`` "1.1", body read by Content-Length or
    until close) and None; a 101 that is not to h2c raises.
    """
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client = H2Client(sock, authority=f"{host}:{port}", scheme="http")
    settings_header = client.conn.initiate_upgrade_connection()
    assert settings_header is not None
    preamble = client.conn.data_to_send()  # the preface and SETTINGS, for after the 101
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}",
             "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c",
             f"HTTP2-Settings: {settings_header.decode('ascii').rstrip('=')}",
             *(f"{name}: {value}" for name, value in headers)]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    buffer = b""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in buffer:
        chunk = client._recv(deadline - time.monotonic())
        if not chunk:
            sock.close()
            raise ConnectionError(f"no HTTP/1.1 response head: {buffer!r}")
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split()[1])
    response_headers = []
    for line in header_lines:
        name, _, value = line.partition(":")
        response_headers.append((name.strip().lower().encode("latin-1"),
                                 value.strip().encode("latin-1")))
    if status != 101:
        fields = dict(response_headers)
        wanted = fields.get(b"content-length")
        chunked = fields.get(b"transfer-encoding", b"").lower() == b"chunked"

        def complete() -> bool:
            if method == "HEAD" or status in (204, 304):
                return True
            if chunked:
                return rest.endswith(b"0\r\n\r\n")  # the last chunk (no trailers)
            return wanted is not None and len(rest) >= int(wanted)

        while not complete():
            chunk = client._recv(deadline - time.monotonic())
            if not chunk:
                break  # closed (the body ends with the connection), or timed out
            rest += chunk
        sock.close()
        body = _dechunk(rest) if chunked else rest
        return Response(status, response_headers, body, [], 0, http_version="1.1"), None
    if dict(response_headers).get(b"upgrade", b"").lower() != b"h2c":
        sock.close()
        raise ConnectionError(f"101 to something else than h2c: {head!r}")
    client._write(preamble)
    client.streams[1] = Stream(1)
    if rest:
        client._feed(rest)
    response = client.response(1, timeout=timeout)
    return response, client


def _dechunk(data: bytes) -> bytes:
    """The body of an HTTP/1.1 chunked message (extensions and trailers dropped)."""
    body = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        body += data[:size]
        data = data[size + 2:]
    return bytes(body)


# -- WebSockets over HTTP/2 (RFC 8441) ---------------------------------------------------------


class WebSocketRejected(Exception):
    """The server answered the extended CONNECT with something other than 200."""

    def __init__(self, response: Response) -> None:
        super().__init__(f"extended CONNECT answered {response.status} "
                         f"(reset: {error_name(response.reset)}): {response.body[:200]!r}")
        self.response = response


class WebSocketClosed(Exception):
    """The WebSocket is closed; ``code`` and ``reason`` of the server's close frame
    (1006 if the stream ended without one)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"WebSocket closed: {code} {reason!r}")
        self.code = code
        self.reason = reason


class H2WebSocket:
    """A WebSocket on one HTTP/2 stream, its frames in the stream's DATA (wsproto framing).

    ``status``/``headers``: the server's answer to the extended CONNECT;
    ``subprotocol`` and ``extensions`` what it chose.
    """

    def __init__(self, client: H2Client, stream_id: int, response: Response,
                 deflate: PerMessageDeflate | None) -> None:
        self.client = client
        self.stream_id = stream_id
        self.status = response.status
        self.headers = response.headers
        self.subprotocol = response.header("sec-websocket-protocol")
        self.extensions: list[str] = []
        extensions: list[Any] = []
        offered = response.header("sec-websocket-extensions")
        if offered and deflate is not None:
            for accepted in offered.split(","):
                if accepted.split(";")[0].strip() == deflate.name:
                    deflate.finalize(accepted.strip())
                    extensions.append(deflate)
                    self.extensions.append(deflate.name)
        self.ws = WSConnection(ConnectionType.CLIENT, extensions=extensions)
        self._offset = len(response.body)  # DATA that came with the 200 is WebSocket data
        if response.body:
            self.ws.receive_data(response.body)
        self._messages: deque[str | bytes] = deque()
        self._partial: list[Any] = []
        self.pongs: list[bytes] = []
        self.close_code: int | None = None
        self.close_reason = ""

    @property
    def stream(self) -> Stream:
        return self.client.streams[self.stream_id]

    def _send(self, event: Any) -> None:
        self.client.send_data(self.stream_id, self.ws.send(event))

    def send_text(self, text: str) -> None:
        self._send(TextMessage(data=text))

    def send_bytes(self, payload: bytes) -> None:
        self._send(BytesMessage(data=payload))

    def _pump(self, timeout: float) -> None:
        """Read HTTP/2 events once; hand new DATA to wsproto and act on its events."""
        stream = self.stream
        if len(stream.body) == self._offset and not stream.done:
            self.client.read_events(timeout=timeout)
        if len(stream.body) > self._offset:
            new = bytes(stream.body[self._offset:])
            self._offset = len(stream.body)
            if self.ws.state is not ConnectionState.CLOSED:
                self.ws.receive_data(new)
        elif stream.done and self.close_code is None:
            if self.ws.state is not ConnectionState.CLOSED:
                self.ws.receive_data(None)  # the stream ended without a close frame: 1006
        elif self.client.closed and self.close_code is None:
            self.ws.receive_data(None)
        for event in self.ws.events():
            if isinstance(event, (TextMessage, BytesMessage)):
                self._partial.append(event.data)
                if event.message_finished:
                    joined = ("".join(self._partial) if isinstance(event, TextMessage)
                              else b"".join(self._partial))
                    self._messages.append(joined)
                    self._partial = []
            elif isinstance(event, Ping):
                self._send(event.response())
            elif isinstance(event, Pong):
                self.pongs.append(bytes(event.payload))
            elif isinstance(event, CloseConnection):
                self.close_code, self.close_reason = event.code, event.reason or ""
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    try:
                        self._send(event.response())  # answer the server's close
                    except (OSError, h2.exceptions.ProtocolError):
                        pass
                if not self.stream.done and not self.client.closed:
                    try:
                        self.client.end_stream(self.stream_id)
                    except (OSError, h2.exceptions.ProtocolError):
                        pass

    def recv(self, timeout: float = TIMEOUT) -> str | bytes:
        """The next message (str or bytes); :class:`WebSocketClosed` once closed."""
        deadline = time.monotonic() + timeout
        while not self._messages:
            if self.close_code is not None:
                raise WebSocketClosed(self.close_code, self.close_reason)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no WebSocket message within {timeout}s")
            self._pump(remaining)
        return self._messages.popleft()

    def ping(self, payload: bytes = b"ping", timeout: float = TIMEOUT) -> None:
        """Send a WebSocket ping and wait for its pong (messages meanwhile are kept)."""
        self._send(Ping(payload=payload))
        deadline = time.monotonic() + timeout
        while payload not in self.pongs:
            if self.close_code is not None:
                raise WebSocketClosed(self.close_code, self.close_reason)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no pong within {timeout}s")
            self._pump(remaining)
        self.pongs.remove(payload)

    def close(self, code: int = 1000, reason: str = "", timeout: float = TIMEOUT
              ) -> tuple[int, str]:
        """Close handshake: our close frame, the server's, then END_STREAM both ways.

        Returns the server's close code and reason.
        """
        if self.ws.state is ConnectionState.OPEN:
            self._send(CloseConnection(code=code, reason=reason))
        deadline = time.monotonic() + timeout
        while self.close_code is None or not self.stream.done:
            if self.client.closed:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"close handshake unfinished after {timeout}s "
                                   f"(close code {self.close_code}, stream done "
                                   f"{self.stream.done})")
            self._pump(remaining)
        return self.close_code or 1006, self.close_reason


def websocket_over_h2(client: H2Client, path: str, *, subprotocols: Iterable[str] = (),
                      deflate: bool = False, headers: Iterable[tuple[str, str]] = (),
                      timeout: float = TIMEOUT) -> H2WebSocket:
    """Open a WebSocket with an RFC 8441 extended CONNECT on a new stream.

    ``deflate``: offer permessage-deflate. :class:`WebSocketRejected` (with the
    response) if the server does not answer 200.
    """
    fields: list[tuple[Any, Any]] = [
        (":method", "CONNECT"), (":protocol", "websocket"), (":scheme", client.scheme),
        (":path", path), (":authority", client.authority), ("sec-websocket-version", "13")]
    protocols = list(subprotocols)
    if protocols:
        fields.append(("sec-websocket-protocol", ", ".join(protocols)))
    extension = PerMessageDeflate() if deflate else None
    if extension is not None:
        fields.append(("sec-websocket-extensions", f"{extension.name}; {extension.offer()}"))
    fields += list(headers)
    stream_id = client.send_headers(fields)
    stream = client.streams[stream_id]
    client.read_events(until=lambda c: stream.status is not None or stream.done,
                       timeout=timeout)
    if stream.status != 200:
        if not stream.done:
            client.response(stream_id, timeout=timeout)
        raise WebSocketRejected(Response.of(stream))
    return H2WebSocket(client, stream_id, Response.of(stream), extension)


def h2_settings_header(values: dict[int, int]) -> str:
    """An ``HTTP2-Settings`` value (base64url SETTINGS payload, no padding)."""
    body = SettingsFrame(0, settings=dict(values)).serialize_body()
    return base64.urlsafe_b64encode(body).decode("ascii").rstrip("=")
