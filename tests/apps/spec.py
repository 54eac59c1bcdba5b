"""Apps for the ASGI conformance tests (tests/e2e/test_asgi.py).

``app`` answers every path not listed in ROUTES with a JSON dump of its scope
(bytes as latin-1 text, plus the Python type of each field), so tests can
check the scope exactly. Routes are matched on the path below ``root_path``.
"""

from __future__ import annotations

import json


def _text(value):
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, (list, tuple)):
        return [_text(v) for v in value]
    if isinstance(value, dict):
        return {k: _text(v) for k, v in value.items()}
    return value


async def _respond(send, body: bytes, headers=(), status=200) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *headers]})
    await send({"type": "http.response.body", "body": body})


async def dump_scope(scope, receive, send):
    data = {key: _text(value) for key, value in scope.items() if key != "state"}
    data["state_keys"] = sorted(scope.get("state", {}))
    data["types"] = {key: type(value).__name__ for key, value in scope.items()}
    data["header_types"] = sorted({f"{type(n).__name__},{type(v).__name__}"
                                   for n, v in scope["headers"]})
    await _respond(send, json.dumps(data).encode())


async def state(scope, receive, send):
    seen = sorted(scope["state"])
    scope["state"]["leaked"] = True  # must not be visible to the next request
    scope["state"]["counter"] = scope["state"].get("counter", 0) + 1
    await _respond(send, json.dumps(seen).encode())


async def messages(scope, receive, send):
    """Every message receive() returns until the body ends, as JSON."""
    log = []
    while True:
        message = await receive()
        log.append({"type": message["type"], "body": message.get("body", b"").decode("latin-1"),
                    "more_body": message.get("more_body", False)})
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
    await _respond(send, json.dumps(log).encode())


async def server_header(scope, receive, send):
    await _respond(send, b"{}", headers=[(b"Server", b"custom-server/1.0")])


ROUTES = {
    "/state": state,
    "/messages": messages,
    "/server-header": server_header,
}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["from_startup"] = "yes"
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"][len(scope["root_path"]):]
    await ROUTES.get(path, dump_scope)(scope, receive, send)


class ASGI2App:
    """A legacy double-callable (ASGI 2) application."""

    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        if self.scope["type"] != "http":
            raise ValueError("http only")  # like Django: lifespan unsupported
        body = b"asgi2 " + self.scope["path"].encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body})
