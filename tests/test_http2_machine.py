"""The HTTP/2 connection (bivio.protocols.http2), driven frame by frame over a FakeTransport.

The client is a real python-hyper ``h2`` connection (``client_side=True``):
what it frames is fed to :meth:`H2Connection.data_received`, and what the
server wrote to the transport is parsed twice, once into raw frames
(hyperframe, with our own HPACK decoder, so every assertion can name the exact
frames, flags and error codes) and once by the client's ``h2``, which keeps the
windows and answers SETTINGS and PING like a real peer. Malformed input the
``h2`` client refuses to produce is built with hyperframe/hpack directly.

No sockets and no wall-clock waits: the loop is advanced with ``settle()``;
timeouts run on a fake clock (:class:`Clock`, the loop's ``time()`` moved by
hand) so the watchdog fires when the test says so.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import h2.config
import h2.connection
import hpack
import pytest
from fakes import FakeTransport
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionType
from wsproto.events import BytesMessage, CloseConnection, TextMessage

from bivio.core.config import Config
from bivio.core.context import ServerContext
from bivio.core.stream import ClientDisconnected, WebSocketClosed
from bivio.protocols.http2 import H2Connection

Handler = Callable[[Any], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

NO_ERROR = ErrorCodes.NO_ERROR
PROTOCOL_ERROR = ErrorCodes.PROTOCOL_ERROR
CANCEL = ErrorCodes.CANCEL
REFUSED_STREAM = ErrorCodes.REFUSED_STREAM
ENHANCE_YOUR_CALM = ErrorCodes.ENHANCE_YOUR_CALM
INTERNAL_ERROR = ErrorCodes.INTERNAL_ERROR


# -- harness ----------------------------------------------------------------------------------


def run(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test body on a fresh event loop."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return wrapper


async def settle(rounds: int = 30) -> None:
    """Let ready callbacks, deferred flushes and handler tasks run (no time passes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class Clock:
    """The running loop's clock, moved by hand (install it before the connection).

    :meth:`advance` moves it in small steps, so the watchdog (a timer of at
    most one second) fires on its own schedule, as it would in real time.
    """

    def __init__(self, start: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.now = loop.time() if start is None else start
        loop.time = lambda: self.now  # type: ignore[method-assign]

    async def advance(self, seconds: float, step: float = 0.05) -> None:
        target = self.now + seconds
        while self.now < target:
            # A hair past each step: a timer due on a step fires on it, not one step
            # later, so the watchdog's ticks do not drift over a long advance.
            self.now = min(target, self.now + step) + 1e-9
            await settle(5)
        await settle()


class Reply:
    """What the server sent on one stream, frame by frame."""

    def __init__(self) -> None:
        self.informational: list[Headers] = []
        self.headers: Headers | None = None
        self.headers_end = False  # END_STREAM on the response's HEADERS frame
        self.trailers: Headers | None = None
        self.data = bytearray()
        self.data_frames: list[int] = []  # payload size of each DATA frame
        self.ended = False
        self.reset: int | None = None

    @property
    def status(self) -> int | None:
        return int(dict(self.headers)[b":status"]) if self.headers else None

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers or ():
            if key == name:
                return value
        return None

    def names(self) -> list[bytes]:
        return [name for name, _ in self.headers or ()]


def parse_frames(data: bytes) -> list[tuple[Frame, bytes]]:
    """Split what the server wrote into (frame, its bytes)."""
    out = []
    view = memoryview(data)
    while view:
        assert len(view) >= 9, "a partial frame header was written"
        frame, length = Frame.parse_frame_header(view[:9])
        assert len(view) >= 9 + length, "a partial frame was written"
        frame.parse_body(view[9:9 + length])
        out.append((frame, bytes(view[:9 + length])))
        view = view[9 + length:]
    return out


class Peer:
    """One H2Connection on a FakeTransport, and a real h2 client talking to it."""

    def __init__(self, handler: Handler, streams_per_connection: int | None = None,
                 **options: Any) -> None:
        self.ctx = ServerContext(Config.from_options(options, env={}), handler)
        if streams_per_connection is not None:
            self.ctx.streams_per_connection = streams_per_connection
        self.t = FakeTransport()
        self.conn: H2Connection = self.t.connect(H2Connection(self.ctx))
        self.h2 = h2.connection.H2Connection(config=h2.config.H2Configuration(
            client_side=True, header_encoding=None))
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = 1 << 24
        self.replies: dict[int, Reply] = defaultdict(Reply)
        self.frames: list[Frame] = []  # every frame the server wrote
        self.goaways: list[tuple[int, int]] = []  # (last_stream_id, error_code)
        self.settings: list[dict[int, int]] = []  # the server's SETTINGS (not ACKs)
        self.settings_acks = 0
        self.window_updates: list[tuple[int, int]] = []  # (stream_id, increment)
        self.pings: list[PingFrame] = []  # the server's own PINGs (not ACKs)
        self.ping_acks = 0
        self.blind = False  # raw frames were sent: the h2 client no longer follows
        self._block: tuple[int, bytearray, bool] | None = None

    # -- sending ------------------------------------------------------------------------

    def send(self) -> None:
        """Feed the server what the h2 client framed."""
        data = self.h2.data_to_send()
        if data:
            self.t.feed(data)

    def feed(self, *frames: Frame) -> None:
        """Feed hand-built frames (what the h2 client would refuse to send)."""
        self.t.feed(b"".join(frame.serialize() for frame in frames))

    async def open(self) -> None:
        """Preface and SETTINGS both ways."""
        self.h2.initiate_connection()
        self.send()
        await self.read()

    def request(self, sid: int, path: bytes = b"/", *, method: bytes = b"GET",
                headers: Headers | tuple[()] = (), end: bool = True,
                authority: bytes = b"example.com") -> None:
        block = [(b":method", method), (b":scheme", b"http"), (b":path", path),
                 (b":authority", authority), *headers]
        self.h2.send_headers(sid, block, end_stream=end)
        self.send()

    def raw_headers(self, sid: int, block: Headers, end: bool = True) -> None:
        """A HEADERS frame encoded by hand (the client's HPACK context stays in step)."""
        flags = ["END_HEADERS", "END_STREAM"] if end else ["END_HEADERS"]
        self.blind = True
        self.feed(HeadersFrame(sid, self.h2.encoder.encode(block), flags=flags))

    def body(self, sid: int, data: bytes, end: bool = False) -> bytes:
        """Send as much of ``data`` as the windows allow; return what is left."""
        while data:
            n = min(len(data), self.h2.max_outbound_frame_size,
                    self.h2.local_flow_control_window(sid))
            if n <= 0:
                break
            self.h2.send_data(sid, data[:n], end_stream=end and n == len(data))
            data = data[n:]
        self.send()
        return data

    def end(self, sid: int) -> None:
        self.h2.end_stream(sid)
        self.send()

    def reset(self, sid: int, code: ErrorCodes = CANCEL) -> None:
        self.h2.reset_stream(sid, code)
        self.send()

    def window(self, increment: int, sid: int | None = None) -> None:
        """WINDOW_UPDATE from the client (``sid`` None: the connection's window)."""
        self.h2.increment_flow_control_window(increment, stream_id=sid)
        self.send()

    # -- receiving ----------------------------------------------------------------------

    async def read(self, answer: bool = True) -> list[Frame]:
        """Run the loop, then parse what the server wrote since the last read.

        ``answer``: let the h2 client send its automatic answers (SETTINGS and
        PING acknowledgements). GOAWAY is recorded but not shown to the h2
        client, which would refuse every frame after it, while the streams the
        GOAWAY lets finish still send theirs.
        """
        await settle()
        new = []
        for frame, raw in parse_frames(self.t.take()):
            new.append(frame)
            self._record(frame)
            if not self.blind and not isinstance(frame, GoAwayFrame):
                self.h2.receive_data(raw)
        if answer:
            self.send()
        else:
            self.h2.data_to_send()
        return new

    def _record(self, frame: Frame) -> None:
        self.frames.append(frame)
        sid = frame.stream_id
        if isinstance(frame, HeadersFrame):
            self._block = (sid, bytearray(frame.data), "END_STREAM" in frame.flags)
            if "END_HEADERS" in frame.flags:
                self._headers_done()
        elif isinstance(frame, ContinuationFrame):
            assert self._block is not None and self._block[0] == sid
            self._block[1].extend(frame.data)
            if "END_HEADERS" in frame.flags:
                self._headers_done()
        elif isinstance(frame, DataFrame):
            reply = self.replies[sid]
            reply.data += frame.data
            reply.data_frames.append(len(frame.data))
            if "END_STREAM" in frame.flags:
                reply.ended = True
        elif isinstance(frame, RstStreamFrame):
            self.replies[sid].reset = frame.error_code
        elif isinstance(frame, GoAwayFrame):
            self.goaways.append((frame.last_stream_id, frame.error_code))
        elif isinstance(frame, SettingsFrame):
            if "ACK" in frame.flags:
                self.settings_acks += 1
            else:
                self.settings.append(dict(frame.settings))
        elif isinstance(frame, WindowUpdateFrame):
            self.window_updates.append((sid, frame.window_increment))
        elif isinstance(frame, PingFrame):
            if "ACK" in frame.flags:
                self.ping_acks += 1
            else:
                self.pings.append(frame)

    def _headers_done(self) -> None:
        assert self._block is not None
        sid, block, end = self._block
        self._block = None
        headers = [(bytes(n), bytes(v)) for n, v in self.decoder.decode(bytes(block), raw=True)]
        reply = self.replies[sid]
        status = dict(headers).get(b":status", b"")
        if status.startswith(b"1"):
            reply.informational.append(headers)
        elif reply.headers is None:
            reply.headers = headers
            reply.headers_end = end
        else:
            reply.trailers = headers
        if end:
            reply.ended = True

    # -- state ------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Closed, or done with: after an error GOAWAY the write side is shut and the
        transport handed to a lingering close (:class:`bivio.protocols.flow.Linger`)."""
        return self.t.closed or self.t.eof_written

    def goaway(self) -> tuple[int, int] | None:
        return self.goaways[-1] if self.goaways else None

    def frames_on(self, sid: int) -> list[Frame]:
        return [f for f in self.frames if f.stream_id == sid]


async def answer(stream: Any, body: bytes = b"ok", status: int = 200,
                 headers: Headers | None = None) -> None:
    await stream.start_response(status, [(b"content-type", b"text/plain")]
                                if headers is None else headers)
    await stream.send_body(body, False)


async def read_body(stream: Any) -> bytes:
    body = b""
    while True:
        chunk, more = await stream.receive_body()
        body += chunk
        if not more:
            return body


async def echo_path(stream: Any) -> None:
    await answer(stream, stream.raw_path)


class Gate:
    """A handler that records each stream and holds it until the test releases it.

    ``release(sid)`` lets stream ``sid`` answer ``200 done <sid>``; the path
    ``/now`` answers at once; ``running`` holds the ids of handlers still
    inside the call, ``outcomes`` how each ended ("answered"/"disconnected").
    """

    def __init__(self) -> None:
        self.started: list[int] = []
        self.running: set[int] = set()
        self.finished: list[int] = []
        self.peak = 0
        self.outcomes: dict[int, str] = {}
        self._events: dict[int, asyncio.Event] = defaultdict(asyncio.Event)

    def release(self, *sids: int) -> None:
        for sid in sids:
            self._events[sid].set()

    async def __call__(self, stream: Any) -> None:
        sid = stream.stream_id
        self.started.append(sid)
        self.running.add(sid)
        self.peak = max(self.peak, len(self.running))
        try:
            if stream.raw_path != b"/now":
                await self._events[sid].wait()
            await answer(stream, b"done %d" % sid)
            self.outcomes[sid] = "answered"
        except ClientDisconnected:
            self.outcomes[sid] = "disconnected"
        finally:
            self.running.discard(sid)
            self.finished.append(sid)


class Reader:
    """A handler that reads the whole body (once ``go`` is set), then echoes its length."""

    def __init__(self, wait: bool = False) -> None:
        self.go = asyncio.Event()
        if not wait:
            self.go.set()
        self.body = b""
        self.calls = 0
        self.outcome: str | None = None

    async def __call__(self, stream: Any) -> None:
        self.calls += 1
        await self.go.wait()
        try:
            while True:
                chunk, more = await stream.receive_body()
                self.body += chunk
                if not more:
                    break
        except ClientDisconnected:
            self.outcome = "disconnected"
            return
        self.outcome = "complete"
        await answer(stream, b"%d" % len(self.body))


def never_called(stream: Any) -> Awaitable[None]:
    raise AssertionError(f"the handler was called for {stream.method} {stream.target!r}")


# -- preface and SETTINGS ---------------------------------------------------------------------


@pytest.mark.parametrize(("ws", "connect_protocol"), [("auto", 1), ("none", 0)])
@run
async def test_settings_come_from_the_config(ws: str, connect_protocol: int):
    p = Peer(never_called, h2_max_concurrent_streams=50, h2_initial_window_size=131072,
             h2_max_frame_size=32768, h2_max_header_list_size=8192, ws=ws)
    await p.open()
    assert len(p.settings) == 1
    settings = p.settings[0]
    assert settings[SettingCodes.MAX_CONCURRENT_STREAMS] == 50
    assert settings[SettingCodes.INITIAL_WINDOW_SIZE] == 131072
    assert settings[SettingCodes.MAX_FRAME_SIZE] == 32768
    assert settings[SettingCodes.MAX_HEADER_LIST_SIZE] == 8192
    assert settings[SettingCodes.ENABLE_CONNECT_PROTOCOL] == connect_protocol
    assert settings.get(SettingCodes.ENABLE_PUSH, 0) == 0
    # The connection's window starts at 65,535 whatever SETTINGS say: it is opened
    # to four times the per-stream window by a WINDOW_UPDATE.
    assert p.window_updates == [(0, 4 * 131072 - 65535)]
    assert p.h2.outbound_flow_control_window == 4 * 131072
    assert p.settings_acks == 1  # the client's SETTINGS acknowledged
    assert isinstance(p.frames[0], SettingsFrame)  # the server's preface comes first
    assert not p.closed and p.goaway() is None


@run
async def test_the_connection_window_is_four_times_the_smallest_initial_window():
    p = Peer(never_called, h2_initial_window_size=65535)
    await p.open()
    assert p.settings[0][SettingCodes.INITIAL_WINDOW_SIZE] == 65535
    assert p.h2.outbound_flow_control_window == 4 * 65535
    assert p.window_updates == [(0, 3 * 65535)]


@run
async def test_a_connection_without_requests_is_awaiting_its_first():
    p = Peer(never_called)
    assert p.conn.awaiting_first_request and p.conn.is_idle()
    await p.open()
    assert p.conn.awaiting_first_request and p.conn.is_idle()
    assert p.conn in p.ctx.connections


# -- requests and responses -------------------------------------------------------------------


@run
async def test_get_head_and_response_headers():
    seen: dict[str, Any] = {}

    async def handler(stream: Any) -> None:
        seen.update(method=stream.method, raw_path=stream.raw_path,
                    query_string=stream.query_string, http_version=stream.http_version,
                    scheme=stream.scheme, headers=list(stream.headers),
                    body_length=stream.body_length, upgrade=stream.upgrade,
                    client=stream.client, server=stream.server, tls=stream.tls)
        await stream.start_response(200, [
            (b"Content-Type", b"text/plain"), (b"X-Custom", b"Value"),
            (b"Connection", b"close"), (b"Transfer-Encoding", b"chunked"),
            (b"Keep-Alive", b"timeout=5"), (b"Upgrade", b"h2c"),
            (b"Proxy-Connection", b"keep-alive")])
        await stream.send_body(b"hello", False)

    p = Peer(handler)
    await p.open()
    p.request(1, b"/a/b?x=1&y=2", headers=[(b"accept", b"*/*"), (b"cookie", b"a=1"),
                                           (b"user-agent", b"t"), (b"cookie", b"b=2")])
    await p.read()
    assert seen == {
        "method": "GET", "raw_path": b"/a/b", "query_string": b"x=1&y=2",
        "http_version": "2", "scheme": "http",
        # host synthesised from :authority; cookie crumbs joined (RFC 9113 §8.2.3)
        "headers": [(b"host", b"example.com"), (b"accept", b"*/*"), (b"user-agent", b"t"),
                    (b"cookie", b"a=1; b=2")],
        "body_length": 0, "upgrade": None,
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "tls": None,
    }
    reply = p.replies[1]
    assert reply.status == 200
    assert reply.names() == [b":status", b"content-type", b"x-custom", b"content-length",
                             b"server", b"date"]
    assert reply.header(b"x-custom") == b"Value"
    assert reply.header(b"content-length") == b"5"
    assert reply.header(b"server") == b"bivio"
    assert re.fullmatch(rb"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", reply.header(b"date"))
    assert bytes(reply.data) == b"hello" and reply.ended and reply.reset is None
    assert not p.closed and p.conn.is_idle() and not p.conn.awaiting_first_request


@run
async def test_host_header_is_kept_and_not_duplicated():
    seen: list[Headers] = []

    async def handler(stream: Any) -> None:
        seen.append(list(stream.headers))
        await answer(stream)

    p = Peer(handler)
    await p.open()
    p.request(1, headers=[(b"host", b"example.com")])
    await p.read()
    assert seen == [[(b"host", b"example.com")]]


@run
async def test_app_server_and_date_replace_the_defaults():
    async def handler(stream: Any) -> None:
        await stream.start_response(200, [(b"Server", b"app"), (b"Date", b"yesterday"),
                                          (b"Content-Length", b"2")])
        await stream.send_body(b"ok", False)

    p = Peer(handler)
    await p.open()
    p.request(1)
    await p.read()
    reply = p.replies[1]
    assert reply.headers == [(b":status", b"200"), (b"server", b"app"), (b"date", b"yesterday"),
                             (b"content-length", b"2")]


@run
async def test_no_default_headers_when_disabled():
    p = Peer(echo_path, server_header=False, date_header=False)
    await p.open()
    p.request(1, b"/x")
    await p.read()
    assert p.replies[1].headers == [(b":status", b"200"), (b"content-type", b"text/plain"),
                                    (b"content-length", b"2")]


@run
async def test_streamed_body_has_no_content_length_and_ends_with_the_last_send():
    async def handler(stream: Any) -> None:
        await stream.start_response(200, [])
        await stream.send_body(b"one,", True)
        await stream.send_body(b"two,", True)
        await stream.send_body(b"three", False)

    p = Peer(handler)
    await p.open()
    p.request(1)
    await p.read()
    reply = p.replies[1]
    assert reply.header(b"content-length") is None
    assert bytes(reply.data) == b"one,two,three" and reply.ended
    data = [f for f in p.frames_on(1) if isinstance(f, DataFrame)]
    assert [("END_STREAM" in f.flags) for f in data] == [False, False, True]


@run
async def test_a_large_body_is_cut_into_frames_of_the_clients_size():
    body = bytes(range(256)) * 200  # 51,200 bytes: within the client's 65,535 window

    async def handler(stream: Any) -> None:
        await answer(stream, body)

    p = Peer(handler)
    await p.open()
    p.request(1)
    await p.read()
    reply = p.replies[1]
    assert bytes(reply.data) == body and reply.ended
    assert reply.data_frames == [16384, 16384, 16384, 2048]
    assert reply.header(b"content-length") == b"51200"


@pytest.mark.parametrize(("method", "status"), [(b"HEAD", 200), (b"GET", 204), (b"GET", 304),
                                                (b"HEAD", 404)])
@run
async def test_head_204_and_304_have_no_data(method: bytes, status: int):
    async def handler(stream: Any) -> None:
        await answer(stream, b"a body the client must not get", status)

    p = Peer(handler)
    await p.open()
    p.request(1, method=method)
    await p.read()
    reply = p.replies[1]
    assert reply.status == status
    assert reply.headers_end and reply.ended  # END_STREAM on the HEADERS frame
    assert not any(isinstance(f, DataFrame) for f in p.frames_on(1))
    assert reply.header(b"content-length") is None
    assert p.conn.is_idle()


@run
async def test_head_with_a_streamed_body_sends_no_payload():
    async def handler(stream: Any) -> None:
        await stream.start_response(200, [])
        await stream.send_body(b"part", True)
        await stream.send_body(b"rest", False)

    p = Peer(handler)
    await p.open()
    p.request(1, method=b"HEAD")
    await p.read()
    reply = p.replies[1]
    assert reply.status == 200 and reply.ended and bytes(reply.data) == b""


@run
async def test_trailers_end_the_stream_with_a_headers_frame():
    async def handler(stream: Any) -> None:
        await stream.start_response(200, [(b"trailer", b"x-checksum")], trailers=True)
        await stream.send_body(b"abc", True)
        await stream.send_body(b"def", False)  # not the end: the trailers are
        await stream.send_trailers([(b"X-Checksum", b"42"), (b"Connection", b"close")])

    p = Peer(handler)
    await p.open()
    p.request(1)
    await p.read()
    reply = p.replies[1]
    assert reply.status == 200 and bytes(reply.data) == b"abcdef"
    assert reply.trailers == [(b"x-checksum", b"42")]
    frames = p.frames_on(1)
    assert isinstance(frames[-1], HeadersFrame) and "END_STREAM" in frames[-1].flags
    assert not any("END_STREAM" in f.flags for f in frames if isinstance(f, DataFrame))
    assert reply.header(b"content-length") is None  # the first send said more=True
    assert p.conn.is_idle()


@run
async def test_trailers_without_a_body():
    async def handler(stream: Any) -> None:
        await stream.start_response(200, [], trailers=True)
        await stream.send_body(b"", False)  # no END_STREAM: the trailers follow
        await stream.send_trailers([(b"grpc-status", b"0")])

    p = Peer(handler)
    await p.open()
    p.request(1)
    await p.read()
    reply = p.replies[1]
    assert reply.status == 200 and not reply.headers_end
    assert reply.trailers == [(b"grpc-status", b"0")] and reply.ended
    assert not any("END_STREAM" in f.flags for f in p.frames_on(1) if isinstance(f, DataFrame))


@run
async def test_undeclared_trailers_are_refused():
    errors: list[Exception] = []

    async def handler(stream: Any) -> None:
        await stream.start_response(200, [])
        try:
            await stream.send_trailers([(b"x", b"y")])
        except RuntimeError as exc:
            errors.append(exc)
        await stream.send_body(b"ok", False)

    p = Peer(handler)
    await p.open()
    p.request(1)
    await p.read()
    assert len(errors) == 1
    assert p.replies[1].trailers is None and bytes(p.replies[1].data) == b"ok"


@run
async def test_103_early_hints_before_the_response():
    errors: list[Exception] = []

    async def handler(stream: Any) -> None:
        await stream.send_informational(103, [(b"Link", b"</a.css>; rel=preload"),
                                              (b"Connection", b"keep-alive")])
        await stream.start_response(200, [])
        try:
            await stream.send_informational(103, [])
        except RuntimeError as exc:
            errors.append(exc)
        await stream.send_body(b"page", False)

    p = Peer(handler)
    await p.open()
    p.request(1)
    await p.read()
    reply = p.replies[1]
    assert reply.informational == [[(b":status", b"103"), (b"link", b"</a.css>; rel=preload")]]
    assert reply.status == 200 and bytes(reply.data) == b"page"
    headers = [f for f in p.frames_on(1) if isinstance(f, HeadersFrame)]
    assert len(headers) == 2 and "END_STREAM" not in headers[0].flags
    assert len(errors) == 1  # no 1xx once the response started


@run
async def test_answer_without_reading_the_body_resets_with_no_error():
    """The response is complete; the unread rest of the body is refused (RST_STREAM NO_ERROR)."""
    calls: list[int] = []

    async def handler(stream: Any) -> None:
        calls.append(stream.stream_id)
        await answer(stream, b"early")

    p = Peer(handler)
    await p.open()
    p.request(1, b"/upload", method=b"POST", end=False)
    p.body(1, b"x" * 1000)
    frames = [f for f in await p.read() if f.stream_id == 1]
    kinds = [(type(f).__name__, sorted(f.flags)) for f in frames]
    assert kinds[:3] == [("HeadersFrame", ["END_HEADERS"]), ("DataFrame", ["END_STREAM"]),
                         ("RstStreamFrame", [])]
    assert frames[2].error_code == NO_ERROR
    # Body DATA read after the reset (the handler answered before it was read: an eager
    # Task, Python >= 3.12) is answered by h2 with RST_STREAM STREAM_CLOSED.
    assert all(isinstance(f, RstStreamFrame) and f.error_code == ErrorCodes.STREAM_CLOSED
               for f in frames[3:])
    reply = p.replies[1]
    assert bytes(reply.data) == b"early" and reply.reset == frames[-1].error_code
    assert p.conn.is_idle() and not p.closed
    # the connection goes on
    p.request(3)
    await p.read()
    assert p.replies[3].status == 200 and calls == [1, 3]


@run
async def test_abort_resets_one_stream_and_the_others_go_on():
    async def handler(stream: Any) -> None:
        if stream.raw_path == b"/bad":
            await stream.start_response(200, [])
            await stream.send_body(b"partial", True)
            stream.abort()
            return
        await answer(stream, b"fine")

    p = Peer(handler)
    await p.open()
    p.request(1, b"/bad")
    p.request(3, b"/good")
    await p.read()
    assert p.replies[1].reset == INTERNAL_ERROR and not p.replies[1].ended
    assert bytes(p.replies[3].data) == b"fine" and p.replies[3].ended
    assert not p.closed and p.goaway() is None


@run
async def test_client_reset_disconnects_the_stream():
    seen: list[str] = []
    started = asyncio.Event()

    async def handler(stream: Any) -> None:
        started.set()
        try:
            await stream.receive_body()
        except ClientDisconnected:
            seen.append("disconnected")
        await stream.wait_closed()
        seen.append("closed")

    p = Peer(handler)
    await p.open()
    p.request(1, method=b"POST", end=False)
    await p.read()
    assert started.is_set() and seen == []
    p.reset(1)
    await p.read()
    assert seen == ["disconnected", "closed"]
    assert p.conn.is_idle() and not p.closed


# -- request body flow control ----------------------------------------------------------------


@run
async def test_request_body_window_reopens_only_as_the_handler_reads():
    app = Reader(wait=True)
    p = Peer(app, h2_initial_window_size=65535)
    await p.open()
    p.request(1, b"/up", method=b"POST", end=False)
    rest = p.body(1, b"x" * 100_000, end=True)
    assert len(rest) == 100_000 - 65535  # the stream's window is full
    assert await p.read() == []  # nothing acknowledged: the handler has not read
    assert p.h2.local_flow_control_window(1) == 0
    await settle(100)
    assert await p.read() == []

    app.go.set()  # the handler reads what came: the window reopens for that much
    frames = await p.read()
    assert (1, 65535) in [(f.stream_id, f.window_increment) for f in frames
                          if isinstance(f, WindowUpdateFrame)]
    assert p.h2.local_flow_control_window(1) == 65535
    assert p.body(1, rest, end=True) == b""
    await p.read()
    assert app.outcome == "complete" and app.body == b"x" * 100_000
    assert bytes(p.replies[1].data) == b"100000"


@run
async def test_unread_bodies_are_bounded_by_the_connection_window():
    """Four streams' windows fill the connection's (4x): a fifth stream cannot send."""
    app = Reader(wait=True)
    p = Peer(app, h2_initial_window_size=65535)
    await p.open()
    for sid in (1, 3, 5, 7):
        p.request(sid, method=b"POST", end=False)
        assert p.body(sid, b"y" * 65535) == b""
    p.request(9, method=b"POST", end=False)
    assert p.h2.local_flow_control_window(9) == 0
    assert p.body(9, b"z" * 10) == b"z" * 10
    assert await p.read() == []
    assert app.calls == 5


@run
async def test_body_reaches_the_handler_in_order_with_end():
    chunks: list[tuple[bytes, bool]] = []

    async def handler(stream: Any) -> None:
        while True:
            chunk, more = await stream.receive_body()
            chunks.append((chunk, more))
            if not more:
                break
        await answer(stream, b"".join(c for c, _ in chunks))

    p = Peer(handler)
    await p.open()
    p.request(1, method=b"POST", end=False, headers=[(b"content-length", b"6")])
    await p.read()
    p.body(1, b"abc")
    await p.read()
    p.body(1, b"def", end=True)
    await p.read()
    assert chunks == [(b"abc", True), (b"def", False)]
    assert bytes(p.replies[1].data) == b"abcdef"


# -- response flow control --------------------------------------------------------------------


@run
async def test_response_waits_for_the_streams_window():
    sent = asyncio.Event()
    body = bytes(range(250)) * 20  # 5,000 bytes

    async def handler(stream: Any) -> None:
        if stream.raw_path == b"/other":
            await answer(stream, b"small")
            return
        await stream.start_response(200, [])
        await stream.send_body(body, False)
        sent.set()

    p = Peer(handler)
    await p.open()
    p.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    p.send()
    await p.read()
    p.request(1)
    p.request(3, b"/other")  # another stream is not held back by this one
    await p.read()
    reply = p.replies[1]
    assert bytes(reply.data) == body[:1000] and not reply.ended
    assert not sent.is_set()  # the send waits for the window
    for grant in (1500, 500, 1):
        before = len(reply.data)
        p.window(grant, 1)
        await p.read()
        assert len(reply.data) - before == grant  # exactly the window, never more
        assert not sent.is_set()
    p.window(5000, 1)
    await p.read()
    assert bytes(reply.data) == body and reply.ended and sent.is_set()
    assert p.replies[3].status == 200 and p.replies[3].ended


@run
async def test_response_waits_for_the_connections_window():
    sent = asyncio.Event()

    async def handler(stream: Any) -> None:
        await answer(stream, b"q" * 100_000)
        sent.set()

    p = Peer(handler)
    await p.open()
    p.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    p.send()
    await p.read()
    p.request(1)
    await p.read()
    assert len(p.replies[1].data) == 65535 and not sent.is_set()
    p.window(30000)  # the connection's window
    await p.read()
    assert len(p.replies[1].data) == 95535 and not sent.is_set()
    p.window(4465)
    await p.read()
    assert len(p.replies[1].data) == 100_000 and p.replies[1].ended and sent.is_set()


@run
async def test_a_smaller_initial_window_from_the_client_applies_to_open_streams():
    async def handler(stream: Any) -> None:
        await answer(stream, b"w" * 3000)

    p = Peer(handler)
    await p.open()
    p.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 0})
    p.send()
    await p.read()
    p.request(1)
    await p.read()
    assert p.replies[1].headers is not None and len(p.replies[1].data) == 0
    p.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 65535})  # opens it (RFC 9113 §6.9.2)
    p.send()
    await p.read()
    assert len(p.replies[1].data) == 3000 and p.replies[1].ended


# -- the per-connection handler cap and intake ------------------------------------------------


@run
async def test_streams_per_connection_caps_running_handlers():
    gate = Gate()
    p = Peer(gate, streams_per_connection=2)
    await p.open()
    for sid in (1, 3, 5, 7, 9):
        p.request(sid)
    await p.read()
    assert gate.started == [1, 3] and gate.running == {1, 3}
    assert p.h2.open_outbound_streams == 5  # all accepted, three waiting their turn
    gate.release(1)
    await p.read()
    assert p.replies[1].ended and gate.started == [1, 3, 5] and gate.running == {3, 5}
    gate.release(5)
    await p.read()
    assert gate.started == [1, 3, 5, 7] and gate.running == {3, 7}
    gate.release(3, 7)
    await p.read()
    assert gate.started == [1, 3, 5, 7, 9] and gate.running == {9}
    gate.release(9)
    await p.read()
    assert gate.peak == 2
    assert all(p.replies[sid].status == 200 for sid in (1, 3, 5, 7, 9))
    assert p.conn.is_idle()


@run
async def test_without_a_cap_all_streams_run_up_to_max_concurrent_streams():
    gate = Gate()
    p = Peer(gate, h2_max_concurrent_streams=4)
    await p.open()
    for sid in (1, 3, 5, 7):
        p.request(sid)
    await p.read()
    assert gate.running == {1, 3, 5, 7}


@run
async def test_pause_intake_holds_new_streams_and_resume_starts_them():
    gate = Gate()
    p = Peer(gate, streams_per_connection=2)
    await p.open()
    p.request(1)
    await p.read()
    assert gate.started == [1]
    p.ctx.pause_intake()
    p.request(3, b"/now")
    p.request(5, b"/now")
    await p.read()
    assert gate.started == [1] and not p.conn.is_idle()
    gate.release(1)  # a place frees, but intake is paused
    await p.read()
    assert gate.started == [1] and p.replies[1].ended
    # reading goes on while paused: pings are answered
    p.h2.ping(b"12345678")
    p.send()
    await p.read()
    assert p.ping_acks == 1
    p.ctx.resume_intake()
    await p.read()
    assert gate.started == [1, 3, 5]
    assert p.replies[3].status == 200 and p.replies[5].status == 200 and p.conn.is_idle()


@run
async def test_a_connection_made_while_intake_is_paused_holds_its_streams():
    gate = Gate()
    p = Peer(gate)
    p.ctx.pause_intake()
    t2 = FakeTransport(peer=("127.0.0.1", 50001))
    conn2 = t2.connect(H2Connection(p.ctx))
    client = h2.connection.H2Connection(config=h2.config.H2Configuration(
        client_side=True, header_encoding=None))
    client.initiate_connection()
    client.send_headers(1, [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/now"),
                            (b":authority", b"x")], end_stream=True)
    t2.feed(client.data_to_send())
    await settle()
    assert gate.started == [] and not conn2.is_idle()
    p.ctx.resume_intake()
    await settle()
    assert gate.started == [1]


@run
async def test_limit_concurrency_answers_503():
    gate = Gate()
    p = Peer(gate, limit_concurrency=1)
    await p.open()
    p.request(1)
    await p.read()
    p.request(3)
    await p.read()
    assert gate.started == [1]
    assert p.replies[3].status == 503 and p.replies[3].ended
    assert bytes(p.replies[3].data) == b"Service Unavailable"


# -- attack limits: rapid reset ---------------------------------------------------------------


@run
async def test_rapid_reset_gets_goaway_enhance_your_calm():
    gate = Gate()  # handlers that never complete
    p = Peer(gate, h2_max_reset_streams=10)
    await p.open()
    sid = 1
    for _ in range(10):
        p.request(sid)
        p.reset(sid)
        sid += 2
    await p.read()
    assert not p.closed and p.goaway() is None
    assert len(gate.started) == 10
    p.request(sid)
    p.reset(sid)  # the 11th reset before its response completed
    await p.read()
    assert p.goaway() == (sid, ENHANCE_YOUR_CALM)
    assert p.closed


@run
async def test_completed_responses_earn_resets_back():
    gate = Gate()
    p = Peer(gate, h2_max_reset_streams=10)
    await p.open()
    for sid in (1, 3, 5, 7, 9):
        p.request(sid, b"/now")  # answered at once: five completed responses
    await p.read()
    assert all(p.replies[sid].ended for sid in (1, 3, 5, 7, 9))
    sid = 11
    for _ in range(15):  # 15 = 10 + 5 early resets are allowed
        p.request(sid)
        p.reset(sid)
        sid += 2
    await p.read()
    assert not p.closed and p.goaway() is None
    p.request(sid)
    p.reset(sid)
    await p.read()
    assert p.goaway() == (sid, ENHANCE_YOUR_CALM) and p.closed


@run
async def test_reset_handlers_keep_their_place_until_they_return():
    """CVE-2023-44487: a reset does not free the running handler's place in the cap."""
    gate = Gate()
    p = Peer(gate, streams_per_connection=2)
    await p.open()
    p.request(1)
    p.request(3)
    await p.read()
    assert gate.running == {1, 3}
    p.reset(1)
    p.reset(3)
    p.request(5, b"/now")
    await p.read()
    assert gate.started == [1, 3]  # 5 waits: 1 and 3 still run
    gate.release(1)  # its handler returns (it finds the client gone)
    await p.read()
    assert gate.outcomes[1] == "disconnected"
    assert gate.started == [1, 3, 5] and p.replies[5].status == 200


# -- attack limits: floods --------------------------------------------------------------------


async def flood(p: Peer, make: Callable[[], Frame], count: int) -> None:
    for _ in range(count):
        p.feed(make())
    await p.read()


def empty_settings() -> Frame:
    return SettingsFrame(0)


def ping() -> Frame:
    return PingFrame(0, b"pingpong")


def priority() -> Frame:
    return PriorityFrame(1, depends_on=0, stream_weight=16)


def empty_data() -> Frame:
    return DataFrame(1, b"")


def connection_window() -> Frame:
    return WindowUpdateFrame(0, window_increment=1)


def stream_window() -> Frame:
    return WindowUpdateFrame(1, window_increment=1)


FLOODS = [ping, empty_settings, priority, empty_data, connection_window, stream_window]


@pytest.mark.parametrize("make", FLOODS, ids=[f.__name__ for f in FLOODS])
@run
async def test_control_frame_flood_gets_goaway_enhance_your_calm(make: Callable[[], Frame]):
    gate = Gate()
    p = Peer(gate, h2_max_control_frames=20)
    await p.open()  # the client's SETTINGS is a control frame too
    if make in (empty_data, stream_window):
        p.request(1, method=b"POST", end=False)  # an open stream, whose handler waits
        await p.read()
    await flood(p, make, 19)
    assert not p.closed and p.goaway() is None
    await flood(p, make, 2)
    assert p.goaway() is not None and p.goaway()[1] == ENHANCE_YOUR_CALM
    assert p.closed


@run
async def test_pings_are_answered_until_the_flood_limit():
    p = Peer(never_called, h2_max_control_frames=20)
    await p.open()
    await flood(p, ping, 19)
    assert p.ping_acks == 19 and not p.closed
    await flood(p, ping, 1)
    assert p.goaway() == (0, ENHANCE_YOUR_CALM) and p.closed


@run
async def test_requests_and_response_data_earn_flood_credits_back():
    """Each request earns one credit, each DATA frame of a response one more."""

    async def handler(stream: Any) -> None:
        if stream.raw_path == b"/big":
            await answer(stream, b"d" * (3 * 16384))  # three DATA frames
        else:
            await stream.start_response(204, [])  # HEADERS only: no DATA frame
            await stream.send_body(b"", False)

    p = Peer(handler, h2_max_control_frames=20)
    await p.open()  # 1 (the client's SETTINGS)
    await flood(p, ping, 19)  # 20: at the limit
    assert not p.closed
    sid = 1
    for _ in range(30):  # a request, then a ping: far more than 20 pings in all
        p.request(sid)
        sid += 2
        await flood(p, ping, 1)
    assert not p.closed and p.goaway() is None
    assert all(p.replies[s].status == 204 for s in range(1, sid, 2))
    p.request(sid, b"/big")  # 1 + 3 credits
    await p.read()
    assert p.replies[sid].ended
    await flood(p, ping, 4)
    assert not p.closed
    await flood(p, ping, 1)
    assert p.goaway() == (sid, ENHANCE_YOUR_CALM) and p.closed


@run
async def test_a_window_update_a_stream_waits_for_is_free():
    """Updates for a stream with DATA waiting cost nothing (here none lets DATA out either:
    the connection's window is what holds the response back)."""

    async def handler(stream: Any) -> None:
        await answer(stream, b"f" * 100_000)

    p = Peer(handler, h2_max_control_frames=20)
    await p.open()
    p.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    p.send()
    await p.read()
    p.request(1)
    await p.read()
    assert len(p.replies[1].data) == 65535  # the connection's window is spent
    for _ in range(100):
        p.window(1, 1)
    await p.read()
    assert not p.closed and p.goaway() is None
    assert len(p.replies[1].data) == 65535
    p.window(100_000)
    await p.read()
    assert len(p.replies[1].data) == 100_000 and p.replies[1].ended


# -- attack limits: header lists --------------------------------------------------------------


def _request_block(path: bytes = b"/") -> Headers:
    return [(b":method", b"GET"), (b":scheme", b"http"), (b":path", path),
            (b":authority", b"example.com")]


@pytest.mark.parametrize("bomb", [True, False], ids=["hpack-bomb", "one-large-header"])
@run
async def test_oversized_header_list_ends_the_connection(bomb: bool):
    p = Peer(never_called, h2_max_header_list_size=4096)
    p.h2.initiate_connection()
    p.send()  # the client has not acknowledged our SETTINGS yet: the limit holds already
    encoder = hpack.Encoder()
    if bomb:
        # one 3,000-byte field in the dynamic table, then referenced 100 times
        # (one byte each): ~3 KB on the wire, ~300 KB decoded
        block = encoder.encode(_request_block() + [(b"x-bomb", b"a" * 3000)] * 100)
        assert len(block) < 3300
    else:
        block = encoder.encode(_request_block() + [(b"x-big", b"b" * 5000)])
    p.feed(HeadersFrame(1, block, flags=["END_HEADERS", "END_STREAM"]))
    p.blind = True
    await p.read()
    # h2's DenialOfServiceError: GOAWAY ENHANCE_YOUR_CALM (stream 1 never opened, so
    # the last stream is 0), then the transport closes
    assert p.goaways == [(0, ENHANCE_YOUR_CALM)]
    assert p.closed


@run
async def test_header_list_under_the_limit_is_served():
    seen: list[int] = []

    async def handler(stream: Any) -> None:
        seen.append(len(stream.headers))
        await answer(stream)

    p = Peer(handler, h2_max_header_list_size=4096)
    await p.open()
    p.request(1, headers=[(b"x-h%d" % i, b"v" * 50) for i in range(30)])  # ~3 KB
    await p.read()
    assert seen == [31] and p.replies[1].status == 200


MALFORMED = {
    "upper-case-name": _request_block() + [(b"X-Upper", b"1")],
    "connection-header": _request_block() + [(b"connection", b"keep-alive")],
    "transfer-encoding": _request_block() + [(b"transfer-encoding", b"chunked")],
    "te-not-trailers": _request_block() + [(b"te", b"gzip")],
    "missing-path": [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"x")],
    "missing-method": [(b":scheme", b"http"), (b":path", b"/"), (b":authority", b"x")],
    "unknown-pseudo-header": _request_block() + [(b":foo", b"bar")],
    "pseudo-after-regular": [(b":method", b"GET"), (b"accept", b"*/*"), (b":scheme", b"http"),
                             (b":path", b"/"), (b":authority", b"x")],
    "status-in-request": _request_block() + [(b":status", b"200")],
    "protocol-without-connect": _request_block() + [(b":protocol", b"websocket")],
}


@pytest.mark.parametrize("name", list(MALFORMED))
@run
async def test_malformed_request_is_a_protocol_error(name: str):
    """RFC 9113 §8.1.1: a stream error or a connection error; h2 4.x ends the connection."""
    p = Peer(never_called)
    await p.open()
    p.raw_headers(1, MALFORMED[name])
    await p.read()
    stream_error = p.replies[1].reset == PROTOCOL_ERROR
    connection_error = p.goaway() is not None and p.goaway()[1] == PROTOCOL_ERROR
    assert stream_error or connection_error, (p.frames, p.goaways)
    if connection_error:
        assert p.closed
    assert p.replies[1].headers is None


# -- --h2-max-requests ------------------------------------------------------------------------


@run
async def test_max_requests_goaway_after_the_last_stream_and_refuses_later_ones():
    gate = Gate()
    p = Peer(gate, h2_max_requests=3)
    await p.open()
    p.request(1, b"/now")
    p.request(3, b"/now")
    await p.read()
    assert p.goaway() is None
    p.request(5)  # the third: served, and the last
    await p.read()
    assert p.goaway() == (5, NO_ERROR)
    assert not p.closed and gate.started == [1, 3, 5]
    p.request(7, b"/now")  # after the GOAWAY: refused, never reaches the handler
    await p.read()
    assert p.replies[7].reset == REFUSED_STREAM and p.replies[7].headers is None
    assert gate.started == [1, 3, 5]
    gate.release(5)
    await p.read()
    assert p.replies[5].status == 200 and bytes(p.replies[5].data) == b"done 5"
    assert p.replies[5].ended
    assert p.closed  # the last stream done: the connection closes
    assert p.goaways == [(5, NO_ERROR)]


# -- graceful shutdown and close_after_response -----------------------------------------------


@run
async def test_shutdown_lets_the_stream_in_flight_finish_then_closes():
    release = asyncio.Event()
    body = b"s" * 100_000  # more than the client's window: needs WINDOW_UPDATEs after GOAWAY

    async def handler(stream: Any) -> None:
        await release.wait()
        await answer(stream, body)

    p = Peer(handler)
    await p.open()
    p.request(1)
    await p.read()
    assert not p.conn.is_idle() and not p.conn.awaiting_first_request
    p.conn.shutdown()
    await p.read()
    assert p.goaway() == (1, NO_ERROR) and not p.closed
    p.request(3)  # too late: refused
    await p.read()
    assert p.replies[3].reset == REFUSED_STREAM
    release.set()
    await p.read()
    assert len(p.replies[1].data) == 65535 and not p.closed
    p.window(50_000)
    p.window(50_000, 1)
    await p.read()
    assert bytes(p.replies[1].data) == body and p.replies[1].ended
    assert p.closed and p.conn.is_idle()
    assert p.goaways == [(1, NO_ERROR)]
    p.conn.shutdown()  # idempotent once closed


@run
async def test_shutdown_of_an_idle_served_connection_closes_at_once():
    p = Peer(echo_path)
    await p.open()
    p.request(1)
    await p.read()
    assert p.conn.is_idle() and not p.conn.awaiting_first_request
    p.conn.shutdown()
    await p.read()
    assert p.goaways == [(1, NO_ERROR)] and p.closed


@run
async def test_shutdown_before_the_first_request_leaves_the_connection_open():
    """Like HTTP/1.1: the first request may be in flight; keep-alive closes it if none comes."""
    p = Peer(echo_path)
    await p.open()
    p.conn.shutdown()
    assert await p.read() == []
    assert not p.closed and p.conn.awaiting_first_request
    p.ctx.shutting_down = True  # what the server sets before asking connections to shut down
    p.request(1)  # it came after all: answered, and the last
    await p.read()
    assert p.goaway() == (1, NO_ERROR)
    assert p.replies[1].status == 200 and p.closed


@run
async def test_close_now_closes_whatever_is_in_flight():
    gate = Gate()
    p = Peer(gate)
    await p.open()
    p.request(1)
    await p.read()
    p.conn.close_now()
    await p.read()
    assert p.closed and p.conn not in p.ctx.connections
    gate.release(1)
    await settle()
    assert gate.outcomes[1] == "disconnected"


@run
async def test_close_after_response_lets_other_streams_finish():
    gate = Gate()

    async def handler(stream: Any) -> None:
        if stream.raw_path == b"/close":
            stream.close_after_response()
            await answer(stream, b"bye")
            return
        await gate(stream)

    p = Peer(handler)
    await p.open()
    p.request(1, b"/slow")
    p.request(3, b"/close")
    await p.read()
    assert p.goaway() == (3, NO_ERROR)
    assert p.replies[3].status == 200 and p.replies[3].ended
    assert not p.closed  # stream 1 is still running
    p.request(5)
    await p.read()
    assert p.replies[5].reset == REFUSED_STREAM
    gate.release(1)
    await p.read()
    assert bytes(p.replies[1].data) == b"done 1" and p.replies[1].ended
    assert p.closed and p.goaways == [(3, NO_ERROR)]


# -- limits from HTTP/1.1 ---------------------------------------------------------------------


@pytest.mark.parametrize(("options", "headers", "path", "status"), [
    ({"limit_request_line": 64}, [], b"/" + b"p" * 64, 414),
    ({"limit_request_fields": 3}, [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")], b"/", 431),
    ({"limit_request_field_size": 64}, [(b"x-long", b"v" * 60)], b"/", 431),
    ({"limit_request_body": 100}, [(b"content-length", b"101")], b"/", 413),
], ids=["414-path", "431-fields", "431-field-size", "413-content-length"])
@run
async def test_request_limits_are_answered_without_the_handler(options: dict[str, int],
                                                               headers: Headers, path: bytes,
                                                               status: int):
    p = Peer(never_called, **options)
    await p.open()
    p.request(1, path, method=b"POST", headers=headers, end=status != 413)
    await p.read()
    reply = p.replies[1]
    assert reply.status == status and reply.ended
    assert reply.header(b"content-type") == b"text/plain; charset=utf-8"
    assert not p.closed and p.goaway() is None  # only the stream is refused
    if status == 413:
        assert reply.reset == NO_ERROR  # the body is not wanted


@run
async def test_limits_just_within_are_served():
    p = Peer(echo_path, limit_request_line=64, limit_request_fields=3,
             limit_request_field_size=64)
    await p.open()
    # the host synthesised from :authority counts as one of the three fields
    p.request(1, b"/" + b"p" * 63, headers=[(b"a", b"1"), (b"x-long", b"v" * 58)])
    await p.read()
    assert p.replies[1].status == 200


@run
async def test_a_cookie_longer_than_the_field_limit_is_allowed():
    p = Peer(echo_path, limit_request_field_size=64)
    await p.open()
    p.request(1, headers=[(b"cookie", b"c=" + b"v" * 100)])
    await p.read()
    assert p.replies[1].status == 200


@run
async def test_body_growing_beyond_the_limit_gets_413_and_the_handler_a_disconnect():
    app = Reader()
    p = Peer(app, limit_request_body=1000)
    await p.open()
    p.request(1, b"/up", method=b"POST", end=False)  # no content-length
    p.body(1, b"a" * 600)
    await p.read()
    assert app.body == b"a" * 600 and app.outcome is None
    p.body(1, b"b" * 600)
    await p.read()
    reply = p.replies[1]
    assert reply.status == 413 and bytes(reply.data) == b"Request body too large"
    assert reply.ended and reply.reset == NO_ERROR  # the rest of the body is not wanted
    assert app.outcome == "disconnected" and app.body == b"a" * 600
    assert not p.closed and p.conn.is_idle()


@run
async def test_body_beyond_the_limit_after_the_response_started_is_reset():
    outcome: list[str] = []

    async def handler(stream: Any) -> None:
        await stream.start_response(200, [])
        await stream.send_body(b"streaming", True)
        try:
            await read_body(stream)
        except ClientDisconnected:
            outcome.append("disconnected")
            return
        await stream.send_body(b"", False)

    p = Peer(handler, limit_request_body=1000)
    await p.open()
    p.request(1, method=b"POST", end=False)
    await p.read()
    assert p.replies[1].status == 200
    p.body(1, b"x" * 1500)
    await p.read()
    assert p.replies[1].status == 200 and p.replies[1].reset == CANCEL
    assert outcome == ["disconnected"]


# -- timeouts (fake clock) --------------------------------------------------------------------


@run
async def test_keep_alive_closes_an_idle_connection_with_goaway():
    clock = Clock()
    p = Peer(echo_path, timeout_keep_alive=5)
    await p.open()
    await clock.advance(4.5)
    assert await p.read() == [] and not p.closed
    await clock.advance(1.5)
    await p.read()
    assert p.goaways == [(0, NO_ERROR)] and p.closed


@run
async def test_keep_alive_counts_from_the_last_stream():
    clock = Clock()
    gate = Gate()
    p = Peer(gate, timeout_keep_alive=5, h2_ping_interval=0)
    await p.open()
    p.request(1)
    await p.read()
    await clock.advance(20)  # a stream in progress: no keep-alive
    assert not p.closed
    gate.release(1)
    await p.read()
    await clock.advance(4.5)
    assert await p.read() == [] and not p.closed
    await clock.advance(1.5)
    await p.read()
    assert p.goaways == [(1, NO_ERROR)] and p.closed


@run
async def test_stalled_request_body_gets_408():
    clock = Clock()
    app = Reader()
    p = Peer(app, timeout_request_body=10, h2_ping_interval=0)
    await p.open()
    p.request(1, b"/up", method=b"POST", end=False)
    p.body(1, b"a")
    await clock.advance(8)
    p.body(1, b"b")  # progress restarts the clock
    await clock.advance(8)
    assert await p.read() == [] and app.outcome is None
    await clock.advance(3.5)
    await p.read()
    reply = p.replies[1]
    assert reply.status == 408 and bytes(reply.data) == b"Request body timeout"
    assert reply.ended and reply.reset == NO_ERROR
    assert app.outcome == "disconnected" and app.body == b"ab"
    assert not p.closed  # only the stream


@run
async def test_no_body_timeout_while_the_handler_does_not_read():
    """The client filled the window; bivio has not read: the client is not at fault."""
    clock = Clock()
    app = Reader(wait=True)
    p = Peer(app, timeout_request_body=10, h2_ping_interval=0)
    await p.open()
    p.request(1, method=b"POST", end=False)
    p.body(1, b"x" * 100)
    await clock.advance(60)
    assert await p.read() == [] and app.outcome is None
    app.go.set()  # reads the 100 bytes, then waits for more: the clock runs again
    await settle()
    await clock.advance(8)
    assert await p.read() == [] and app.outcome is None
    await clock.advance(3.5)
    await p.read()
    assert p.replies[1].status == 408 and app.outcome == "disconnected"


@run
async def test_a_complete_body_has_no_clock():
    clock = Clock()
    release = asyncio.Event()

    async def handler(stream: Any) -> None:
        body = await read_body(stream)
        await release.wait()
        await answer(stream, body)

    p = Peer(handler, timeout_request_body=10, h2_ping_interval=0)
    await p.open()
    p.request(1, method=b"POST", end=False)
    p.body(1, b"all", end=True)
    await clock.advance(60)
    assert await p.read() == []
    release.set()
    await p.read()
    assert bytes(p.replies[1].data) == b"all"


@run
async def test_send_timeout_resets_the_stream_and_the_handler_sees_a_disconnect():
    clock = Clock()
    outcome: list[str] = []

    async def handler(stream: Any) -> None:
        await stream.start_response(200, [])
        try:
            await stream.send_body(b"z" * 1000, False)
        except ClientDisconnected:
            outcome.append("disconnected")
        else:
            outcome.append("sent")

    p = Peer(handler, timeout_send=10, h2_ping_interval=0)
    await p.open()
    p.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 100})
    p.send()
    await p.read()
    p.request(1)
    await p.read()
    assert len(p.replies[1].data) == 100
    await clock.advance(9)
    assert await p.read() == [] and outcome == []
    await clock.advance(2.5)
    await p.read()
    assert p.replies[1].reset == CANCEL and outcome == ["disconnected"]
    assert not p.closed and p.goaway() is None
    assert len(p.replies[1].data) == 100


@run
async def test_window_progress_keeps_a_slow_reader_alive():
    clock = Clock()
    outcome: list[str] = []

    async def handler(stream: Any) -> None:
        await stream.start_response(200, [])
        for _ in range(3):
            await stream.send_body(b"z" * 100, True)
        await stream.send_body(b"", False)
        outcome.append("sent")

    p = Peer(handler, timeout_send=10, h2_ping_interval=0)
    await p.open()
    p.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 100})
    p.send()
    await p.read()
    p.request(1)
    await p.read()
    for _ in range(2):
        await clock.advance(8)
        p.window(100, 1)  # a window every 8 s: each send waits less than 10 s
        await p.read()
    assert outcome == ["sent"] and p.replies[1].ended and len(p.replies[1].data) == 300


