"""A real Django project (tests/apps/djangoproj) served through ``get_asgi_application()``.

These cover what Django's ASGI handler relies on from a server, and what has
broken other servers: lifespan rejection, header case, streaming, the
``http.disconnect`` that cancels a view whose client left, request.META built
from the scope, and large request bodies.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import struct
import time
from pathlib import Path

import httpx
import pytest
from conftest import read_one_response, read_response, server_has_read

pytest.importorskip("django")

APP = "tests.apps.djangoproj.asgi:application"
PROGRESS_ENV = "BIVIO_DJANGO_PROGRESS"
ENV = {"DJANGO_SETTINGS_MODULE": "tests.apps.djangoproj.settings"}

# Noise that must never show up in the server output of a healthy run.
NOISE = ("Traceback", "Task exception was never retrieved", "CancelledError",
         "was never awaited", "Exception in ASGI application")


def start_django(serve, tmp_path, *args: str):
    """A bivio process serving the Django project; views log progress to a file."""
    progress = tmp_path / "progress.txt"
    running = serve(APP, *args, env={**ENV, PROGRESS_ENV: str(progress)})
    running.progress = progress
    return running


@pytest.fixture
def django_server(serve, tmp_path):
    return start_django(serve, tmp_path)


@pytest.fixture(params=["asyncio", "uvloop"])
def django_any_loop(request, serve, tmp_path):
    """The Django project on each event loop bivio supports."""
    return start_django(serve, tmp_path, "--loop", request.param)


def assert_quiet(output: str) -> None:
    for text in NOISE:
        assert text not in output, f"{text!r} in server output:\n{output}"
    # bivio's log lines read "<date> <time> [<pid>] LEVEL message".
    assert not re.search(r"\] (WARNING|ERROR|CRITICAL) ", output), output


def progress_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def wait_for_line(path: Path, line: str, timeout: float = 40.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = progress_lines(path)
        if line in lines:
            return lines
        time.sleep(0.05)
    return progress_lines(path)


def close_connection(sock: socket.socket, how: str) -> None:
    """Leave: a normal close (FIN) or an abortive one (RST)."""
    if how == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# -- plain requests ------------------------------------------------------------------


def test_sync_view(django_server):
    response = httpx.get(django_server.url + "/sync/")
    assert response.status_code == 200
    # Django runs sync views in a worker thread, never on the event loop's thread.
    assert response.text == "sync view, main thread: False"


def test_async_view(django_server):
    response = httpx.get(django_server.url + "/async/")
    assert response.status_code == 200
    assert response.text == "async view"


def test_post_json_echo(django_server):
    payload = {"name": "bivio", "numbers": [1, 2, 3], "nested": {"ok": True, "text": "é"}}
    response = httpx.post(django_server.url + "/echo-json/", json=payload)
    assert response.status_code == 200
    assert response.json() == {"method": "POST", "content_type": "application/json",
                               "received": payload}


def test_many_requests_on_one_connection(django_server):
    with httpx.Client(base_url=django_server.url) as client:
        for i in range(20):
            path = "/async/" if i % 2 else "/sync/"
            response = client.get(path)
            assert response.status_code == 200, path
    assert_quiet(django_server.output)


def test_response_headers_keep_their_case_and_values(django_server):
    sock = django_server.connect()
    sock.sendall(b"GET /headers/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    raw = read_response(sock)
    sock.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 OK"
    # Django sends mixed-case names; they must go out as sent, once each.
    assert b"Content-Type: text/plain; charset=utf-8" in lines
    assert b"X-Custom-Header: Custom-Value" in lines
    assert b"Cache-Control: no-store" in lines
    assert b"X-Frame-Options: DENY" in lines  # set by XFrameOptionsMiddleware
    assert b"Set-Cookie: flavour=oatmeal; Path=/" in lines
    names = [line.split(b":", 1)[0].lower() for line in lines[1:]]
    assert names.count(b"content-type") == 1
    assert names.count(b"content-length") == 1
    assert body == b"headers"


def test_response_headers_through_httpx(django_server):
    response = httpx.get(django_server.url + "/headers/")
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-custom-header"] == "Custom-Value"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.cookies["flavour"] == "oatmeal"


def test_view_that_raises_gives_500(django_server):
    for path in ("/boom/", "/async-boom/"):
        response = httpx.get(django_server.url + path)
        assert response.status_code == 500, path
        assert "Server Error (500)" in response.text
    # Django handled it: the server has nothing to report, and carries on.
    assert_quiet(django_server.output)
    assert httpx.get(django_server.url + "/sync/").status_code == 200


def test_unknown_url_gives_django_404(django_server):
    response = httpx.get(django_server.url + "/no/such/page/")
    assert response.status_code == 404
    assert "Not Found" in response.text


# -- lifespan ------------------------------------------------------------------------


def test_lifespan_auto_tolerates_django(django_server):
    assert httpx.get(django_server.url + "/sync/").status_code == 200
    output = django_server.output
    assert "Traceback" not in output
    for line in output.splitlines():
        if "lifespan" in line.lower():
            assert " WARNING " not in line and " ERROR " not in line, line
    assert django_server.stop() == 0
    assert "Traceback" not in django_server.output


def test_lifespan_on_refuses_django(serve):
    running = serve(APP, "--lifespan", "on", env=ENV, wait=False)
    assert running.proc.wait(30) == 3
    running.stop()
    assert "startup failed" in running.output
    assert "serving on" not in running.output


# -- streaming -----------------------------------------------------------------------


def test_streaming_response_sends_every_chunk(django_server):
    sock = django_server.connect()
    sock.sendall(b"GET /stream/?count=25 HTTP/1.1\r\nHost: localhost\r\n\r\n")
    status, headers, body = read_one_response(sock)
    assert status == 200
    assert headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in headers
    assert body == b"".join(b"chunk-%d;" % i for i in range(25))
    # The connection stays usable after a chunked response.
    sock.sendall(b"GET /async/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
    status, _, body = read_one_response(sock)
    sock.close()
    assert (status, body) == (200, b"async view")


def test_streaming_response_over_http10_ends_with_close(django_server):
    sock = django_server.connect()
    sock.sendall(b"GET /stream/?count=4 HTTP/1.0\r\nHost: localhost\r\n\r\n")
    raw = read_response(sock)
    sock.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding" not in head.lower()
    assert body == b"chunk-0;chunk-1;chunk-2;chunk-3;"


@pytest.mark.parametrize("how", ["close", "reset"])
def test_client_leaving_a_stream_stops_the_generator(django_any_loop, how):
    """1000 chunks 20 ms apart: a client leaving after a few must stop the generator."""
    django_server = django_any_loop
    sock = django_server.connect()
    sock.sendall(b"GET /stream-forever/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
    received = b""
    while received.count(b"x" * 100) < 3:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the stream early"
        received += chunk
    close_connection(sock, how)

    lines = wait_for_line(django_server.progress, "finally")
    assert "finally" in lines, lines
    chunks = [line for line in lines if line.startswith("chunk ")]
    assert "completed" not in lines
    assert 3 <= len(chunks) < 1000
    # Django's disconnect listener got http.disconnect and cancelled the response
    # task: the generator sees CancelledError (not just a failed send).
    assert "cancelled" in lines, lines

    # The generator stays stopped, and the server keeps serving.
    # ("finally" ran: that generator cannot yield again.) A whole request later, on the
    # same event loop, nothing was added.
    stopped_at = len(progress_lines(django_server.progress))
    response = httpx.get(django_server.url + "/sync/")
    assert response.status_code == 200
    assert len(progress_lines(django_server.progress)) == stopped_at
    assert_quiet(django_server.output)
    # Nothing surfaces late either (never-retrieved task exceptions show at exit).
    assert django_server.stop() == 0
    assert_quiet(django_server.output)


def test_client_reset_cancels_a_long_poll_view(django_any_loop):
    """An async view waiting on something: an aborted client must cancel it."""
    django_server = django_any_loop
    sock = django_server.connect()
    sock.sendall(b"GET /wait-forever/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert "waiting" in wait_for_line(django_server.progress, "waiting", 20)
    close_connection(sock, "reset")
    lines = wait_for_line(django_server.progress, "finally")
    assert lines == ["waiting", "cancelled", "finally"]
    assert httpx.get(django_server.url + "/async/").status_code == 200
    assert django_server.stop() == 0
    assert_quiet(django_server.output)


def test_client_close_cancels_a_long_poll_view(django_any_loop):
    """A client that closes (FIN) after its request has left: the view is cancelled."""
    django_server = django_any_loop
    sock = django_server.connect()
    sock.sendall(b"GET /wait-forever/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert "waiting" in wait_for_line(django_server.progress, "waiting", 20)
    close_connection(sock, "close")
    lines = wait_for_line(django_server.progress, "finally")
    assert lines == ["waiting", "cancelled", "finally"]
    assert httpx.get(django_server.url + "/async/").status_code == 200
    assert django_server.stop() == 0
    assert_quiet(django_server.output)


# -- what Django sees of the request -----------------------------------------------------


def test_request_meta_from_scope(django_server):
    sock = django_server.connect()
    client_port = sock.getsockname()[1]
    sock.sendall(b"GET /meta/caf%C3%A9/x?a=1&b=%20two&a=3 HTTP/1.1\r\n"
                 b"Host: example.test:8080\r\nX-Custom: custom value\r\n\r\n")
    status, _, body = read_one_response(sock)
    sock.close()
    assert status == 200
    meta = json.loads(body)
    assert meta["path"] == "/meta/café/x"
    assert meta["path_info"] == "/meta/café/x"
    assert meta["rest"] == "café/x"
    assert meta["script_name"] == ""
    assert meta["query_string"] == "a=1&b=%20two&a=3"
    assert meta["GET"] == {"a": ["1", "3"], "b": [" two"]}
    assert meta["full_path"] == "/meta/caf%C3%A9/x?a=1&b=%20two&a=3"
    assert meta["REQUEST_METHOD"] == "GET"
    assert meta["REMOTE_ADDR"] == "127.0.0.1"
    assert meta["REMOTE_PORT"] == client_port
    assert meta["SERVER_PORT"] == str(django_server.port)
    assert meta["SERVER_NAME"] == "127.0.0.1"
    assert meta["HTTP_HOST"] == "example.test:8080"
    assert meta["host"] == "example.test:8080"
    assert meta["HTTP_X_CUSTOM"] == "custom value"
    assert meta["scheme"] == "http"
    assert meta["is_secure"] is False


def test_request_meta_through_trusted_proxy(django_server):
    # The test client connects from 127.0.0.1, trusted by default.
    response = httpx.get(django_server.url + "/meta/",
                         headers={"X-Forwarded-Proto": "https",
                                  "X-Forwarded-For": "203.0.113.7"})
    meta = response.json()
    assert meta["scheme"] == "https"
    assert meta["is_secure"] is True
    assert meta["REMOTE_ADDR"] == "203.0.113.7"


def test_request_meta_untrusted_proxy_headers_ignored(serve):
    running = serve(APP, "--forwarded-allow-ips", "192.0.2.1", env=ENV)
    response = httpx.get(running.url + "/meta/",
                         headers={"X-Forwarded-Proto": "https",
                                  "X-Forwarded-For": "203.0.113.7"})
    meta = response.json()
    assert meta["scheme"] == "http"
    assert meta["REMOTE_ADDR"] == "127.0.0.1"


def test_root_path_becomes_script_name(serve):
    running = serve(APP, "--root-path", "/prefix", env=ENV)
    response = httpx.get(running.url + "/meta/?q=1")
    assert response.status_code == 200
    meta = response.json()
    assert meta["script_name"] == "/prefix"
    assert meta["path_info"] == "/meta/"
    assert meta["path"] == "/prefix/meta/"
    assert meta["full_path"] == "/prefix/meta/?q=1"


# -- request bodies -------------------------------------------------------------------


def test_large_upload_reaches_async_view(django_server):
    data = os.urandom(5 * 1024 * 1024)
    response = httpx.post(django_server.url + "/upload/", content=data, timeout=60)
    assert response.status_code == 200
    assert response.json() == {"length": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                               "content_length": str(len(data))}


def test_large_chunked_upload_reaches_async_view(django_server):
    data = os.urandom(5 * 1024 * 1024)

    def pieces():
        for i in range(0, len(data), 100_000):
            yield data[i:i + 100_000]

    response = httpx.post(django_server.url + "/upload/", content=pieces(), timeout=60)
    assert response.status_code == 200
    body = response.json()
    assert body["length"] == len(data)
    assert body["sha256"] == hashlib.sha256(data).hexdigest()


def test_upload_with_expect_continue(django_server):
    data = b"y" * 200_000
    sock = django_server.connect()
    sock.sendall(b"POST /upload/ HTTP/1.1\r\nHost: localhost\r\n"
                 b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(data))
    sock.settimeout(10)
    interim = b""
    while b"\r\n\r\n" not in interim:
        chunk = sock.recv(1024)
        assert chunk
        interim += chunk
    assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    sock.sendall(data)
    status, _, body = read_one_response(sock)
    sock.close()
    assert status == 200
    assert json.loads(body)["length"] == len(data)


def test_client_leaving_during_upload_is_quiet(django_server):
    sock = django_server.connect()
    sock.sendall(b"POST /upload/ HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000\r\n\r\n")
    sock.sendall(b"z" * 100_000)
    assert server_has_read(sock)  # the upload is under way on the server: leave now
    close_connection(sock, "reset")
    assert httpx.get(django_server.url + "/sync/").status_code == 200
    assert django_server.stop() == 0
    assert_quiet(django_server.output)
