"""Apps for the supervisor tests (tests/e2e/test_workers.py).

Every response carries the worker's pid so a test can tell workers apart.
``/block`` blocks the event loop (a synchronous sleep in async code), the bug
``--timeout-worker-healthcheck`` exists for; ``/slow?S`` sleeps without blocking.
"""

from __future__ import annotations

import asyncio
import os
import time


async def _text(send, body: bytes) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def block_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # the stack dump in the log must point here


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/block":
        block_the_loop(float(scope["query_string"] or b"600"))
    elif scope["path"] == "/slow":
        print(f"slow request started in [{os.getpid()}]", flush=True)
        await asyncio.sleep(float(scope["query_string"] or b"1"))
    await _text(send, str(os.getpid()).encode())
