"""Prometheus metrics (``--metrics HOST:PORT``): counted in each worker, summed by the supervisor.

Why this shape: a worker is a separate process that comes and goes (crash,
``--limit-max-requests``, reload), so no worker can serve totals. Each worker
keeps plain counters (:class:`WorkerMetrics`, fed by the per-response hook of
:class:`~bivio.core.context.ServerContext` and by a few counters the protocols
bump on their error paths) and sends a :meth:`~WorkerMetrics.snapshot` to the
supervisor over the channel they already share: with every heartbeat, when a
scrape asks, and once more as it exits. The supervisor keeps each live
worker's latest snapshot and folds the last one of every worker that exits
into :class:`Totals`, so counters never go backwards and a dying worker loses
at most what it counted since its last report. prometheus_client's
multiprocess mode is not used: its files pile up as workers are recycled.

:class:`Exposition` turns the sums into metric families for
``prometheus_client``, whose HTTP server (a thread in the supervisor) answers
scrapes. A scrape asks the loop for fresh snapshots and waits at most
:data:`SCRAPE_WAIT`; request handling never waits for a scrape.

Names follow Prometheus' rules: base units (seconds, bytes), ``_total`` on
counters, and only bounded label values (no paths, no client addresses).
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..core.context import ResponseInfo, ServerContext

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                    7.5, 10.0)
"""Request-duration buckets, in seconds: OpenTelemetry's for ``http.server.request.duration``."""
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Event-loop lag buckets, in seconds: from "fine" to "--loop-warn fires" to "blocked"."""
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT",
                     "TRACE"})
"""Methods kept as label values; any other is ``_OTHER`` (OpenTelemetry's rule), so a
client inventing methods cannot grow the label set."""
SCRAPE_WAIT = 1.0
"""Seconds a scrape waits for the workers' fresh snapshots before using the last ones."""
_STATUS_CLASSES = tuple(f"{n}xx" for n in range(10))
_CONNECTION_KINDS = {"H1Connection": "http/1.1", "H2Connection": "h2",
                     "WebSocket": "websocket", "ProxyProtocolFront": "proxy"}


class Histogram:
    """Counts per bucket (not cumulative; the last is +Inf) and the sum of what was observed."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def dump(self) -> list[float]:
        return [*self.counts, self.total]


class WorkerMetrics:
    """What one worker counts; :meth:`snapshot` is what it reports to the supervisor."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        # One row per (protocol, interface, method, status // 100): the duration
        # histogram's per-bucket counts (+Inf last), then the durations' sum, then
        # the body bytes. One dict lookup and three adds per response; the request
        # counts and the per-(protocol, interface) histograms are derived from the
        # rows by :meth:`snapshot`, once a second rather than once a request.
        self.rows: dict[tuple[str, str, str, int], list[float]] = {}
        self.loop_lag = Histogram(LAG_BUCKETS)
        ctx.response_hooks.append(self.on_response)

    def on_response(self, info: ResponseInfo) -> None:
        """The per-response hook: runs for every response, so it does the least it can."""
        method = info.method
        key = (info.protocol, info.interface, method if method in METHODS else "_OTHER",
               info.status // 100)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = [0] * (len(DURATION_BUCKETS) + 1) + [0.0, 0]
        duration = info.duration
        row[bisect.bisect_left(DURATION_BUCKETS, duration)] += 1
        row[-2] += duration
        row[-1] += info.sent

    def snapshot(self) -> dict[str, Any]:
        """Every counter (cumulative since the worker started) and gauge, JSON-ready."""
        ctx = self.ctx
        kinds: dict[str, int] = {}
        websockets = 0
        for conn in list(ctx.connections):
            kind = _CONNECTION_KINDS.get(type(conn).__name__, "other")
            kinds[kind] = kinds.get(kind, 0) + 1
            if kind == "websocket":
                websockets += 1
            elif kind == "h2":
                websockets += conn.open_websockets  # type: ignore[attr-defined]
        paused = ctx.paused_seconds
        if ctx.paused_since is not None:
            paused += time.monotonic() - ctx.paused_since
        requests: dict[tuple[str, str, str, str], float] = {}
        durations: dict[tuple[str, str], list[float]] = {}
        body_bytes = 0
        for (protocol, interface, method, status), row in list(self.rows.items()):
            interface = interface if interface != "-" else "server"
            key = (protocol, interface, method, _STATUS_CLASSES[status])
            requests[key] = requests.get(key, 0) + sum(row[:-2])
            where = (protocol, interface)
            durations[where] = _add_lists(durations.get(where), row[:-1])  # type: ignore[assignment]
            body_bytes += row[-1]
        return {
            "requests": [[*key, n] for key, n in requests.items()],
            "durations": [[*key, dump] for key, dump in durations.items()],
            "response_body_bytes": body_bytes,
            "received_bytes": ctx.received_bytes,
            "limits": dict(ctx.limit_counts),
            "loop_lag": self.loop_lag.dump(),
            "loop_stalls": ctx.loop_stalls,
            "intake_paused_seconds": paused,
            "connections": kinds,
            "websockets": websockets,
            "threads": list(ctx.thread_pool()) if ctx.thread_pool is not None else None,
            "process": process_stats(),
        }


def process_stats() -> dict[str, float]:
    """This process's resident memory (bytes), CPU time (seconds) and open descriptors."""
    times = os.times()
    stats: dict[str, float] = {"cpu": times.user + times.system}
    try:
        with open("/proc/self/statm", "rb") as file:
            stats["rss"] = int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        stats["fds"] = len(os.listdir("/proc/self/fd"))
    except (OSError, ValueError, IndexError):  # not Linux: memory and fds are not reported
        pass
    return stats


# -- the supervisor's side -----------------------------------------------------------------------

_COUNTERS = ("response_body_bytes", "received_bytes", "loop_stalls", "intake_paused_seconds")


class Totals:
    """The counters of every worker that has exited: what live snapshots are added to."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = empty()

    def fold(self, snapshot: dict[str, Any]) -> None:
        merge(self.data, counters(snapshot))


def empty() -> dict[str, Any]:
    """Counters at zero, keyed by label tuples (the form :func:`merge` adds)."""
    return {"requests": {}, "durations": {}, "limits": {}, "loop_lag": None,
            **{name: 0 for name in _COUNTERS}}


def counters(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A worker's snapshot (JSON: label lists) as counters keyed by label tuples."""
    out = empty()
    out["requests"] = {tuple(key): n for *key, n in snapshot.get("requests", ())}
    out["durations"] = {tuple(key): dump for *key, dump in snapshot.get("durations", ())}
    out["limits"] = dict(snapshot.get("limits", {}))
    out["loop_lag"] = snapshot.get("loop_lag")
    for name in _COUNTERS:
        out[name] = snapshot.get(name, 0)
    return out


def merge(into: dict[str, Any], more: dict[str, Any]) -> None:
    """Add the counters ``more`` to ``into`` (both in :func:`empty`'s form)."""
    for key, n in more["requests"].items():
        into["requests"][key] = into["requests"].get(key, 0) + n
    for key, dump in more["durations"].items():
        into["durations"][key] = _add_lists(into["durations"].get(key), dump)
    for flag, n in more["limits"].items():
        into["limits"][flag] = into["limits"].get(flag, 0) + n
    into["loop_lag"] = _add_lists(into["loop_lag"], more["loop_lag"])
    for name in _COUNTERS:
        into[name] += more[name]


def _add_lists(a: list[float] | None, b: list[float] | None) -> list[float] | None:
    if a is None:
        return list(b) if b is not None else None
    if b is None:
        return a
    return [x + y for x, y in zip(a, b, strict=True)]


def aggregate(totals: Totals, live: list[tuple[int, str, dict[str, Any] | None]],
              restarts: dict[str, int]) -> dict[str, Any]:
    """The figures of one scrape: exited workers' counters plus the live ones' snapshots.

    ``live``: each live worker's number (its place, as in its process title),
    state and latest snapshot (None before its first report).
    """
    out = empty()
    merge(out, totals.data)
    states: dict[str, int] = {}
    connections: dict[str, int] = {}
    websockets = 0
    threads = busy = 0
    per_worker = []
    for number, state, snap in live:
        states[state] = states.get(state, 0) + 1
        if snap is None:
            continue
        merge(out, counters(snap))
        for kind, n in snap.get("connections", {}).items():
            connections[kind] = connections.get(kind, 0) + n
        websockets += snap.get("websockets", 0)
        if snap.get("threads"):
            threads += snap["threads"][0]
            busy += snap["threads"][1]
        per_worker.append((str(number), snap.get("process", {})))
    out.update(states=states, connections=connections, websockets=websockets,
               threads=threads, threads_busy=busy, per_worker=per_worker,
               restarts=dict(restarts))
    return out


class Exposition:
    """A ``prometheus_client`` collector: :func:`aggregate`'s figures as metric families.

    ``gather`` returns the figures (it asks the supervisor's loop; see the
    module docstring); called once per scrape, from the HTTP server's thread.
    """

    def __init__(self, gather: Callable[[], dict[str, Any]]) -> None:
        self.gather = gather

    def describe(self) -> list[Any]:
        return []  # registering must not scrape

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        data = self.gather()
        family: Any = CounterMetricFamily(
            "bivio_requests", "Responses sent, by protocol, interface (asgi, wsgi, static, "
            "or server: answered by bivio itself), method and status class.",
            labels=["protocol", "interface", "method", "status_class"])
        for key, n in sorted(data["requests"].items()):
            family.add_metric(list(key), n)
        yield family
        family = HistogramMetricFamily(
            "bivio_request_duration_seconds",
            "Time from the request head to the end of the response.",
            labels=["protocol", "interface"])
        for key, dump in sorted(data["durations"].items()):
            family.add_metric(list(key), _buckets(DURATION_BUCKETS, dump), dump[-1])
        yield family
        yield CounterMetricFamily("bivio_received_bytes", "Bytes read from clients (after "
                                  "TLS), every protocol.", value=data["received_bytes"])
        yield CounterMetricFamily("bivio_response_body_bytes", "Bytes of response bodies sent.",
                                  value=data["response_body_bytes"])
        family = GaugeMetricFamily("bivio_open_connections",
                                   "Client connections open now, by protocol.",
                                   labels=["protocol"])
        for kind, n in sorted(data["connections"].items()):
            family.add_metric([kind], n)
        yield family
        yield GaugeMetricFamily("bivio_open_websockets", "WebSocket sessions open now.",
                                value=data["websockets"])
        family = CounterMetricFamily(
            "bivio_limits_enforced", "Limits and timeouts enforced, by the flag that did it "
            "(timeout-send, limit-request-body, ...; malformed-request for bad input).",
            labels=["limit"])
        for flag, n in sorted(data["limits"].items()):
            family.add_metric([flag], n)
        yield family
        family = GaugeMetricFamily("bivio_workers", "Worker processes, by state.",
                                   labels=["state"])
        for state in ("starting", "ready", "stopping", "killing"):
            family.add_metric([state], data["states"].get(state, 0))
        yield family
        family = CounterMetricFamily(
            "bivio_worker_restarts", "Workers replaced, by reason (crash, blocked: the event "
            "loop stopped answering, max_requests, reload).", labels=["reason"])
        for reason in ("crash", "blocked", "max_requests", "reload"):
            family.add_metric([reason], data["restarts"].get(reason, 0))
        yield family
        yield GaugeMetricFamily("bivio_wsgi_threads", "Threads of the WSGI pools.",
                                value=data["threads"])
        yield GaugeMetricFamily("bivio_wsgi_threads_busy",
                                "WSGI threads running an application now.",
                                value=data["threads_busy"])
        yield CounterMetricFamily(
            "bivio_intake_paused_seconds", "Time workers stopped taking new requests "
            "because every WSGI thread was busy.", value=data["intake_paused_seconds"])
        family = HistogramMetricFamily(
            "bivio_event_loop_lag_seconds", "How late the workers' event loops ran a timer "
            "(the --loop-warn watchdog's, else the heartbeat's).")
        lag = data["loop_lag"]
        if lag is not None:
            family.add_metric([], _buckets(LAG_BUCKETS, lag), lag[-1])
            yield family
        yield CounterMetricFamily("bivio_event_loop_stalls",
                                  "Event-loop stalls longer than --loop-warn.",
                                  value=data["loop_stalls"])
        memory = GaugeMetricFamily("bivio_worker_resident_memory_bytes",
                                   "Resident memory of each worker.", labels=["worker"])
        cpu = CounterMetricFamily("bivio_worker_cpu_seconds",
                                  "CPU time (user and system) of each worker; starts again "
                                  "from 0 when a new worker takes the place.",
                                  labels=["worker"])
        fds = GaugeMetricFamily("bivio_worker_open_fds", "Open file descriptors of each worker.",
                                labels=["worker"])
        for number, stats in data["per_worker"]:
            if "rss" in stats:
                memory.add_metric([number], stats["rss"])
            if "fds" in stats:
                fds.add_metric([number], stats["fds"])
            cpu.add_metric([number], stats.get("cpu", 0.0))
        yield memory
        yield cpu
        yield fds


def _buckets(bounds: tuple[float, ...], dump: list[float]) -> list[tuple[str, float]]:
    """Per-bucket counts as prometheus' cumulative ``(le, count)`` pairs, +Inf last."""
    out = []
    running = 0.0
    for bound, n in zip((*bounds, float("inf")), dump[:-1], strict=True):
        running += n
        out.append(("+Inf" if bound == float("inf") else repr(bound), running))
    return out


def start_server(host: str, port: int, gather: Callable[[], dict[str, Any]]) -> Any:
    """Serve ``GET /metrics`` on ``host:port`` from a thread; returns the server (``shutdown()``).

    prometheus_client's server: content negotiation (OpenMetrics when asked),
    gzip, and a thread per scrape, so a slow scraper holds only its own thread.
    Raises OSError when the address cannot be bound.
    """
    from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Exposition(gather))  # type: ignore[arg-type]
    ProcessCollector(registry=registry)  # the supervisor's own process_* figures
    server, _thread = start_http_server(port, host, registry=registry)
    return server
