"""Clients that never read a large WSGI response hold no thread (issue 13, item 4).

With ``--threads 2``, 20 raw sockets (10 x --threads) each ask for an 8 MiB
generator response with a small receive window and then read nothing. Each app
thread spools what the client does not take (``--wsgi-response-buffer``) and is
free again as soon as the app is done, so every normal request is served while
the slow sockets are still open; without the spool the two threads wait on
backpressure until ``--timeout-send`` (60 s) and nothing else is answered.
The apps are tests/apps/wsgi_apps.py.

Every wait is on a condition (an answer, bytes on a socket) with a generous
upper bound against hangs; no assertion is about speed.
"""

from __future__ import annotations

import concurrent.futures
import select
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from conftest import read_one_response

APP = "tests.apps.wsgi_apps:app"
HELLO = b"Hello, WSGI!"
SLOW_READERS = 20  # 10 x --threads
BIG = 8 * 1024 * 1024  # /big-gen's default: 8 MiB in 64 KiB chunks
TIMEOUT = 10.0


@contextmanager
def slow_readers(running, count: int, path: bytes = b"/big-gen") -> Iterator[list[socket.socket]]:
    """``count`` connections that ask for ``path`` with a small window and read nothing."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect
            sock.settimeout(TIMEOUT)
            sock.connect(("127.0.0.1", running.port))
            sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def response_began(sock: socket.socket) -> bool:
    """The server started answering on ``sock`` (peeked: the socket's data stay unread)."""
    if not select.select([sock], [], [], TIMEOUT)[0]:
        return False
    return sock.recv(16, socket.MSG_PEEK).startswith(b"HTTP/1.1 200 ")


def still_open(sock: socket.socket) -> bool:
    """Not closed or reset by the server (data waiting to be read is fine)."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)
        sock.settimeout(TIMEOUT)


def normal_requests_all_served(running, count: int = 10, hello: bytes = HELLO) -> list[int]:
    def one(i: int) -> int:
        response = httpx.get(f"{running.url}/?n={i}", timeout=TIMEOUT)
        assert response.content == hello
        return response.status_code

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def test_slow_readers_leave_every_normal_request_served(serve):
    running = serve(APP, "--threads", "2")
    with slow_readers(running, SLOW_READERS) as socks:
        # Each slow request got a thread (its response began) although only two exist ...
        assert all(response_began(sock) for sock in socks)
        # ... and the threads are free again: normal requests are all answered ...
        assert normal_requests_all_served(running) == [200] * 10
        # ... while the slow readers are still connected, their responses unread.
        assert all(still_open(sock) for sock in socks)
        # A slow reader that starts reading gets the whole response, in order.
        status, _, body = read_one_response(socks[0], timeout=30)
        assert status == 200 and len(body) == BIG
        assert all(body[i * 65536:(i + 1) * 65536] == bytes([65 + i % 26]) * 65536
                   for i in range(BIG // 65536))
    assert normal_requests_all_served(running) == [200] * 10
    assert "Traceback" not in running.output


def test_a_large_list_response_is_spooled_as_well(serve):
    running = serve(APP, "--threads", "2")
    with slow_readers(running, SLOW_READERS, b"/big-list?mb=8") as socks:
        assert all(response_began(sock) for sock in socks)
        assert normal_requests_all_served(running) == [200] * 10
        assert all(still_open(sock) for sock in socks)
    assert normal_requests_all_served(running) == [200] * 10


def test_slow_readers_of_flask_send_file_hold_no_thread(serve, tmp_path):
    """``send_file`` (a ``wsgi.file_wrapper`` over a real file) of 16 MiB, more than
    the kernel's socket buffers take (4 MiB at most here): the file is handed to the
    event loop and sent from there, so each thread is free once the view returned,
    and 20 clients that read nothing leave two threads serving everyone else.
    Before, each thread waited for its file to be sent, up to ``--timeout-send``."""
    pytest.importorskip("flask")
    size = 16 * 1024 * 1024
    big = tmp_path / "big.bin"
    big.write_bytes(b"".join(bytes([65 + i % 26]) * 65536 for i in range(size // 65536)))
    running = serve("tests.apps.flaskapp:app", "--threads", "2",
                    env={"FLASKAPP_BIG_FILE": str(big)})
    flask_hello = b"Hello from Flask"
    with slow_readers(running, SLOW_READERS, b"/big-file") as socks:
        assert all(response_began(sock) for sock in socks)
        assert normal_requests_all_served(running, hello=flask_hello) == [200] * 10
        assert all(still_open(sock) for sock in socks)
        # A slow reader that starts reading gets the whole file.
        status, headers, body = read_one_response(socks[0], timeout=30)
        assert status == 200 and body == big.read_bytes()
    assert normal_requests_all_served(running, hello=flask_hello) == [200] * 10
    assert "Traceback" not in running.output


# -- slowhttptest -X -----------------------------------------------------------------------------

SLOWHTTPTEST = shutil.which("slowhttptest")


def served(running) -> bool:
    try:
        response = httpx.get(f"{running.url}/", timeout=TIMEOUT)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.content == HELLO


@pytest.mark.skipif(SLOWHTTPTEST is None,
                    reason="slowhttptest is not installed (Debian: apt install slowhttptest)")
def test_slowhttptest_slow_read_against_a_wsgi_worker(serve):
    """Slow read (a tiny window, 32 bytes every 5 s) of an 8 MiB generator, 50 connections,
    against 2 threads and the default 60 s send timeout (longer than the attack): the
    spool frees the threads, so every probe during the attack is served."""
    running = serve(APP, "--threads", "2")
    cmd = [SLOWHTTPTEST, "-X", "-u", f"{running.url}/big-gen", "-c", "50", "-r", "50",
           "-w", "512", "-y", "1024", "-n", "5", "-z", "32", "-k", "1", "-l", "8", "-p", "3"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    probes = []
    try:
        deadline = time.monotonic() + 70
        while proc.poll() is None and time.monotonic() < deadline:
            probes.append(served(running))
            time.sleep(0.25)  # probe pacing, not a wait for a result
    finally:
        if proc.poll() is None:
            proc.kill()
        output = proc.communicate()[0]
    assert probes and all(probes), f"normal requests failed during the attack: {probes}\n{output}"
    assert served(running)
