"""The app of tests/e2e/test_systemd.py.

``/env`` answers this process's pid and whether it sees systemd's socket
activation variables (it must not: bivio removes them). ``/block?S`` blocks the
event loop for S seconds and tells the test's notify socket when the block
starts and ends (``X_BLOCK=start``/``end``), so the test can see that no
``WATCHDOG=1`` comes from a blocked loop. Lifespan startup waits while the file
``$SYSTEMD_APP_GATE`` exists (a worker that is slow to start).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time


def _tell(text: str) -> None:
    address = os.environ["NOTIFY_SOCKET"]
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(text.encode(), address)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                gate = os.environ.get("SYSTEMD_APP_GATE")
                while gate and os.path.exists(gate):
                    await asyncio.sleep(0.02)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/block":
        _tell("X_BLOCK=start")
        time.sleep(float(scope["query_string"] or b"1"))
        _tell("X_BLOCK=end")
    body = json.dumps({"pid": os.getpid(),
                       "listen": sorted(k for k in os.environ if k.startswith("LISTEN_")),
                       "notify": "NOTIFY_SOCKET" in os.environ}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
