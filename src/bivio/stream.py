"""The stream contract: the seam between connection protocols and app adapters.

A *stream* is one request and its response. A connection protocol (HTTP/1.1
today, HTTP/2 later) creates one per request, fills in the request head and
hands it to a handler (the ASGI adapter, later the WSGI adapter); the handler
reads the body and writes the response only through the methods below. The
protocol owns framing (Content-Length, chunked, 100-continue, keep-alive); the
adapter owns the application interface. Neither reaches into the other.

The contract is plain attributes and methods on an object the connection
already holds: no task, queue or copy is added per request.

Request head (read-only for handlers):

``method`` (str, upper-case), ``http_version`` ("1.0", "1.1", "2"),
``scheme`` ("http"/"https", after trusted proxy headers), ``raw_path`` (bytes,
no query), ``query_string`` (bytes), ``headers`` (list of (lower-case name,
value) byte pairs, in order), ``client`` / ``server`` ((host, port) or None).

Body:

``await receive_body()`` returns ``(chunk, more)``; it waits while nothing is
buffered, and returns ``(b"", False)`` once the body is complete. It raises
:class:`ClientDisconnected` if the client went away before the body ended.
Reading is what grants ``100 Continue`` and resumes a paused socket.

``await wait_closed()`` returns once the client disconnected or the response
is complete, whichever comes first (ASGI's ``http.disconnect``).

Response:

``await send_informational(status, headers)`` (1xx, e.g. 103 Early Hints),
``await start_response(status, headers, trailers=False)``,
``await send_body(data, more)``, ``await send_file(fd, offset, count)``,
``await send_trailers(headers)``. Sends wait while the transport's write
buffer is full and raise :class:`ClientDisconnected` once the client is gone.
``abort()`` drops the connection when a response cannot be finished.
Every method runs on the event loop; only ``disconnected`` may be read from
another thread (the WSGI adapter checks it from app threads before posting).

Upgrade (optional; HTTP/1.1 only):

``upgrade`` is ``"websocket"`` when the client asks to switch to WebSocket and
the protocol can (``--ws`` is not ``none``), else ``None``. The *handler*
decides: ``open_websocket()`` returns a :class:`bivio.websocket.WebSocket`
whose ``accept()`` sends the 101 and takes the connection over; a handler that
ignores ``upgrade`` (WSGI) answers with a plain HTTP response, as does one that
denies the WebSocket (403, or the app's own ``websocket.http.response``).
"""

from __future__ import annotations

from typing import Protocol

Headers = list[tuple[bytes, bytes]]


class ClientDisconnected(OSError):
    """The client went away; raised by sends (ASGI spec 2.4: an OSError subclass)."""


class Stream(Protocol):
    method: str
    http_version: str
    scheme: str
    raw_path: bytes
    query_string: bytes
    headers: Headers
    client: tuple[str, int] | None
    server: tuple[str, int] | None
    response_started: bool
    response_complete: bool
    disconnected: bool
    upgrade: str | None

    async def receive_body(self) -> tuple[bytes, bool]: ...

    async def wait_closed(self) -> None: ...

    async def send_informational(self, status: int, headers: Headers) -> None: ...

    async def start_response(self, status: int, headers: Headers, trailers: bool = False) -> None:
        ...

    async def send_body(self, data: bytes, more: bool) -> None: ...

    async def send_file(self, fd: int, offset: int, count: int) -> None: ...

    async def send_trailers(self, headers: Headers) -> None: ...

    def abort(self) -> None: ...


async def send_plain(stream: Stream, status: int, text: str) -> None:
    """Answer with a short text/plain response (used for 500 and friends)."""
    body = text.encode("utf-8")
    await stream.start_response(
        status,
        [(b"content-type", b"text/plain; charset=utf-8"),
         (b"content-length", str(len(body)).encode("ascii")),
         (b"connection", b"close")],
    )
    await stream.send_body(body, False)
