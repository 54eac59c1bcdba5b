"""Bad, hostile and broken input over raw sockets: the right status, then still serving.

Every test checks the status code bivio answers with and that a new connection
is served afterwards (the process survived and is not wedged). Waits are
generous upper bounds against hangs, never assertions about speed.
"""

from __future__ import annotations

import csv
import json
import select
import shutil
import socket
import subprocess
import time

import pytest
from conftest import established_connections, read_until_close, server_has_read, statuses

APP = "tests.apps.basic:app"
TIMEOUT = 10.0  # upper bound for anything the server should do "now"


# -- helpers -------------------------------------------------------------------------------


def connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)


def exchange(server, raw: bytes) -> tuple[list[int], bytes, bool]:
    """Send ``raw`` on a new connection; read until close. Statuses, bytes, closed."""
    with connect(server) as sock:
        sock.sendall(raw)
        data, closed = read_until_close(sock)
    return statuses(data), data, closed


def assert_rejected(server, raw: bytes, status: int) -> bytes:
    """``raw`` gets exactly one answer, ``status``, and the connection is closed."""
    got, data, closed = exchange(server, raw)
    assert got == [status], data
    assert closed, f"connection left open after {data!r}"
    assert_serving(server)
    return data


def assert_serving(server) -> None:
    """A fresh connection still gets a normal answer."""
    got, data, closed = exchange(server, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert got == [200] and data.endswith(b"\r\n\r\nhello"), data
    assert closed


def body_of(data: bytes) -> bytes:
    return data.partition(b"\r\n\r\n")[2]


# -- request line and head -------------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    b"GET/ HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1 extra\r\nHost: a\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 GET\r\n\r\n",  # a TLS ClientHello
    b"GET / FTP/1.1\r\nHost: a\r\n\r\n",
    b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
], ids=["no-space", "extra-token", "tls-hello", "not-http", "lowercase-method"])
def test_malformed_request_line(serve, raw):
    server = serve(APP)
    assert_rejected(server, raw, 400)


def test_request_line_too_long(serve):
    server = serve(APP, "--limit-request-line", "100")
    assert_rejected(server, b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414)
    # Just under the limit is fine.
    got, _, _ = exchange(server, b"GET /" + b"a" * 50 + b" HTTP/1.1\r\nHost: a\r\n"
                         b"Connection: close\r\n\r\n")
    assert got == [200]


def test_too_many_header_fields(serve):
    server = serve(APP, "--limit-request-fields", "5")
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(10))
    assert_rejected(server, b"GET / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n", 431)
    got, _, _ = exchange(server, b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n"
                         b"Connection: close\r\n\r\n")
    assert got == [200]


def test_header_field_too_large(serve):
    server = serve(APP, "--limit-request-field-size", "100")
    raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"v" * 500 + b"\r\n\r\n"
    assert_rejected(server, raw, 431)


