"""ASGI end to end: the HTTP scope, receive()/send() semantics, the extensions
bivio offers (pathsend, trailers, early hints), and the flags that shape what the
app sees or what the client gets (--root-path, --header, proxy headers, access
log, --uds, --fd).
"""

from __future__ import annotations

import json
import os
import socket

import httpx
import pytest

from .test_http1 import TIMEOUT, RawConn, get, post, wait_for_file

SPEC = "tests.apps.spec:app"
BASIC = "tests.apps.basic:app"


def scope_of(server, path: str = "/", **kwargs) -> dict:
    response = httpx.get(server.url + path, timeout=TIMEOUT, **kwargs)
    assert response.status_code == 200
    return response.json()


# -- the HTTP scope ------------------------------------------------------------------------


def test_scope_fields_exactly(serve):
    server = serve(SPEC)
    conn = RawConn.to(server)
    conn.send(b"GET /caf%C3%A9/a%2Fb%20c?x=1&y=%20z&x=2 HTTP/1.1\r\n"
              b"Host: example.test:8080\r\n"
              b"X-Dup: first\r\n"
              b"X-Mixed-Case: Value Keeps Case\r\n"
              b"x-dup: second\r\n"
              b"\r\n")
    resp = conn.read_response()
    assert resp.status == 200
    scope = json.loads(resp.body)
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/café/a/b c"
    assert scope["raw_path"] == "/caf%C3%A9/a%2Fb%20c"
    assert scope["query_string"] == "x=1&y=%20z&x=2"
    assert scope["root_path"] == ""
    assert scope["headers"] == [
        ["host", "example.test:8080"],
        ["x-dup", "first"],
        ["x-mixed-case", "Value Keeps Case"],
        ["x-dup", "second"],
    ]
    assert scope["client"] == ["127.0.0.1", conn.sock.getsockname()[1]]
    assert scope["server"] == ["127.0.0.1", server.port]
    assert {"http.response.pathsend", "http.response.trailers",
            "http.response.early_hint"} <= set(scope["extensions"])
    assert scope["state_keys"] == ["from_startup"]
    types = scope["types"]
    assert types["raw_path"] == "bytes"
    assert types["query_string"] == "bytes"
    assert types["path"] == "str"
    assert types["root_path"] == "str"
    assert types["method"] == "str"
    assert types["headers"] in ("list", "tuple")
    assert scope["header_types"] == ["bytes,bytes"]
    assert types["state"] == "dict"
    conn.close()