@run
async def test_ping_liveness_closes_a_silent_connection():
    """A connection with a stream in progress is PINGed; no answer in time closes it.

    The watchdog ticks once a second here, so each step leaves a tick of slack.
    """
    clock = Clock()
    gate = Gate()
    p = Peer(gate, h2_ping_interval=5, h2_ping_timeout=3)
    await p.open()
    p.request(1)
    await p.read()
    await clock.advance(4)
    assert await p.read() == [] and p.pings == []
    await clock.advance(2.5)
    await p.read()  # a PING (and the h2 client acknowledges it)
    assert len(p.pings) == 1 and not p.closed
    await clock.advance(4)  # acknowledged: the next one is due 5 s after the answer
    assert await p.read(answer=False) == [] and len(p.pings) == 1
    await clock.advance(2)
    await p.read(answer=False)  # the second PING: left unanswered
    assert len(p.pings) == 2 and not p.closed
    await clock.advance(2)
    assert not p.closed
    await clock.advance(2)
    await p.read()
    assert p.closed
    assert p.goaways == []  # the peer is gone: no GOAWAY, just closed


@run
async def test_no_ping_on_an_idle_connection():
    clock = Clock()
    p = Peer(echo_path, h2_ping_interval=2, timeout_keep_alive=60)
    await p.open()
    await clock.advance(10)
    assert await p.read() == [] and p.pings == [] and not p.closed


