"""Apps for tests/e2e/test_metrics.py: known answers, a loop blocker, a WebSocket, a WSGI gate.

``app`` (ASGI): ``/`` 200 with the worker's pid, ``/missing`` 404, ``/block?S``
blocks the event loop for S seconds (a stall --loop-warn sees), ``/ws`` a
WebSocket that stays open until the client closes it.
``wsgi`` (WSGI): ``/hold?PATH`` keeps its thread until the file PATH exists (the test
creates it: no request can release a pool whose every thread is held).
"""

from __future__ import annotations

import os
import time


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return  # no lifespan: bivio carries on without it
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass
        return
    path = scope["path"]
    if path == "/block":
        time.sleep(float(scope["query_string"] or b"0.5"))
    status = 404 if path == "/missing" else 200
    body = str(os.getpid()).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


def wsgi(environ, start_response):
    if environ["PATH_INFO"] == "/hold":
        gate = environ["QUERY_STRING"]
        deadline = time.monotonic() + 60
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.01)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
