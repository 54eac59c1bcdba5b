"""The ASGI WebSocket adapter: the ``websocket`` scope over :mod:`bivio.protocols.websocket`.

It turns ASGI messages into calls on a :class:`~bivio.core.stream.WebSocketSession`
(accept, send, close) and the connection's messages into ``websocket.receive``
and ``websocket.disconnect``. Frames, masks, deflate and close codes are the
protocol's; the adapter only keeps the ASGI state machine:

    CONNECTING --accept--> CONNECTED --close / client close--> CLOSED
    CONNECTING --close--> 403 (denied)
    CONNECTING --websocket.http.response.start--> RESPONSE (denied with the app's answer)

Before ``websocket.accept`` the connection is still HTTP, so every denial is an
ordinary HTTP response written through the stream (see :mod:`bivio.stream`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..core.logs import logger
from ..core.stream import (
    ClientDisconnected,
    Stream,
    WebSocketClosed,
    WebSocketSession,
    send_plain,
)
from .asgi_scope import READY, connection_scope

_CONNECTING, _CONNECTED, _RESPONSE, _CLOSED = range(4)


async def _raise(exc: BaseException) -> None:
    """An error of ``send``'s fast path, raised where the app awaits, as from a coroutine."""
    raise exc


class WebSocketCycle:
    """``receive`` and ``send`` for one WebSocket connection."""

    __slots__ = ("stream", "ws", "state", "connect_sent", "disconnected", "response_done",
                 "nowait")

    def __init__(self, stream: Stream, ws: WebSocketSession) -> None:
        self.stream = stream
        self.ws = ws
        # The session takes a message without a coroutine (protocols.websocket.WebSocket:
        # receive_nowait/send_nowait, found on its class): the fast paths below.
        self.nowait = hasattr(type(ws), "send_nowait")
        self.state = _CONNECTING
        self.connect_sent = False
        self.disconnected = False  # receive() returned websocket.disconnect
        self.response_done = False

    async def receive(self) -> dict[str, Any]:
        if not self.connect_sent:
            self.connect_sent = True
            return {"type": "websocket.connect"}
        if self.disconnected:
            raise RuntimeError("receive() called after websocket.disconnect")
        if self.state != _CONNECTED and not self.ws.accepted:
            # Not accepted yet (or denied): only the client leaving can happen.
            await self.stream.wait_closed()
            self.disconnected = True
            return {"type": "websocket.disconnect", "code": 1006, "reason": ""}
        message = self.ws.receive_nowait() if self.nowait else None
        if message is None:
            try:
                message = await self.ws.receive()
            except WebSocketClosed as closed:
                self.disconnected = True
                if self.state == _CONNECTED:
                    self.state = _CLOSED
                return {"type": "websocket.disconnect", "code": closed.code,
                        "reason": closed.reason}
        if type(message) is str:
            return {"type": "websocket.receive", "text": message}
        return {"type": "websocket.receive", "bytes": message}

    def send(self, message: dict[str, Any]) -> Any:
        """ASGI ``send``: an awaitable; a message the session takes at once needs no coroutine."""
        if self.nowait and self.state == _CONNECTED and type(message) is dict:
            fields = message  # compiled: a dict local (asgi_ws.pxd), read without method lookups
            try:
                if fields["type"] == "websocket.send":
                    text = fields.get("text")
                    if text is not None:
                        wait = self.ws.send_nowait(text)
                    else:
                        data = fields.get("bytes")
                        if data is None:
                            raise ValueError("'websocket.send' needs 'text' or 'bytes'")
                        wait = self.ws.send_nowait(bytes(data))
                    return self.ws.wait_sent() if wait else READY
            except Exception as exc:
                return _raise(exc)
        return self._send(message)

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        state = self.state
        if kind == "websocket.send":
            if state != _CONNECTED:
                if state == _CLOSED or self.ws.accepted:
                    raise ClientDisconnected("the WebSocket is closed")
                raise RuntimeError("'websocket.send' before 'websocket.accept'")
            text = message.get("text")
            if text is not None:
                await self.ws.send(text)
            else:
                data = message.get("bytes")
                if data is None:
                    raise ValueError("'websocket.send' needs 'text' or 'bytes'")
                await self.ws.send(bytes(data))
        elif kind == "websocket.accept":
            if state != _CONNECTING:
                raise RuntimeError("'websocket.accept' after the handshake was answered")
            headers = [(bytes(n), bytes(v)) for n, v in message.get("headers") or ()]
            await self.ws.accept(message.get("subprotocol"), headers)
            self.state = _CONNECTED
        elif kind == "websocket.close":
            if state == _CONNECTING:
                self.state = _CLOSED
                await _deny(self.stream)
            elif state == _CONNECTED:
                self.state = _CLOSED
                code = message.get("code")
                await self.ws.close(1000 if code is None else int(code),
                                    message.get("reason") or "")
            elif state == _RESPONSE:
                raise RuntimeError("'websocket.close' during a 'websocket.http.response'")
            # CLOSED: closing twice, or after the client left, is harmless.
        elif kind == "websocket.http.response.start":
            if state != _CONNECTING:
                raise RuntimeError("'websocket.http.response.start' after the handshake")
            self.state = _RESPONSE
            headers = [(bytes(n), bytes(v)) for n, v in message.get("headers") or ()]
            await self.stream.start_response(int(message["status"]), headers)
        elif kind == "websocket.http.response.body":
            if state != _RESPONSE or self.response_done:
                raise RuntimeError("'websocket.http.response.body' without a response start")
            more = bool(message.get("more_body", False))
            self.response_done = not more
            await self.stream.send_body(bytes(message.get("body", b"")), more)
        else:
            raise RuntimeError(f"unexpected ASGI message type {kind!r} for a WebSocket")


