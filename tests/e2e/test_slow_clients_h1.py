"""Slow clients over real sockets: timed out, logged, and nobody else is held up.

An ASGI app under ``--timeout-request-body`` and ``--timeout-send``: a stalled
request body gets 408, a client that reads none of a large response is dropped,
a slowloris head still gets 408, each logged at info level with the client's
address; a normal request on another connection is served meanwhile. Then the
same with slowhttptest (Debian's ``slowhttptest``) in slow-body (``-B``) and
slow-read (``-X``) modes, when it is installed.

Every wait is on a condition (an answer, a close, a log line) with a generous
upper bound against hangs; no assertion is about speed.
"""

from __future__ import annotations

import select
import shutil
import socket
import subprocess
import time

import pytest
from conftest import read_until_close, statuses

APP = "tests.apps.basic:app"
TIMEOUT = 10.0  # upper bound for anything the server should do "now"
LOG_BOUND = 30.0  # upper bound for a 1-2 s timeout to be logged, on a loaded machine


def connect(server, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: the window
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", server.port))
    return sock


def served(server, body: bytes = b"hello") -> bool:
    """A normal request on a fresh connection gets its 200 (bounded wait)."""
    try:
        with connect(server) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            data, closed = read_until_close(sock)
    except OSError:
        return False
    return statuses(data) == [200] and data.endswith(b"\r\n\r\n" + body) and closed


def address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def test_stalled_request_body_gets_408(serve):
    server = serve(APP, "--timeout-request-body", "1")
    with connect(server) as sock:
        client = address(sock)
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nx")
        # Served meanwhile: the stalled body holds nobody else up.
        assert served(server)
        data, closed = read_until_close(sock)
    assert statuses(data) == [408], data
    assert data.endswith(b"Request body timeout")
    assert closed
    assert server.wait_for_output(f"{client} timed out sending the request body", LOG_BOUND), \
        server.output
    assert served(server)


def test_client_that_reads_nothing_is_dropped(serve):
    server = serve(APP, "--timeout-send", "1")
    size = 16 * 1024 * 1024
    # A small receive window: the client's side fills quickly and stays full.
    with connect(server, rcvbuf=64 * 1024) as slow:
        client = address(slow)
        slow.sendall(b"GET /big?%d HTTP/1.1\r\nHost: a\r\n\r\n" % size)
        assert served(server)  # while the slow reader holds its connection
        assert server.wait_for_output(f"{client} timed out reading the response", LOG_BOUND), \
            server.output
        assert served(server)
        data, closed = read_until_close(slow)  # what the kernel had buffered, then the end
    assert closed, "the connection of a client that read nothing was not dropped"
    assert statuses(data) == [200]
    assert len(data) < size, "the whole response went out: nothing was dropped"


def test_slowloris_head_still_gets_408(serve):
    server = serve(APP, "--timeout-request-header", "1", "--timeout-request-body", "1",
                   "--timeout-send", "1")
    with connect(server) as slow:
        client = address(slow)
        slow.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        sent_more = 0
        while not select.select([slow], [], [], 0.2)[0] and sent_more < 200:
            try:
                slow.sendall(b"s")  # a byte at a time: progress on the head does not help
            except (BrokenPipeError, ConnectionResetError):
                break
            sent_more += 1
        data, closed = read_until_close(slow)
    assert statuses(data) == [408], data
    assert closed
    assert server.wait_for_output(f"{client} timed out sending the request head", LOG_BOUND)
    assert served(server)


def test_early_431_survives_the_rest_of_the_request(serve):
    """A client that writes its whole request before reading (as most do) still reads
    the early 431: bivio drains what follows instead of resetting the connection,
    which would fail the client's send and lose the answer."""
    server = serve(APP, "--limit-request-fields", "5")
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(10))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)  # sends do wait
        sock.settimeout(TIMEOUT)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n" + b"z" * 512 * 1024)
        data, closed = read_until_close(sock)
    assert statuses(data) == [431], data
    assert closed
    assert served(server)


# -- slowhttptest ------------------------------------------------------------------------------


