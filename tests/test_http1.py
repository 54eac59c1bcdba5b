"""Sans-socket pieces of bivio.protocols.http1: status lines and response header checks."""

from __future__ import annotations

import pytest

from bivio.core.headers import check_headers
from bivio.protocols.http1 import status_line


@pytest.mark.parametrize("status, line", [
    (200, b"HTTP/1.1 200 OK\r\n"),
    (103, b"HTTP/1.1 103 Early Hints\r\n"),
    (404, b"HTTP/1.1 404 Not Found\r\n"),
    (418, b"HTTP/1.1 418 I'm a Teapot\r\n"),
    (599, b"HTTP/1.1 599 \r\n"),  # unknown: empty reason phrase, still well-formed
    (999, b"HTTP/1.1 999 \r\n"),
])
def test_status_line(status, line):
    assert status_line(status) == line


@pytest.mark.parametrize("headers", [
    [],
    [(b"content-type", b"text/plain")],
    [(b"X-Mixed-Case", b"Value")],
    [(b"x-tab", b"a\tb")],
    [(b"x-empty", b"")],
    [(b"!#$%&'*+-.^_`|~09azAZ", b"v")],
    [(b"x-latin1", "caf\u00e9".encode("latin-1"))],
])
def test_check_headers_accepts(headers):
    check_headers(headers)


@pytest.mark.parametrize("name", [
    b"", b"bad name", b"x:y", b"x\r\ny", b"x\n", b"(x)", b"x\x00", "é".encode(),
])
def test_check_headers_refuses_names(name):
    with pytest.raises(ValueError, match="name"):
        check_headers([(name, b"v")])


@pytest.mark.parametrize("value", [
    b"a\r\nx-injected: 1", b"a\nb", b"a\rb", b"a\x00b", b"a\x7fb", b"\x1b[31m",
])
def test_check_headers_refuses_values(value):
    with pytest.raises(ValueError, match="value"):
        check_headers([(b"x-ok", b"fine"), (b"x-bad", value)])
