"""--static over real sockets: the same answers in front of an ASGI app and a WSGI app.

Two servers for the module: ASGI (one process) and WSGI under ``--workers 2``,
which also shows the option reaches supervised workers.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import httpx
import pytest
from conftest import Running, read_one_response, start_bivio

BODY = b"0123456789" * 100  # 1000 bytes
CSS = b"body { color: red; }\n" * 20


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("static")
    files = base / "files"
    (files / "sub").mkdir(parents=True)
    (files / "data.txt").write_bytes(BODY)
    (files / "sub" / "app.0123456789ab.css").write_bytes(CSS)
    (files / "sub" / "app.0123456789ab.css.gz").write_bytes(gzip.compress(CSS, mtime=0))
    (files / "sub" / "app.0123456789ab.css.br").write_bytes(b"not really brotli")
    (files / "empty.bin").write_bytes(b"")
    (files / "caf\u00e9.txt").write_bytes(b"unicode name")
    (base / "secret.txt").write_bytes(b"outside the root")
    os.symlink(base / "secret.txt", files / "escape.txt")
    os.mkfifo(files / "fifo")
    return files


@pytest.fixture(scope="module", params=["asgi", "wsgi"])
def server(request: pytest.FixtureRequest, root: Path) -> Iterator[Running]:
    mount = f"/static/={root}"
    if request.param == "asgi":
        running = start_bivio("tests.apps.basic:app", "--static", mount)
    else:
        running = start_bivio("tests.apps.wsgi_apps:hello", "--static", mount, "--workers", "2")
    yield running
    running.stop()


def raw(server: Running, target: str, method: str = "GET", extra: str = "") -> tuple[int, dict,
                                                                                    bytes]:
    """Send a request line exactly as written (httpx would normalise ``..``)."""
    with server.connect() as sock:
        sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode("latin-1"))
        return read_one_response(sock)


def get(server: Running, path: str, **headers: str) -> httpx.Response:
    return httpx.get(server.url + path, headers=headers, timeout=10)


def test_full_file(server):
    r = get(server, "/static/data.txt")
    assert r.status_code == 200
    assert r.content == BODY
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.headers["content-length"] == "1000"
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["etag"].startswith('"')
    assert r.headers["last-modified"].endswith("GMT")
    assert r.headers["cache-control"] == "no-cache"
    assert "vary" not in r.headers  # no precompressed sibling


def test_the_app_still_answers_other_paths(server):
    r = get(server, "/hello")
    assert r.status_code == 200
    assert r.text.lower().startswith("hello")
    assert get(server, "/static").status_code == 200  # the prefix is /static/, not /static


def test_head(server):
    r = httpx.head(server.url + "/static/data.txt", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-length"] == "1000"
    assert r.content == b""


def test_conditional_requests(server):
    first = get(server, "/static/data.txt")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    r = get(server, "/static/data.txt", **{"if-none-match": etag})
    assert r.status_code == 304
    assert r.content == b""
    assert r.headers["etag"] == etag
    assert get(server, "/static/data.txt", **{"if-none-match": '"other", ' + etag}
               ).status_code == 304
    assert get(server, "/static/data.txt", **{"if-modified-since": modified}).status_code == 304
    # If-None-Match wins over If-Modified-Since.
    r = get(server, "/static/data.txt",
            **{"if-none-match": '"other"', "if-modified-since": modified})
    assert r.status_code == 200
    assert get(server, "/static/data.txt",
               **{"if-modified-since": formatdate(0, usegmt=True)}).status_code == 200
    assert get(server, "/static/data.txt",
               **{"if-modified-since": "not a date"}).status_code == 200


def test_ranges(server):
    r = get(server, "/static/data.txt", range="bytes=10-19")
    assert r.status_code == 206
    assert r.content == BODY[10:20]
    assert r.headers["content-range"] == "bytes 10-19/1000"
    r = get(server, "/static/data.txt", range="bytes=-5")
    assert (r.status_code, r.content) == (206, BODY[-5:])
    r = get(server, "/static/data.txt", range="bytes=995-2000")
    assert (r.status_code, r.content) == (206, BODY[995:])
    assert r.headers["content-range"] == "bytes 995-999/1000"


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable_range_is_416(server, header):
    r = get(server, "/static/data.txt", range=header)
    assert r.status_code == 416
    assert r.headers["content-range"] == "bytes */1000"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "bytes=9-3", "bytes=x-y", "lines=1-2",
                                    "bytes", "bytes=--1"])
def test_ignored_range_gets_the_whole_file(server, header):
    r = get(server, "/static/data.txt", range=header)
    assert (r.status_code, r.content) == (200, BODY)


def test_if_range(server):
    etag = get(server, "/static/data.txt").headers["etag"]
    r = get(server, "/static/data.txt", range="bytes=0-0", **{"if-range": etag})
    assert (r.status_code, r.content) == (206, b"0")
    r = get(server, "/static/data.txt", range="bytes=0-0", **{"if-range": '"stale"'})
    assert (r.status_code, r.content) == (200, BODY)


def test_range_on_empty_file(server):
    assert get(server, "/static/empty.bin", range="bytes=0-").status_code == 416
    r = get(server, "/static/empty.bin")
    assert (r.status_code, r.content) == (200, b"")


def test_precompressed_and_hashed(server):
    path = "/static/sub/app.0123456789ab.css"
    r = httpx.get(server.url + path, headers={"accept-encoding": "gzip"}, timeout=10)
    assert r.status_code == 200
    assert r.headers["content-encoding"] == "gzip"
    assert r.headers["vary"] == "Accept-Encoding"
    assert r.headers["content-type"] == "text/css; charset=utf-8"
    assert r.content == CSS  # httpx decoded the gzip body
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    br = raw(server, path, extra="Accept-Encoding: br, gzip\r\n")
    assert br[1]["content-encoding"] == "br"
    assert br[2] == b"not really brotli"
    assert br[1]["etag"] != r.headers["etag"]  # each encoding is its own representation
    plain = raw(server, path, extra="Accept-Encoding: gzip;q=0, br;q=0\r\n")
    assert "content-encoding" not in plain[1]
    assert plain[2] == CSS
    assert plain[1]["vary"] == "Accept-Encoding"


def test_unicode_name(server):
    assert get(server, "/static/caf%C3%A9.txt").content == b"unicode name"


@pytest.mark.parametrize("target", [
    "/static/../static/data.txt", "/static/%2e%2e/secret.txt", "/static/%2E%2E%2Fsecret.txt",
    "/static/sub/..%2f..%2fsecret.txt", "/static/..%5csecret.txt", "/static/a%00b",
    "/static/%ff", "/static/./data.txt",
])
def test_traversal_is_refused(server, target):
    status, _, body = raw(server, target)
    assert status == 400
    assert b"outside" not in body


@pytest.mark.parametrize("target", ["/static/escape.txt", "/static/sub/", "/static/sub",
                                    "/static/missing.txt", "/static/fifo", "/static/"])
def test_not_servable_is_404(server, target):
    status, _, body = raw(server, target)
    assert status == 404
    assert b"outside" not in body


def test_other_methods_are_405(server):
    status, headers, _ = raw(server, "/static/data.txt", method="POST",
                             extra="Content-Length: 0\r\n")
    assert status == 405
    assert headers["allow"] == "GET, HEAD"


def test_keep_alive_across_static_responses(server):
    with server.connect() as sock:
        for _ in range(3):
            sock.sendall(b"GET /static/data.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=0-2\r\n\r\n")
            assert read_one_response(sock)[::2] == (206, b"012")
        sock.sendall(b"GET /static/nope HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_one_response(sock)[0] == 404
