"""An ASGI app with an ``async def`` view that blocks the event loop (--loop-warn)."""

from __future__ import annotations

import time


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/block":
        await blocking_view(send)
    else:
        await respond(send, b"fast")


async def blocking_view(send):
    time.sleep(1.0)  # the mistake --loop-warn points at
    await respond(send, b"slept")


async def respond(send, body: bytes) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
