"""Plain PEP 3333 apps for tests/e2e/test_wsgi.py; one route per behaviour under test.

``app`` routes on PATH_INFO; ``validated`` is the well-behaved routes wrapped in
``wsgiref.validate.validator`` (which asserts the server's side of PEP 3333 too:
environ types, wsgi.input/errors methods, close() called). Routes that record
progress append lines to the file named by ``$BIVIO_WSGI_PROGRESS``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import threading
import time
from urllib.parse import parse_qs
from wsgiref.validate import validator

PROGRESS_ENV = "BIVIO_WSGI_PROGRESS"
_lock = threading.Lock()
_running = {"now": 0, "max": 0}


def record(line: str) -> None:
    path = os.environ.get(PROGRESS_ENV)
    if path:
        with _lock, open(path, "a") as f:
            f.write(line + "\n")


def _query(environ) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _text(start_response, text: str, status: str = "200 OK", extra=()) -> list[bytes]:
    body = text.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body))), *extra])
    return [body]


def hello(environ, start_response):
    return _text(start_response, "Hello, WSGI!")


def environ_view(environ, start_response):
    shown = {k: v for k, v in environ.items() if isinstance(v, (str, bool, int))}
    shown["wsgi.version"] = list(environ["wsgi.version"])
    shown["input_type"] = type(environ["wsgi.input"]).__name__
    shown["thread"] = threading.current_thread().name
    body = json.dumps(shown).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


def echo(environ, start_response):
    """Read the body the way ?mode= says; answer its length and sha256."""
    mode = _query(environ).get("mode", "read")
    stream = environ["wsgi.input"]
    if mode == "read":
        data = stream.read()
    elif mode == "readn":
        parts = []
        while True:
            chunk = stream.read(1000)
            if not chunk:
                break
            parts.append(chunk)
        data = b"".join(parts)
    elif mode == "readline":
        parts = []
        while True:
            line = stream.readline(50)
            if not line:
                break
            parts.append(line)
        data = b"".join(parts)
    elif mode == "readlines":
        data = b"".join(stream.readlines())
    elif mode == "iter":
        data = b"".join(stream)
    elif mode == "content-length":
        data = stream.read(int(environ.get("CONTENT_LENGTH") or 0))
    else:
        data = b""
    body = json.dumps({"length": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                       "content_length": environ.get("CONTENT_LENGTH"),
                       "lines": data.count(b"\n")}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def stream_view(environ, start_response):
    query = _query(environ)
    count = int(query.get("count", "5"))
    delay = float(query.get("delay", "0"))
    start_response("200 OK", [("Content-Type", "text/plain")])

    def chunks():
        for i in range(count):
            if delay:
                time.sleep(delay)
            yield f"chunk-{i};".encode()
    return chunks()


def write_view(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written-1;")
    write(b"written-2;")
    return [b"returned;"]


def file_view(environ, start_response):
    """wsgi.file_wrapper over a real file (sendfile) from ?offset= onwards."""
    path = os.environ.get("BIVIO_WSGI_FILE", __file__)
    f = open(path, "rb")  # noqa: SIM115 - closed by the server through close()
    f.seek(int(_query(environ).get("offset", "0")))
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return environ["wsgi.file_wrapper"](f, 32 * 1024)


def filelike_view(environ, start_response):
    data = io.BytesIO(b"from-a-file-like;" * 1000)
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return environ["wsgi.file_wrapper"](data, 4096)


def errors_view(environ, start_response):
    environ["wsgi.errors"].write("a line for the server log\n")
    environ["wsgi.errors"].writelines(["partial ", "line\n"])
    environ["wsgi.errors"].flush()
    return _text(start_response, "logged")


def exc_info_view(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise ValueError("changed my mind")
    except ValueError:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")],
                       sys.exc_info())
    return [b"replaced by exc_info"]


def slow(environ, start_response):
    """Hold a thread for ?ms= milliseconds; counts how many run at once."""
    ms = int(_query(environ).get("ms", "100"))
    record("slow-start")
    with _lock:
        _running["now"] += 1
        _running["max"] = max(_running["max"], _running["now"])
    try:
        time.sleep(ms / 1000)
    finally:
        with _lock:
            _running["now"] -= 1
    return _text(start_response, f"slept {ms} max-concurrent {_running['max']}")


_gate = threading.Event()


def gated(environ, start_response):
    """Yield one chunk, then wait until /release: the first chunk must reach the client
    while the generator is still blocked (no buffering of the response)."""
    _gate.clear()
    start_response("200 OK", [("Content-Type", "text/plain")])

    def chunks():
        yield b"before-gate;"
        released = _gate.wait(30)
        yield b"after-gate;" if released else b"timed-out;"
    return chunks()


def release(environ, start_response):
    _gate.set()
    return _text(start_response, "released")


def head_view(environ, start_response):
    return _text(start_response, "body that HEAD does not get")


GOOD = {
    "/": hello,
    "/environ": environ_view,
    "/echo": echo,
    "/stream": stream_view,
    "/write": write_view,
    "/file": file_view,
    "/filelike": filelike_view,
    "/errors": errors_view,
    "/exc-info": exc_info_view,
    "/slow": slow,
    "/head": head_view,
    "/gated": gated,
    "/release": release,
}


def _route(table: dict, path: str):
    return environ_view if path.startswith("/environ") else table.get(path)


def good_app(environ, start_response):
    return (_route(GOOD, environ["PATH_INFO"]) or hello)(environ, start_response)


validated = validator(good_app)


# -- routes that break the contract or meet a vanishing client ---------------------------


def boom(environ, start_response):
    raise RuntimeError("the app exploded before start_response")


def boom_after(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])

    def chunks():
        yield b"first chunk;"
        raise RuntimeError("the iterable exploded after the headers went out")
    return chunks()


def non_iterable(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return 42


def no_start(environ, start_response):
    return [b"never started"]


def bad_status(environ, start_response):
    start_response("20 OK", [("Content-Type", "text/plain")])
    return [b"bad"]


def twice(environ, start_response):
    start_response("200 OK", [])
    start_response("200 OK", [])
    return [b"twice"]


def str_body(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return ["a str, not bytes"]


def bad_header(environ, start_response):
    start_response("200 OK", [("X-Bad", "line\r\nInjected: yes")])
    return [b"bad header"]


def hop_by_hop(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked"),
                              ("Keep-Alive", "timeout=5"), ("Upgrade", "h2c")])
    return [b"hop-by-hop headers dropped"]


async def coroutine_app(environ, start_response):
    return [b"an ASGI-looking coroutine"]


def coroutine_route(environ, start_response):
    return coroutine_app(environ, start_response)


class _Forever:
    """An endless response whose close() records that the server called it."""

    def __init__(self) -> None:
        self.sent = 0

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        self.sent += 1
        if self.sent % 100 == 0:
            record(f"sent {self.sent}")
        time.sleep(0.001)
        return b"x" * 1024

    def close(self) -> None:
        record("closed")


def forever(environ, start_response):
    record("started")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return _Forever()


class _Closing:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def __iter__(self):
        return iter(self.chunks)

    def close(self) -> None:
        record("closed-after-success")


def closing(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return _Closing([b"a;", b"b;"])


def closing_error(environ, start_response):
    class Broken(_Closing):
        def __iter__(self):
            yield b"partial;"
            raise RuntimeError("broken iterable")

        def close(self) -> None:
            record("closed-after-error")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Broken([])


def read_then_record(environ, start_response):
    """Read the body slowly; record how the read ended (a vanished client raises OSError)."""
    stream = environ["wsgi.input"]
    total = 0
    try:
        while True:
            chunk = stream.read(1024)
            if not chunk:
                break
            total += len(chunk)
    except OSError as exc:
        record(f"read-error {type(exc).__name__}")
        raise
    record(f"read-complete {total}")
    return _text(start_response, f"read {total}")


_uploads = {"started": 0}


def upload_started(environ, start_response):
    """Count that a call began (before reading anything), then read the whole body."""
    with _lock:
        _uploads["started"] += 1
    data = environ["wsgi.input"].read()
    return _text(start_response, f"read {len(data)} content-length {environ.get('CONTENT_LENGTH')}")


def started(environ, start_response):
    """How many /upload-started calls began in this worker."""
    return _text(start_response, str(_uploads["started"]))


def big_list(environ, start_response):
    """A list response of ?mb= one-MiB items, without a Content-Length of its own."""
    count = int(_query(environ).get("mb", "4"))
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [bytes([65 + i % 26]) * (1024 * 1024) for i in range(count)]


def big_generator(environ, start_response):
    """A generator response of ?mb= MiB (default 8) in 64 KiB chunks, no Content-Length."""
    count = int(_query(environ).get("mb", "8")) * 16
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    for i in range(count):
        yield bytes([65 + i % 26]) * (64 * 1024)


BAD = {
    "/boom": boom,
    "/boom-after": boom_after,
    "/non-iterable": non_iterable,
    "/no-start": no_start,
    "/bad-status": bad_status,
    "/twice": twice,
    "/str-body": str_body,
    "/bad-header": bad_header,
    "/hop-by-hop": hop_by_hop,
    "/coroutine": coroutine_route,
    "/forever": forever,
    "/closing": closing,
    "/closing-error": closing_error,
    "/read-record": read_then_record,
    "/upload-started": upload_started,
    "/started": started,
    "/big-list": big_list,
    "/big-gen": big_generator,
}


def app(environ, start_response):
    view = BAD.get(environ["PATH_INFO"]) or _route(GOOD, environ["PATH_INFO"]) or hello
    return view(environ, start_response)


class ClassApp:
    """PEP 3333's class form: the instance is the response iterable."""

    def __init__(self, environ, start_response):
        self.start_response = start_response

    def __iter__(self):
        self.start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"from a class"
