"""--workers: the supervisor keeps workers serving through crashes, reloads and recycling.

Clients here open a fresh connection per request (``connection: close``): the
kernel's accept queue is shared by all workers, so whichever worker is alive
takes the next connection, and a test can say exactly which requests had to
succeed.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time

import httpx
import pytest
from conftest import wait_until

from bivio.core import exits

from .test_http1 import TIMEOUT

APP = "tests.apps.workers:app"
LONG = 30.0  # only against hangs


def ready_pids(server) -> list[int]:
    return [int(p) for p in re.findall(r"Worker \[(\d+)\] ready", server.output)]



def wait_ready(server, count: int) -> list[int]:
    assert wait_until(lambda: len(ready_pids(server)) >= count), server.output
    return ready_pids(server)


def get_pid(url: str, path: str = "/pid") -> int:
    response = httpx.get(url + path, timeout=TIMEOUT, headers={"connection": "close"})
    assert response.status_code == 200, response.text
    return int(response.text)


def exit_code(server, timeout: float = LONG) -> int:
    code = server.proc.wait(timeout)
    server._reader.join(5)
    return code


def expect_failure(url: str) -> None:
    """A request whose worker gets killed: the connection drops, which is the point."""
    with pytest.raises(httpx.HTTPError):
        httpx.get(url, timeout=LONG)


class Load:
    """A few threads sending requests on fresh connections until stopped; keeps every result."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.results: list[tuple[float, int | None, str]] = []  # (started, pid, error)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.results.append((started, get_pid(self.url), ""))
            except (httpx.HTTPError, AssertionError, ValueError) as exc:
                self.results.append((started, None, repr(exc)))

    def wait_for(self, predicate) -> None:
        assert wait_until(lambda: predicate(self.results)), self.failures()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(LONG)

    def failures(self) -> list[tuple[float, int | None, str]]:
        return [r for r in self.results if r[1] is None]


# -- the basics ---------------------------------------------------------------------------


def test_two_workers_share_one_listener(serve):
    server = serve(APP, "--workers", "2")
    pids = set(wait_ready(server, 2))
    assert server.output.count("serving on") == 1  # the parent's line, once
    assert os.getpid() not in pids and server.proc.pid not in pids
    # A worker whose loop is busy leaves the next connections to the other one.
    blocker = threading.Thread(target=get_pid, args=(server.url, "/block?2"), daemon=True)
    blocker.start()
    seen = set()
    assert wait_until(lambda: seen.add(get_pid(server.url)) or seen == pids), (seen, pids)
    blocker.join(LONG)
    assert server.stop() == 0
    assert "Shutdown complete" in server.output


def test_web_concurrency_sets_the_worker_count(serve):
    server = serve(APP, env={"WEB_CONCURRENCY": "3"})
    assert len(set(wait_ready(server, 3))) == 3
    assert get_pid(server.url) in ready_pids(server)


def test_workers_on_a_unix_socket(serve, tmp_path):
    path = str(tmp_path / "bivio.sock")
    server = serve(APP, "--workers", "2", "--uds", path)
    pids = wait_ready(server, 2)
    transport = httpx.HTTPTransport(uds=path)
    with httpx.Client(transport=transport, timeout=TIMEOUT) as client:
        assert int(client.get("http://bivio/pid").text) in pids
    assert server.stop() == 0
    assert not os.path.exists(path)  # the parent removes the socket it bound


def test_sigterm_lets_in_flight_requests_finish(serve, tmp_path):
    marker = tmp_path / "marker"
    server = serve("tests.apps.life:app", "--workers", "2",
                   env={"BIVIO_TEST_FILE": str(marker)})
    wait_ready(server, 2)
    result: dict[str, httpx.Response] = {}
    thread = threading.Thread(
        target=lambda: result.update(r=httpx.get(server.url + "/slow?2", timeout=LONG)))
    thread.start()
    assert wait_until(lambda: marker.exists() and "request" in marker.read_text().split())
    server.signal(signal.SIGTERM)
    thread.join(LONG)
    assert (result["r"].status_code, result["r"].text) == (200, "slow done")
    assert exit_code(server) == 0
    assert sorted(marker.read_text().split()) == ["request", "shutdown", "shutdown",
                                                  "startup", "startup"]  # lifespan per worker


