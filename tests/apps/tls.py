"""Apps for the TLS tests (tests/e2e/test_tls.py): they answer with what they were given.

``app`` (ASGI): ``/scope`` is the scope's scheme and ``tls`` extension as
JSON, ``/pid`` the worker's pid, ``/file`` sends this file with the
``http.response.pathsend`` extension (``os.sendfile`` in cleartext), any
WebSocket sends its scope's scheme and ``tls`` extension as one text message.
``wsgi_app``: ``wsgi.url_scheme`` and ``HTTPS`` from the environ.
"""

from __future__ import annotations

import json
import os

FILE = os.path.abspath(__file__)


async def _send(send, body: bytes, content_type: bytes = b"application/json") -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _view(scope) -> dict:
    return {"type": scope["type"], "scheme": scope["scheme"],
            "http_version": scope["http_version"], "tls": scope["extensions"].get("tls"),
            "has_tls": "tls" in scope["extensions"]}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps(_view(scope))})
        await send({"type": "websocket.close", "code": 1000})
        return
    path = scope["path"]
    if path == "/pid":
        await _send(send, str(os.getpid()).encode(), b"text/plain")
    elif path == "/file":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.pathsend", "path": FILE})
    else:
        await _send(send, json.dumps(_view(scope)).encode())


def wsgi_app(environ, start_response):
    body = json.dumps({"url_scheme": environ["wsgi.url_scheme"],
                       "HTTPS": environ.get("HTTPS")}).encode()
    start_response("200 OK", [("content-type", "application/json"),
                              ("content-length", str(len(body)))])
    return [body]
