"""``--metrics``: Prometheus metrics summed over the workers, scraped over real sockets.

The figures are checked after a known load (so many 2xx, 4xx, POSTs, a 431
for too many header fields), across two workers; a worker killed with
SIGKILL or recycled by ``--limit-max-requests`` leaves the totals whole; the
WSGI pool's busy threads and paused intake, the event loop's stalls, open
connections and WebSockets show while they happen. Then a real Prometheus
(Debian's package) runs docs/metrics.md's scrape config against bivio and the
same totals come back through its HTTP API.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, Running, fill_placeholders, free_port, start_bivio, wait_until
from prometheus_client.parser import text_string_to_metric_families

# Imported from the project's root: with --app-dir tests/apps, the test app
# tests/apps/h2.py would stand in for the h2 package.
ASGI_APP = "tests.apps.metrics_app:app"
WSGI_APP = "tests.apps.metrics_app:wsgi"
METRICS_AT = re.compile(r"Metrics on (http://\S+/metrics)")
PROMETHEUS = shutil.which("prometheus")


def start(*args: str) -> tuple[Running, str]:
    running = start_bivio("--metrics", "127.0.0.1:0", "--no-access-log", *args)
    match = METRICS_AT.search(running.output)
    assert match, running.output
    url = match.group(1)
    workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 1
    # "serving on" comes with the first ready worker: wait for all of them.
    assert wait_until(lambda: total(scrape(url), "bivio_workers", state="ready") == workers)
    return running, url


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one scrape: (name, sorted labels) -> value."""
    text = httpx.get(url, timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum of ``name`` over the samples whose labels include ``labels``."""
    return sum(value for (n, lab), value in samples.items()
               if n == name and all(dict(lab).get(k) == v for k, v in labels.items()))


def request(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


def get(port: int, path: str = "/") -> bytes:
    return request(port, f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode())


def known_load(port: int) -> None:
    """10 GET 200, 3 GET 404, 2 POST 200, 1 request refused with 431."""
    for _ in range(10):
        assert get(port).startswith(b"HTTP/1.1 200")
    for _ in range(3):
        assert get(port, "/missing").startswith(b"HTTP/1.1 404")
    for _ in range(2):
        assert request(port, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n"
                             b"Connection: close\r\n\r\nhi").startswith(b"HTTP/1.1 200")
    fields = b"".join(b"x-%d: y\r\n" % i for i in range(20))
    assert request(port, b"GET / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n") \
        .startswith(b"HTTP/1.1 431")


def test_counts_the_known_load_over_two_workers() -> None:
    running, url = start(ASGI_APP, "--workers", "2", "--limit-request-fields", "10")
    try:
        known_load(running.port)
        samples = scrape(url)
        assert total(samples, "bivio_requests_total", interface="asgi", method="GET",
                     status_class="2xx") == 10
        assert total(samples, "bivio_requests_total", interface="asgi", status_class="4xx") == 3
        assert total(samples, "bivio_requests_total", method="POST") == 2
        assert total(samples, "bivio_requests_total", interface="server",
                     status_class="4xx") == 1
        assert total(samples, "bivio_limits_enforced_total", limit="limit-request-fields") == 1
        assert total(samples, "bivio_request_duration_seconds_count", interface="asgi") == 15
        assert total(samples, "bivio_request_duration_seconds_bucket", interface="asgi",
                     le="+Inf") == 15
        assert total(samples, "bivio_received_bytes_total") > 15 * len(b"GET / HTTP/1.1\r\n")
        assert total(samples, "bivio_response_body_bytes_total") > 0
        assert total(samples, "bivio_workers", state="ready") == 2
        assert {lab for (n, lab) in samples if n == "bivio_worker_resident_memory_bytes"} == \
            {(("worker", "1"),), (("worker", "2"),)}
        assert all(v > 0 for (n, _), v in samples.items()
                   if n == "bivio_worker_resident_memory_bytes")
        # Lag is sampled with each heartbeat (about once a second): wait for the second one.
        assert wait_until(lambda: total(scrape(url), "bivio_event_loop_lag_seconds_count") > 0)
        assert total(samples, "process_resident_memory_bytes") > 0  # the supervisor's own
    finally:
        running.stop()


def test_http2_and_static_files_are_counted_apart(tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("hello")
    running, url = start(ASGI_APP, "--static", f"/files/={tmp_path}")
    try:
        with httpx.Client(http1=False, http2=True, base_url=f"http://127.0.0.1:{running.port}",
                          timeout=10) as client:  # h2c with prior knowledge
            for _ in range(4):
                assert client.get("/").http_version == "HTTP/2"
            assert client.get("/missing").status_code == 404
        assert get(running.port, "/files/hello.txt").endswith(b"hello")
        samples = scrape(url)
        assert total(samples, "bivio_requests_total", protocol="h2", interface="asgi") == 5
        assert total(samples, "bivio_requests_total", protocol="h2", status_class="4xx") == 1
        assert total(samples, "bivio_requests_total", protocol="http/1.1",
                     interface="static", status_class="2xx") == 1
        assert total(samples, "bivio_request_duration_seconds_count", protocol="h2") == 5
    finally:
        running.stop()


def test_open_connections_and_websockets_are_gauges() -> None:
    from websockets.sync.client import connect

    running, url = start(ASGI_APP)
    socks = []
    try:
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", running.port), timeout=10)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            socks.append(sock)
        with connect(f"ws://127.0.0.1:{running.port}/ws", open_timeout=10):
            assert wait_until(lambda: (
                total(s := scrape(url), "bivio_open_connections", protocol="http/1.1") == 3
                and total(s, "bivio_open_connections", protocol="websocket") == 1
                and total(s, "bivio_open_websockets") == 1))
        for sock in socks:
            sock.close()
        assert wait_until(lambda: total(scrape(url), "bivio_open_connections") == 0
                          and total(scrape(url), "bivio_open_websockets") == 0)
    finally:
        for sock in socks:
            sock.close()
        running.stop()


def test_a_killed_worker_leaves_the_totals_whole_and_counts_a_crash() -> None:
    running, url = start(ASGI_APP, "--workers", "2")
    try:
        pids = {int(get(running.port).split(b"\r\n\r\n", 1)[1]) for _ in range(20)}
        for _ in range(10):
            get(running.port)
        before = total(scrape(url), "bivio_requests_total")
        assert before >= 30
        victim = next(iter(pids))
        os.kill(victim, signal.SIGKILL)
        assert wait_until(lambda: total(scrape(url), "bivio_worker_restarts_total",
                                        reason="crash") == 1
                          and total(scrape(url), "bivio_workers", state="ready") == 2)
        samples = scrape(url)
        assert total(samples, "bivio_requests_total") == before
        get(running.port)
        assert total(scrape(url), "bivio_requests_total") == before + 1
    finally:
        running.stop()


def test_a_recycled_worker_reports_its_last_counts() -> None:
    running, url = start(ASGI_APP, "--limit-max-requests", "5")
    try:
        first = get(running.port).split(b"\r\n\r\n", 1)[1]
        for _ in range(7):
            get(running.port)
        assert wait_until(lambda: total(scrape(url), "bivio_worker_restarts_total",
                                        reason="max_requests") >= 1, timeout=60)
        assert running.wait_for_output(f"Worker [{first.decode()}] stopped", timeout=60)
        assert total(scrape(url), "bivio_requests_total") == 8
    finally:
        running.stop()


def test_busy_wsgi_threads_and_paused_intake(tmp_path: Path) -> None:
    """The only thread is held; a flood of requests (more than QUEUE_BEFORE_PAUSE wait
    for it) pauses intake; once the thread is free every request is answered."""
    from bivio.adapters.wsgi import QUEUE_BEFORE_PAUSE

    running, url = start(WSGI_APP, "--threads", "1")
    gate = tmp_path / "release"
    held = threading.Thread(target=get, args=(running.port, f"/hold?{gate}"), daemon=True)
    flood = [socket.create_connection(("127.0.0.1", running.port), timeout=30)
             for _ in range(QUEUE_BEFORE_PAUSE + 20)]
    try:
        held.start()
        assert wait_until(lambda: total(scrape(url), "bivio_wsgi_threads_busy") == 1)
        assert total(scrape(url), "bivio_wsgi_threads") == 1
        assert total(scrape(url), "bivio_intake_paused_seconds_total") == 0
        for sock in flood:  # no thread for them: they queue, and past the mark intake pauses
            sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert wait_until(lambda: total(scrape(url), "bivio_intake_paused_seconds_total") > 0)
        gate.touch()
        held.join(30)
        for sock in flood:
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            assert data.startswith(b"HTTP/1.1 200")
        samples = scrape(url)
        assert total(samples, "bivio_wsgi_threads_busy") == 0
        assert total(samples, "bivio_requests_total", interface="wsgi") == len(flood) + 1
    finally:
        gate.touch()
        for sock in flood:
            sock.close()
        running.stop()


def test_a_blocked_loop_shows_as_a_stall_and_as_lag() -> None:
    running, url = start(ASGI_APP, "--loop-warn", "0.1")
    try:
        assert get(running.port, "/block?0.6").startswith(b"HTTP/1.1 200")
        assert wait_until(lambda: total(scrape(url), "bivio_event_loop_stalls_total") >= 1)
        # The heartbeat's timer ran late by the block's length: a lag above 0.25 s.
        assert wait_until(lambda: (
            total(s := scrape(url), "bivio_event_loop_lag_seconds_count")
            - total(s, "bivio_event_loop_lag_seconds_bucket", le="0.25")) >= 1)
    finally:
        running.stop()


def test_metrics_port_taken_is_one_line_and_nothing_serves() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app_port = free_port()
        proc = subprocess.run(
            [sys.executable, "-m", "bivio", ASGI_APP, "--port", str(app_port),
             "--metrics", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"could not bind --metrics 127.0.0.1:{port}" in proc.stderr + proc.stdout
    assert "Started worker" not in proc.stderr + proc.stdout
    with socket.socket() as probe:  # the app's port was let go
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", app_port))


@pytest.mark.parametrize("value", ["9100", "127.0.0.1", "[::1]", "unix:/tmp/m.sock",
                                   "127.0.0.1:http"])
def test_a_bad_metrics_address_is_a_usage_error(value: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "bivio", ASGI_APP,
                           "--metrics", value], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert proc.returncode == 2
    assert "--metrics" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# -- a real Prometheus -------------------------------------------------------------------------

DOC = ROOT / "docs" / "metrics.md"


def documented_config() -> str:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 1, "docs/metrics.md should have one yaml block: the scrape config"
    return blocks[0]


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed (Debian: apt-get "
                    "install prometheus; scripts/system-deps.sh installs it when run as root)")
def test_prometheus_scrapes_the_documented_config() -> None:
    running, url = start(ASGI_APP, "--workers", "2", "--limit-request-fields", "10")
    target = url.removeprefix("http://").removesuffix("/metrics")
    web = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp, "prometheus.yml")
        config.write_text(fill_placeholders(
            documented_config(), {"127.0.0.1:9100": target, "15s": "1s"},
            "docs/metrics.md's scrape config"))
        check = subprocess.run([PROMETHEUS.replace("prometheus", "promtool"), "check", "config",
                                str(config)], capture_output=True, text=True) \
            if shutil.which("promtool") else None
        assert check is None or check.returncode == 0, check.stdout + check.stderr
        prom = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp}/data",
             f"--web.listen-address=127.0.0.1:{web}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            known_load(running.port)
            api = f"http://127.0.0.1:{web}/api/v1/query"

            def value(query: str) -> float | None:
                try:
                    result = httpx.get(api, params={"query": query}, timeout=5).json()
                except (httpx.HTTPError, ValueError):
                    return None
                rows = result.get("data", {}).get("result", [])
                return float(rows[0]["value"][1]) if rows else None

            assert wait_until(lambda: value("sum(bivio_requests_total)") == 16, timeout=90), \
                value("sum(bivio_requests_total)")
            assert value('sum(bivio_requests_total{status_class="4xx"})') == 4
            assert value('bivio_limits_enforced_total{limit="limit-request-fields"}') == 1
            assert value('bivio_workers{state="ready"}') == 2
            assert value('up{job="bivio"}') == 1
        finally:
            prom.terminate()
            prom.wait(20)
            running.stop()