def gated_request(server, marker) -> socket.socket:
    """A request held in a worker until the test creates ``marker.go`` (tests.apps.life)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=LONG)
    sock.sendall(b"GET /gated HTTP/1.1\r\nhost: test\r\n\r\n")
    assert wait_until(lambda: marker.exists() and "request" in marker.read_text().split())
    return sock


def test_second_signal_aborts_requests_and_exits_5(serve, tmp_path):
    marker = tmp_path / "marker"
    server = serve("tests.apps.life:app", "--workers", "2", env={"BIVIO_TEST_FILE": str(marker)})
    wait_ready(server, 2)
    sock = gated_request(server, marker)
    server.signal(signal.SIGINT)
    assert wait_until(lambda: "Waiting for 1 in-flight request(s)" in server.output)
    server.signal(signal.SIGINT)
    assert exit_code(server) == exits.ABORTED
    assert sock.recv(100) == b""  # cut off
    assert re.search(r"Aborted GET /gated from 127\.0\.0\.1:\d+: closed by a second signal",
                     server.output), server.output
    assert re.search(r"Worker \[\d+\] stopped \(exit code 5: requests were aborted at "
                     r"shutdown\)", server.output), server.output


def test_requests_aborted_by_a_rolling_restart_do_not_change_the_exit_code(serve, tmp_path):
    marker = tmp_path / "marker"
    server = serve("tests.apps.life:app", "--workers", "1", "--timeout-graceful-shutdown", "0",
                   env={"BIVIO_TEST_FILE": str(marker)})
    [old] = wait_ready(server, 1)
    sock = gated_request(server, marker)
    server.signal(signal.SIGHUP)
    assert wait_until(lambda: f"Worker [{old}] stopped (exit code 5" in server.output), \
        server.output
    assert sock.recv(100) == b""
    assert "Aborted GET /gated" in server.output
    assert server.stop() == 0  # bivio's own shutdown cut nothing off


# -- keeping workers alive ---------------------------------------------------------------


def test_sigkilled_worker_is_replaced_and_no_other_request_fails(serve):
    server = serve(APP, "--workers", "2")
    victim, survivor = wait_ready(server, 2)
    load = Load(server.url)
    try:
        load.wait_for(lambda results: len(results) >= 20)
        os.kill(victim, signal.SIGKILL)
        # Once the supervisor has reaped it, the victim can own no connection.
        assert wait_until(lambda: f"Worker [{victim}] died unexpectedly" in server.output)
        dead_at = time.monotonic()
        replacement = [p for p in wait_ready(server, 3) if p not in (victim, survivor)][0]
        load.wait_for(lambda results: sum(1 for r in results if r[0] > dead_at) >= 50)
    finally:
        load.stop()
    after = [r for r in load.results if r[0] > dead_at]
    assert [r for r in after if r[1] is None] == []
    assert {r[1] for r in after} <= {survivor, replacement}
    # Any failure at all was a request the killed worker had already accepted.
    assert all(r[0] <= dead_at for r in load.failures())
    assert "killed by SIGKILL" in server.output


def test_blocked_event_loop_is_detected_dumped_and_replaced(serve):
    server = serve(APP, "--workers", "2", "--timeout-worker-healthcheck", "1")
    pids = wait_ready(server, 2)
    threading.Thread(target=expect_failure, args=(server.url + "/block",), daemon=True).start()
    assert wait_until(lambda: "its event loop is blocked" in server.output), server.output
    blocked = int(re.search(r"Worker \[(\d+)\] has not answered", server.output).group(1))
    assert blocked in pids
    # faulthandler's dump names the function that blocks, then the worker is replaced.
    assert wait_until(lambda: f"Worker [{blocked}] killed" in server.output), server.output
    assert "block_the_loop" in server.output
    assert "tests/apps/workers.py" in server.output
    new = [p for p in wait_ready(server, 3) if p not in pids]
    assert len(new) == 1
    for _ in range(10):
        assert get_pid(server.url) != blocked


def test_limit_max_requests_recycles_workers_without_failures(serve):
    server = serve(APP, "--workers", "1", "--limit-max-requests", "3",
                   "--limit-max-requests-jitter", "2", "--timeout-worker-healthcheck", "0.5")
    first = wait_ready(server, 1)[0]
    seen: list[int] = []
    assert wait_until(lambda: seen.append(get_pid(server.url)) or len(set(seen)) >= 3), seen
    assert seen[0] == first
    assert "reached --limit-max-requests" in server.output
    assert f"Worker [{first}] stopped (exit code 0)" in server.output  # drained, not killed


# -- signals ------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sighup_rolling_restart_under_load_loses_no_request(serve, workers):
    server = serve(APP, "--workers", workers)
    old = wait_ready(server, int(workers))
    load = Load(server.url)
    slow: dict[str, int] = {}
    in_flight = threading.Thread(target=lambda: slow.update(pid=get_pid(server.url, "/slow?2")))
    try:
        load.wait_for(lambda results: len(results) >= 20)
        in_flight.start()
        # The slow request is in an old worker (it says so), then the reload starts.
        assert wait_until(lambda: "slow request started in [" in server.output), server.output
        server.signal(signal.SIGHUP)
        for pid in old:
            assert wait_until(lambda pid=pid: f"Worker [{pid}] stopped" in server.output), \
                server.output
        new = [p for p in ready_pids(server) if p not in old]
        assert len(new) == len(old)
        load.wait_for(lambda results: any(r[1] in new for r in results[-20:]))
    finally:
        load.stop()
        in_flight.join(LONG)
    assert load.failures() == []
    assert "pid" in slow  # the in-flight request finished through the reload
    # Readiness-gated: each old worker was told to stop only after its replacement was ready.
    out = server.output
    for pid in old:
        stop_at = out.index(f"Stopping worker [{pid}] gracefully (replaced by [")
        replacement = int(re.search(rf"Stopping worker \[{pid}\] gracefully \(replaced by "
                                    r"\[(\d+)\]\)", out).group(1))
        assert out.index(f"Worker [{replacement}] ready") < stop_at


def test_sigttin_adds_and_sigttou_removes_a_worker(serve):
    server = serve(APP, "--workers", "1")
    first = wait_ready(server, 1)[0]
    server.signal(signal.SIGTTIN)
    second = [p for p in wait_ready(server, 2) if p != first][0]
    server.signal(signal.SIGTTOU)
    assert wait_until(lambda: "(fewer workers asked)" in server.output)
    assert wait_until(lambda: re.search(r"Worker \[\d+\] stopped", server.output) is not None)
    stopped = int(re.search(r"Worker \[(\d+)\] stopped", server.output).group(1))
    assert stopped in (first, second)
    alive = first if stopped == second else second
    for _ in range(5):
        assert get_pid(server.url) == alive
    server.signal(signal.SIGTTOU)
    assert wait_until(lambda: "already at one worker" in server.output)
    assert get_pid(server.url) == alive


# -- startup failures ---------------------------------------------------------------------


def test_lifespan_startup_failure_stops_the_server_with_exit_3(serve, tmp_path):
    server = serve("tests.apps.life:failing_startup", "--workers", "2", wait=False,
                   env={"BIVIO_TEST_FILE": str(tmp_path / "marker")})
    assert exit_code(server) == 3
    assert "database unreachable: code xyz-123" in server.output
    assert "failed to start (exit code 3: application startup failed" in server.output
    assert "respawn" not in server.output


def test_import_failure_stops_the_server_with_exit_1(serve):
    server = serve("tests.apps.no_such_module:app", "--workers", "3", wait=False)
    assert exit_code(server) == 1
    # Printed once by the supervisor, however many workers failed on it.
    assert server.output.count(
        "bivio: error: could not import module 'tests.apps.no_such_module'") == 1, server.output
    assert "respawn" not in server.output


def test_import_error_traceback_once_at_log_level_debug(serve, tmp_path):
    (tmp_path / "brokenworker.py").write_text("import json\njson.loads('{')\n")
    server = serve("brokenworker:app", "--workers", "3", "--app-dir", str(tmp_path),
                   "--log-level", "debug", wait=False)
    assert exit_code(server) == 1
    assert server.output.count("bivio: error: error while importing 'brokenworker': "
                               "JSONDecodeError") == 1, server.output
    assert server.output.count("Traceback (most recent call last):") == 1, server.output
    assert 'brokenworker.py", line 2, in <module>' in server.output


def test_worker_dying_during_boot_for_another_reason_exits_4(serve, tmp_path):
    (tmp_path / "dies.py").write_text("import os\nos._exit(7)\n")
    server = serve("dies:app", "--workers", "1", "--app-dir", str(tmp_path), wait=False)
    assert exit_code(server) == 4
    assert "failed to start (exit code 7;" in server.output


def test_bind_failure_with_workers_exits_1(serve):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        server = serve(APP, "--workers", "2", "--port", port, wait=False)
        assert exit_code(server) == 1
    assert "could not bind" in server.output
    assert "Started worker" not in server.output


def test_workers_need_an_import_string():
    import bivio
    from bivio.core.config import ConfigError

    async def app(scope, receive, send):  # pragma: no cover - never served
        pass

    with pytest.raises(ConfigError, match="import string"):
        bivio.run(app, workers=2)


def test_wsgi_app_under_workers_and_sighup(serve, tmp_path):
    (tmp_path / "wsgipid.py").write_text(
        "import os\n\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('content-type', 'text/plain')])\n"
        "    return [str(os.getpid()).encode()]\n")
    server = serve("wsgipid:app", "--workers", "2", "--app-dir", str(tmp_path))
    old = wait_ready(server, 2)
    assert get_pid(server.url) in old
    server.signal(signal.SIGHUP)
    for pid in old:
        assert wait_until(lambda pid=pid: f"Worker [{pid}] stopped" in server.output)
    new = [p for p in ready_pids(server) if p not in old]
    assert len(new) == 2
    assert get_pid(server.url) in new
    assert server.stop() == 0