# -- WebSockets over HTTP/2 (RFC 8441) --------------------------------------------------------


def ws_request(extra: Headers | tuple[()] = ()) -> Headers:
    return [(b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"http"),
            (b":path", b"/chat?room=1"), (b":authority", b"example.com"),
            (b"sec-websocket-version", b"13"), *extra]


@run
async def test_websocket_over_an_extended_connect():
    seen: dict[str, Any] = {}

    async def handler(stream: Any) -> None:
        seen["upgrade"] = stream.upgrade
        seen["path"] = (stream.raw_path, stream.query_string)
        ws = stream.open_websocket()
        await ws.accept(None, [(b"x-app", b"1")])
        message = await ws.receive()
        await ws.send("echo " + message)
        await ws.send(b"\x00\x01")
        await ws.close(1000, "bye")
        try:
            await ws.receive()
        except WebSocketClosed as exc:
            seen["closed"] = exc.code

    p = Peer(handler)
    await p.open()
    p.h2.send_headers(1, ws_request(), end_stream=False)
    p.send()
    await p.read()
    assert seen["upgrade"] == "websocket" and seen["path"] == (b"/chat", b"room=1")
    reply = p.replies[1]
    assert reply.status == 200 and not reply.ended
    names = reply.names()
    assert b"sec-websocket-accept" not in names
    assert b"upgrade" not in names and b"connection" not in names
    assert reply.header(b"x-app") == b"1" and reply.header(b"server") == b"bivio"

    client = WSConnection(ConnectionType.CLIENT)
    p.h2.send_data(1, client.send(TextMessage(data="hi")))
    p.send()
    await p.read()
    client.receive_data(bytes(reply.data))
    events = list(client.events())
    assert isinstance(events[0], TextMessage) and events[0].data == "echo hi"
    assert isinstance(events[1], BytesMessage) and events[1].data == b"\x00\x01"
    assert isinstance(events[2], CloseConnection) and events[2].code == 1000
    assert events[2].reason == "bye"
    assert not reply.ended  # our side ends once the client answered the close
    p.h2.send_data(1, client.send(events[2].response()))
    p.send()
    await p.read()
    assert reply.ended  # END_STREAM after the close handshake
    assert seen["closed"] == 1000
    p.end(1)
    await p.read()
    assert p.conn.is_idle() and not p.closed


