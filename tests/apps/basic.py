"""ASGI apps the end-to-end tests serve; one route per behaviour under test."""

from __future__ import annotations

import asyncio
import json
import os

STARTED = {"count": 0}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["started"] = "yes"
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    handler = ROUTES.get(path, hello)
    await handler(scope, receive, send)


async def read_body(receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("disconnected")
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


async def respond(send, status=200, body=b"", headers=()):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain")] + list(headers)})
    await send({"type": "http.response.body", "body": body})


async def hello(scope, receive, send):
    await respond(send, body=b"hello")


async def echo(scope, receive, send):
    await respond(send, body=await read_body(receive))


async def scope_json(scope, receive, send):
    data = {k: v for k, v in scope.items() if k not in ("headers", "raw_path", "query_string")}
    data["headers"] = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
    data["raw_path"] = scope["raw_path"].decode("latin-1")
    data["query_string"] = scope["query_string"].decode("latin-1")
    await respond(send, body=json.dumps(data).encode(), headers=[(b"x-json", b"1")])


async def stream(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for i in range(3):
        await send({"type": "http.response.body", "body": b"part%d;" % i, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def error_before(scope, receive, send):
    raise RuntimeError("boom before start")


async def error_after(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    raise RuntimeError("boom after start")


async def no_response(scope, receive, send):
    return


async def pathsend(scope, receive, send):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")]})
    await send({"type": "http.response.pathsend", "path": os.environ["BIVIO_TEST_FILE"]})


async def trailers(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "trailers": True,
                "headers": [(b"trailer", b"x-checksum")]})
    await send({"type": "http.response.body", "body": b"data", "more_body": False})
    await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc123")],
                "more_trailers": False})


async def early_hint(scope, receive, send):
    links = [b"</style.css>; rel=preload; as=style"]
    await send({"type": "http.response.early_hint", "links": links})
    await respond(send, body=b"after hint")


async def wait_disconnect(scope, receive, send):
    """Reads the body, then reports what receive() returns next (into a file).

    ``$BIVIO_TEST_FILE.waiting`` says ``receive`` once the body is read and the
    app is about to wait in receive().
    """
    await read_body(receive)
    with open(os.environ["BIVIO_TEST_FILE"] + ".waiting", "w") as f:
        f.write("receive")
    message = await receive()
    with open(os.environ["BIVIO_TEST_FILE"], "w") as f:
        f.write(message["type"])


async def slow(scope, receive, send):
    await asyncio.sleep(float(scope["query_string"] or b"1"))
    await respond(send, body=b"slow done")


async def gated(scope, receive, send):
    """In flight until the file ``$BIVIO_TEST_FILE.go`` exists (at most about a minute)."""
    go = os.environ["BIVIO_TEST_FILE"] + ".go"
    for _ in range(3000):
        if os.path.exists(go):
            break
        await asyncio.sleep(0.02)
    await respond(send, body=b"gate open")


async def mixed_case(scope, receive, send):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"Content-Type", b"text/plain"), (b"X-Custom-Header", b"Yes")]})
    await send({"type": "http.response.body", "body": b"mixed"})


async def state(scope, receive, send):
    scope["state"]["mutated"] = True  # must not leak into the next request
    await respond(send, body=json.dumps(sorted(scope["state"])).encode())


async def big(scope, receive, send):
    """Stream ``?N`` bytes (default 16 MiB) in 256 KiB pieces; a client that leaves is fine."""
    size = int(scope["query_string"] or 16 * 1024 * 1024)
    piece = b"b" * (256 * 1024)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream"),
                            (b"content-length", b"%d" % size)]})
    try:
        while size > 0:
            chunk = piece[:size]
            size -= len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": size > 0})
    except OSError:  # the client went away (ClientDisconnected): nothing to answer
        pass


ROUTES = {
    "/": hello,
    "/echo": echo,
    "/scope": scope_json,
    "/stream": stream,
    "/error-before": error_before,
    "/error-after": error_after,
    "/no-response": no_response,
    "/pathsend": pathsend,
    "/trailers": trailers,
    "/early-hint": early_hint,
    "/wait-disconnect": wait_disconnect,
    "/slow": slow,
    "/gated": gated,
    "/mixed-case": mixed_case,
    "/state": state,
    "/big": big,
}