async def _deny(stream: Stream) -> None:
    """The app closed before accepting: 403, as the ASGI spec asks."""
    if not stream.disconnected and not stream.response_started:
        await send_plain(stream, 403, "Forbidden", close=True)


class ASGIWebSocketHandler:
    """Runs an ASGI app on WebSocket upgrade streams (``stream.upgrade == "websocket"``)."""

    def __init__(self, app: Any, root_path: str, state: dict[str, Any]) -> None:
        self.app = app
        self.root_path = root_path
        self.state = state

    def scope(self, stream: Stream, ws: WebSocketSession) -> dict[str, Any]:
        scope = connection_scope("websocket", stream, "wss" if stream.scheme == "https" else "ws",
                                 self.root_path, self.state, {"websocket.http.response": {}})
        scope["subprotocols"] = ws.subprotocols
        return scope

    async def __call__(self, stream: Stream) -> None:
        ws = stream.open_websocket()
        if ws.handshake_error is not None:
            status, text = ws.handshake_error
            await send_plain(stream, status, text, close=True)
            return
        cycle = WebSocketCycle(stream, ws)
        try:
            await self.app(self.scope(stream, ws), cycle.receive, cycle.send)
        except ClientDisconnected:
            pass  # the client left and the app noticed through send(): nothing to log
        except asyncio.CancelledError:
            if ws.accepted:
                ws.abort()
            else:
                stream.abort()
            raise
        except BaseException as exc:
            logger.error("Exception in ASGI application", exc_info=exc)
            await _after_error(stream, ws, cycle)
            if not isinstance(exc, Exception):
                raise
            return
        if cycle.state == _CONNECTING:
            if not stream.disconnected:
                logger.error("ASGI application returned without accepting the WebSocket")
            await _after_error(stream, ws, cycle)
        elif cycle.state == _CONNECTED:
            await ws.close(1000)  # the app returned without closing: close normally
        elif cycle.state == _RESPONSE and not cycle.response_done:
            stream.abort()


async def _after_error(stream: Stream, ws: WebSocketSession, cycle: WebSocketCycle) -> None:
    """Before the handshake was answered: 500; after accepting: close with 1011."""
    if cycle.state == _CONNECTING and not ws.accepted:
        if not stream.disconnected and not stream.response_started:
            try:
                await send_plain(stream, 500, "Internal Server Error", close=True)
            except (ClientDisconnected, RuntimeError, ValueError):
                stream.abort()
    elif cycle.state == _RESPONSE:
        if not cycle.response_done:
            stream.abort()
    elif ws.accepted:
        await ws.close(1011, "Internal Error")
