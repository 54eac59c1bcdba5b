"""The stream contract: the seam between connection protocols and app adapters.

A *stream* is one request and its response. A connection protocol (HTTP/1.1
today, HTTP/2 next) creates one per request, fills in the request head and
hands it to the worker's handler (:mod:`bivio.adapters`: ASGI, WSGI, static
files, the hybrid dispatcher); the handler reads the body and writes the
response only through the attributes and methods below. The protocol owns
framing (Content-Length, chunked, 100-continue, keep-alive, HTTP/2 frames and
windows); the adapter owns the application interface. Neither imports the
other: both import this module.

The contract is plain attributes and methods on an object the connection
already holds: no task, queue or copy is added per request. Every stream
derives from :class:`bivio.core.streambase.StreamBase`, which holds the
attributes below (compiled, as C struct members the adapters read directly).

Request head (read-only for handlers)
    ``method`` (str, upper-case), ``http_version`` ("1.0", "1.1", "2"),
    ``scheme`` ("http"/"https", after trusted proxy headers), ``raw_path``
    (bytes, no query), ``query_string`` (bytes), ``headers`` (list of
    (lower-case name, value) byte pairs, in order), ``client`` / ``server``
    ((host, port) or None).

    ``tls``: a :class:`TLSInfo` when the connection is TLS, else ``None``
    (one object per connection, shared by its streams).

    ``body_length``: what the protocol knows of the request body before it is
    read. ``0``: there is none; ``N``: exactly N bytes follow (Content-Length);
    ``None``: a body of unknown length, known only once it ends (HTTP/1.1
    chunked; HTTP/2 DATA frames without content-length). Adapters never guess
    framing from headers or the HTTP version.

Body
    ``await receive_body()`` returns ``(chunk, more)``; it waits while nothing
    is buffered, and returns ``(b"", False)`` once the body is complete. It
    raises :class:`ClientDisconnected` if the client went away (or reset the
    stream) before the body ended. Reading is what grants ``100 Continue``
    (HTTP/1.1) or reopens the flow-control window (HTTP/2): a handler that
    does not read holds the client back; nothing is buffered without bound.

    ``await wait_closed()`` returns once the client disconnected or the
    response is complete, whichever comes first (ASGI's ``http.disconnect``).

Response
    ``await send_informational(status, headers)`` (1xx, e.g. 103 Early Hints),
    ``await start_response(status, headers, trailers=False)``,
    ``await send_body(data, more)``, ``await send_file(fd, offset, count)``,
    ``await send_trailers(headers)``. Header names and values are checked by
    the one validator (:mod:`bivio.core.headers`); a bad one raises
    :class:`ValueError` before anything is written.

    Flow control is per stream: a send returns once *this stream* can take
    more. On HTTP/1.1 that is the connection's write buffer (below its
    high-water mark); on HTTP/2 it is the stream's window and the
    connection's. A client that does not read holds its own app back and no
    other. Sends raise :class:`ClientDisconnected` once the client is gone.

    ``sends_nowait``: the stream also offers ``start_response_nowait(status,
    headers, trailers=False)`` and ``send_body_nowait(data, more)``, the same
    sends without a coroutine (HTTP/1.1's, when nothing has to wait): the
    second returns None when done, else an awaitable the caller must await
    (the write flow's drain, or the rest of a large body). An adapter takes
    this fast path only where the flag says so.

    ``close_after_response()``: the connection carrying this stream is not to
    be reused once this response is complete (a WSGI app's ``Connection:
    close``, an error answer). On HTTP/1.1 the response says ``connection:
    close`` and the connection closes after it; on HTTP/2 the connection
    stops taking new streams (GOAWAY) and the others finish. Adapters never
    write a ``connection`` header themselves: HTTP/2 forbids it.

    ``abort()``: the response cannot be finished; reset *this stream*. On
    HTTP/1.1 the only way to tell the client is to drop the connection; on
    HTTP/2 it is RST_STREAM and the connection's other streams carry on.

Every method runs on the event loop; only ``disconnected`` may be read from
another thread (the WSGI adapter checks it from app threads before posting).

``interface`` is set by the handler that answers ("asgi", "wsgi", "static";
"-" when the server answers itself) for the per-response hook
(:meth:`bivio.core.context.ServerContext.record`).

Upgrade to WebSocket
    ``upgrade`` is ``"websocket"`` when the client asks for a WebSocket and
    the protocol can carry one (an HTTP/1.1 Upgrade; an HTTP/2 extended
    CONNECT, RFC 8441), else ``None``. The *handler* decides:
    ``open_websocket()`` returns a :class:`WebSocketSession` whose
    ``accept()`` answers the handshake and switches the stream's bytes over
    to WebSocket frames; until then the stream's response methods answer over
    HTTP (a denial: 403, or the app's own ``websocket.http.response``). A
    handler that ignores ``upgrade`` (WSGI) answers plain HTTP.

    A session runs over a :class:`ByteChannel`: on HTTP/1.1 the connection's
    transport (handed over on accept), on HTTP/2 one stream's DATA frames. The
    session never writes HTTP itself: the handshake answer (101, or HTTP/2's
    200) is written by the protocol that owns the stream.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

from .headers import Headers

__all__ = ["ByteChannel", "ClientDisconnected", "Headers", "Stream", "TLSInfo",
           "WebSocketClosed", "WebSocketSession", "plain_response", "send_plain"]


@dataclass(frozen=True, slots=True)
class TLSInfo:
    """What a TLS connection negotiated, as the ASGI ``tls`` extension reports it.

    Built once per connection by :func:`bivio.protocols.tls.connection_tls`.
    """

    version: int  # 0x0303 for TLS 1.2, 0x0304 for TLS 1.3
    cipher_suite: int | None  # the IANA cipher suite number
    client_cert_chain: tuple[str, ...]  # PEM, the client's own certificate first; () if none
    server_cert: str | None  # PEM of the certificate bivio sent
    alpn: str | None  # "h2", "http/1.1" or None
    client_cert_name: str | None = None  # the client certificate's subject (RFC 4514)


class ClientDisconnected(OSError):
    """The client went away; raised by sends (ASGI spec 2.4: an OSError subclass)."""


class WebSocketClosed(Exception):
    """The WebSocket is closed: no message will follow. ``code`` is what the app sees."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class ByteChannel(Protocol):
    """The bytes a WebSocket session runs over (the subset of asyncio.Transport it uses).

    The channel's owner calls the session back as an :class:`asyncio.Protocol`
    (``data_received``, ``eof_received``, ``connection_lost``,
    ``pause_writing``, ``resume_writing``).
    """

    def write(self, data: bytes) -> None: ...

    def can_write_eof(self) -> bool: ...

    def write_eof(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class WebSocketSession(Protocol):
    """One WebSocket, from the handshake request to the close.

    Implemented by :class:`bivio.protocols.websocket.WebSocket`.
    """

    subprotocols: list[str]
    handshake_error: tuple[int, str] | None
    accepted: bool

    async def accept(self, subprotocol: str | None, headers: Headers) -> None: ...

    async def receive(self) -> str | bytes: ...

    async def send(self, data: str | bytes) -> None: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...

    def abort(self) -> None: ...


class Stream(Protocol):
    """One request and its response, as every connection protocol offers it."""

    method: str
    http_version: str
    scheme: str
    raw_path: bytes
    query_string: bytes
    headers: Headers
    client: tuple[str, int] | None
    server: tuple[str, int] | None
    tls: TLSInfo | None
    body_length: int | None
    upgrade: str | None
    interface: str
    response_started: bool
    response_complete: bool
    disconnected: bool
    sends_nowait: bool

    async def receive_body(self) -> tuple[bytes, bool]: ...

    async def wait_closed(self) -> None: ...

    async def send_informational(self, status: int, headers: Headers) -> None: ...

    async def start_response(self, status: int, headers: Headers, trailers: bool = False) -> None:
        ...

    async def send_body(self, data: bytes, more: bool) -> None: ...

    async def send_file(self, fd: int, offset: int, count: int) -> None: ...

    async def send_trailers(self, headers: Headers) -> None: ...

    def start_response_nowait(self, status: int, headers: Headers,
                              trailers: bool = False) -> None: ...

    def send_body_nowait(self, data: bytes, more: bool) -> Awaitable[None] | None: ...

    def close_after_response(self) -> None: ...

    def abort(self) -> None: ...

    def open_websocket(self) -> WebSocketSession: ...


def plain_response(text: str | bytes, extra: Any = ()) -> tuple[Headers, bytes]:
    """Headers and body of a short text/plain answer: the one error-response shape.

    Used by every error the server or an adapter writes (400s from the parser,
    503, an app's 500, a denied WebSocket, static files' 404/405/416), so they
    all look alike.
    """
    body = text.encode("utf-8") if isinstance(text, str) else text
    headers: Headers = [*extra, (b"content-type", b"text/plain; charset=utf-8"),
                        (b"content-length", b"%d" % len(body))]
    return headers, body


async def send_plain(stream: Stream, status: int, text: str | bytes, extra: Any = (),
                     close: bool = False) -> None:
    """Answer ``stream`` with :func:`plain_response`; ``close``: then close the connection."""
    headers, body = plain_response(text, extra)
    if close:
        stream.close_after_response()
    await stream.start_response(status, headers)
    await stream.send_body(body, False)