def test_scope_method_and_http10(serve):
    server = serve(SPEC)
    conn = RawConn.to(server)
    conn.send(b"PATCH /x HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
    scope = json.loads(conn.read_response().body)
    assert scope["method"] == "PATCH"
    assert scope["http_version"] == "1.0"
    assert scope["headers"] == [["content-length", "0"]]
    assert scope["query_string"] == ""


def test_scope_state_is_a_copy_per_request(serve):
    server = serve(SPEC)
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        for _ in range(3):
            # The route mutates its scope["state"]; the next request must not see it.
            assert client.get("/state").json() == ["from_startup"]


def test_root_path(serve):
    server = serve(SPEC, "--root-path", "/mount")
    scope = scope_of(server, "/sub/caf%C3%A9?q=1")
    assert scope["root_path"] == "/mount"
    assert scope["path"] == "/mount/sub/café"
    assert scope["raw_path"] == "/mount/sub/caf%C3%A9"
    assert scope["query_string"] == "q=1"


# -- receive() -----------------------------------------------------------------------------


def test_receive_messages_for_chunked_body(serve):
    server = serve(SPEC)
    conn = RawConn.to(server)
    conn.send(b"POST /messages HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"5\r\nhello\r\n")
    conn.sock.sendall(b"6\r\n world\r\n")
    conn.sock.sendall(b"0\r\n\r\n")
    log = json.loads(conn.read_response().body)
    assert all(m["type"] == "http.request" for m in log)
    assert "".join(m["body"] for m in log) == "hello world"
    assert [m["more_body"] for m in log] == [True] * (len(log) - 1) + [False]
    conn.close()


def test_receive_without_body_is_one_empty_message(serve):
    server = serve(SPEC)
    response = httpx.get(server.url + "/messages", timeout=TIMEOUT)
    assert response.json() == [{"type": "http.request", "body": "", "more_body": False}]


def test_receive_after_body_blocks_then_returns_disconnect(serve, tmp_path):
    marker = str(tmp_path / "marker")
    server = serve("tests.apps.flow:app", "--timeout-graceful-shutdown", "2",
                   env={"BIVIO_TEST_FILE": marker})
    conn = RawConn.to(server)
    conn.send(post("/receive-after", b"0123456789"))
    resp = conn.read_response()
    assert resp.body == b"done"
    result = json.loads(wait_for_file(marker) or "{}")
    assert result == {
        "blocked": True,  # no second http.request, nothing until the response completed
        "after": "http.disconnect",
        "again": "http.disconnect",
        "length": 10,
        "messages": 1,
    }
    # The connection is still fine for the next request.
    conn.send(get("/after"))
    assert conn.read_response().body == b"/after"
    conn.close()


# -- extensions ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [13, 5 * 1024 * 1024 + 7])
def test_pathsend(serve, tmp_path, size):
    path = tmp_path / "payload.bin"
    payload = os.urandom(size)
    path.write_bytes(payload)
    server = serve(BASIC, env={"BIVIO_TEST_FILE": str(path)})
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        for _ in range(2):  # twice on one connection: the framing stays right
            response = client.get("/pathsend")
            assert response.status_code == 200
            assert response.headers["content-length"] == str(size)
            assert response.content == payload


def test_pathsend_asyncio_loop(serve, tmp_path):
    path = tmp_path / "payload.bin"
    payload = os.urandom(3 * 1024 * 1024)
    path.write_bytes(payload)
    server = serve(BASIC, "--loop", "asyncio", env={"BIVIO_TEST_FILE": str(path)})
    response = httpx.get(server.url + "/pathsend", timeout=TIMEOUT)
    assert response.content == payload


def test_trailers_on_http11(serve):
    server = serve(BASIC)
    conn = RawConn.to(server)
    conn.send(get("/trailers"))
    resp = conn.read_response()
    assert resp.status == 200
    assert resp.get("transfer-encoding") == "chunked"
    assert resp.get("trailer") == "x-checksum"
    assert resp.body == b"data"
    assert resp.trailers == [("x-checksum", "abc123")]
    conn.send(get("/"))  # the connection survives the trailers
    assert conn.read_response().body == b"hello"
    conn.close()


def test_trailers_raw_bytes(serve):
    server = serve(BASIC)
    conn = RawConn.to(server)
    conn.send(get("/trailers", headers="Connection: close\r\n"))
    raw = conn.read_to_eof()
    body = raw.partition(b"\r\n\r\n")[2]
    assert body == b"4\r\ndata\r\n0\r\nx-checksum: abc123\r\n\r\n"


def test_trailers_dropped_on_http10(serve):
    server = serve(BASIC)
    conn = RawConn.to(server)
    conn.send(get("/trailers", version="1.0"))
    raw = conn.read_to_eof()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding" not in head.lower()
    assert body == b"data"
    assert b"abc123" not in raw


def test_early_hints(serve):
    server = serve(BASIC)
    conn = RawConn.to(server)
    conn.send(get("/early-hint"))
    hint = conn.read_response()
    assert hint.raw_head.startswith(b"HTTP/1.1 103 Early Hints\r\n")
    assert hint.get_all("link") == ["</style.css>; rel=preload; as=style"]
    final = conn.read_response()
    assert (final.status, final.body) == (200, b"after hint")
    conn.close()


def test_early_hints_skipped_for_http10(serve):
    server = serve(BASIC)
    conn = RawConn.to(server)
    conn.send(get("/early-hint", version="1.0"))
    raw = conn.read_to_eof()
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert b" 103 " not in raw
    assert raw.endswith(b"after hint")


def test_mixed_case_response_header_names(serve):
    server = serve(BASIC)
    conn = RawConn.to(server)
    conn.send(get("/mixed-case"))
    resp = conn.read_response()
    assert resp.status == 200
    assert resp.get("x-custom-header") == "Yes"
    assert resp.get("content-type") == "text/plain"
    assert resp.body == b"mixed"
    conn.close()


# -- app kinds ------------------------------------------------------------------------------


def test_asgi2_double_callable_app(serve):
    server = serve("tests.apps.spec:ASGI2App")
    response = httpx.get(server.url + "/two", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.text == "asgi2 /two"
    assert "Traceback" not in server.output


# -- response headers -------------------------------------------------------------------------


def test_default_headers(serve):
    server = serve(SPEC)
    response = httpx.get(server.url + "/", timeout=TIMEOUT)
    assert response.headers.get_list("server") == ["bivio"]
    assert len(response.headers.get_list("date")) == 1


def test_extra_header_flag(serve):
    server = serve(SPEC, "--header", "X-Extra: one", "--header", "x-other:two")
    response = httpx.get(server.url + "/", timeout=TIMEOUT)
    assert response.headers["x-extra"] == "one"
    assert response.headers["x-other"] == "two"


def test_no_server_and_no_date_header(serve):
    server = serve(SPEC, "--no-server-header", "--no-date-header")
    response = httpx.get(server.url + "/", timeout=TIMEOUT)
    assert response.status_code == 200
    assert "server" not in response.headers
    assert "date" not in response.headers


def test_app_server_header_replaces_default(serve):
    server = serve(SPEC)
    conn = RawConn.to(server)
    conn.send(get("/server-header"))
    resp = conn.read_response()
    assert resp.get_all("server") == ["custom-server/1.0"]
    assert len(resp.get_all("date")) == 1
    conn.close()


# -- proxy headers ---------------------------------------------------------------------------

FORWARDED = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}


def test_proxy_headers_trusted_from_localhost(serve):
    server = serve(SPEC)
    scope = scope_of(server, "/", headers=FORWARDED)
    assert scope["client"] == ["203.0.113.7", 0]
    assert scope["scheme"] == "https"


def test_proxy_headers_ignored_from_untrusted_peer(serve):
    server = serve(SPEC, "--forwarded-allow-ips", "10.0.0.1")
    scope = scope_of(server, "/", headers=FORWARDED)
    assert scope["client"][0] == "127.0.0.1"
    assert scope["client"][1] > 0
    assert scope["scheme"] == "http"


def test_proxy_headers_off(serve):
    server = serve(SPEC, "--no-proxy-headers")
    scope = scope_of(server, "/", headers=FORWARDED)
    assert scope["client"][0] == "127.0.0.1"
    assert scope["scheme"] == "http"


# -- access log ----------------------------------------------------------------------------


def test_access_log_line(serve):
    server = serve(SPEC)
    response = httpx.get(server.url + "/logged/path?x=1", timeout=TIMEOUT)
    size = len(response.content)
    expected = f'"GET /logged/path?x=1 HTTP/1.1" 200 {size} '
    assert server.wait_for_output(expected), server.output
    line = next(line for line in server.lines if expected in line)
    assert "127.0.0.1:" in line


def test_no_access_log(serve):
    server = serve(SPEC, "--no-access-log")
    assert httpx.get(server.url + "/not-logged", timeout=TIMEOUT).status_code == 200
    assert server.stop() == 0  # all output is in once the process has exited
    assert "/not-logged" not in server.output
    assert "Shutdown complete" in server.output


# -- where bivio listens ------------------------------------------------------------------------


def test_unix_domain_socket(serve, tmp_path):
    path = str(tmp_path / "bivio.sock")
    server = serve(SPEC, "--uds", path)
    assert server.url == f"unix:{path}"
    transport = httpx.HTTPTransport(uds=path)
    with httpx.Client(transport=transport, base_url="http://localhost", timeout=TIMEOUT) as c:
        for _ in range(2):
            response = c.get("/over-uds?q=1")
            assert response.status_code == 200
            scope = response.json()
            assert scope["path"] == "/over-uds"
            assert scope["query_string"] == "q=1"
    assert server.stop() == 0
    assert not os.path.exists(path)  # removed on shutdown


def test_inherited_file_descriptor(serve):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    try:
        server = serve(SPEC, "--fd", str(sock.fileno()))
    finally:
        sock.close()  # the server holds its own copy now
    assert server.url == f"http://127.0.0.1:{port}"
    scope = scope_of(server, "/via-fd")
    assert scope["path"] == "/via-fd"
    assert scope["server"] == ["127.0.0.1", port]
    assert server.stop() == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)


def test_root_path_kept_by_the_proxy_is_not_doubled(serve):
    """A proxy that forwards /mount/sub unchanged: the root is already in the path."""
    server = serve(SPEC, "--root-path", "/mount")
    scope = scope_of(server, "/mount/sub?q=1")
    assert scope["root_path"] == "/mount"
    assert scope["path"] == "/mount/sub"
    assert scope["raw_path"] == "/mount/sub"
    # A path that merely starts with the same letters is not under the mount.
    assert scope_of(server, "/mountain")["path"] == "/mount/mountain"
