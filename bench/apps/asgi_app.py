"""The ASGI benchmark app: one module for every ASGI server, so only the server varies.

Routes: ``/`` hello, ``/64k`` a 64 KiB body, ``/post`` reads the whole request
body and answers its length, ``/sleep`` awaits ``asyncio.sleep(0.01)`` first;
a WebSocket on any path echoes every message.
"""

import asyncio

HELLO = b"Hello, world!"
BIG = b"x" * (64 * 1024)
TEXT = [(b"content-type", b"text/plain")]
START = {"type": "http.response.start", "status": 200, "headers": TEXT}
HELLO_BODY = {"type": "http.response.body", "body": HELLO}
BIG_BODY = {"type": "http.response.body", "body": BIG}


async def app(scope, receive, send):
    kind = scope["type"]
    if kind == "http":
        await _http(scope, receive, send)
    elif kind == "websocket":
        await _echo(receive, send)
    elif kind == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _http(scope, receive, send):
    path = scope["path"]
    if path == "/":
        await send(START)
        await send(HELLO_BODY)
    elif path == "/64k":
        await send(START)
        await send(BIG_BODY)
    elif path == "/post":
        size = 0
        more = True
        while more:
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        await send(START)
        await send({"type": "http.response.body", "body": b"%d" % size})
    elif path == "/sleep":
        await asyncio.sleep(0.01)
        await send(START)
        await send(HELLO_BODY)
    else:
        await send({"type": "http.response.start", "status": 404, "headers": TEXT})
        await send({"type": "http.response.body", "body": b"not found"})


async def _echo(receive, send):
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        if message.get("bytes") is not None:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
        else:
            await send({"type": "websocket.send", "text": message["text"]})
