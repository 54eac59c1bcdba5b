"""Fakes for tests without sockets: a transport under a protocol, a stream under an adapter.

The layers meet at two seams, and each seam has a fake here:

- :class:`FakeTransport` stands where the kernel socket is, under a connection
  protocol (:class:`bivio.protocols.http1.H1Connection`): feed it bytes, read
  what the protocol wrote, see when it paused reading or closed.
- :class:`FakeStream` stands where a connection protocol is, under an adapter
  (ASGI, WSGI, static files, dispatch): it implements the stream contract of
  :mod:`bivio.core.stream` in memory and records the response.
  :class:`FakeWebSocket` is the WebSocket session its ``open_websocket()``
  returns.

Both run on a real event loop (``asyncio.run`` in the test) but never touch a
socket, so state machines are tested step by step and deterministically.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from typing import Any

from bivio.core.stream import ClientDisconnected, Headers, WebSocketClosed
from bivio.core.streambase import StreamBase


class FakeTransport(asyncio.Transport):
    """An in-memory transport: ``written`` holds every byte the protocol wrote."""

    def __init__(self, peer: tuple[str, int] = ("127.0.0.1", 50000),
                 sock: tuple[str, int] = ("127.0.0.1", 8000)) -> None:
        super().__init__()
        self.written = bytearray()
        self.write_calls = 0  # write() calls that wrote something
        self.closed = False
        self.aborted = False
        self.eof_written = False
        self.reading = True
        self.protocol: Any = None
        self._extra = {"peername": peer, "sockname": sock, "socket": None}
        self.buffer_size = 0  # what get_write_buffer_size() reports

    # -- driving the protocol ---------------------------------------------------------

    def connect(self, protocol: Any) -> Any:
        """``connection_made`` on ``protocol``; returns it for chaining."""
        self.protocol = protocol
        protocol.connection_made(self)
        return protocol

    def feed(self, data: bytes) -> None:
        """The client sent ``data`` (ignored once closed, like a real socket)."""
        if not self.closed:
            self.protocol.data_received(data)

    def feed_eof(self) -> None:
        """The client half-closed its side."""
        if not self.closed and self.protocol.eof_received() is not True:
            self.close()

    def lose(self) -> None:
        """The client vanished (reset): ``connection_lost`` now."""
        if not self.closed:
            self.closed = True
            self.protocol.connection_lost(ConnectionResetError())

    def take(self) -> bytes:
        """Everything written since the last ``take()``."""
        data = bytes(self.written)
        self.written.clear()
        return data

    # -- asyncio.Transport ----------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed:
            return
        self.written += data
        self.write_calls += 1

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def write_eof(self) -> None:
        self.eof_written = True

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            protocol = self.protocol
            if protocol is not None:
                protocol.connection_lost(None)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_protocol(self) -> Any:
        return self.protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def get_write_buffer_size(self) -> int:
        return self.buffer_size

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


class FakeWebSocket:
    """A :class:`bivio.core.stream.WebSocketSession` in memory.

    ``incoming`` is what the client sends (push with :meth:`client_send`,
    end with :meth:`client_close`); ``sent`` is what the app sent.
    """

    def __init__(self, subprotocols: list[str] | None = None,
                 handshake_error: tuple[int, str] | None = None) -> None:
        self.subprotocols = subprotocols or []
        self.handshake_error = handshake_error
        self.accepted = False
        self.accept_args: tuple[str | None, Headers] | None = None
        self.sent: list[str | bytes] = []
        self.closed: tuple[int, str] | None = None
        self.aborted = False
        self._incoming: deque[str | bytes] = deque()
        self._client_closed: tuple[int, str] | None = None
        self._event = asyncio.Event()

    def client_send(self, message: str | bytes) -> None:
        self._incoming.append(message)
        self._event.set()

    def client_close(self, code: int = 1000, reason: str = "") -> None:
        self._client_closed = (code, reason)
        self._event.set()

    async def accept(self, subprotocol: str | None, headers: Headers) -> None:
        if self.accepted:
            raise RuntimeError("WebSocket already accepted")
        self.accept_args = (subprotocol, headers)
        self.accepted = True

    async def receive(self) -> str | bytes:
        while True:
            if self._incoming:
                return self._incoming.popleft()
            if self._client_closed is not None:
                raise WebSocketClosed(*self._client_closed)
            if self.closed is not None:
                raise WebSocketClosed(*self.closed)
            self._event.clear()
            await self._event.wait()

    async def send(self, data: str | bytes) -> None:
        if self.closed is not None or self._client_closed is not None:
            raise ClientDisconnected("the WebSocket is closed")
        self.sent.append(data)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed is None:
            self.closed = (code, reason)
            self._event.set()

    def abort(self) -> None:
        self.aborted = True


class FakeStream(StreamBase):
    """The stream contract (:mod:`bivio.core.stream`) in memory, recording the response.

    Request: pass the head as keyword arguments; the body is ``body`` (given
    whole) or fed later with :meth:`feed` / :meth:`end`. ``disconnect()``
    plays a client that leaves. Response: ``status``, ``response_headers``,
    ``body`` (bytes sent), ``trailers``, ``informational``, ``closes_after``
    (``close_after_response()`` was called), ``aborted``.
    """

    def __init__(self, method: str = "GET", path: bytes = b"/", query: bytes = b"", *,
                 headers: Headers | None = None, body: bytes | None = None,
                 body_length: int | None | str = "auto", http_version: str = "1.1",
                 scheme: str = "http", client: tuple[str, int] | None = ("127.0.0.1", 50000),
                 server: tuple[str, int] | None = ("127.0.0.1", 8000),
                 upgrade: str | None = None, websocket: FakeWebSocket | None = None,
                 tls: Any = None) -> None:
        self.method = method
        self.http_version = http_version
        self.scheme = scheme
        self.raw_path = path
        self.query_string = query
        self.headers: Headers = list(headers or [])
        self.client = client
        self.server = server
        self.tls = tls
        self.upgrade = upgrade
        self.interface = "-"
        self.sends_nowait = False  # a subclass that sends without a coroutine says so
        self.response_started = False
        self.response_complete = False
        self.disconnected = False
        self._chunks: deque[bytes] = deque()
        self._body_done = False
        self._event = asyncio.Event()  # binds to the loop on first use (Python >= 3.10)
        if body is not None:
            self._chunks.append(body)
            self._body_done = True
            self.body_length = len(body) if body_length == "auto" else body_length
        else:
            self.body_length = 0 if body_length == "auto" else body_length
            if self.body_length == 0:
                self._body_done = True
        self.websocket = websocket
        # What the handler did
        self.status: int | None = None
        self.response_headers: Headers = []
        self.body = bytearray()
        self.trailers: Headers | None = None
        self.announced_trailers = False
        self.informational: list[tuple[int, Headers]] = []
        self.closes_after = False
        self.aborted = False
        self.reads = 0

    # -- the test's side ------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._wake()

    def end(self) -> None:
        self._body_done = True
        self._wake()

    def disconnect(self) -> None:
        self.disconnected = True
        self._wake()

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.response_headers:
            if key == name:
                return value
        return None

    def _wake(self) -> None:
        self._event.set()

    async def _wait(self) -> None:
        self._event.clear()
        await self._event.wait()

    # -- the contract -----------------------------------------------------------------

    async def receive_body(self) -> tuple[bytes, bool]:
        self.reads += 1
        while True:
            if self._chunks:
                chunk = b"".join(self._chunks)
                self._chunks.clear()
                return chunk, not self._body_done
            if self._body_done:
                return b"", False
            if self.disconnected:
                raise ClientDisconnected("client disconnected while sending the body")
            await self._wait()

    async def wait_closed(self) -> None:
        while not (self.disconnected or self.response_complete):
            await self._wait()

    async def send_informational(self, status: int, headers: Headers) -> None:
        if self.response_started:
            raise RuntimeError("informational response after the response started")
        self.informational.append((status, headers))

    async def start_response(self, status: int, headers: Headers, trailers: bool = False) -> None:
        from bivio.core.headers import check_headers

        if self.response_started:
            raise RuntimeError("response already started")
        if self.disconnected:
            raise ClientDisconnected()
        check_headers(headers)
        self.response_started = True
        self.status = status
        self.response_headers = list(headers)
        self.announced_trailers = trailers

    async def send_body(self, data: bytes, more: bool) -> None:
        if self.response_complete:
            return
        if self.disconnected:
            raise ClientDisconnected()
        if not self.response_started:
            raise RuntimeError("body sent before the response started")
        self.body += data
        if not more and not self.announced_trailers:
            self._complete()

    async def send_file(self, fd: int, offset: int, count: int) -> None:
        if self.disconnected:
            raise ClientDisconnected()
        if self.method != "HEAD":
            self.body += os.pread(fd, count, offset)
        self._complete()

    async def send_trailers(self, headers: Headers) -> None:
        if not self.announced_trailers:
            raise RuntimeError("trailers sent but not announced in start_response")
        self.trailers = list(headers)
        self._complete()

    def close_after_response(self) -> None:
        self.closes_after = True

    def abort(self) -> None:
        self.aborted = True
        self.disconnected = True
        self._wake()

    def open_websocket(self) -> FakeWebSocket:
        if self.upgrade != "websocket":
            raise RuntimeError("not a WebSocket upgrade request")
        if self.websocket is None:
            self.websocket = FakeWebSocket()
        return self.websocket

    def _complete(self) -> None:
        self.response_complete = True
        self._wake()

