"""The ASGI adapter: runs an ASGI 3 app over any stream (see :mod:`bivio.stream`).

It builds the HTTP scope and implements ``receive``/``send`` on top of the
stream contract. It knows nothing about HTTP/1.1 framing: Content-Length,
chunking, ``100 Continue`` and keep-alive belong to the connection protocol.

Extensions offered in ``scope["extensions"]``:

- ``http.response.pathsend``: ``{"type": "http.response.pathsend", "path": ...}``
  sends a file with ``os.sendfile``;
- ``http.response.trailers``: ``trailers: True`` in ``http.response.start``,
  then ``http.response.trailers`` messages (chunked trailers on HTTP/1.1);
- ``http.response.early_hint``: ``{"type": "http.response.early_hint",
  "links": [b"</style.css>; rel=preload; as=style", ...]}`` sends a 103;
- ``tls`` (over TLS only): what the connection negotiated (see
  :func:`bivio.adapters.asgi_scope.tls_extension` and docs/tls.md).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from ..core.context import ServerContext
from ..core.logs import logger
from ..core.stream import ClientDisconnected, Stream, send_plain
from .asgi_scope import READY, connection_scope
from .asgi_ws import ASGIWebSocketHandler

DISCONNECT = {"type": "http.disconnect"}


class HTTPCycle:
    """``receive`` and ``send`` for one request: the ASGI message state machine."""

    __slots__ = ("stream", "body_done", "started", "complete", "more_trailers", "trailers",
                 "gone", "nowait")

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        # The stream answers without a coroutine when nothing has to wait (HTTP/1.1:
        # see :meth:`bivio.protocols.http1.H1Stream.send_body_nowait`): send's fast path.
        self.nowait = self.stream.sends_nowait
        self.body_done = False
        self.started = False
        self.complete = False
        self.more_trailers = False
        self.trailers: list[tuple[bytes, bytes]] = []  # from messages with more_trailers
        self.gone = False  # receive() returned http.disconnect

    async def receive(self) -> dict[str, Any]:
        stream = self.stream
        if not self.body_done:
            try:
                chunk, more = await stream.receive_body()
            except ClientDisconnected:
                self.body_done = self.gone = True
                return DISCONNECT
            if not more:
                self.body_done = True
            return {"type": "http.request", "body": chunk, "more_body": more}
        # After the body only one thing can happen: the request ends.
        await stream.wait_closed()
        self.gone = True
        return DISCONNECT

    def send(self, message: dict[str, Any]) -> Any:
        """ASGI ``send``: an awaitable; HTTP/1.1's common cases complete before it is awaited."""
        if self.nowait and type(message) is dict:
            fields = message  # compiled: a dict local (asgi.pxd), read without method lookups
            kind = fields["type"]
            if kind == "http.response.body" and self.started and not self.complete:
                more = fields.get("more_body", False)
                if not more and not self.more_trailers:
                    self.complete = True
                waiter = self.stream.send_body_nowait(fields.get("body", b""), more)
                return READY if waiter is None else waiter
            if kind == "http.response.start" and not self.started:
                status, headers, trailers = self._start(fields)
                self.stream.start_response_nowait(status, headers, trailers)
                return READY
        return self._send(message)

    def _start(self, message: dict[str, Any]) -> tuple[Any, list[tuple[bytes, bytes]], bool]:
        """Take an ``http.response.start`` message: (status, headers, trailers)."""
        self.started = True
        # ASGI messages are dicts; any other mapping is read as one. Compiled, a dict
        # local (asgi.pxd): its reads are C calls, not bound-method lookups.
        fields = message if type(message) is dict else dict(message)
        trailers = bool(fields.get("trailers", False))
        self.more_trailers = trailers
        status = fields["status"]  # first, as before: a KeyError wins over bad headers
        # _header_list(), inline: pairs of bytes (the usual case) skip the bytes()
        # conversion of each name and value.
        try:
            headers = [(n, v) if type(n) is bytes is type(v) else (bytes(n), bytes(v))
                       for n, v in fields.get("headers", ())]
        except (TypeError, ValueError):
            raise TypeError("ASGI headers must be an iterable of [bytes, bytes] pairs") from None
        return status, headers, trailers

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        stream = self.stream
        if kind == "http.response.body":
            if not self.started:
                raise RuntimeError("'http.response.body' sent before 'http.response.start'")
            if self.complete:
                if stream.disconnected:
                    raise ClientDisconnected()
                return  # ASGI: messages after the final body are ignored
            more = message.get("more_body", False)
            if not more and not self.more_trailers:
                self.complete = True
            await stream.send_body(message.get("body", b""), more)
        elif kind == "http.response.start":
            if self.started:
                raise RuntimeError("'http.response.start' sent twice")
            status, headers, trailers = self._start(message)
            await stream.start_response(status, headers, trailers)
        elif kind == "http.response.trailers":
            if not self.more_trailers:
                raise RuntimeError("'http.response.trailers' without trailers=True")
            self.trailers += _header_list(message.get("headers", ()))
            if not message.get("more_trailers", False):
                self.more_trailers = False
                self.complete = True
                await stream.send_trailers(self.trailers)
        elif kind == "http.response.pathsend":
            if not self.started or self.complete:
                raise RuntimeError("'http.response.pathsend' must follow 'http.response.start'")
            self.complete = True
            await _send_path(stream, message["path"])
        elif kind == "http.response.early_hint":
            if not self.started:
                links = message.get("links", ())
                await stream.send_informational(103, [(b"link", bytes(v)) for v in links])
        else:
            raise RuntimeError(f"unexpected ASGI message type {kind!r} for an HTTP request")


