"""ASGI WebSocket apps for tests/e2e/test_websocket.py; one path per behaviour under test.

The app runs in the bivio process under test, so what it observes (disconnect
codes, how far a flood got) is published on the HTTP route ``/events`` as JSON.
``echo`` alone is the Autobahn echo server (tests/e2e/test_autobahn.py).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

EVENTS: list[dict[str, Any]] = []
SUPPORTED_SUBPROTOCOLS = ("chat", "superchat")
_gate: asyncio.Event | None = None


def gate() -> asyncio.Event:
    global _gate
    if _gate is None:
        _gate = asyncio.Event()
    return _gate


async def echo(scope, receive, send):
    """Echo every message back: the Autobahn server, and the plain echo tests."""
    message = await receive()
    assert message["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["from_lifespan"] = "yes"
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":
        await http(scope, receive, send)
        return
    route = scope["path"][len(scope["root_path"]):]
    handler = scope_view if route.startswith("/scope") else ROUTES.get(route, echo)
    await handler(scope, receive, send)


async def http(scope, receive, send):
    if scope["path"] == "/events":
        body = json.dumps(EVENTS).encode()
    elif scope["path"] == "/release":
        gate().set()
        body = b"released"
    else:
        body = b"plain http"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


async def subprotocol(scope, receive, send):
    await receive()
    chosen = next((p for p in scope["subprotocols"] if p in SUPPORTED_SUBPROTOCOLS), None)
    await send({"type": "websocket.accept", "subprotocol": chosen,
                "headers": [(b"x-chosen", (chosen or "none").encode())]})
    await send({"type": "websocket.send", "text": chosen or ""})
    await receive()


async def scope_view(scope, receive, send):
    await receive()
    await send({"type": "websocket.accept"})
    view = {k: v for k, v in scope.items() if k not in ("headers", "raw_path", "query_string")}
    view["headers"] = [[n.decode(), v.decode()] for n, v in scope["headers"]]
    view["raw_path"] = scope["raw_path"].decode()
    view["query_string"] = scope["query_string"].decode()
    await send({"type": "websocket.send", "text": json.dumps(view)})
    await receive()


async def deny(scope, receive, send):
    await receive()
    await send({"type": "websocket.close"})


async def deny_custom(scope, receive, send):
    await receive()
    await send({"type": "websocket.http.response.start", "status": 418,
                "headers": [(b"content-type", b"text/plain"), (b"x-denied", b"yes")]})
    await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
    await send({"type": "websocket.http.response.body", "body": b"teapots"})


async def server_close(scope, receive, send):
    await receive()
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": "bye"})
    await send({"type": "websocket.close", "code": 4001, "reason": "done here"})
    message = await receive()
    EVENTS.append({"path": scope["path"], **message})


async def record(scope, receive, send):
    """Accept, echo, and record the disconnect the app sees."""
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            EVENTS.append({"path": scope["path"], **message})
            return
        await send({"type": "websocket.send", "text": message.get("text"),
                    "bytes": message.get("bytes")})


async def stall(scope, receive, send):
    """Accept, then read nothing until /release: the client's sends must block."""
    await receive()
    await send({"type": "websocket.accept"})
    await gate().wait()
    count = size = 0
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        count += 1
        size += len(message.get("bytes") or b"")
        if message.get("text") == "done":
            await send({"type": "websocket.send", "text": json.dumps([count - 1, size])})


async def flood(scope, receive, send):
    """Send 64 x 1 MiB as fast as send() allows; report progress in /events."""
    await receive()
    await send({"type": "websocket.accept"})
    chunk = b"f" * (1024 * 1024)
    progress = {"path": "/flood", "sent": 0}
    EVENTS.append(progress)
    for _ in range(64):
        await send({"type": "websocket.send", "bytes": chunk})
        progress["sent"] += 1
    await send({"type": "websocket.send", "text": "end"})
    await receive()


async def crash(scope, receive, send):
    await receive()
    await send({"type": "websocket.accept"})
    await receive()
    raise RuntimeError("boom after accept")


async def bad_header(scope, receive, send):
    """Accept with the header name given in hex as the query string; record what accept did.

    ``?<hex>``: the app lets the error propagate (the client should get a 500);
    ``?<hex>&retry``: the app catches it and accepts without the header, then echoes.
    """
    await receive()
    query = scope["query_string"].decode()
    name = bytes.fromhex(query.split("&")[0])
    event: dict[str, Any] = {"path": "/bad-header", "name": name.hex()}
    EVENTS.append(event)
    try:
        await send({"type": "websocket.accept", "headers": [(name, b"v")]})
    except Exception as exc:
        event["error"] = f"{type(exc).__name__}: {exc}"
        if not query.endswith("&retry"):
            raise
        await send({"type": "websocket.accept", "headers": [(b"x-retried", b"yes")]})
        await echo_once(receive, send)
        return
    event["error"] = None
    await echo_once(receive, send)


async def echo_once(receive, send):
    message = await receive()
    if message["type"] == "websocket.receive":
        await send({"type": "websocket.send", "text": message.get("text"),
                    "bytes": message.get("bytes")})
        await receive()


async def burst(scope, receive, send):
    """Accept, send three messages, then wait for /release without calling receive():
    the messages must reach the client when the step that sent them ends."""
    await receive()
    await send({"type": "websocket.accept"})
    for text in ("one", "two", "three"):
        await send({"type": "websocket.send", "text": text})
    await gate().wait()
    await send({"type": "websocket.close", "code": 1000})


async def crash_early(scope, receive, send):
    await receive()
    raise RuntimeError("boom before accept")


ROUTES = {
    "/echo": echo,
    "/subprotocol": subprotocol,
    "/scope": scope_view,
    "/deny": deny,
    "/deny-custom": deny_custom,
    "/server-close": server_close,
    "/record": record,
    "/stall": stall,
    "/burst": burst,
    "/flood": flood,
    "/crash": crash,
    "/crash-early": crash_early,
    "/bad-header": bad_header,
}
