"""WSGI request bodies over real sockets: slow uploads hold no thread (issue 13, item 1).

By default (``--wsgi-body buffer``) a request body is read whole on the event
loop before the request takes a thread, so clients that send a few bytes of a
body and then nothing cannot stop a worker however many they are.
``--wsgi-body stream`` is the old behaviour: the app runs, and holds its
thread, while the client sends. The apps are tests/apps/wsgi_apps.py.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from conftest import read_one_response

APP = "tests.apps.wsgi_apps:app"
PROGRESS_ENV = "BIVIO_WSGI_PROGRESS"
SLOW_CLIENTS = 20  # 10 x --threads
HEAD_LENGTH = (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n%s\r\n")
HEAD_CHUNKED = (b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n%s\r\n")


@contextmanager
def slow_uploads(running, count: int, head: bytes, first: bytes) -> Iterator[list[socket.socket]]:
    """``count`` connections that each send ``head`` and the start of a body, then nothing."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = running.connect()
            sock.sendall(head + first)
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def normal_requests_all_served(running, count: int = 10) -> list[int]:
    def one(i: int) -> int:
        response = httpx.get(f"{running.url}/?n={i}", timeout=10)
        assert response.text == "Hello, WSGI!"
        return response.status_code

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def nothing_received(sock: socket.socket) -> bool:
    """No byte and no close from the server so far (the socket is left as it was)."""
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
        return False  # an answer, or the server closed the connection
    except BlockingIOError:
        return True
    finally:
        sock.setblocking(True)


def started_count(running) -> int:
    return int(httpx.get(f"{running.url}/started", timeout=10).text)


def wait_started(running, count: int, timeout: float = 10.0) -> int:
    """Poll /started until ``count`` uploads began (or the deadline passes); the last count."""
    deadline = time.monotonic() + timeout
    seen = started_count(running)
    while seen < count and time.monotonic() < deadline:
        time.sleep(0.02)
        seen = started_count(running)
    return seen


# -- slow clients hold no thread ---------------------------------------------------------------


def test_slow_content_length_uploads_leave_every_normal_request_served(serve):
    running = serve(APP, "--threads", "2")
    with slow_uploads(running, SLOW_CLIENTS, HEAD_LENGTH % (b"/echo", b""), b"x" * 10) as socks:
        assert normal_requests_all_served(running) == [200] * 10
        # The slow requests are still there, unanswered, waiting for their bodies ...
        assert all(nothing_received(sock) for sock in socks)
        # ... and a client that finishes gets its whole body through the app.
        for sock in socks[:3]:
            sock.sendall(b"y" * (100000 - 10))
            status, _, body = read_one_response(sock)
            result = json.loads(body)
            assert status == 200 and result["length"] == 100000
            assert result["sha256"] == hashlib.sha256(b"x" * 10 + b"y" * 99990).hexdigest()
    assert normal_requests_all_served(running) == [200] * 10


def test_slow_chunked_uploads_leave_every_normal_request_served(serve):
    running = serve(APP, "--threads", "2")
    with slow_uploads(running, SLOW_CLIENTS, HEAD_CHUNKED % (b"/echo", b""),
                      b"5\r\nhello\r\n") as socks:
        assert normal_requests_all_served(running) == [200] * 10
        assert all(nothing_received(sock) for sock in socks)
        for sock in socks[:3]:
            sock.sendall(b"6\r\n world\r\n0\r\n\r\n")
            status, _, body = read_one_response(sock)
            result = json.loads(body)
            assert status == 200
            assert result["length"] == 11 and result["content_length"] == "11"
    assert normal_requests_all_served(running) == [200] * 10