@run
async def test_websocket_client_frames_sent_before_accept_are_kept():
    got: list[str | bytes] = []
    ready = asyncio.Event()

    async def handler(stream: Any) -> None:
        await ready.wait()
        ws = stream.open_websocket()
        await ws.accept(None, [])
        got.append(await ws.receive())
        await ws.close()

    p = Peer(handler)
    await p.open()
    client = WSConnection(ConnectionType.CLIENT)
    p.h2.send_headers(1, ws_request(), end_stream=False)
    p.h2.send_data(1, client.send(TextMessage(data="early")))
    p.send()
    await p.read()
    ready.set()
    await p.read()
    assert got == ["early"]


@run
async def test_websocket_denied_with_a_plain_403():
    async def handler(stream: Any) -> None:
        assert stream.upgrade == "websocket"
        await answer(stream, b"denied", 403)

    p = Peer(handler)
    await p.open()
    p.h2.send_headers(1, ws_request(), end_stream=False)
    p.send()
    await p.read()
    reply = p.replies[1]
    assert reply.status == 403 and bytes(reply.data) == b"denied" and reply.ended
    assert p.conn.is_idle() and not p.closed


@run
async def test_websocket_client_ending_its_stream_closes_the_session():
    seen: list[int] = []

    async def handler(stream: Any) -> None:
        ws = stream.open_websocket()
        await ws.accept(None, [])
        try:
            await ws.receive()
        except WebSocketClosed as exc:
            seen.append(exc.code)

    p = Peer(handler)
    await p.open()
    p.h2.send_headers(1, ws_request(), end_stream=False)
    p.send()
    await p.read()
    p.end(1)  # the stream ends without a close frame: abnormal closure
    await p.read()
    await settle()
    assert seen == [1006]


