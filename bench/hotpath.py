"""The HTTP/1.1 + ASGI (or WSGI) hot path in one process, without sockets: for profiling.

    python -m bench.hotpath --requests 20000            # wall time per request
    python -m bench.hotpath --requests 20000 --wsgi     # the WSGI adapter and its threads
    valgrind --tool=callgrind python -m bench.hotpath --requests 20000
    python -m bench.hotpath --requests 20000 --profile  # cProfile, by own time

``bench/counts.py`` counts a real server under real load, which is the figure
that matters, but the number of requests a loop iteration serves depends on
timing, so two runs differ by about 1 % and a change that saves less than that
cannot be told from noise. Here the same requests are fed to
``H1Connection.data_received`` over in-memory transports on a uvloop loop, the
handlers run as they do in the server (a Task per request, the bench's ASGI
hello app), and nothing depends on timing: the difference between two
callgrind runs with different request counts is exact, so each change to the
hot path can be measured on its own. The kernel and the socket layer are not
in it; counts.py has them.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import time
from typing import Any

from bivio.adapters.asgi import ASGIHandler
from bivio.adapters.wsgi import WSGIHandler
from bivio.core.config import Config
from bivio.core.context import ServerContext
from bivio.protocols.http1 import H1Connection

from .apps import wsgi_app
from .apps.asgi_app import app

REQUEST = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: h2load nghttp2/1.52.0\r\n"
           b"Accept: */*\r\n\r\n")
EXPECTED = b"Hello, world!"


class _Transport(asyncio.Transport):
    """Counts what is written; everything else a connection asks of it is a no-op."""

    def __init__(self, progress: _Progress) -> None:
        super().__init__()
        self.responses = 0
        self.progress = progress
        self._extra = {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if bytes(data).endswith(EXPECTED):
            self.responses += 1
            self.progress.one()

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        pass


class _Progress:
    """Responses written so far; wakes the feeder once a batch is answered (WSGI threads)."""

    def __init__(self) -> None:
        self.done = 0
        self.target = 0
        self.event = asyncio.Event()

    def one(self) -> None:
        self.done += 1
        if self.done >= self.target:
            self.event.set()


async def serve(requests: int, connections: int, wsgi: bool = False) -> int:
    """Feed ``requests`` keep-alive requests round-robin over ``connections``; return the
    number of complete hello responses written."""
    config = Config.from_options({}, env={})
    handler: Any = WSGIHandler(wsgi_app.app, config) if wsgi else ASGIHandler(app)
    ctx = ServerContext(config, handler)
    handler.bind(ctx)
    ctx.loop = asyncio.get_running_loop()  # as the server sets it
    progress = _Progress()
    transports = []
    for _ in range(connections):
        transport = _Transport(progress)
        conn = H1Connection(ctx)
        conn.connection_made(transport)
        transports.append((transport, conn))
    sent = 0
    while sent < requests:
        for _, conn in transports[:requests - sent]:
            conn.data_received(REQUEST)
            sent += 1
        if wsgi:  # the app runs on the pool's threads: wait for this batch's answers
            progress.target = sent
            progress.event.clear()
            if progress.done < sent:
                await progress.event.wait()
        await asyncio.sleep(0)  # the handlers' Tasks run, as in one loop iteration
        await asyncio.sleep(0)  # and their done-callbacks
    handler.shutdown()
    return sum(t.responses for t, _ in transports)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--profile", action="store_true", help="cProfile, by own time")
    parser.add_argument("--wsgi", action="store_true",
                        help="the WSGI adapter (bench/apps/wsgi_app.py) on its thread pool")
    args = parser.parse_args(argv)
    import uvloop

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    profile = cProfile.Profile() if args.profile else None
    start = time.perf_counter()
    if profile is not None:
        profile.enable()
    done = loop.run_until_complete(serve(args.requests, args.connections, args.wsgi))
    if profile is not None:
        profile.disable()
    elapsed = time.perf_counter() - start
    loop.close()
    if done != args.requests:
        print(f"hotpath: {done} of {args.requests} responses", file=sys.stderr)
        return 1
    print(f"{args.requests} requests, {elapsed / args.requests * 1e6:.2f} µs/req (in-process)")
    if profile is not None:
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
