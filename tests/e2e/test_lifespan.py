"""Lifespan (startup, shutdown, failures, --lifespan auto/on/off) and graceful shutdown."""

from __future__ import annotations

import re
import select
import signal
import socket
import time

import httpx
import pytest

from bivio.core import exits

from .test_http1 import TIMEOUT, RawConn, get

LIFE = "tests.apps.life"


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "marker"


def lines(path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def wait_for_line(path, line: str, timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if line in lines(path):
            return True
        time.sleep(0.02)
    return False


def wait_for_count(path, line: str, count: int, timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lines(path).count(line) >= count:
            return True
        time.sleep(0.02)
    return False


def exit_code(server, timeout: float = 30.0) -> int:
    code = server.proc.wait(timeout)
    server._reader.join(5)  # all output is in
    return code


# -- lifespan --------------------------------------------------------------------------------


def test_startup_and_shutdown_run(serve, marker):
    server = serve(f"{LIFE}:app", env={"BIVIO_TEST_FILE": str(marker)})
    assert lines(marker) == ["startup"]  # before serving
    assert httpx.get(server.url + "/state", timeout=TIMEOUT).json() == {"db": "connected"}
    assert server.stop() == 0
    assert lines(marker) == ["startup", "shutdown"]
    assert "Shutdown complete" in server.output


def test_startup_failure_exits_3_with_message(serve, marker):
    server = serve(f"{LIFE}:failing_startup", wait=False, env={"BIVIO_TEST_FILE": str(marker)})
    assert exit_code(server) == 3
    assert "database unreachable: code xyz-123" in server.output
    assert "serving on" not in server.output


@pytest.mark.parametrize("mode", ["auto", "on"])
def test_app_that_raises_after_receiving_startup_exits_3(serve, marker, mode):
    server = serve(f"{LIFE}:raising_startup", "--lifespan", mode, wait=False,
                   env={"BIVIO_TEST_FILE": str(marker)})
    assert exit_code(server) == 3
    assert ("application startup failed: RuntimeError: cannot reach the cache: code abc-987"
            in server.output)
    assert "Traceback" in server.output  # where it raised
    assert "serving on" not in server.output


def test_lifespan_auto_with_app_that_raises_serves_quietly(serve, marker):
    server = serve(f"{LIFE}:django_like", "--lifespan", "auto",
                   env={"BIVIO_TEST_FILE": str(marker)})
    response = httpx.get(server.url + "/", timeout=TIMEOUT)
    assert (response.status_code, response.text) == (200, "ok")
    assert server.stop() == 0
    assert "Traceback" not in server.output
    assert "WARNING" not in server.output
    assert "ERROR" not in server.output
    assert "unsupported" not in server.output
    assert "does not handle the ASGI lifespan scope" in server.output


def test_lifespan_on_with_app_that_raises_exits_nonzero(serve, marker):
    server = serve(f"{LIFE}:django_like", "--lifespan", "on", wait=False,
                   env={"BIVIO_TEST_FILE": str(marker)})
    code = exit_code(server)
    assert code == 3
    assert "ValueError" in server.output
    assert "serving on" not in server.output


def test_lifespan_off_sends_no_lifespan_scope(serve, marker):
    server = serve(f"{LIFE}:app", "--lifespan", "off", env={"BIVIO_TEST_FILE": str(marker)})
    assert httpx.get(server.url + "/state", timeout=TIMEOUT).json() == {}
    assert server.stop() == 0
    assert lines(marker) == []  # neither startup nor shutdown ran


# -- graceful shutdown -----------------------------------------------------------------------


def test_graceful_shutdown_finishes_in_flight_request(serve, marker):
    server = serve(f"{LIFE}:app", "--timeout-keep-alive", "60",
                   env={"BIVIO_TEST_FILE": str(marker)})
    # An idle keep-alive connection...
    idle = RawConn.to(server)
    idle.send(get("/"))
    assert idle.read_response().body == b"ok"
    # ...and one with a request in flight (until the test creates marker.go).
    busy = RawConn.to(server)
    busy.send(get("/gated"))
    assert wait_for_line(marker, "request")

    server.signal(signal.SIGTERM)
    assert server.wait_for_output("shutting down gracefully")
    assert server.wait_for_output("Waiting for 1 in-flight request(s)")
    # The idle connection is closed while the slow request is still running.
    assert idle.closed_by_peer()
    assert server.proc.poll() is None
    assert select.select([busy.sock], [], [], 0)[0] == []  # its answer is still to come
    # No new connections.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)

    (marker.parent / (marker.name + ".go")).touch()
    resp = busy.read_response()
    assert (resp.status, resp.body) == (200, b"slow done")
    assert resp.get("connection") == "close"
    assert busy.closed_by_peer()
    assert exit_code(server) == 0
    assert lines(marker) == ["startup", "request", "shutdown"]
    assert "Aborted" not in server.output


def test_graceful_shutdown_timeout_cancels_request(serve, marker):
    server = serve(f"{LIFE}:app", "--timeout-graceful-shutdown", "1",
                   env={"BIVIO_TEST_FILE": str(marker)})
    busy = RawConn.to(server, timeout=30)
    busy.send(get("/slow?30"))
    assert wait_for_line(marker, "request")
    server.signal(signal.SIGTERM)
    assert exit_code(server, timeout=20) == exits.ABORTED
    assert busy.read_to_eof() == b""  # cut off: no response
    assert "Waiting for 1 in-flight request(s), up to 1s" in server.output
    assert "Graceful shutdown timed out after 1s: cancelling 1 request(s)" in server.output
    assert re.search(r"Aborted GET /slow from 127\.0\.0\.1:\d+: "
                     r"--timeout-graceful-shutdown \(1s\) expired", server.output), server.output
    assert "1 request(s) were aborted" in server.output
    assert lines(marker) == ["startup", "request", "shutdown"]


def test_second_signal_closes_at_once(serve, marker):
    server = serve(f"{LIFE}:app", env={"BIVIO_TEST_FILE": str(marker)})
    busy = RawConn.to(server, timeout=30)
    busy.send(get("/slow?30"))
    other = RawConn.to(server, timeout=30)
    other.send(get("/gated"))
    assert wait_for_count(marker, "request", 2)
    server.signal(signal.SIGINT)
    assert server.wait_for_output("shutting down gracefully")
    assert server.wait_for_output("Waiting for 2 in-flight request(s), up to 30s "
                                  "(--timeout-graceful-shutdown; Ctrl-C again to force)")
    server.signal(signal.SIGINT)
    assert exit_code(server, timeout=20) == exits.ABORTED
    assert busy.read_to_eof() == b""
    assert other.read_to_eof() == b""
    aborted = re.findall(r"Aborted GET (\S+) from [\d.:]+: closed by a second signal",
                         server.output)
    assert sorted(aborted) == ["/gated", "/slow"], server.output
    assert "Graceful shutdown timed out" not in server.output