@run
async def test_connect_without_websocket_is_501():
    p = Peer(never_called)
    await p.open()
    p.h2.send_headers(1, [(b":method", b"CONNECT"), (b":protocol", b"other"),
                          (b":scheme", b"http"), (b":path", b"/"),
                          (b":authority", b"example.com")], end_stream=False)
    p.send()
    await p.read()
    assert p.replies[1].status == 501


# -- found by these tests, fixed -----------------------------------------------------------


@run
async def test_frames_up_to_the_advertised_max_frame_size_are_accepted():
    app = Reader()
    p = Peer(app, h2_max_frame_size=32768)
    await p.open()
    assert p.h2.max_outbound_frame_size == 32768  # what the server advertised
    p.request(1, method=b"POST", end=False)
    p.h2.send_data(1, b"x" * 20000, end_stream=True)  # one frame of 20,000 bytes
    p.send()
    await p.read()
    assert p.goaway() is None and not p.closed
    assert app.body == b"x" * 20000


@run
async def test_frames_on_a_reset_stream_are_charged_as_a_flood():
    async def handler(stream: Any) -> None:
        await answer(stream)  # answers without reading: RST_STREAM NO_ERROR

    p = Peer(handler, h2_max_control_frames=20)
    await p.open()
    p.request(1, method=b"POST", end=False)
    await p.read()
    assert p.replies[1].reset == NO_ERROR
    await flood(p, empty_data, 100)  # each solicits an RST_STREAM from h2
    assert p.goaway() is not None and p.goaway()[1] == ENHANCE_YOUR_CALM


