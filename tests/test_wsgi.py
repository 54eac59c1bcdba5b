"""Unit tests for bivio.adapters.wsgi and WSGI detection: pieces testable without a socket.

End-to-end behaviour (real sockets, Django, Flask) lives in tests/e2e/test_wsgi*.py.
"""

from __future__ import annotations

import io
import logging
import sys

import pytest
from fakes import FakeStream

from bivio.adapters.wsgi import (
    _READ,
    ErrorStream,
    FileWrapper,
    WSGIError,
    WSGIHandler,
    WSGIInput,
    _body_kind,
    _Call,
    default_threads,
)
from bivio.core.config import Config, ConfigError
from bivio.process.loader import LoadError, WSGIApp, detect_interface, load_app

# -- detection -------------------------------------------------------------------------------


def wsgi_function(environ, start_response):
    return [b""]


class WSGIClass:
    def __init__(self, environ, start_response):
        pass

    def __iter__(self):
        return iter(())


class WSGIInstance:
    def __call__(self, environ, start_response):
        return [b""]


async def asgi_app(scope, receive, send):
    pass


def test_detect_wsgi_shapes():
    assert detect_interface(wsgi_function) == "wsgi"
    assert detect_interface(WSGIClass) == "wsgi"
    assert detect_interface(WSGIInstance()) == "wsgi"


def test_detect_django_and_flask():
    pytest.importorskip("flask")
    from django.core.handlers.wsgi import WSGIHandler as DjangoWSGIHandler
    from flask import Flask
    assert detect_interface(Flask(__name__)) == "wsgi"
    assert detect_interface(DjangoWSGIHandler.__call__.__get__(object())) == "wsgi"


def test_load_app_wraps_wsgi():
    loaded = load_app(wsgi_function)
    assert isinstance(loaded, WSGIApp) and loaded.app is wsgi_function


def test_interface_overrides_detection():
    def star(*args):
        pass
    assert load_app(star) is star  # *args: guessed ASGI 3
    assert isinstance(load_app(star, interface="wsgi"), WSGIApp)
    assert load_app(wsgi_function, interface="asgi3") is wsgi_function
    with pytest.raises(LoadError, match="not callable"):
        load_app(42, interface="wsgi")


def test_interface_and_threads_options():
    assert Config.from_options({"interface": "WSGI", "threads": "3"}, env={}).threads == 3
    with pytest.raises(ConfigError, match="--interface: expected one of"):
        Config.from_options({"interface": "cgi"}, env={})
    with pytest.raises(ConfigError, match="--threads: must be at least 1"):
        Config.from_options({"threads": 0}, env={})
    assert 5 <= default_threads() <= 32


# -- start_response ------------------------------------------------------------------------------


def call() -> _Call:
    return _Call(None, None, None)  # type: ignore[arg-type]


def test_start_response_encodes_headers():
    c = call()
    write = c.start_response("201 Created", [("Content-Type", "text/plain"),
                                             ("Content-Length", "3"), ("Connection", "close")])
    assert write == c.write
    assert c.status == 201
    # Connection: close is the stream's business (close_after_response), never a header.
    assert c.headers == [(b"content-type", b"text/plain"), (b"content-length", b"3")]
    assert c.close is True
    assert c.content_length == b"3"  # as sent; parsed where a number is needed


@pytest.mark.parametrize(("status", "headers", "message"), [
    ("20 OK", [], "invalid status"),
    ("200OK", [], "invalid status"),
    ("100 Continue", [], "invalid status"),
    (200, [], "status must be a str"),
    ("200 OK\r\nX: y", [], "invalid status"),
    ("200 OK", [("X-A", "b\nc")], "control character"),
    ("200 OK", [("Bad Name", "v")], "invalid header name"),
    ("200 OK", [("X-A", b"bytes")], "must be str"),
    ("200 OK", [("X-A",)], "is not a"),
    ("200 OK", [("Content-Length", "ten")], "invalid Content-Length"),
    ("200 OK", [("X-A", "\u20ac")], "not latin-1"),
])
def test_start_response_refuses_bad_input(status, headers, message):
    with pytest.raises(WSGIError, match=message):
        call().start_response(status, headers)