SLOWHTTPTEST = shutil.which("slowhttptest")
needs_slowhttptest = pytest.mark.skipif(
    SLOWHTTPTEST is None, reason="slowhttptest is not installed (Debian: apt install slowhttptest)"
)


def attack(server, *args: str, seconds: int = 8, body: bytes = b"hello"
           ) -> tuple[list[bool], str]:
    """Run slowhttptest for ``seconds`` while probing with normal requests; the probes."""
    cmd = [SLOWHTTPTEST, *args, "-l", str(seconds), "-p", "3"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    probes = []
    try:
        deadline = time.monotonic() + seconds + 60
        while proc.poll() is None and time.monotonic() < deadline:
            probes.append(served(server, body))
            time.sleep(0.25)  # probe pacing, not a wait for a result
    finally:
        if proc.poll() is None:
            proc.kill()
        output = proc.communicate()[0]
    return probes, output


@needs_slowhttptest
def test_slowhttptest_slow_body(serve):
    """R-U-Dead-Yet: bodies trickle in every 4 s; the 2 s body timeout drops them."""
    server = serve(APP, "--timeout-request-body", "2")
    probes, output = attack(server, "-B", "-u", f"http://127.0.0.1:{server.port}/echo",
                            "-c", "100", "-r", "50", "-i", "4", "-s", "8192", "-x", "10")
    assert probes and all(probes), f"normal requests failed during the attack: {probes}\n{output}"
    assert "timed out sending the request body" in server.output, output
    assert served(server)


@needs_slowhttptest
def test_slowhttptest_slow_read(serve):
    """Slow read: a tiny window, 32 bytes every 5 s; the 2 s send timeout drops them."""
    server = serve(APP, "--timeout-send", "2")
    probes, output = attack(server, "-X", "-u",
                            f"http://127.0.0.1:{server.port}/big?{4 * 1024 * 1024}",
                            "-c", "50", "-r", "50", "-w", "512", "-y", "1024", "-n", "5",
                            "-z", "32", "-k", "1")
    assert probes and all(probes), f"normal requests failed during the attack: {probes}\n{output}"
    assert "timed out reading the response" in server.output, output
    assert served(server)


WSGI_APP = "tests.apps.wsgi_apps:app"
WSGI_HELLO = b"Hello, WSGI!"


@needs_slowhttptest
def test_slowhttptest_slow_body_against_a_wsgi_worker(serve):
    """R-U-Dead-Yet against 2 threads, with the default 30 s body timeout (longer than
    the attack): 100 trickled bodies are buffered on the loop, never on a thread, so
    every probe is served (tests/e2e/test_wsgi_body.py shows the same with raw sockets,
    and that the old code failed it)."""
    server = serve(WSGI_APP, "--threads", "2")
    probes, output = attack(server, "-B", "-u", f"http://127.0.0.1:{server.port}/echo",
                            "-c", "100", "-r", "50", "-i", "4", "-s", "8192", "-x", "10",
                            body=WSGI_HELLO)
    assert probes and all(probes), f"normal requests failed during the attack: {probes}\n{output}"
    assert served(server, WSGI_HELLO)


@needs_slowhttptest
def test_slowhttptest_slow_read_against_a_wsgi_worker(serve):
    """Slow read against 2 threads: 50 clients that read 32 bytes every 5 s of a 4 MiB
    generator response. Their responses are spooled (or wait on the loop), never holding
    a thread, and the 2 s send timeout drops them: every probe is served."""
    server = serve(WSGI_APP, "--threads", "2", "--timeout-send", "2")
    probes, output = attack(server, "-X", "-u",
                            f"http://127.0.0.1:{server.port}/big-gen?mb=4",
                            "-c", "50", "-r", "50", "-w", "512", "-y", "1024", "-n", "5",
                            "-z", "32", "-k", "1", body=WSGI_HELLO)
    assert probes and all(probes), f"normal requests failed during the attack: {probes}\n{output}"
    assert "timed out reading the response" in server.output, output
    assert served(server, WSGI_HELLO)