def _header_list(headers: Any) -> list[tuple[bytes, bytes]]:
    try:
        return [(bytes(name), bytes(value)) for name, value in headers]
    except (TypeError, ValueError):
        raise TypeError("ASGI headers must be an iterable of [bytes, bytes] pairs") from None


async def _send_path(stream: Stream, path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        size = os.fstat(fd).st_size
        await stream.send_file(fd, 0, size)
    finally:
        os.close(fd)


class ASGIHandler:
    """Turns each stream into an ASGI HTTP scope and runs the app on it."""

    def __init__(self, app: Any, root_path: str = "", state: dict[str, Any] | None = None):
        self.app = app
        self.root_path = root_path
        self.state = state if state is not None else {}
        self._ws_handler = ASGIWebSocketHandler(app, root_path, self.state)
        self.ctx: ServerContext | None = None
        # Bound, each request's coroutine ends its Task's bookkeeping itself (see
        # ServerContext.start_handler): no done callback per request.
        self.ends_its_task = False

    def bind(self, ctx: ServerContext) -> None:
        """Keep the context: each request's Task leaves ``ctx.tasks`` as it ends."""
        self.ctx = ctx
        self.ends_its_task = True

    def shutdown(self) -> None:
        """Nothing to stop (the lifespan shutdown is the server's)."""

    def scope(self, stream: Stream) -> dict[str, Any]:
        """The request's HTTP scope (compiled: a C call, reading the stream's fields
        directly)."""
        scope = connection_scope("http", stream, stream.scheme, self.root_path, self.state, {
            "http.response.pathsend": {},
            "http.response.trailers": {},
            "http.response.early_hint": {},
        })
        scope["method"] = stream.method
        return scope

    def cycle(self, stream: Stream) -> HTTPCycle | None:
        """Mark the stream as ASGI's; the request's HTTPCycle, or None for a WebSocket
        upgrade. (Compiled, a C call that reads and sets the stream's fields
        directly: the coroutine below cannot type its argument.)"""
        stream.interface = "asgi"
        if stream.upgrade is not None:
            return None
        return HTTPCycle(stream)

    async def __call__(self, stream: Stream) -> None:
        # The Task leaves ctx.tasks here, not by a done callback (ServerContext.start_handler).
        try:
            cycle = self.cycle(stream)
            if cycle is None:
                await self._ws_handler(stream)
                return
            try:
                await self.app(self.scope(stream), cycle.receive, cycle.send)
            except ClientDisconnected as exc:
                if not stream.disconnected:  # not ours: the app's own socket failed
                    logger.error("Exception in ASGI application", exc_info=exc)
                    await _fail(stream)
                return  # the client left and the app noticed through send(): nothing to log
            except asyncio.CancelledError:
                stream.abort()
                raise
            except BaseException as exc:
                logger.error("Exception in ASGI application", exc_info=exc)
                await _fail(stream)
                if not isinstance(exc, Exception):
                    raise
                return
            if not cycle.started:
                if not stream.disconnected and not cycle.gone:
                    logger.error("ASGI application returned without starting a response")
                await _fail(stream)
            elif not cycle.complete:
                if not stream.disconnected and not cycle.gone:
                    logger.error("ASGI application returned without completing the response")
                stream.abort()
        finally:
            ctx = self.ctx
            if ctx is not None:
                ctx.task_ended()


async def _fail(stream: Stream) -> None:
    """Answer 500 if nothing was sent yet; otherwise the response is broken: drop it."""
    if stream.disconnected:
        return
    if stream.response_started:
        stream.abort()
        return
    try:
        await send_plain(stream, 500, "Internal Server Error", close=True)
    except (ClientDisconnected, RuntimeError, ValueError):
        stream.abort()
