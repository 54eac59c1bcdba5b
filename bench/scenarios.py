"""The scenarios: what is measured, on which app, and what a right answer is.

Each scenario names an app kind (see :data:`bench.servers.TARGETS`); every
server that serves that interface runs it. ``check`` sends one real request
and returns None when the answer is right, else why not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import probe

HELLO = b"Hello, world!"
DJANGO = b"Hello from Django!"
MIB = 1024 * 1024

Check = Callable[[int], "str | None"]


def expect(path: str, body: bytes | int, method: str = "GET", send: bytes = b"",
           version: str = "1.1") -> Check:
    """A check: one request, status 200 and this body (or this many bytes). ``timeout``:
    seconds to wait for the answer (longer under valgrind, bench/counts.py)."""
    def check(port: int, timeout: float = 10.0) -> str | None:
        status, got = probe.http(port, method, path, send, version, timeout)
        if status != 200:
            return f"{method} {path} answered {status}"
        if isinstance(body, int):
            if len(got) != body:
                return f"{method} {path}: {len(got)} bytes, expected {body}"
        elif got != body:
            return f"{method} {path}: body {got[:60]!r}, expected {body[:60]!r}"
        return None
    return check


def expect_curl(path: str, body: bytes | int, method: str = "GET", send: bytes = b"",
                http2: bool = False, tls: bool = False) -> Check:
    """A check through curl: HTTP/2 (prior knowledge, or ALPN over TLS) and/or TLS, and
    the answer must come back in that HTTP version."""
    want = "2" if http2 else "1.1"
    how = ("HTTP/2 over TLS" if tls else "h2c") if http2 else \
        ("HTTP/1.1 over TLS" if tls else "HTTP/1.1")

    def check(port: int) -> str | None:
        status, version, got = probe.curl(port, method, path, send, http2, tls)
        if status != 200:
            return f"{method} {path} ({how}) answered {status}"
        if version != want:
            return f"{method} {path} ({how}) answered in HTTP/{version}"
        if isinstance(body, int):
            if len(got) != body:
                return f"{method} {path} ({how}): {len(got)} bytes, expected {body}"
        elif got != body:
            return f"{method} {path} ({how}): body {got[:60]!r}, expected {body[:60]!r}"
        return None
    return check


def ws_check(port: int) -> str | None:
    payload = b"bivio-bench" * 5
    try:
        echoed = probe.ws_echo(port, payload)
    except OSError as exc:
        return f"WebSocket: {exc}"
    return None if echoed == payload else f"WebSocket echo returned {echoed[:60]!r}"


@dataclass(frozen=True)
class Scenario:
    name: str
    app: str  # key of bench.servers.TARGETS
    # "wrk" (HTTP/1.1 requests/s), "h2load" (HTTP/2 requests/s), "idle" (RSS with idle
    # connections), "ws" (messages/s)
    kind: str
    check: Check
    path: str = "/"
    connections: int = 64
    script: str | None = None
    ceiling: bool = False  # also run the bare uvloop+httptools ceiling
    title: str = ""
    http2: bool = False  # HTTP/2: prior knowledge in cleartext, ALPN over TLS
    tls: bool = False  # served over TLS (a self-signed certificate made at bench start)
    streams: int = 1  # h2load: concurrent streams per connection
    upload: int = 0  # h2load: bytes POSTed per request (-d FILE)
    # Also counted (bench/counts.py): instructions and system calls per request.
    counted: bool = False


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("asgi-hello-c64", "asgi", "wrk", expect("/", HELLO), ceiling=True, counted=True,
             title="ASGI hello, 64 connections"),
    Scenario("asgi-hello-c256", "asgi", "wrk", expect("/", HELLO), connections=256, ceiling=True,
             title="ASGI hello, 256 connections"),
    Scenario("asgi-64k", "asgi", "wrk", expect("/64k", 65536), path="/64k", ceiling=True,
             title="ASGI 64 KiB response"),
    Scenario("asgi-post-1m", "asgi", "wrk", expect("/post", str(MIB).encode(), "POST", b"x" * MIB),
             path="/post", connections=16, script="post_1m.lua", ceiling=True,
             title="ASGI 1 MiB POST, 16 connections"),
    Scenario("http10-close", "asgi", "wrk", expect("/", HELLO, version="1.0"),
             script="http10.lua", ceiling=True,
             title="HTTP/1.0, no keep-alive (a connection per request)"),
    Scenario("asgi-sleep-c512", "asgi", "wrk", expect("/sleep", HELLO), path="/sleep",
             connections=512, ceiling=True, title="ASGI 10 ms asyncio.sleep, 512 connections"),
    Scenario("idle-2000", "asgi", "idle", expect("/", HELLO), connections=2000,
             title="RSS with 2,000 idle keep-alive connections"),
    Scenario("django-sync-asgi", "django-asgi", "wrk", expect("/sync/", DJANGO), path="/sync/",
             title="Django sync view as ASGI"),
    Scenario("django-async-asgi", "django-asgi", "wrk", expect("/async/", DJANGO),
             path="/async/", title="Django async view as ASGI"),
    Scenario("wsgi-hello", "wsgi", "wrk", expect("/", HELLO), ceiling=True, counted=True,
             title="WSGI hello, 64 connections"),
    Scenario("django-sync-wsgi", "django-wsgi", "wrk", expect("/sync/", DJANGO), path="/sync/",
             counted=True, title="Django sync view as WSGI"),
    Scenario("django-async-wsgi", "django-wsgi", "wrk", expect("/async/", DJANGO),
             path="/async/", title="Django async view as WSGI"),
    Scenario("ws-echo", "asgi", "ws", ws_check,
             title="WebSocket echo, 64 connections x 8 in flight"),
    # ASGI or WSGI? The same Django project three ways (docs/asgi-or-wsgi.md): pure WSGI
    # is django-sync-wsgi / django-async-wsgi above (no WebSocket possible); pure ASGI
    # and hybrid serve the project's Channels entry point, which has the WebSocket.
    Scenario("channels-sync", "django-channels", "wrk", expect("/sync/", DJANGO),
             path="/sync/", title="Django sync view, pure ASGI (Channels router)"),
    Scenario("channels-async", "django-channels", "wrk", expect("/async/", DJANGO),
             path="/async/", title="Django async view, pure ASGI (Channels router)"),
    Scenario("channels-ws", "django-channels", "ws", ws_check,
             title="Django Channels WebSocket echo, pure ASGI"),
    Scenario("hybrid-sync", "django-hybrid", "wrk", expect("/sync/", DJANGO), path="/sync/",
             title="Django sync view, hybrid (served by WSGI)"),
    Scenario("hybrid-async", "django-hybrid", "wrk", expect("/async/", DJANGO),
             path="/async/", title="Django async view, hybrid (--asgi-path /async/: ASGI)"),
    Scenario("hybrid-ws", "django-hybrid", "ws", ws_check,
             title="Django Channels WebSocket echo, hybrid (ASGI)"),
    # HTTP/2 and TLS (issue 12): h2load for HTTP/2, wrk for HTTP/1.1 over TLS.
    Scenario("h2c-hello", "asgi", "h2load", expect_curl("/", HELLO, http2=True),
             connections=10, streams=100, http2=True,
             title="ASGI hello over HTTP/2 cleartext (prior knowledge), 10 connections x "
                   "100 streams"),
    Scenario("h2c-post-1m", "asgi", "h2load",
             expect_curl("/post", str(MIB).encode(), "POST", b"x" * MIB, http2=True),
             path="/post", connections=10, streams=10, http2=True, upload=MIB,
             title="ASGI 1 MiB POST over HTTP/2 cleartext, 10 connections x 10 streams"),
    Scenario("h2-tls-hello", "asgi", "h2load", expect_curl("/", HELLO, http2=True, tls=True),
             connections=10, streams=100, http2=True, tls=True,
             title="ASGI hello over HTTP/2 and TLS (ALPN), 10 connections x 100 streams"),
    Scenario("tls-hello-c64", "asgi", "wrk", expect_curl("/", HELLO, tls=True), tls=True,
             title="ASGI hello over HTTP/1.1 and TLS, 64 connections"),
)
# The HTTP/2 and TLS scenarios, for --scenarios (docs/performance.md).
H2_TLS = ("h2c-hello", "h2c-post-1m", "h2-tls-hello", "tls-hello-c64")
# The scenarios docs/asgi-or-wsgi.md tabulates, for --scenarios.
ASGI_OR_WSGI = ("django-sync-wsgi", "channels-sync", "hybrid-sync", "django-async-wsgi",
                "channels-async", "hybrid-async", "channels-ws", "hybrid-ws")

BY_NAME = {s.name: s for s in SCENARIOS}
# Names --scenarios accepts for a whole group.
GROUPS = {"h2-tls": H2_TLS, "asgi-or-wsgi": ASGI_OR_WSGI}