def test_hop_by_hop_headers_are_dropped():
    c = call()
    c.start_response("200 OK", [("Transfer-Encoding", "chunked"), ("Upgrade", "h2c"),
                                ("Connection", "keep-alive"), ("X-Kept", "1")])
    assert c.headers == [(b"x-kept", b"1")]


def test_start_response_exc_info_rules():
    c = call()
    c.start_response("200 OK", [])
    with pytest.raises(WSGIError, match="second time without exc_info"):
        c.start_response("200 OK", [])
    try:
        raise ValueError("oops")
    except ValueError:
        c.start_response("500 Oops", [], sys.exc_info())  # headers not sent: replaced
    assert c.status == 500
    c.headers_sent = True
    try:
        raise KeyError("late")
    except KeyError:
        with pytest.raises(KeyError, match="late"):  # sent: the app's error is re-raised
            c.start_response("500 Oops", [], sys.exc_info())


# -- environ ---------------------------------------------------------------------------------------


def stream(**kw) -> FakeStream:
    base = dict(method="POST", http_version="1.1", scheme="https", raw_path=b"/a%2Fb",
                query_string=b"q=1", client=("10.0.0.1", 5000), server=("127.0.0.1", 8000),
                headers=[(b"host", b"example.com"), (b"content-type", b"text/plain"),
                         (b"content-length", b"3"), (b"x-a", b"1"), (b"x-a", b"2"),
                         (b"x_a", b"spoof")], body_length=3, tls=None)
    base.update(kw)
    return FakeStream(base.pop("method"), base.pop("raw_path"), base.pop("query_string"),
                      **base)


def test_environ():
    handler = WSGIHandler(wsgi_function, Config(root_path="/root", threads=4))
    env = handler.environ(stream())
    assert env["PATH_INFO"] == "/a/b"
    assert env["SCRIPT_NAME"] == "/root"
    assert env["QUERY_STRING"] == "q=1"
    assert env["CONTENT_TYPE"] == "text/plain" and env["CONTENT_LENGTH"] == "3"
    assert env["HTTP_X_A"] == "1, 2"
    assert env["HTTP_HOST"] == "example.com"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("10.0.0.1", "5000")
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", "8000")
    assert env["wsgi.url_scheme"] == "https"
    assert env["wsgi.multithread"] is True and env["wsgi.run_once"] is False
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    handler.shutdown()


def test_environ_joins_repeated_fields_whatever_their_values():
    """Equal values, or empty ones (Python shares the strings of those), are lines of
    a field too: the second is joined, never taken for the first."""
    handler = WSGIHandler(wsgi_function, Config(threads=1))
    env = handler.environ(stream(headers=[
        (b"x-b", b"1"), (b"x-b", b"1"), (b"x-c", b""), (b"x-c", b""), (b"x-c", b"z"),
        (b"cookie", b"a=1"), (b"cookie", b"a=1")]))
    assert env["HTTP_X_B"] == "1, 1"
    assert env["HTTP_X_C"] == ", , z"
    assert env["HTTP_COOKIE"] == "a=1; a=1"
    handler.shutdown()


def test_environ_sets_what_every_request_has():
    """The keys every request sets are in the handler's base environ from the start
    (replaced per request, see WSGIHandler.__init__): none keeps its placeholder."""
    handler = WSGIHandler(wsgi_function, Config(threads=1))
    env = handler.environ(stream(method="GET", raw_path=b"/", query_string=b""))
    assert env["REQUEST_METHOD"] == "GET" and env["PATH_INFO"] == "/"
    assert env["QUERY_STRING"] == "" and env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["wsgi.errors"] is not None and callable(env["wsgi.errors"].write)
    assert env["REMOTE_PORT"] == "5000" and env["SERVER_PORT"] == "8000"
    handler.shutdown()