@run
async def test_a_server_answer_does_not_free_a_running_handlers_place():
    gate = Gate()
    p = Peer(gate, streams_per_connection=1, limit_request_body=1000)
    await p.open()
    p.request(1, method=b"POST", end=False)  # its handler does not read
    p.request(3)
    await p.read()
    assert gate.running == {1}
    p.body(1, b"x" * 2000)  # over the limit: 413 from the server, handler still running
    await p.read()
    assert p.replies[1].status == 413
    assert gate.running == {1}  # stream 3 waits for handler 1 to return
    gate.release(1)
    await p.read()
    assert gate.started == [1, 3] and gate.peak == 1


@run
async def test_queued_streams_wait_for_capacity_under_limit_concurrency():
    gate = Gate()
    p = Peer(gate, streams_per_connection=2, limit_concurrency=2)
    await p.open()
    for sid in (1, 3, 5, 7, 9):
        p.request(sid)
    await p.read()
    assert gate.started == [1, 3]
    gate.release(1)
    await p.read()
    assert p.replies[5].status is None or p.replies[5].status == 200
    assert p.replies[7].status is None and p.replies[9].status is None
    gate.release(3, 5, 7, 9)
    for _ in range(3):
        await p.read()
    assert [p.replies[sid].status for sid in (1, 3, 5, 7, 9)] == [200] * 5


