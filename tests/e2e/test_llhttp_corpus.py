"""Replay llhttp's request test cases (tests/data/llhttp-requests.json) against bivio.

Every case goes over its own raw socket to one bivio process started for this
module. The served app (``app`` below) reads the whole request body before it
answers, so a request whose body never finishes really is waited for.

- ``error``: the answer is ``200`` for each complete message before the bad one,
  then a 4xx, then the connection closes. Cases whose error is "Data after
  `Connection: close`" get the first answer and a close, nothing more.
- ``complete``: every message is answered: 200, or 501 when a Transfer-Encoding
  other than ``chunked`` is used (RFC 9112 6.1).
- ``incomplete``: the complete messages are answered, then the server waits:
  nothing more arrives and the connection stays open.

Cases that lack the Host header HTTP/1.1 requires (``http11_no_host``) get
``Host: a`` after each HTTP/1.1 request line, so they test what they were
written for rather than the missing Host. After each case a fresh connection
must still be served.

Where a correct server must differ from llhttp's verdict, :data:`OVERRIDES`
says so with the reason.
"""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parent.parent / "data" / "llhttp-requests.json"
CASES = json.loads(CORPUS.read_text(encoding="utf-8"))
DATA_AFTER_CLOSE = "Data after `Connection: close`"
READ_TIMEOUT = 3.0  # only to avoid hangs; every case is answered (or not) at once
QUIET = 1.0  # how long an incomplete request must go unanswered

# Expected statuses where a correct HTTP/1.1 server differs from llhttp's verdict.
OVERRIDES = {
    # An HTTP/0.9 request line (no HTTP-version): llhttp parses it, but it is not
    # HTTP/1.x (RFC 9112 3: request-line needs an HTTP-version) and ASGI has no
    # "0.9": refused with 505 HTTP Version Not Supported (RFC 9110 15.6.6).
    "GET /\r\n\r\n": 505,
    # RTSP and ICE (Icecast) request lines: llhttp parses them and reports their
    # version as an HTTP version (it does not expose the protocol name), but they
    # are not HTTP: refused with 505 rather than answered as HTTP/1.0.
    "SOURCE /music/sweet/music ICE/1.0\r\nHost: example.com\r\n\r\n": 505,
    "OPTIONS /music/sweet/music RTSP/1.0\r\nHost: example.com\r\n\r\n": 505,
    "ANNOUNCE /music/sweet/music RTSP/1.0\r\nHost: example.com\r\n\r\n": 505,
}


async def app(scope, receive, send):
    """Read the whole request body, then answer 200 with its length."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"read %d" % size
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


def _case_id(index: int, case: dict) -> str:
    return f"{index:03d}-" + re.sub(r"[^A-Za-z0-9]+", "-", case["id"]).strip("-")


def _request_bytes(case: dict) -> bytes:
    raw = case["raw"].encode("latin-1")
    if case["http11_no_host"]:
        raw = raw.replace(b" HTTP/1.1\r\n", b" HTTP/1.1\r\nHost: a\r\n")
    return raw


def _unknown_coding(raw: bytes) -> bool:
    """Whether a Transfer-Encoding header names a coding other than chunked."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"transfer-encoding":
            codings = [c.strip().lower() for c in value.split(b",") if c.strip()]
            if any(c != b"chunked" for c in codings):
                return True
    return False


def _expected_complete_status(case: dict, raw: bytes) -> int:
    if case["raw"] in OVERRIDES:
        return OVERRIDES[case["raw"]]
    return 501 if _unknown_coding(raw) else 200


def _parse(buf: bytes, head_only: bool) -> tuple[list[int], bytes]:
    """Split ``buf`` into complete responses; return their statuses and the rest."""
    statuses = []
    while b"\r\n\r\n" in buf:
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        match = re.fullmatch(rb"HTTP/1\.1 (\d{3}) .*", lines[0])
        assert match, f"not a status line: {lines[0]!r}"
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        status = int(match.group(1))
        if head_only and status < 400:
            length = 0
        if len(rest) < length:
            break
        statuses.append(status)
        buf = rest[length:]
    return statuses, buf


def _read(sock: socket.socket, deadline: float, enough) -> tuple[bytes, bool]:
    """Read until ``enough(buf)``, the peer closes, or ``deadline`` passes."""
    buf = b""
    while not enough(buf):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return buf, False
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return buf, False
        except ConnectionResetError:
            return buf, True
        if not chunk:
            return buf, True
        buf += chunk
    return buf, False


@pytest.fixture(scope="module")
def corpus_server():
    from conftest import start_bivio

    server = start_bivio("tests.e2e.test_llhttp_corpus:app", "--timeout-keep-alive", "10")
    yield server
    server.stop()


def _assert_still_serving(server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=READ_TIMEOUT) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        buf, closed = _read(sock, time.monotonic() + READ_TIMEOUT, lambda b: False)
    statuses, rest = _parse(buf, head_only=False)
    assert statuses == [200] and rest == b"" and closed, f"server stopped serving: {buf!r}"


@pytest.mark.parametrize(
    "case", CASES, ids=[_case_id(i, c) for i, c in enumerate(CASES)]
)
def test_llhttp_case(corpus_server, case):
    raw = _request_bytes(case)
    messages = case["messages"]
    head_only = raw.startswith(b"HEAD ")
    with socket.create_connection(("127.0.0.1", corpus_server.port),
                                  timeout=READ_TIMEOUT) as sock:
        sock.sendall(raw)
        if case["expect"] == "error":
            buf, closed = _read(sock, time.monotonic() + READ_TIMEOUT, lambda b: False)
            statuses, rest = _parse(buf, head_only)
            assert closed, f"connection left open after {buf!r}"
            assert rest == b"", f"trailing bytes after the responses: {rest!r}"
            if case["error"] == DATA_AFTER_CLOSE:
                # The request before the stray bytes is answered; then only a close.
                assert statuses == [200] * messages, buf
            else:
                assert statuses[:-1] == [200] * messages, buf
                assert len(statuses) == messages + 1, buf
                assert 400 <= statuses[-1] < 500, buf
        elif case["expect"] == "complete":
            expected = _expected_complete_status(case, raw)
            buf, closed = _read(sock, time.monotonic() + READ_TIMEOUT,
                                lambda b: len(_parse(b, head_only)[0]) >= messages)
            statuses, rest = _parse(buf, head_only)
            assert statuses == [expected] * messages, buf
            assert rest == b"", f"trailing bytes after the responses: {rest!r}"
            if expected != 200:
                # An error answer ends the connection.
                more, closed = _read(sock, time.monotonic() + READ_TIMEOUT, lambda b: False)
                assert closed and more == b"", more
        else:
            assert case["expect"] == "incomplete"
            buf, closed = _read(sock, time.monotonic() + QUIET, lambda b: False)
            statuses, rest = _parse(buf, head_only)
            assert statuses == [200] * messages, buf
            assert rest == b"", f"answered an unfinished request: {rest!r}"
            assert not closed, "closed the connection while the request was unfinished"
    _assert_still_serving(corpus_server)


def test_no_errors_logged(corpus_server):
    """The replay made the server log no traceback (runs after the cases)."""
    _assert_still_serving(corpus_server)
    assert "Traceback" not in corpus_server.output, corpus_server.output