def test_the_app_is_not_called_before_the_body_is_in(serve):
    running = serve(APP, "--threads", "3")
    # Expect: 100-continue only to know when bivio has the request: the 100 goes
    # out as soon as it starts reading the body.
    head = HEAD_LENGTH % (b"/upload-started", b"Expect: 100-continue\r\n")
    with slow_uploads(running, 2, head, b"") as socks:
        for sock in socks:
            assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
            sock.sendall(b"z" * 1000)
        assert started_count(running) == 0
        assert normal_requests_all_served(running) == [200] * 10
        assert started_count(running) == 0
        socks[0].sendall(b"z" * 99000)
        status, _, body = read_one_response(socks[0])
        assert status == 200 and body == b"read 100000 content-length 100000"
        assert started_count(running) == 1


def test_a_client_vanishing_mid_body_never_reaches_the_app(serve, tmp_path):
    progress = tmp_path / "progress.txt"
    running = serve(APP, "--threads", "1", env={PROGRESS_ENV: str(progress)})
    for _ in range(5):  # more than --threads
        with running.connect() as sock:
            sock.sendall(HEAD_LENGTH % (b"/read-record", b"") + b"x" * 2000)
    assert normal_requests_all_served(running) == [200] * 10
    # /read-record records how its read ended; it never ran.
    assert not progress.exists() or "read-" not in progress.read_text()
    assert "Traceback" not in running.output


def test_100_continue_goes_out_before_the_app_runs(serve):
    running = serve(APP)
    with running.connect() as sock:  # "/" never reads its body; the 100 comes all the same
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"hello")
        status, headers, body = read_one_response(sock)
        assert status == 200 and body == b"Hello, WSGI!"
        assert headers.get("connection") != "close"  # the body was read: reusable
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_one_response(sock)[0] == 200


def test_a_chunked_body_over_the_limit_is_refused_without_the_app(serve):
    running = serve(APP, "--threads", "1", "--limit-request-body", "1000")
    with running.connect() as sock:
        sock.sendall(HEAD_CHUNKED % (b"/upload-started", b"") + b"1f4\r\n" + b"x" * 500
                     + b"\r\n" + b"1f4\r\n" + b"x" * 500 + b"\r\n" + b"1f4\r\n" + b"x" * 500)
        status, _, _ = read_one_response(sock)
    assert status == 413
    assert normal_requests_all_served(running) == [200] * 10
    assert started_count(running) == 0


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_larger_than_memory_spills_and_arrives_whole(serve, chunked: bool):
    running = serve(APP)
    big = bytes(range(256)) * (12 * 1024 + 7)  # about 3 MiB

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    result = httpx.post(f"{running.url}/echo?mode=readline", content=chunks() if chunked else big,
                        timeout=30).json()
    assert result["length"] == len(big)
    assert result["content_length"] == str(len(big))
    assert result["sha256"] == hashlib.sha256(big).hexdigest()


# -- --wsgi-body stream: the old behaviour ----------------------------------------------------


def test_stream_mode_runs_the_app_while_the_client_sends(serve):
    # Three threads, two slow uploads: the third thread still answers /started.
    running = serve(APP, "--threads", "3", "--wsgi-body", "stream")
    with slow_uploads(running, 2, HEAD_LENGTH % (b"/upload-started", b""), b"x" * 10) as socks:
        # Both calls began with 10 of 100000 bytes sent, and each holds a thread.
        assert wait_started(running, 2) == 2
        socks[0].sendall(b"x" * 99990)
        status, _, body = read_one_response(socks[0])
        assert status == 200 and body == b"read 100000 content-length 100000"


# -- bounded response memory ------------------------------------------------------------------


def test_a_large_list_response_arrives_whole_with_a_content_length(serve):
    running = serve(APP)
    response = httpx.get(f"{running.url}/big-list?mb=4", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-length"] == str(4 * 1024 * 1024)
    assert "transfer-encoding" not in response.headers
    assert response.content == b"".join(bytes([65 + i]) * (1024 * 1024) for i in range(4))
    head = httpx.head(f"{running.url}/big-list?mb=4", timeout=30)
    assert head.headers["content-length"] == str(4 * 1024 * 1024) and head.content == b""
