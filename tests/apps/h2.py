"""The ASGI app of tests/e2e/test_http2.py and test_http2_attacks.py.

It is tests/apps/basic.py for HTTP and tests/apps/ws.py for WebSockets, and it
counts its calls: every HTTP request and WebSocket the app is given is
appended to ``CALLS`` (``"GET /path"``, ``"ws /path"``), which ``/calls``
answers as JSON, so a test can show that a malformed or attacking request
never reached the app; ``/events`` is ws.py's record of WebSocket
disconnects. ``/slow-stream?N`` sends N parts 0.2 s apart (an in-flight
stream for the graceful shutdown test).
"""

from __future__ import annotations

import asyncio
import json

from tests.apps import basic, ws

CALLS: list[str] = []


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await basic.app(scope, receive, send)
        return
    if scope["type"] == "websocket":
        CALLS.append(f"ws {scope['path']}")
        await ws.app(scope, receive, send)
        return
    path = scope["path"]
    if path == "/events":  # what tests/apps/ws.py recorded
        await ws.app(scope, receive, send)
        return
    if path == "/calls":
        await basic.respond(send, body=json.dumps(CALLS).encode(),
                            headers=[(b"content-type", b"application/json")])
        return
    CALLS.append(f"{scope['method']} {path}")
    if path == "/slow-stream":
        await slow_stream(scope, receive, send)
    else:
        await basic.app(scope, receive, send)


async def slow_stream(scope, receive, send):
    parts = int(scope["query_string"] or b"5")
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    for i in range(parts):
        await send({"type": "http.response.body", "body": b"part%d;" % i, "more_body": True})
        await asyncio.sleep(0.2)
    await send({"type": "http.response.body", "body": b"end"})
