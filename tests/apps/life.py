"""Apps for the lifespan and graceful-shutdown tests (tests/e2e/test_lifespan.py).

``$BIVIO_TEST_FILE`` is a marker file: lifespan events append one line each
(``startup``, ``shutdown``) and requests to ``/slow`` and ``/gated`` append
``request``. ``/gated`` answers once the file ``$BIVIO_TEST_FILE.go`` exists.
"""

from __future__ import annotations

import asyncio
import json
import os


def _mark(line: str) -> None:
    with open(os.environ["BIVIO_TEST_FILE"], "a") as f:
        f.write(line + "\n")


async def _text(send, body: bytes) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def http(scope, receive, send):
    if scope["path"] == "/slow":
        _mark("request")
        await asyncio.sleep(float(scope["query_string"] or b"2"))
        await _text(send, b"slow done")
    elif scope["path"] == "/gated":
        _mark("request")
        go = os.environ["BIVIO_TEST_FILE"] + ".go"
        for _ in range(3000):  # at most about a minute
            if os.path.exists(go):
                break
            await asyncio.sleep(0.02)
        await _text(send, b"slow done")
    elif scope["path"] == "/state":
        await _text(send, json.dumps(scope.get("state", {})).encode())
    else:
        await _text(send, b"ok")


async def app(scope, receive, send):
    """Full lifespan support, recorded in the marker file."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _mark("startup")
                scope["state"]["db"] = "connected"
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                _mark("shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return
    await http(scope, receive, send)


async def failing_startup(scope, receive, send):
    if scope["type"] == "lifespan":
        message = await receive()
        assert message["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.failed",
                    "message": "database unreachable: code xyz-123"})
        return
    await http(scope, receive, send)


async def raising_startup(scope, receive, send):
    """Takes lifespan.startup, then raises: a failed startup, not a missing lifespan."""
    if scope["type"] == "lifespan":
        message = await receive()
        assert message["type"] == "lifespan.startup"
        raise RuntimeError("cannot reach the cache: code abc-987")
    await http(scope, receive, send)


async def django_like(scope, receive, send):
    """Raises on the lifespan scope, as Django's ASGIHandler does."""
    if scope["type"] != "http":
        raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
    await http(scope, receive, send)
