"""The built-in load generator: asyncio, keep-alive HTTP/1.1, no external program.

Each of ``concurrency`` connections sends one GET, waits for the whole answer
(httptools parses it, so Content-Length and chunked bodies both work), and
sends the next, for ``duration`` seconds. Latency is measured per request from
the write to the last byte. The generator runs on one core, so it measures
its own CPU: when it used nearly all of that core, the numbers are *its*
limit, not the server's, and the report says so.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass, field

import httptools

CLIENT_LIMIT = 0.9
"""Fraction of one core above which the load generator, not the server, is the limit."""


@dataclass
class Answer:
    """One response as the comparison's check sees it."""

    status: int
    length: int
    location: str = ""


@dataclass
class RunResult:
    """One measurement: a path at a concurrency against one server."""

    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies: list[float] = field(default_factory=list, repr=False)
    statuses: Counter[int] = field(default_factory=Counter)
    client_cpu: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        """The q-th latency percentile in milliseconds (nearest rank)."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
        return ordered[index] * 1000

    @property
    def client_limited(self) -> bool:
        return self.client_cpu >= CLIENT_LIMIT

    def as_dict(self) -> dict[str, object]:
        return {"concurrency": self.concurrency, "rps": round(self.rps, 1),
                "p50_ms": round(self.percentile(50), 3), "p99_ms": round(self.percentile(99), 3),
                "errors": self.errors, "requests": self.requests,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "client_cpu": round(self.client_cpu, 3), "client_limited": self.client_limited}


class _Client(asyncio.Protocol):
    """One keep-alive connection; ``request()`` resolves with the next whole response."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Answer] | None = None
        self.length = 0
        self.location = ""
        self.keep_alive = True
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError("the server closed the connection"))

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.length = 0
        self.location = ""

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"location":
            self.location = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.length += len(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(Answer(self.parser.get_status_code(), self.length,
                                          self.location))

    def request(self, data: bytes) -> asyncio.Future[Answer]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def request_bytes(path: str, port: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "User-Agent: bivio-compare"]
    if not any(name.lower() == "host" for name, _ in headers):  # --header 'Host: ...' wins
        lines.insert(1, f"Host: 127.0.0.1:{port}")
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _connect(port: int) -> _Client:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(_Client, "127.0.0.1", port)
    return client


async def fetch(port: int, path: str, headers: list[tuple[str, str]],
                timeout: float = 30.0) -> Answer:
    """One request on a new connection: what the comparison checks before it measures."""
    client = await asyncio.wait_for(_connect(port), timeout)
    try:
        return await asyncio.wait_for(client.request(request_bytes(path, port, headers)), timeout)
    finally:
        client.close()


async def measure(port: int, path: str, headers: list[tuple[str, str]], concurrency: int,
                  duration: float, expect: int, timeout: float = 30.0) -> RunResult:
    """``concurrency`` keep-alive connections sending GET ``path`` for ``duration`` seconds.

    An answer with another status than ``expect`` (the one every mode gave when
    checked) or a failed connection counts as an error, never as a request served.
    """
    data = request_bytes(path, port, headers)
    result = RunResult(concurrency, 0, 0, 0.0)
    cpu0, start = time.process_time(), time.perf_counter()
    end = start + duration

    async def one_connection() -> None:
        client: _Client | None = None
        while time.perf_counter() < end:
            try:
                if client is None or client.closed or not client.keep_alive:
                    if client is not None:
                        client.close()
                    client = await asyncio.wait_for(_connect(port), timeout)
                t0 = time.perf_counter()
                answer = await asyncio.wait_for(client.request(data), timeout)
                elapsed = time.perf_counter() - t0
            except (OSError, ConnectionError, asyncio.TimeoutError):
                result.errors += 1
                if client is not None:
                    client.close()
                client = None
                await asyncio.sleep(0.01)  # a refused connection must not spin the loop
                continue
            result.statuses[answer.status] += 1
            if answer.status == expect:
                result.requests += 1
                result.latencies.append(elapsed)
            else:
                result.errors += 1
        if client is not None:
            client.close()

    await asyncio.gather(*(one_connection() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - start
    result.client_cpu = (time.process_time() - cpu0) / result.seconds if result.seconds else 0.0
    return result
