"""One process's graceful shutdown, in-process over real sockets: the moment it begins.

The whole shutdown seen from outside (signals, workers, in-flight requests) is
in ``tests/e2e/test_workers.py`` and ``tests/e2e/test_tls.py``; this file pins
the one ordering those runs hit only now and then.
"""

from __future__ import annotations

import asyncio
import socket

import pytest
from conftest import read_response

from bivio.core.config import Config
from bivio.process.server import Server

LOOPS = ["asyncio", "uvloop"]


async def hello(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def run_on(kind: str, coro) -> object:
    if kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, 30))
    finally:
        loop.close()


@pytest.mark.parametrize("kind", LOOPS)
def test_a_connection_accepted_as_the_stop_arrives_is_answered(kind: str) -> None:
    """The stop (a supervisor's ``stop`` line, a signal) and a new connection reach the
    loop in one iteration, the stop first. asyncio accepts in the listener's callback
    but makes the transport in a task one tick later; a server closed in between made
    that task fail and the connection closed unanswered (a rolling restart under load
    lost a request now and then: a reset in the client's TLS handshake). Shutdown
    must let the accepted connection in, answer it, then finish."""
    server = Server(hello, Config.from_options({"lifespan": "off"}, env={}))
    listening = socket.create_server(("127.0.0.1", 0))
    client = socket.socket()
    trigger, poke = socket.socketpair()

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        serving = asyncio.create_task(server.serve(listening))
        while not server.started:
            await asyncio.sleep(0)

        def on_trigger() -> None:
            loop.remove_reader(trigger.fileno())
            server.stop()

        def both_at_once() -> None:
            # The loop does not poll while this runs: the trigger becomes readable,
            # then the connection is made (the kernel completes it) and its request
            # sent, so the next poll reports both, in that order.
            poke.send(b"x")
            client.connect(listening.getsockname())
            client.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            answer.append(loop.run_in_executor(None, read_response, client))

        answer: list[asyncio.Future[bytes]] = []
        loop.add_reader(trigger.fileno(), on_trigger)
        loop.call_soon(both_at_once)
        await serving
        return await answer[0]

    try:
        response = run_on(kind, main())
    finally:
        for sock in (client, trigger, poke, listening):
            sock.close()
    assert response.startswith(b"HTTP/1.1 200 "), response
    assert response.endswith(b"\r\n\r\nok")