def test_port_strings_stay_right_past_what_the_cache_keeps():
    """REMOTE_PORT and SERVER_PORT come from a bounded cache of port strings: more
    distinct client ports than it keeps still each get their own number."""
    handler = WSGIHandler(wsgi_function, Config(threads=1))
    for port in range(1024, 1024 + 5000):  # more than the cache's 4096 entries
        env = handler.environ(stream(client=("10.0.0.1", port), server=("127.0.0.1", 8000)))
        assert (env["REMOTE_PORT"], env["SERVER_PORT"]) == (str(port), "8000")
    handler.shutdown()


def test_environ_over_a_unix_socket_uses_the_host_header():
    handler = WSGIHandler(wsgi_function, Config(threads=1))
    env = handler.environ(stream(client=None, server=None,
                                 headers=[(b"host", b"example.com:8443")]))
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.com", "8443")
    assert "REMOTE_ADDR" not in env and "REMOTE_PORT" not in env
    assert env["wsgi.multithread"] is False


def test_body_kind_comes_from_the_stream_not_from_headers():
    # The protocol says what it knows (stream.body_length); the adapter never guesses.
    assert _body_kind(stream(body_length=0)) == "none"
    assert _body_kind(stream(body_length=5)) == "length"
    assert _body_kind(stream(body_length=None)) == "unknown"
    # A transfer-encoding header the protocol did not frame by means nothing here.
    assert _body_kind(stream(body_length=0,
                             headers=[(b"transfer-encoding", b"chunked")])) == "none"
    assert _body_kind(stream(http_version="2", body_length=None)) == "unknown"


# -- wsgi.input, wsgi.errors, file_wrapper -------------------------------------------------------


class Chunks:
    """Stands in for the loop side: hands out body chunks as the stream would."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)
        self.calls = 0

    def call(self, item):
        assert item == (_READ,)
        self.calls += 1
        if not self.chunks:
            return b"", False
        chunk = self.chunks.pop(0)
        return chunk, bool(self.chunks)


def test_input_read_sizes():
    inp = WSGIInput(Chunks(b"hello ", b"world", b"!"))  # type: ignore[arg-type]
    assert inp.read(3) == b"hel"
    assert inp.read(5) == b"lo wo"
    assert inp.read() == b"rld!"
    assert inp.read() == b"" and inp.read(10) == b""


def test_input_pulls_lazily():
    source = Chunks(b"a" * 10, b"b" * 10)
    inp = WSGIInput(source)  # type: ignore[arg-type]
    assert source.calls == 0
    inp.read(5)
    assert source.calls == 1  # one chunk at most beyond what was asked


def test_input_readline_and_iteration():
    inp = WSGIInput(Chunks(b"one\ntw", b"o\nthree", b"\nlast"))  # type: ignore[arg-type]
    assert inp.readline() == b"one\n"
    assert inp.readline(2) == b"tw"
    assert inp.readline() == b"o\n"
    assert list(inp) == [b"three\n", b"last"]
    inp = WSGIInput(Chunks(b"a\nb\nc\n"))  # type: ignore[arg-type]
    assert inp.readlines() == [b"a\n", b"b\n", b"c\n"]
    inp = WSGIInput(Chunks(b"a\nb\nc\n"))  # type: ignore[arg-type]
    assert inp.readlines(2) == io.BytesIO(b"a\nb\nc\n").readlines(2)  # io's hint rule


def test_input_without_body():
    inp = WSGIInput(None)
    assert inp.read() == b"" and inp.readline() == b"" and list(inp) == []


def test_error_stream_logs_lines(caplog):
    errors = ErrorStream()
    with caplog.at_level(logging.ERROR, logger="bivio.error"):
        errors.write("first\nsec")
        errors.writelines(["ond\n", "third"])
        errors.flush()
    assert [r.getMessage() for r in caplog.records] == ["first", "second", "third"]
    with pytest.raises(TypeError):
        errors.write(b"bytes")  # type: ignore[arg-type]


def test_file_wrapper_iterates_and_closes():
    data = io.BytesIO(b"x" * 10)
    wrapper = FileWrapper(data, 4)
    assert list(wrapper) == [b"xxxx", b"xxxx", b"xx"]
    wrapper.close()
    assert data.closed
