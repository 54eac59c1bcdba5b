"""bivio.process.metrics without sockets: counting, summing across workers, exposition.

And the worker's side of the channel: a snapshot bigger than what the channel
takes at once goes out whole and in order (half a line would garble the next).
"""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bivio.core.config import Config
from bivio.core.context import ResponseInfo, ServerContext
from bivio.process.metrics import (
    DURATION_BUCKETS,
    Exposition,
    Totals,
    WorkerMetrics,
    aggregate,
)
from bivio.process.supervisor import WorkerAgent


async def _handler(stream: Any) -> None:  # never called: no streams here
    raise AssertionError


def context() -> ServerContext:
    return ServerContext(Config(), _handler)


def response(status: int = 200, method: str = "GET", interface: str = "asgi",
             duration: float = 0.003, sent: int = 5, protocol: str = "http/1.1") -> ResponseInfo:
    return ResponseInfo(("127.0.0.1", 5000), method, "/", "1.1", status, sent, duration,
                        protocol, interface)


class _Conn:
    def pause_intake(self) -> None:
        pass

    def resume_intake(self) -> None:
        pass


class H1Connection(_Conn):  # the metrics classify connections by their type's name
    pass


class WebSocket(_Conn):
    pass


class H2Connection(_Conn):
    open_websockets = 2


def test_a_response_is_counted_by_protocol_interface_method_and_class() -> None:
    ctx = context()
    metrics = WorkerMetrics(ctx)
    assert ctx.response_hooks == [metrics.on_response]
    for info in (response(), response(), response(404), response(method="BREW"),
                 response(431, method="-", interface="-"), response(duration=0.2, sent=10)):
        ctx.record(*(getattr(info, f) for f in info.__slots__))
    snap = metrics.snapshot()
    requests = {tuple(row[:-1]): row[-1] for row in snap["requests"]}
    assert requests == {
        ("http/1.1", "asgi", "GET", "2xx"): 3,
        ("http/1.1", "asgi", "GET", "4xx"): 1,
        ("http/1.1", "asgi", "_OTHER", "2xx"): 1,  # an invented method cannot add labels
        ("http/1.1", "server", "_OTHER", "4xx"): 1,  # bivio answered itself
    }
    durations = {tuple(row[:2]): row[2] for row in snap["durations"]}
    asgi = durations[("http/1.1", "asgi")]
    assert len(asgi) == len(DURATION_BUCKETS) + 2  # buckets, +Inf, sum
    assert asgi[0] == 4 and asgi[DURATION_BUCKETS.index(0.25)] == 1
    assert snap["response_body_bytes"] == 5 * 5 + 10
    json.dumps(snap)  # what the channel carries


def test_the_snapshot_reads_the_gauges_and_the_protocol_counters() -> None:
    ctx = context()
    metrics = WorkerMetrics(ctx)
    ctx.connections.update({H1Connection(), H1Connection(), WebSocket(), H2Connection()})  # type: ignore[arg-type]
    ctx.received_bytes = 1234
    ctx.limit_hit("timeout-send")
    ctx.limit_hit("timeout-send")
    ctx.thread_pool = lambda: (6, 2)
    ctx.pause_intake()
    snap = metrics.snapshot()
    assert snap["connections"] == {"http/1.1": 2, "websocket": 1, "h2": 1}
    assert snap["websockets"] == 1 + 2  # one over HTTP/1.1, two on the HTTP/2 connection
    assert snap["received_bytes"] == 1234
    assert snap["limits"] == {"timeout-send": 2}
    assert snap["threads"] == [6, 2]
    assert snap["intake_paused_seconds"] >= 0 and ctx.paused_since is not None
    ctx.resume_intake()
    assert ctx.paused_since is None
    assert metrics.snapshot()["process"]["rss"] > 0


def _snapshot(requests: int, body: int = 0, connections: int = 0) -> dict[str, Any]:
    ctx = context()
    metrics = WorkerMetrics(ctx)
    for _ in range(requests):
        metrics.on_response(response(sent=body))
    snap = metrics.snapshot()
    snap["connections"] = {"http/1.1": connections}
    return snap


def test_an_exited_workers_counts_stay_and_its_gauges_go() -> None:
    totals = Totals()
    old, live = _snapshot(7, body=1, connections=3), _snapshot(5, body=1, connections=2)
    before = aggregate(totals, [(1, "ready", old), (2, "ready", live)], {})
    assert sum(before["requests"].values()) == 12
    assert before["connections"] == {"http/1.1": 5}
    totals.fold(old)  # worker 1 exits; its last report stays in the totals
    after = aggregate(totals, [(2, "ready", live), (1, "starting", None)], {"crash": 1})
    assert sum(after["requests"].values()) == 12
    assert after["response_body_bytes"] == 12
    assert after["connections"] == {"http/1.1": 2}
    assert after["states"] == {"ready": 1, "starting": 1}
    assert [number for number, _ in after["per_worker"]] == ["2"]
    assert after["restarts"] == {"crash": 1}


def test_the_exposition_follows_prometheus_naming_and_cumulative_buckets() -> None:
    data = aggregate(Totals(), [(1, "ready", _snapshot(3))], {"reload": 2})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Exposition(lambda: data))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["bivio_requests"].type == "counter"
    assert families["bivio_request_duration_seconds"].type == "histogram"
    buckets = [s for s in families["bivio_request_duration_seconds"].samples
               if s.name.endswith("_bucket")]
    values = [s.value for s in buckets]
    assert values == sorted(values) and buckets[-1].labels["le"] == "+Inf" and values[-1] == 3
    restarts = {s.labels["reason"]: s.value for s in families["bivio_worker_restarts"].samples}
    assert restarts == {"crash": 0, "blocked": 0, "max_requests": 0, "reload": 2}
    for name, family in families.items():
        assert name.startswith("bivio_")
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)


class _Channel:
    """Takes ``room`` bytes, then would block until ``room`` is raised."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.got = b""

    def fileno(self) -> int:
        return 99

    def send(self, data: bytes) -> int:
        if self.room <= 0:
            raise BlockingIOError
        taken = bytes(data[:self.room])
        self.room -= len(taken)
        self.got += taken
        return len(taken)


class _Loop:
    def __init__(self) -> None:
        self.writers: dict[int, Any] = {}

    def add_writer(self, fd: int, callback: Any) -> None:
        self.writers[fd] = callback

    def remove_writer(self, fd: int) -> None:
        self.writers.pop(fd)


def test_lines_the_channel_cannot_take_wait_whole_and_in_order() -> None:
    channel = _Channel(room=10)
    agent = WorkerAgent(channel, 1.0, None)  # type: ignore[arg-type]
    agent.loop = _Loop()  # type: ignore[assignment]
    agent._send(b"metrics " + b"x" * 40 + b"\n")
    agent._send(b"beat\n")
    assert channel.got == b"metrics xx"
    assert 99 in agent.loop.writers  # type: ignore[attr-defined]
    channel.room = 1000
    agent.loop.writers[99]()  # type: ignore[attr-defined]
    assert channel.got == b"metrics " + b"x" * 40 + b"\nbeat\n"
    assert not agent.loop.writers  # type: ignore[attr-defined]