def test_endless_head_is_cut_off(serve):
    """A head that never ends gets 431 once it passes what the limits allow: the
    server does not keep buffering it (it answers long before we stop sending)."""
    server = serve(APP, "--limit-request-fields", "10", "--limit-request-field-size", "100")
    budget = 8 * 1024 * 1024
    piece = b"a" * 16384
    sent = 0
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nX-Endless: ")
        try:
            while sent < budget:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break  # the server answered
                sock.sendall(piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data, closed = read_until_close(sock)
    assert statuses(data) == [431], data
    assert closed
    assert sent < budget, "the server kept reading an endless head"
    assert_serving(server)


# -- bodies and framing ----------------------------------------------------------------------


def test_content_length_over_limit(serve, tmp_path):
    """413 as soon as the head announces too much: no body sent, the app never runs."""
    marker = tmp_path / "app-ran"
    server = serve(APP, "--limit-request-body", "100", env={"BIVIO_TEST_FILE": str(marker)})
    with connect(server) as sock:
        # Only the head: the server must not wait for (or read) the body to refuse it.
        sock.sendall(b"POST /wait-disconnect HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n")
        data, closed = read_until_close(sock)
    assert statuses(data) == [413], data
    assert closed
    assert_serving(server)
    # /wait-disconnect would write the marker (or log an exception) had it run.
    assert not marker.exists()
    assert "Exception in ASGI application" not in server.output
    # At the limit is accepted.
    got, data, _ = exchange(server, b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n"
                            b"Connection: close\r\n\r\n" + b"x" * 100)
    assert got == [200] and body_of(data) == b"x" * 100


def test_chunked_body_over_limit(serve):
    server = serve(APP, "--limit-request-body", "100")
    with connect(server) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(10):
            if select.select([sock], [], [], 0)[0]:
                break  # answered
            try:
                sock.sendall(b"20\r\n" + b"y" * 32 + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            # The server takes each chunk before the next comes (the app drains it as it
            # arrives): the limit is on the whole body, not on what is buffered.
            server_has_read(sock)
        data, closed = read_until_close(sock)
    assert statuses(data) == [413], data
    assert closed
    assert_serving(server)


def test_chunked_body_within_limit(serve):
    server = serve(APP, "--limit-request-body", "100")
    got, data, _ = exchange(server, b"POST /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n"
                            b"32\r\n" + b"z" * 50 + b"\r\n32\r\n" + b"z" * 50 + b"\r\n0\r\n\r\n")
    assert got == [200] and body_of(data) == b"z" * 100


def test_body_cut_short_by_half_close(serve):
    """The client half-closes in the middle of a body: that request can never finish,
    so the server drops it and closes instead of holding the connection forever."""
    server = serve(APP)
    with connect(server) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        sock.shutdown(socket.SHUT_WR)
        data, closed = read_until_close(sock)
    assert data == b""
    assert closed, "the server kept a connection whose request can never complete"
    assert_serving(server)


def test_unsupported_transfer_encoding(serve):
    server = serve(APP)
    assert_rejected(server, b"POST /echo HTTP/1.1\r\nHost: a\r\n"
                    b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501)


@pytest.mark.parametrize("coding", [b"gzip", b"chunked, gzip", b"chunked, chunked"])
def test_transfer_encoding_not_ending_in_one_chunked(serve, coding):
    """RFC 9112 6.3: unless chunked is the final coding the length is unknown: 400."""
    server = serve(APP)
    assert_rejected(server, b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: " + coding
                    + b"\r\n\r\n0\r\n\r\n", 400)


def test_content_length_and_transfer_encoding(serve):
    server = serve(APP)
    assert_rejected(server, b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400)


def test_conflicting_content_lengths(serve):
    server = serve(APP)
    assert_rejected(server, b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                    b"Content-Length: 5\r\n\r\nabcde", 400)


# -- Host and request target -----------------------------------------------------------------


def test_http11_without_host(serve):
    server = serve(APP)
    assert_rejected(server, b"GET / HTTP/1.1\r\n\r\n", 400)


def test_two_host_headers(serve):
    server = serve(APP)
    assert_rejected(server, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400)


def test_http10_without_host(serve):
    server = serve(APP)
    got, data, closed = exchange(server, b"GET / HTTP/1.0\r\n\r\n")
    assert got == [200] and body_of(data) == b"hello"
    assert closed  # HTTP/1.0 without keep-alive
    assert_serving(server)


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/0.9"])
def test_other_http_versions(serve, version):
    """llhttp parses HTTP/2.0 and HTTP/0.9 request lines; neither is HTTP/1.x: 505."""
    server = serve(APP)
    assert_rejected(server, b"GET / " + version + b"\r\nHost: a\r\n\r\n", 505)


def test_absolute_form_target(serve):
    """``GET http://host:1234/PATH?q=1 HTTP/1.1`` (RFC 9112 3.2.2): the app sees the
    path and query of the target. /scope is the route that reports its scope."""
    server = serve(APP)
    got, data, _ = exchange(server, b"GET http://host:1234/scope?q=1 HTTP/1.1\r\nHost: host:1234"
                            b"\r\nConnection: close\r\n\r\n")
    assert got == [200], data
    scope = json.loads(body_of(data))
    assert scope["path"] == "/scope"
    assert scope["raw_path"] == "/scope"
    assert scope["query_string"] == "q=1"
    # Any other path goes to the default route, which answers too.
    got, data, _ = exchange(server, b"GET http://host:1234/p?q=1 HTTP/1.1\r\nHost: host:1234"
                            b"\r\nConnection: close\r\n\r\n")
    assert got == [200] and body_of(data) == b"hello", data
    assert_serving(server)


# -- pipelining and syntax -------------------------------------------------------------------


def test_pipelined_request_then_garbage(serve):
    server = serve(APP)
    got, data, closed = exchange(server, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
                                 b"\x00\x01garbage\r\n\r\n")
    assert got == [200, 400], data
    assert data.index(b" 200 ") < data.index(b" 400 ")
    assert closed
    assert_serving(server)


def test_bare_lf_line_endings(serve):
    server = serve(APP)
    assert_rejected(server, b"GET / HTTP/1.1\nHost: a\n\n", 400)


def test_obs_fold(serve):
    server = serve(APP)
    assert_rejected(server, b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n", 400)


@pytest.mark.parametrize("byte", [b"\x01", b"\x00", b"\x7f", b"\x1b"])
def test_control_byte_in_header_value(serve, byte):
    server = serve(APP)
    assert_rejected(server, b"GET / HTTP/1.1\r\nHost: a\r\nX-Bad: a" + byte + b"b\r\n\r\n", 400)


# -- broken apps -----------------------------------------------------------------------------


def test_app_raises_before_response(serve):
    server = serve(APP)
    got, data, closed = exchange(server, b"GET /error-before HTTP/1.1\r\nHost: a\r\n\r\n")
    assert got == [500], data
    assert closed
    assert server.wait_for_output("RuntimeError: boom before start")
    assert "Traceback" in server.output
    assert_serving(server)


def test_app_raises_after_response_start(serve):
    server = serve(APP)
    got, data, closed = exchange(server, b"GET /error-after HTTP/1.1\r\nHost: a\r\n\r\n")
    assert got == [200], data
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert body.startswith(b"7\r\npartial\r\n")
    assert not body.endswith(b"0\r\n\r\n"), "a broken response must not look complete"
    assert closed
    assert server.wait_for_output("RuntimeError: boom after start")
    assert_serving(server)


def test_app_returns_without_response(serve):
    server = serve(APP)
    got, data, closed = exchange(server, b"GET /no-response HTTP/1.1\r\nHost: a\r\n\r\n")
    assert got == [500], data
    assert closed
    assert_serving(server)


# -- timeouts and capacity -------------------------------------------------------------------


def test_idle_keep_alive_connection_closed(serve):
    server = serve(APP, "--timeout-keep-alive", "1")
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        data, closed = read_until_close(sock)
    assert statuses(data) == [200], data
    assert b"connection: close" not in data.lower()  # it was kept alive, then closed idle
    assert closed, "an idle keep-alive connection was never closed"
    assert_serving(server)


def test_slowloris_head_gets_408(serve):
    server = serve(APP, "--timeout-request-header", "1")
    head = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-Slow: " + b"s" * 150
    served_meanwhile = None
    with connect(server) as slow:
        for i, byte in enumerate(head):
            readable, _, _ = select.select([slow], [], [], 0.1)
            if readable:
                break  # the server answered or closed
            try:
                slow.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            if i == 3:
                # Another client is served while the slow head trickles in.
                got, _, _ = exchange(server, b"GET / HTTP/1.1\r\nHost: a\r\n"
                                     b"Connection: close\r\n\r\n")
                served_meanwhile = got
        data, closed = read_until_close(slow)
    assert served_meanwhile == [200]
    assert statuses(data) == [408], data
    assert closed
    assert_serving(server)


def test_limit_concurrency_answers_503(serve, tmp_path):
    gate = tmp_path / "gate"
    server = serve(APP, "--limit-concurrency", "1", env={"BIVIO_TEST_FILE": str(gate)})
    with connect(server) as busy:
        # In flight until gate.go exists: however slow the machine, it is still running.
        busy.sendall(b"GET /gated HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        seen = []
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            got, data, _ = exchange(server, b"GET / HTTP/1.1\r\nHost: a\r\n"
                                    b"Connection: close\r\n\r\n")
            seen.extend(got)
            if got == [503]:
                break
            time.sleep(0.02)  # /gated is not in flight yet: try again
        (tmp_path / "gate.go").touch()
        slow_data, _ = read_until_close(busy)
    assert seen and seen[-1] == 503, seen
    assert statuses(slow_data) == [200] and body_of(slow_data) == b"gate open"
    assert_serving(server)


def test_slowhttptest_slowloris(serve, tmp_path):
    binary = shutil.which("slowhttptest")
    if binary is None:
        pytest.skip("slowhttptest is not installed (Debian package 'slowhttptest')")
    server = serve(APP, "--timeout-request-header", "2", "--no-access-log")
    prefix = tmp_path / "slowhttptest"
    attack = subprocess.Popen(
        [binary, "-c", "200", "-H", "-i", "1", "-r", "100", "-l", "8",
         "-u", f"http://127.0.0.1:{server.port}/", "-x", "24", "-p", "2",
         "-g", "-o", str(prefix)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        # The attack holds connections open (the positive signal), then we are served.
        deadline = time.monotonic() + 30
        while (held := established_connections(server.port)) < 20 \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        assert held >= 20, "the attack never connected"
        running = attack.poll() is None
        assert_serving(server)  # served while the attack holds its connections
        output, _ = attack.communicate(timeout=60)
    finally:
        if attack.poll() is None:
            attack.kill()
            attack.wait()
    assert running, "slowhttptest ended before a request could be made during the attack"
    assert attack.returncode == 0, output
    assert_serving(server)
    with open(f"{prefix}.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows, output
    assert max(int(r["Connected"]) for r in rows) > 0, rows  # the attack did connect
    assert int(rows[-1]["Closed"]) > 0, rows  # and the server closed its connections
    assert all(int(r["Service Available"]) > 0 for r in rows), rows
    assert "No open connections left" in output, output
