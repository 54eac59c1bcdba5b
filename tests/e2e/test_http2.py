"""HTTP/2 end to end: a real bivio process, curl, httpx, h2load and tests/h2client.py.

What is negotiated when (prior knowledge, ``Upgrade: h2c``, ALPN, ``--http``),
what the apps see (ASGI, WSGI, Django), trailers and early hints, request
bodies and their flow control, many streams on one connection, static files,
graceful shutdown, and WebSockets over HTTP/2 (RFC 8441). The attacks are in
test_http2_attacks.py. The app is tests/apps/h2.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from certs import Certs, make_certs
from conftest import Running, read_until_close, start_bivio, statuses
from h2client import (
    ENABLE_CONNECT_PROTOCOL,
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    NO_ERROR,
    PREFACE,
    PROTOCOL_ERROR,
    H2Client,
    WebSocketClosed,
    WebSocketRejected,
    error_name,
    h2c_upgrade,
    header_block,
    headers,
    request_block,
    settings,
    websocket_over_h2,
)

APP = "tests.apps.h2:app"
TIMEOUT = 10.0
BIG = 10 * 1024 * 1024


def _curl_has_http2() -> bool:
    if shutil.which("curl") is None:
        return False
    out = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout
    return "HTTP2" in out


needs_curl = pytest.mark.skipif(not _curl_has_http2(),
                                reason="curl with HTTP/2 support (nghttp2) is not installed")
needs_h2load = pytest.mark.skipif(shutil.which("h2load") is None,
                                  reason="h2load is not installed (Debian: nghttp2-client)")


@pytest.fixture(scope="module")
def server() -> Iterator[Running]:
    running = start_bivio(APP)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def h2(running: Running, **kwargs) -> H2Client:
    return H2Client.connect("127.0.0.1", running.port, **kwargs)


def calls(running: Running) -> list[str]:
    """What the app was given so far (tests/apps/h2.py), asked over HTTP/1.1."""
    return httpx.get(f"http://127.0.0.1:{running.port}/calls", timeout=TIMEOUT).json()


def calls_over_h2(running: Running) -> list[str]:
    """The same, over HTTP/2 (for ``--http h2``)."""
    with h2(running) as client:
        return client.request("GET", "/calls").json()


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "30", *args], capture_output=True,
                           text=True, timeout=60)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def header_of(scope: dict, name: str) -> list[str]:
    return [v for k, v in scope["headers"] if k == name]


# -- negotiation -------------------------------------------------------------------------------


def test_prior_knowledge_and_http1_share_the_port(server):
    with h2(server) as client:
        response = client.request("GET", "/scope?x=1")
        assert response.status == 200
        scope = response.json()
        assert scope["http_version"] == "2"
        assert scope["type"] == "http"
        assert scope["scheme"] == "http"
        assert scope["path"] == "/scope" and scope["query_string"] == "x=1"
    over_http1 = httpx.get(server.url + "/scope", timeout=TIMEOUT)
    assert over_http1.http_version == "HTTP/1.1"
    assert over_http1.json()["http_version"] == "1.1"


def test_the_server_settings(server):
    with h2(server) as client:
        assert client.server_settings.get(MAX_CONCURRENT_STREAMS) == 100
        assert client.server_settings.get(INITIAL_WINDOW_SIZE) == 1024 * 1024
        assert client.server_settings.get(ENABLE_CONNECT_PROTOCOL) == 1
        assert client.ping() < TIMEOUT


@needs_curl
def test_curl_prior_knowledge(server):
    result = curl("--http2-prior-knowledge", "-w", "\n%{http_version} %{http_code}",
                  server.url + "/")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello\n2 200"


@needs_curl
def test_curl_h2c_upgrade(server):
    result = curl("--http2", "-w", "\n%{http_version} %{http_code}", server.url + "/scope")
    assert result.returncode == 0, result.stderr
    body, _, status = result.stdout.rpartition("\n")
    assert status == "2 200"
    assert json.loads(body)["http_version"] == "2"


def test_h2c_upgrade(server):
    response, client = h2c_upgrade("127.0.0.1", server.port, "/scope?up=1")
    assert client is not None, response
    with client:
        assert response.http_version == "2" and response.stream_id == 1
        assert response.status == 200
        scope = response.json()
        assert scope["http_version"] == "2"
        assert scope["query_string"] == "up=1"
        # The connection goes on as HTTP/2: stream 3 is an ordinary request.
        again = client.request("GET", "/")
        assert again.stream_id == 3
        assert again.status == 200 and again.body == b"hello"


def test_h2c_upgrade_with_a_body_is_answered_over_http1(server):
    response, client = h2c_upgrade("127.0.0.1", server.port, "/echo", method="POST",
                                   body=b"stay on one")
    assert client is None
    assert response.http_version == "1.1"
    assert response.status == 200
    assert response.body == b"stay on one"


def test_httpx_http2(server):
    with httpx.Client(http1=False, http2=True, timeout=TIMEOUT) as client:
        responses = [client.get(server.url + f"/scope?n={i}") for i in range(3)]
    for response in responses:
        assert response.http_version == "HTTP/2"
        assert response.json()["http_version"] == "2"


def test_tls_alpn_h2(serve, certs: Certs):
    running = serve(APP, "--ssl-certfile", str(certs.cert), "--ssl-keyfile", str(certs.key))
    with h2(running, tls_context=certs.client_context()) as client:
        assert client.sock.selected_alpn_protocol() == "h2"
        scope = client.request("GET", "/scope").json()
        assert scope["http_version"] == "2"
        assert scope["scheme"] == "https"
        body = os.urandom(3 * 1024 * 1024)
        echoed = client.request("POST", "/echo", body=body, timeout=30)
        assert md5(echoed.body) == md5(body)
    with httpx.Client(http2=True, verify=certs.client_context(), timeout=TIMEOUT) as client:
        response = client.get(f"https://127.0.0.1:{running.port}/scope")
        assert response.http_version == "HTTP/2"
        assert response.json()["scheme"] == "https"
    # A TLS client that offers only http/1.1 is served HTTP/1.1 on the same port.
    with httpx.Client(http2=False, verify=certs.client_context(), timeout=TIMEOUT) as client:
        assert client.get(f"https://127.0.0.1:{running.port}/scope").json()[
            "http_version"] == "1.1"


def test_http_h1_serves_no_http2(serve):
    running = serve(APP, "--http", "h1")
    with running.connect() as sock:
        sock.sendall(PREFACE + settings())
        data, closed = read_until_close(sock)
    assert statuses(data) in ([400], [505]) or (closed and not data), data[:200]
    # An h2c upgrade offer is declined: the request is answered over HTTP/1.1.
    response, client = h2c_upgrade("127.0.0.1", running.port, "/scope")
    assert client is None
    assert response.http_version == "1.1" and response.status == 200
    assert json.loads(response.body)["http_version"] == "1.1"
    assert httpx.get(running.url + "/", timeout=TIMEOUT).text == "hello"


def test_http_h2_refuses_http1(serve):
    running = serve(APP, "--http", "h2")
    with running.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data, closed = read_until_close(sock)
    assert closed
    assert not statuses(data), data[:200]  # no HTTP/1.1 answer (a GOAWAY at most)
    with h2(running) as client:
        assert client.request("GET", "/").body == b"hello"
    assert "GET /" in calls_over_h2(running)



# -- what the app sees --------------------------------------------------------------------------


def test_authority_becomes_host_and_cookies_are_joined(server):
    with h2(server) as client:
        scope = client.request("GET", "/scope", [("cookie", "a=1"), ("cookie", "b=2"),
                                                 ("x-custom", "yes")],
                               authority="example.test:8443").json()
    assert header_of(scope, "host") == ["example.test:8443"]
    assert header_of(scope, "cookie") == ["a=1; b=2"]
    assert header_of(scope, "x-custom") == ["yes"]
    assert not [name for name, _ in scope["headers"] if name.startswith(":")]


def test_trailers(server):
    with h2(server) as client:
        response = client.request("GET", "/trailers", [("te", "trailers")])
    assert response.status == 200
    assert response.body == b"data"
    assert response.trailers == [(b"x-checksum", b"abc123")]


def test_early_hints(server):
    with h2(server) as client:
        response = client.request("GET", "/early-hint")
    assert [status for status, _ in response.informational] == [103]
    assert (b"link", b"</style.css>; rel=preload; as=style") in response.informational[0][1]
    assert response.status == 200
    assert response.body == b"after hint"


def test_streamed_response_and_errors(server):
    with h2(server) as client:
        assert client.request("GET", "/stream").body == b"part0;part1;part2;"
        partial = client.request("GET", "/error-after")
        # The response had started: the stream is reset, after what was sent.
        assert partial.status == 200 and partial.reset is not None
        assert partial.body == b"partial"
        assert client.request("GET", "/").body == b"hello"  # the connection is fine
        assert client.request("GET", "/error-before").status == 500
        # (bivio may end the connection gracefully after an app's 500, as over HTTP/1.1)
        assert client.goaway is None or client.goaway.error_code == NO_ERROR
    with h2(server) as client:
        assert client.request("GET", "/").body == b"hello"


# -- request bodies ------------------------------------------------------------------------------


def test_upload_10mib_echoed(server):
    body = os.urandom(BIG)
    with h2(server) as client:
        response = client.request("POST", "/echo", body=body, timeout=60)
    assert response.status == 200
    assert len(response.body) == BIG
    assert md5(response.body) == md5(body)


@needs_curl
def test_upload_10mib_echoed_curl(server, tmp_path: Path):
    body = os.urandom(BIG)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(body)
    out = tmp_path / "out.bin"
    result = curl("--http2-prior-knowledge", "--data-binary", f"@{upload}", "-o", str(out),
                  "-w", "%{http_version} %{http_code}", server.url + "/echo")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "2 200"
    assert md5(out.read_bytes()) == md5(body)


def test_upload_with_request_trailers(server):
    with h2(server) as client:
        response = client.request("POST", "/echo", [("content-type", "text/plain")],
                                  body=b"abc" * 1000, trailers=[("x-sum", "1")])
    assert response.body == b"abc" * 1000


def test_a_body_the_app_does_not_read_holds_its_stream_only(serve, tmp_path: Path):
    """Backpressure: the window opens only as the app reads; other streams go on."""
    gate = tmp_path / "gate"
    running = serve(APP, "--h2-initial-window-size", "65535",
                    env={"BIVIO_TEST_FILE": str(gate)})
    with h2(running) as client:
        assert client.server_settings[INITIAL_WINDOW_SIZE] == 65535
        sid = client.send_headers(client.request_headers("POST", "/gated"))
        with pytest.raises(TimeoutError):
            client.send_data(sid, b"x" * (1024 * 1024), timeout=2)
        assert client.conn.local_flow_control_window(sid) == 0
        assert client.request("GET", "/").body == b"hello"  # the connection is not stuck
        Path(str(gate) + ".go").touch()
        response = client.response(sid)
        assert response.status == 200 and response.body == b"gate open"


# -- many streams ---------------------------------------------------------------------------------


def test_fifty_concurrent_streams_on_one_connection(server):
    with h2(server) as client:
        start = time.monotonic()
        ids = [client.send_headers(client.request_headers("GET", "/slow?0.5"), end_stream=True)
               for _ in range(50)]
        client.read_events(until=lambda c: all(c.streams[s].done for s in ids), timeout=30)
        elapsed = time.monotonic() - start
        for sid in ids:
            assert client.streams[sid].status == 200
            assert bytes(client.streams[sid].body) == b"slow done"
    assert elapsed < 10, f"50 x 0.5 s took {elapsed:.1f} s: the streams did not run at once"


def test_interleaved_streams_keep_their_bodies_apart(server):
    bodies = {i: os.urandom(200_000 + i) for i in range(8)}
    with h2(server) as client:
        ids = {}
        for i in bodies:
            ids[i] = client.send_headers(client.request_headers(
                "POST", "/echo", [("content-length", str(len(bodies[i])))]))
        for offset in range(0, 200_008, 50_000):
            for i, body in bodies.items():
                piece = body[offset:offset + 50_000]
                if piece:
                    client.send_data(ids[i], piece,
                                     end_stream=offset + 50_000 >= len(body))
        for i, body in bodies.items():
            assert client.response(ids[i], timeout=30).body == body


def test_max_concurrent_streams_is_announced(serve):
    running = serve(APP, "--h2-max-concurrent-streams", "7")
    with h2(running) as client:
        assert client.server_settings[MAX_CONCURRENT_STREAMS] == 7
        ids = [client.send_headers(client.request_headers("GET", "/slow?0.2"), end_stream=True)
               for _ in range(7)]
        client.read_events(until=lambda c: all(c.streams[s].done for s in ids), timeout=20)
        assert all(client.streams[s].status == 200 for s in ids)


@needs_h2load
def test_h2load(server):
    result = subprocess.run(["h2load", "-n", "2000", "-c", "4", "-m", "20", server.url + "/"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded",
                      result.stdout)
    assert match, result.stdout
    assert match.groups() == ("2000", "2000", "2000"), result.stdout


# -- WSGI and Django ---------------------------------------------------------------------------


def test_wsgi_app_over_h2(serve):
    running = serve("tests.apps.wsgi_apps:app")
    body = os.urandom(BIG)
    with h2(running) as client:
        environ = client.request("GET", "/environ?a=b", authority="wsgi.test:81").json()
        assert environ["SERVER_PROTOCOL"] == "HTTP/2"
        assert environ["HTTP_HOST"] == "wsgi.test:81"
        assert environ["QUERY_STRING"] == "a=b"
        assert environ["wsgi.url_scheme"] == "http"
        echoed = client.request("POST", "/echo", body=body, timeout=60).json()
        assert echoed["length"] == BIG
        assert echoed["sha256"] == hashlib.sha256(body).hexdigest()
        assert client.request("GET", "/stream?count=3").body == b"chunk-0;chunk-1;chunk-2;"
        ids = [client.send_headers(client.request_headers("GET", "/"), end_stream=True)
               for _ in range(20)]
        client.read_events(until=lambda c: all(c.streams[s].done for s in ids), timeout=30)
        assert {bytes(client.streams[s].body) for s in ids} == {b"Hello, WSGI!"}


@pytest.fixture
def django_env() -> dict[str, str]:
    pytest.importorskip("django")
    return {"DJANGO_SETTINGS_MODULE": "tests.apps.djangoproj.wsgi_settings"}


def test_django_wsgi_over_h2(serve, django_env):
    running = serve("tests.apps.djangoproj.wsgi:application", env=django_env)
    body = os.urandom(BIG)
    with h2(running) as client:
        meta = client.request("GET", "/meta/?q=1", authority="django.test:8000").json()
        assert meta["host"] == "django.test:8000"
        assert meta["HTTP_HOST"] == "django.test:8000"
        assert meta["GET"] == {"q": ["1"]}
        uploaded = client.request("POST", "/wsgi/upload/", body=body, timeout=60).json()
        assert uploaded["length"] == BIG
        assert uploaded["sha256"] == hashlib.sha256(body).hexdigest()


def test_django_asgi_over_h2(serve):
    pytest.importorskip("django")
    running = serve("tests.apps.djangoproj.asgi:application",
                    env={"DJANGO_SETTINGS_MODULE": "tests.apps.djangoproj.settings"})
    with h2(running) as client:
        meta = client.request("GET", "/meta/", authority="asgi.test").json()
        assert meta["host"] == "asgi.test"
        assert client.request("GET", "/async/").status == 200


# -- static files ---------------------------------------------------------------------------------


def test_static_files_and_ranges(serve, tmp_path: Path):
    content = bytes(range(256)) * 400  # 102,400 bytes: several DATA frames
    (tmp_path / "data.bin").write_bytes(content)
    running = serve(APP, "--static", f"/static/={tmp_path}")
    with h2(running) as client:
        whole = client.request("GET", "/static/data.bin")
        assert whole.status == 200
        assert whole.body == content
        assert whole.header("content-length") == str(len(content))
        part = client.request("GET", "/static/data.bin", [("range", "bytes=1000-1999")])
        assert part.status == 206
        assert part.body == content[1000:2000]
        assert part.header("content-range") == f"bytes 1000-1999/{len(content)}"
        assert client.request("GET", "/static/missing.bin").status == 404
        head = client.request("HEAD", "/static/data.bin")
        assert head.status == 200 and head.body == b""
    assert "GET /static/data.bin" not in calls(running)


# -- graceful shutdown ------------------------------------------------------------------------


def test_sigterm_lets_an_in_flight_stream_finish(serve):
    running = serve(APP)
    with h2(running) as client:
        sid = client.send_headers(client.request_headers("GET", "/slow-stream?8"),
                                  end_stream=True)
        client.read_events(until=lambda c: b"part0;" in c.streams[sid].body)
        running.signal(signal.SIGTERM)
        response = client.response(sid, timeout=20)
        assert client.goaway is not None, "no GOAWAY on shutdown"
        assert client.goaway.error_code == NO_ERROR, client.goaway
        assert client.goaway.last_stream_id >= sid
        assert response.status == 200 and response.reset is None
        assert response.body == b"".join(b"part%d;" % i for i in range(8)) + b"end"
        assert client.wait_closed()
    assert running.proc.wait(20) == 0


def test_sigterm_closes_a_websocket_over_h2_with_1012(serve):
    running = serve(APP)
    with h2(running) as client:
        ws = websocket_over_h2(client, "/echo")
        ws.send_text("before")
        assert ws.recv() == "before"
        running.signal(signal.SIGTERM)
        with pytest.raises(WebSocketClosed) as closed:
            ws.recv(timeout=20)
        assert closed.value.code == 1012
        assert client.goaway is not None and client.goaway.error_code == NO_ERROR
    assert running.proc.wait(20) == 0


# -- WebSockets over HTTP/2 (RFC 8441) ---------------------------------------------------------


def test_websocket_scope(server):
    with h2(server) as client:
        assert client.server_settings.get(ENABLE_CONNECT_PROTOCOL) == 1
        ws = websocket_over_h2(client, "/scope?room=1")
        assert ws.status == 200
        view = json.loads(ws.recv())
        assert view["type"] == "websocket"
        assert view["http_version"] == "2"
        assert view["scheme"] == "ws"
        assert view["path"] == "/scope" and view["query_string"] == "room=1"
        assert ws.close() == (1000, "")


def test_websocket_echo_and_http_on_the_same_connection(server):
    with h2(server) as client:
        ws = websocket_over_h2(client, "/echo")
        ws.send_text("héllo")
        assert ws.recv() == "héllo"
        ws.send_bytes(b"\x00\xff" * 40_000)  # larger than a frame and a window update
        assert ws.recv() == b"\x00\xff" * 40_000
        ws.ping(b"are you there")
        other = websocket_over_h2(client, "/echo")
        assert client.request("GET", "/").body == b"hello"
        other.send_text("second")
        ws.send_text("first")
        assert other.recv() == "second"
        assert ws.recv() == "first"
        assert ws.close(1000, "bye") == (1000, "bye")
        assert ws.stream.ended
        other.send_text("still here")
        assert other.recv() == "still here"


def test_websocket_permessage_deflate(server):
    with h2(server) as client:
        ws = websocket_over_h2(client, "/echo", deflate=True)
        assert ws.extensions == ["permessage-deflate"]
        message = "compressible " * 10_000
        ws.send_text(message)
        assert ws.recv() == message
        assert len(ws.stream.body) < len(message) // 10  # it came compressed


def test_websocket_close_codes(server):
    with h2(server) as client:
        ws = websocket_over_h2(client, "/record")
        ws.send_text("one")
        assert ws.recv() == "one"
        assert ws.close(4321, "client done") == (4321, "client done")
        events = client.request("GET", "/events").json()
        recorded = [e for e in events if e["path"] == "/record"]
        assert recorded and recorded[-1]["type"] == "websocket.disconnect"
        assert recorded[-1]["code"] == 4321
        closing = websocket_over_h2(client, "/server-close")
        assert closing.recv() == "bye"
        with pytest.raises(WebSocketClosed) as closed:
            closing.recv()
        assert (closed.value.code, closed.value.reason) == (4001, "done here")


def test_websocket_subprotocol(server):
    with h2(server) as client:
        ws = websocket_over_h2(client, "/subprotocol", subprotocols=["superchat", "chat"])
        assert ws.subprotocol == "superchat"
        assert ws.recv() == "superchat"


def test_websocket_denied_is_a_403(server):
    with h2(server) as client:
        with pytest.raises(WebSocketRejected) as rejected:
            websocket_over_h2(client, "/deny")
        assert rejected.value.response.status == 403
        assert rejected.value.response.body == b"Forbidden"
        assert client.goaway is None or client.goaway.error_code == NO_ERROR
    assert "ws /deny" in calls(server)


def test_websocket_over_tls(serve, certs: Certs):
    running = serve(APP, "--ssl-certfile", str(certs.cert), "--ssl-keyfile", str(certs.key))
    with h2(running, tls_context=certs.client_context()) as client:
        ws = websocket_over_h2(client, "/scope")
        view = json.loads(ws.recv())
        assert view["scheme"] == "wss" and view["http_version"] == "2"
        ws.close()


def test_ws_none_announces_no_extended_connect(serve):
    running = serve(APP, "--ws", "none")
    with h2(running) as client:
        assert client.server_settings.get(ENABLE_CONNECT_PROTOCOL, 0) == 0
        sid = client.new_stream_id()
        client.send_raw(headers(sid, request_block(
            "CONNECT", "/echo", authority=client.authority, pseudo=[(":protocol", "websocket")],
            extra=[("sec-websocket-version", "13")]), end_stream=False))
        client.read_frames(until=lambda c: c.stream(sid).done or c.goaway is not None
                           or c.closed)
        stream = client.stream(sid)
        refused = (stream.status is not None and stream.status >= 400) or \
            stream.reset == PROTOCOL_ERROR or \
            (client.goaway is not None and client.goaway.error_code == PROTOCOL_ERROR)
        assert refused, (stream, client.goaway, error_name(stream.reset))
        assert stream.status != 200
    assert "ws /echo" not in calls(running)


def test_a_raw_request_is_served(server):
    """The control for the raw-frame tests: a well-formed raw request gets its answer."""
    with h2(server) as client:
        sid = client.new_stream_id()
        client.send_raw(headers(sid, header_block(
            [(":method", "GET"), (":scheme", "http"), (":authority", client.authority),
             (":path", "/raw-control"), ("user-agent", "raw")])))
        client.read_frames(until=lambda c: c.stream(sid).done)
        assert client.stream(sid).status == 200
        assert bytes(client.stream(sid).body) == b"hello"
    assert "GET /raw-control" in calls(server)
