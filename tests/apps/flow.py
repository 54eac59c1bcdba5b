"""Apps for the HTTP/1.1 end-to-end tests: flow control, disconnects, body messages.

Routes (``app``):

- ``/info``: reads the body, answers JSON with the method, http_version, the
  body length and sha256, the number of ``http.request`` messages and the
  client address (to tell connections apart).
- ``/hold``: does not read the body until the file ``$BIVIO_TEST_FILE.go``
  exists, then reads it and answers like ``/info``.
- ``/slow-read``: reads the body one message at a time, sleeping between
  reads, then answers like ``/info``.
- ``/big?MIB``: streams MIB MiB (default 200) in 64 KiB chunks with a
  ``content-length``; ``COUNTER["chunks"]`` counts the chunks sent so far and
  ``COUNTER["waiting"]`` is true while a ``send()`` is held back (the client
  does not read: the server's write buffer is full).
- ``/count``: the counters of ``/big`` as JSON.
- ``/stream-forever``: streams chunks until the client leaves, then writes what
  happened (``OSError:<class>`` or ``http.disconnect``) into ``$BIVIO_TEST_FILE``.
- ``/watch-disconnect``: starts a streaming response and waits on ``receive()``;
  writes the message it got into ``$BIVIO_TEST_FILE``.
- ``/receive-after``: reads the body, then checks that ``receive()`` blocks
  until the response is complete and then returns ``http.disconnect`` (result
  written as JSON into ``$BIVIO_TEST_FILE``).
- ``/record``: writes the message types receive() returned into ``$BIVIO_TEST_FILE``.
- ``/chunks``: a streamed response in three parts (chunked on HTTP/1.1).
- ``/pattern?N``: answers N bytes of a known pattern in one message.
- ``/slow?S``: sleeps S seconds, then answers ``slow done``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os

CHUNK = 64 * 1024
COUNTER = {"chunks": 0, "waiting": False}


def pattern_chunk(i: int) -> bytes:
    """Chunk ``i`` of ``/big``: distinct per index so reordering or loss shows."""
    return bytes([i % 251]) * (CHUNK - 4) + i.to_bytes(4, "big")


async def _read_all(receive) -> tuple[bytes, int]:
    body = bytearray()
    messages = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ConnectionError(message["type"])
        messages += 1
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return bytes(body), messages


async def _json(send, data, status=200) -> None:
    body = json.dumps(data).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _summary(scope, body: bytes, messages: int) -> dict:
    return {
        "method": scope["method"],
        "http_version": scope["http_version"],
        "length": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        "messages": messages,
        "client": scope["client"],
    }


async def info(scope, receive, send):
    body, messages = await _read_all(receive)
    await _json(send, _summary(scope, body, messages))


async def hold(scope, receive, send):
    go = os.environ["BIVIO_TEST_FILE"] + ".go"
    for _ in range(3000):  # at most about a minute
        if os.path.exists(go):
            break
        await asyncio.sleep(0.02)
    body, messages = await _read_all(receive)
    await _json(send, _summary(scope, body, messages))


async def slow_read(scope, receive, send):
    body = bytearray()
    messages = 0
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        messages += 1
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
        await asyncio.sleep(0.002)
    await _json(send, _summary(scope, bytes(body), messages))


async def big(scope, receive, send):
    mib = int(scope["query_string"] or b"200")
    chunks = mib * 1024 * 1024 // CHUNK
    COUNTER["chunks"], COUNTER["waiting"] = 0, False
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream"),
                            (b"content-length", str(chunks * CHUNK).encode())]})
    for i in range(chunks):
        sending = asyncio.ensure_future(send({"type": "http.response.body",
                                              "body": pattern_chunk(i),
                                              "more_body": i < chunks - 1}))
        await asyncio.sleep(0)  # the send runs as far as it can; it ends now unless held
        if not sending.done():
            COUNTER["waiting"] = True
            try:
                await sending
            finally:
                COUNTER["waiting"] = False
        sending.result()
        COUNTER["chunks"] = i + 1


async def count(scope, receive, send):
    await _json(send, COUNTER)


async def stream_forever(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    outcome = "finished"
    try:
        for _ in range(100_000):  # bounded: about 100 s at most
            await send({"type": "http.response.body", "body": b"x" * 1024, "more_body": True})
            await asyncio.sleep(0.001)
    except OSError as exc:
        outcome = "OSError:" + type(exc).__name__
    with open(os.environ["BIVIO_TEST_FILE"], "w") as f:
        f.write(outcome)
    if outcome == "finished":
        await send({"type": "http.response.body", "body": b""})


async def watch_disconnect(scope, receive, send):
    await _read_all(receive)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"started", "more_body": True})
    message = await receive()
    with open(os.environ["BIVIO_TEST_FILE"], "w") as f:
        f.write(message["type"])


async def receive_after(scope, receive, send):
    body, messages = await _read_all(receive)
    events: list[str] = []
    pending = asyncio.ensure_future(receive())
    pending.add_done_callback(lambda _: events.append("receive returned"))
    for _ in range(20):  # every ready callback runs: nothing may complete the receive
        await asyncio.sleep(0)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    events.append("completing")
    await send({"type": "http.response.body", "body": b"done"})
    # It returned only once the response was complete (not before, not never).
    blocked = events[:1] == ["completing"]
    try:
        after = await asyncio.wait_for(pending, 10)
        again = await asyncio.wait_for(receive(), 10)
    except asyncio.TimeoutError:
        after = again = {"type": "timeout"}
    with open(os.environ["BIVIO_TEST_FILE"], "w") as f:
        json.dump({"blocked": blocked, "after": after["type"], "again": again["type"],
                   "length": len(body), "messages": messages}, f)


async def record(scope, receive, send):
    """Writes the types of the messages receive() returns (until the body ends or
    the client leaves) into $BIVIO_TEST_FILE, then answers."""
    types = []
    while True:
        message = await receive()
        types.append(message["type"])
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
    with open(os.environ["BIVIO_TEST_FILE"], "w") as f:
        f.write(" ".join(types))
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"recorded"})


async def chunks(scope, receive, send):
    """A streamed response of three parts, no content-length."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    for i in range(3):
        await send({"type": "http.response.body", "body": b"part%d;" % i, "more_body": True})
        await asyncio.sleep(0.01)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def pattern(scope, receive, send):
    n = int(scope["query_string"] or b"1000")
    body = (b"0123456789abcdef" * (n // 16 + 1))[:n]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def slow(scope, receive, send):
    await asyncio.sleep(float(scope["query_string"] or b"1"))
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"slow done"})


async def path_echo(scope, receive, send):
    body = scope["path"].encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


ROUTES = {
    "/info": info,
    "/hold": hold,
    "/slow-read": slow_read,
    "/big": big,
    "/count": count,
    "/stream-forever": stream_forever,
    "/watch-disconnect": watch_disconnect,
    "/receive-after": receive_after,
    "/pattern": pattern,
    "/record": record,
    "/chunks": chunks,
    "/slow": slow,
}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    await ROUTES.get(scope["path"], path_echo)(scope, receive, send)