@run
async def test_a_long_queue_is_answered_without_recursion():
    release = asyncio.Event()

    async def handler(stream: Any) -> None:
        await release.wait()
        await answer(stream)

    errors: list[Any] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    p = Peer(handler, streams_per_connection=1, limit_concurrency=1,
             h2_max_concurrent_streams=1000)
    await p.open()
    count = 400
    for i in range(count):
        p.request(1 + 2 * i)
    await p.read()
    release.set()
    sids = range(1, 2 * count, 2)
    for _ in range(count):  # one handler at a time: a few loop rounds each
        await p.read()
        if errors or all(p.replies[sid].ended for sid in sids):
            break
    assert errors == []
    assert all(p.replies[sid].ended for sid in sids)


@run
async def test_the_body_clock_is_the_loops_clock():
    clock = Clock(start=time.monotonic() + 1000.0)  # a loop whose clock has its own origin
    app = Reader()
    p = Peer(app, timeout_request_body=10, h2_ping_interval=0)
    await p.open()
    p.request(1, method=b"POST", end=False)
    await clock.advance(5)
    assert await p.read() == [] and app.outcome is None  # 5 s of 10: no 408 yet


@run
async def test_a_stream_reset_in_the_read_of_its_headers_never_runs_its_handler():
    """Handlers start once every event of a read is taken in: a stream the same read
    also reset is a counted early reset (rapid reset), and its handler never runs (with
    an eager Task, Python >= 3.12, it ran and found its stream reset underneath)."""
    calls: list[int] = []

    async def handler(stream: Any) -> None:
        calls.append(stream.stream_id)
        await answer(stream, b"x")

    p = Peer(handler)
    await p.open()
    p.h2.send_headers(1, [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"),
                          (b":authority", b"example.com")], end_stream=True)
    p.h2.reset_stream(1)
    p.send()  # HEADERS and RST_STREAM in one read
    await p.read()
    assert calls == [] and p.conn._early_resets == 1
    p.request(3)
    await p.read()
    assert calls == [3] and p.replies[3].status == 200
