"""WSGI end to end: PEP 3333 apps (tests/apps/wsgi_apps.py) served by a real bivio.

Covers detection, the environ, wsgi.input (every read method, chunked bodies,
100-continue), the response (iterables streamed, write(), file_wrapper with
sendfile and its fallback), start_response rules and errors, close() on every
path, clients that vanish, and a saturated thread pool.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import re
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import read_one_response, read_response

from bivio.core import exits

APP = "tests.apps.wsgi_apps:app"
VALIDATED = "tests.apps.wsgi_apps:validated"
PROGRESS_ENV = "BIVIO_WSGI_PROGRESS"
APPS_FILE = Path(__file__).resolve().parent.parent / "apps" / "wsgi_apps.py"


@pytest.fixture
def wsgi(serve, tmp_path):
    progress = tmp_path / "progress.txt"
    running = serve(APP, env={PROGRESS_ENV: str(progress)})
    running.progress = progress
    return running


def progress_has(running, text: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running.progress.exists() and text in running.progress.read_text():
            return True
        time.sleep(0.02)
    return False


def get(running, path: str, **kwargs) -> httpx.Response:
    return httpx.get(running.url + path, timeout=10, **kwargs)


# -- detection -------------------------------------------------------------------------------


def test_plain_function_is_detected_as_wsgi(wsgi):
    response = get(wsgi, "/")
    assert response.status_code == 200
    assert response.text == "Hello, WSGI!"
    assert "WSGI application:" in wsgi.output


def test_class_app_is_detected_as_wsgi(serve):
    running = serve("tests.apps.wsgi_apps:ClassApp")
    assert get(running, "/").text == "from a class"


def test_validator_wrapper_needs_interface_wsgi(serve):
    """``validator(app)`` takes ``*args``: detection guesses ASGI 3 (a wrong guess)."""
    wrong = serve(VALIDATED)
    response = get(wrong, "/")
    assert response.status_code == 500
    assert wrong.wait_for_output("Exception in ASGI application")
    right = serve(VALIDATED, "--interface", "wsgi")
    assert get(right, "/").text == "Hello, WSGI!"


def test_interface_asgi3_on_a_wsgi_app_is_a_500_with_a_traceback(serve):
    running = serve(APP, "--interface", "asgi3")
    assert get(running, "/").status_code == 500
    assert running.wait_for_output("Exception in ASGI application")


def test_asgi_app_forced_to_wsgi_is_a_500_with_a_traceback(serve):
    running = serve("tests.apps.basic:app", "--interface", "wsgi")
    assert get(running, "/").status_code == 500
    assert running.wait_for_output("Exception in WSGI application")
    assert running.wait_for_output("missing 1 required positional argument: 'send'")


def test_lifespan_on_is_refused_for_wsgi(serve):
    running = serve(APP, "--lifespan", "on", wait=False)
    assert running.proc.wait(20) == 2
    running._reader.join(5)
    assert "a WSGI application has no lifespan protocol" in running.output


# -- wsgiref.validate ------------------------------------------------------------------------


@pytest.fixture
def validated(serve, tmp_path):
    return serve(VALIDATED, "--interface", "wsgi")


@pytest.mark.parametrize("path", ["/", "/environ", "/stream?count=3", "/write", "/file",
                                  "/filelike", "/errors", "/exc-info", "/echo?mode=readn"])
def test_validator_passes(validated, path):
    response = httpx.post(validated.url + path, content=b"line\n" * 100, timeout=10)
    assert response.status_code in (200, 503)
    response = get(validated, path)
    assert response.status_code in (200, 503)
    validated.stop()
    for text in ("AssertionError", "Traceback", "WSGIWarning", "Exception ignored"):
        assert text not in validated.output, validated.output


# -- environ ---------------------------------------------------------------------------------


def environ_of(running, path: str = "/environ", **kwargs) -> dict:
    response = get(running, path, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def test_environ_basics(wsgi):
    env = environ_of(wsgi, "/environ?a=1&b=%20x", headers={"X-Custom": "yes"})
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/environ"
    assert env["QUERY_STRING"] == "a=1&b=%20x"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(wsgi.port)
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"].isdigit()
    assert env["HTTP_X_CUSTOM"] == "yes"
    assert env["HTTP_HOST"] == f"127.0.0.1:{wsgi.port}"
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.version"] == [1, 0]
    assert env["wsgi.multithread"] is True
    assert env["wsgi.multiprocess"] is False
    assert env["wsgi.run_once"] is False
    assert "CONTENT_LENGTH" not in env
    assert env["thread"].startswith("bivio-wsgi-")


def test_path_info_is_percent_decoded_latin1(wsgi):
    env = environ_of(wsgi, "/environ%20x/caf%C3%A9")
    # PEP 3333: the decoded bytes, each byte one latin-1 character.
    assert env["PATH_INFO"] == "/environ x/caf\u00c3\u00a9"


def test_root_path_is_script_name(serve):
    running = serve(APP, "--root-path", "/mount")
    env = environ_of(running, "/mount/environ")  # a proxy that keeps the prefix
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/mount", "/environ")
    env = environ_of(running, "/environ")  # a proxy that strips it
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/mount", "/environ")


def test_repeated_headers_are_joined_and_underscores_dropped(wsgi):
    with wsgi.connect() as sock:
        sock.sendall(b"GET /environ HTTP/1.1\r\nHost: x\r\nX-Multi: a\r\nX-Multi: b\r\n"
                     b"X-Auth-User: real\r\nX-Auth_User: spoofed\r\nCookie: a=1\r\n"
                     b"Cookie: b=2\r\nConnection: close\r\n\r\n")
        status, _, body = read_one_response(sock)
    env = json.loads(body)
    assert env["HTTP_X_MULTI"] == "a, b"
    assert env["HTTP_X_AUTH_USER"] == "real"
    assert env["HTTP_COOKIE"] == "a=1; b=2"


def test_trusted_proxy_headers_reach_the_environ(wsgi):
    env = environ_of(wsgi, headers={"X-Forwarded-Proto": "https",
                                    "X-Forwarded-For": "203.0.113.7"})
    assert env["wsgi.url_scheme"] == "https"
    assert env["REMOTE_ADDR"] == "203.0.113.7"


def test_untrusted_proxy_headers_are_ignored(serve):
    running = serve(APP, "--forwarded-allow-ips", "10.0.0.1")
    env = environ_of(running, headers={"X-Forwarded-Proto": "https"})
    assert env["wsgi.url_scheme"] == "http"


def test_one_thread_is_not_multithread(serve):
    running = serve(APP, "--threads", "1")
    assert environ_of(running)["wsgi.multithread"] is False


def test_wsgi_errors_go_to_the_server_log(wsgi):
    assert get(wsgi, "/errors").text == "logged"
    assert wsgi.wait_for_output("a line for the server log")
    assert wsgi.wait_for_output("partial line")


# -- wsgi.input --------------------------------------------------------------------------------

BODY = b"".join(b"line %d of the body\n" % i for i in range(5000))


@pytest.mark.parametrize("mode", ["read", "readn", "readline", "readlines", "iter",
                                  "content-length"])
def test_input_read_methods(wsgi, mode):
    response = httpx.post(f"{wsgi.url}/echo?mode={mode}", content=BODY, timeout=10)
    result = response.json()
    assert result["length"] == len(BODY)
    assert result["sha256"] == hashlib.sha256(BODY).hexdigest()
    assert result["content_length"] == str(len(BODY))


@pytest.mark.parametrize("mode", ["read", "readline", "content-length"])
def test_chunked_body_gets_a_content_length(wsgi, mode):
    def chunks():
        for i in range(0, len(BODY), 7000):
            yield BODY[i:i + 7000]
    response = httpx.post(f"{wsgi.url}/echo?mode={mode}", content=chunks(), timeout=10)
    result = response.json()
    assert result["length"] == len(BODY)
    assert result["content_length"] == str(len(BODY))
    assert result["sha256"] == hashlib.sha256(BODY).hexdigest()


def test_large_chunked_body_spools_beyond_memory(wsgi):
    big = b"z" * (3 * 1024 * 1024 + 17)

    def chunks():
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]
    result = httpx.post(f"{wsgi.url}/echo?mode=readn", content=chunks(), timeout=30).json()
    assert result["length"] == len(big)
    assert result["sha256"] == hashlib.sha256(big).hexdigest()


def test_body_limit_applies(serve):
    running = serve(APP, "--limit-request-body", "1000")
    response = httpx.post(f"{running.url}/echo", content=b"x" * 5000, timeout=10)
    assert response.status_code == 413
    assert get(running, "/").status_code == 200


def test_100_continue_only_when_the_app_reads(serve):
    # Streaming reads only: by default the body is read before the app runs, so the
    # 100 goes out at once (tests/e2e/test_wsgi_body.py).
    wsgi = serve(APP, "--wsgi-body", "stream")
    with wsgi.connect() as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        sock.settimeout(10)
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"hello")
        status, _, body = read_one_response(sock)
        assert status == 200 and json.loads(body)["length"] == 5
    with wsgi.connect() as sock:  # "/" never reads: the answer comes without a 100
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        data = read_response(sock)
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"100 Continue" not in data


# -- the response ---------------------------------------------------------------------------------


def test_generator_chunks_reach_the_client_as_produced(wsgi):
    with httpx.Client(timeout=10) as client, \
            client.stream("GET", wsgi.url + "/gated") as response:
        assert response.headers["transfer-encoding"] == "chunked"
        chunks = response.iter_raw()
        assert next(chunks) == b"before-gate;"  # hangs (and times out) if buffered
        assert httpx.get(wsgi.url + "/release", timeout=10).text == "released"
        assert b"".join(chunks) == b"after-gate;"


def test_generator_response(wsgi):
    assert get(wsgi, "/stream?count=50").text == "".join(f"chunk-{i};" for i in range(50))


def test_write_callable(wsgi):
    assert get(wsgi, "/write").text == "written-1;written-2;returned;"


def test_file_wrapper_sends_the_file(wsgi):
    data = APPS_FILE.read_bytes()
    response = get(wsgi, "/file")
    assert response.content == data
    assert response.headers["content-length"] == str(len(data))
    response = get(wsgi, "/file?offset=100")
    assert response.content == data[100:]


def test_file_wrapper_head(wsgi):
    response = httpx.head(wsgi.url + "/file", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-length"] == str(APPS_FILE.stat().st_size)
    assert response.content == b""


def test_file_wrapper_falls_back_for_file_likes(wsgi):
    assert get(wsgi, "/filelike").content == b"from-a-file-like;" * 1000


def test_head_gets_no_body(wsgi):
    response = httpx.head(wsgi.url + "/head", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len("body that HEAD does not get"))
    assert response.content == b""


def test_exc_info_replaces_the_status_before_headers_went_out(wsgi):
    response = get(wsgi, "/exc-info")
    assert response.status_code == 503
    assert response.text == "replaced by exc_info"


def test_hop_by_hop_headers_are_dropped(wsgi):
    with wsgi.connect() as sock:
        sock.sendall(b"GET /hop-by-hop HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = read_response(sock)
    head = data.split(b"\r\n\r\n")[0].lower()
    assert b"keep-alive: timeout" not in head and b"upgrade:" not in head
    assert data.endswith(b"hop-by-hop headers dropped")
    assert wsgi.wait_for_output("hop-by-hop header")


def test_keep_alive_across_wsgi_requests(wsgi):
    with httpx.Client(timeout=10) as client:
        for _ in range(20):
            assert client.get(wsgi.url + "/").text == "Hello, WSGI!"
            assert client.post(wsgi.url + "/echo", content=b"abc").json()["length"] == 3


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "log"), [
    ("/boom", "RuntimeError: the app exploded before start_response"),
    ("/non-iterable", "returned a non-iterable int object"),
    ("/no-start", "returned without calling start_response()"),
    ("/bad-status", "invalid status '20 OK'"),
    ("/twice", "start_response() called a second time without exc_info"),
    ("/str-body", "sent str, not bytes"),
    ("/bad-header", "control character in header 'X-Bad'"),
    ("/coroutine", "it looks like an ASGI application"),
])
def test_app_errors_are_500_with_a_clear_log_line(wsgi, path, log):
    response = get(wsgi, path)
    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    assert wsgi.wait_for_output(log), wsgi.output
    assert get(wsgi, "/").text == "Hello, WSGI!"  # still serving


def test_error_after_headers_closes_the_connection(wsgi):
    with wsgi.connect() as sock:
        sock.sendall(b"GET /boom-after HTTP/1.1\r\nHost: x\r\n\r\n")
        data = read_response(sock)
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert b"first chunk;" in data
    assert not data.endswith(b"0\r\n\r\n")  # no chunked terminator: the client sees the cut
    assert wsgi.wait_for_output("the iterable exploded after the headers went out")
    assert get(wsgi, "/").status_code == 200


# -- close() -------------------------------------------------------------------------------


def test_close_after_success(wsgi):
    assert get(wsgi, "/closing").text == "a;b;"
    assert progress_has(wsgi, "closed-after-success")


def test_close_after_error(wsgi):
    with wsgi.connect() as sock:
        sock.sendall(b"GET /closing-error HTTP/1.1\r\nHost: x\r\n\r\n")
        read_response(sock)
    assert progress_has(wsgi, "closed-after-error")


def test_close_on_client_disconnect_mid_stream_frees_the_thread(serve, tmp_path):
    progress = tmp_path / "progress.txt"
    running = serve(APP, "--threads", "1", env={PROGRESS_ENV: str(progress)})
    running.progress = progress
    with running.connect() as sock:
        sock.sendall(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(65536)
        assert progress_has(running, "sent 100")
    assert progress_has(running, "closed")
    # The only thread is free again.
    assert get(running, "/").text == "Hello, WSGI!"
    assert "Traceback" not in running.output


def test_client_vanishing_mid_body_frees_the_thread(serve, tmp_path):
    # Streaming reads only: by default a body is read before the app runs, and a client
    # that vanishes mid-body never reaches the app (tests/e2e/test_wsgi_body.py).
    progress = tmp_path / "progress.txt"
    running = serve(APP, "--threads", "1", "--wsgi-body", "stream",
                    env={PROGRESS_ENV: str(progress)})
    running.progress = progress
    with running.connect() as sock:
        sock.sendall(b"POST /read-record HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
                     + b"x" * 2000)
    assert progress_has(running, "read-error ClientDisconnected")
    assert get(running, "/").text == "Hello, WSGI!"


def test_slow_reader_backpressure_then_disconnect(serve, tmp_path):
    """The app produces faster than the client reads: the thread blocks, not memory grows;
    when the client leaves, close() runs and the thread comes back."""
    progress = tmp_path / "progress.txt"
    running = serve(APP, "--threads", "1", env={PROGRESS_ENV: str(progress)})
    running.progress = progress
    sock = running.connect()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
    assert progress_has(running, "started")
    sock.close()
    assert progress_has(running, "closed")
    assert get(running, "/").text == "Hello, WSGI!"


# -- the thread pool ---------------------------------------------------------------------------


def test_saturated_pool_neither_deadlocks_nor_loses_requests(serve):
    running = serve(APP, "--threads", "2")

    def one(i: int) -> str:
        with httpx.Client(timeout=30) as client:
            return client.get(f"{running.url}/slow?ms=30").text

    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        results = list(pool.map(one, range(80)))
    assert all(r.startswith("slept 30") for r in results)
    most = max(int(re.search(r"max-concurrent (\d+)", r).group(1)) for r in results)
    assert most <= 2


def test_saturated_pool_with_bodies_and_keep_alive(serve):
    """Threads that read bodies keep getting them while new requests are held back."""
    running = serve(APP, "--threads", "2")
    body = b"b" * (512 * 1024)

    def one(i: int) -> int:
        with httpx.Client(timeout=30) as client:
            total = 0
            for _ in range(3):
                total += client.post(f"{running.url}/echo?mode=readn", content=body).json()[
                    "length"]
                assert client.get(f"{running.url}/slow?ms=5").status_code == 200
            return total

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(16)))
    assert results == [3 * len(body)] * 16


def test_pipelined_requests_on_a_saturated_pool(serve):
    running = serve(APP, "--threads", "1")
    with running.connect() as sock:
        sock.sendall(b"GET /slow?ms=20 HTTP/1.1\r\nHost: x\r\n\r\n" * 5
                     + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = read_response(sock)
    assert data.count(b"HTTP/1.1 200 OK") == 6
    assert data.endswith(b"Hello, WSGI!")


def test_graceful_shutdown_waits_for_a_running_wsgi_request(serve, tmp_path):
    progress = tmp_path / "progress.txt"
    running = serve(APP, env={PROGRESS_ENV: str(progress)})
    running.progress = progress
    results: list[str] = []
    t = threading.Thread(target=lambda: results.append(
        httpx.get(running.url + "/slow?ms=500", timeout=10).text))
    t.start()
    assert progress_has(running, "slow-start")
    running.signal(signal.SIGTERM)
    t.join(15)
    assert results and results[0].startswith("slept 500")
    assert running.proc.wait(15) == 0


def test_a_running_wsgi_request_counts_for_the_limit_and_a_second_signal_aborts_it(
        serve, tmp_path):
    """A bodiless request runs without a Task (WSGIHandler.start_nowait); it is still a
    request in flight: it takes the --limit-concurrency place, graceful shutdown waits
    for it, and a second signal gives it up, logged, with exit code 5."""
    progress = tmp_path / "progress.txt"
    running = serve(APP, "--limit-concurrency", "1", env={PROGRESS_ENV: str(progress)})
    running.progress = progress
    with running.connect(timeout=30) as busy:
        busy.sendall(b"GET /slow?ms=30000 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert progress_has(running, "slow-start")
        refused = get(running, "/")
        assert refused.status_code == 503
        running.signal(signal.SIGTERM)
        assert running.wait_for_output("Waiting for 1 in-flight request(s)")
        running.signal(signal.SIGTERM)
        assert running.proc.wait(20) == exits.ABORTED
        assert read_response(busy) == b""  # cut off: no response
    assert re.search(r"Aborted GET /slow from 127\.0\.0\.1:\d+: closed by a second signal",
                     running.output), running.output
    assert "1 request(s) were aborted" in running.output
