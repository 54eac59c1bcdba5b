"""WSGI request bodies read on the loop before a thread is taken, and bounded response copies.

No sockets: WSGIHandler over tests/fakes.py's FakeStream, on a real event loop
and a real thread pool. Every step waits on an event (the handler asking for
more body, the app starting); the timeouts are upper bounds against hangs,
never what a test measures. The same behaviour over real sockets, with slow
clients, is in tests/e2e/test_wsgi_body.py.
"""

from __future__ import annotations

import asyncio
import io
import tempfile
import threading
from typing import Any

import pytest
from fakes import FakeStream

from bivio.adapters import wsgi as wsgi_mod
from bivio.adapters.wsgi import _DATA, _END, _START, JOIN_MAX, WSGIHandler, _Exchange
from bivio.core.config import Config
from bivio.core.stream import Headers

LONG = 10.0  # only against hangs


# -- helpers --------------------------------------------------------------------------------


class AskingStream(FakeStream):
    """Says each time the handler asks for the body, so the test knows it is waiting."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asks: asyncio.Queue[None] = asyncio.Queue()
        self.sends: list[tuple[bytes, bool]] = []

    async def receive_body(self) -> tuple[bytes, bool]:
        self.asks.put_nowait(None)
        return await super().receive_body()

    async def send_body(self, data: bytes, more: bool) -> None:
        await super().send_body(data, more)
        self.sends.append((data, more))

    async def asked(self) -> None:
        try:
            await asyncio.wait_for(self.asks.get(), LONG)
        except asyncio.TimeoutError:  # (TimeoutError itself from Python 3.11)
            raise AssertionError("the handler never asked for (more of) the body") from None


def post(body_length: int | None, **kwargs: Any) -> AskingStream:
    headers: Headers = []
    if body_length is not None:
        headers.append((b"content-length", b"%d" % body_length))
    else:
        headers.append((b"transfer-encoding", b"chunked"))
    return AskingStream("POST", body_length=body_length, headers=headers, **kwargs)


class Recorder:
    """A WSGI app that records when it was called and what it read, then echoes the body."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.called = threading.Event()
        self.gate = gate  # the app waits for it after being called (and before reading)
        self.environ: dict[str, Any] = {}
        self.input: Any = None
        self.body = b""

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.environ = environ
        self.input = environ["wsgi.input"]
        self.called.set()
        if self.gate is not None:
            assert self.gate.wait(LONG)
        self.body = self.input.read()
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [self.body]


def stop(handler: WSGIHandler) -> None:
    threads = list(handler.pool.threads)
    handler.shutdown()
    for thread in threads:
        thread.join(LONG)
        assert not thread.is_alive()


async def until(event: threading.Event) -> None:
    """Wait, from the loop, for an event set by a thread."""
    assert await asyncio.to_thread(event.wait, LONG), "the event was never set"


def run(handler: WSGIHandler, main: Any) -> None:
    try:
        asyncio.run(asyncio.wait_for(main(), LONG))
    finally:
        stop(handler)


@pytest.fixture
def spill_files(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every temporary file the adapter opens for a body, with the size of each write."""
    files: list[Any] = []
    real = tempfile.TemporaryFile

    class Watched:
        def __init__(self, f: Any) -> None:
            self.f = f
            self.writes: list[int] = []

        def write(self, data: bytes) -> int:
            self.writes.append(len(data))
            return self.f.write(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.f, name)

    def temporary_file(*args: Any, **kwargs: Any) -> Any:
        watched = Watched(real(*args, **kwargs))
        files.append(watched)
        return watched

    monkeypatch.setattr(wsgi_mod.tempfile, "TemporaryFile", temporary_file)
    return files


# -- no thread before the body is in hand -----------------------------------------------------


@pytest.mark.parametrize("body_length", [10, None], ids=["content-length", "chunked"])
def test_the_app_runs_only_once_the_whole_body_is_in(body_length: int | None):
    app = Recorder()
    handler = WSGIHandler(app, Config(threads=1))
    stream = post(body_length)

    async def main() -> None:
        task = asyncio.create_task(handler(stream))
        await stream.asked()
        stream.feed(b"abc")
        await stream.asked()  # the handler has the first part and waits for the rest...
        # ... and has taken no thread: no slot, no pool thread, no app call.
        assert handler.free == handler.size
        assert handler.pool.threads == []
        assert not app.called.is_set()
        stream.feed(b"defg")
        await stream.asked()
        stream.feed(b"hij")
        stream.end()
        await task

    run(handler, main)
    assert app.body == b"abcdefghij"
    assert app.environ["CONTENT_LENGTH"] == "10"
    assert isinstance(app.input, io.BytesIO)  # small: in memory
    assert app.input.closed  # closed once the call ended
    assert stream.status == 200 and bytes(stream.body) == b"abcdefghij"
    assert handler.free == handler.size


def test_a_chunked_body_gets_its_real_content_length():
    app = Recorder()
    handler = WSGIHandler(app, Config(threads=1))
    stream = post(None)

    async def main() -> None:
        task = asyncio.create_task(handler(stream))
        stream.feed(b"hello")
        stream.feed(b" world")
        stream.end()
        await task

    run(handler, main)
    assert app.environ["CONTENT_LENGTH"] == "11"
    assert app.body == b"hello world"


def test_an_empty_chunked_body_has_content_length_zero():
    app = Recorder()
    handler = WSGIHandler(app, Config(threads=1))
    stream = post(None)
    stream.end()
    run(handler, lambda: handler(stream))
    assert app.environ["CONTENT_LENGTH"] == "0"
    assert app.body == b"" and stream.status == 200


def test_the_wsgi_input_is_a_file_positioned_at_zero():
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        inp = environ["wsgi.input"]
        seen["tell"] = inp.tell()
        seen["lines"] = [inp.readline(), inp.readline(4), inp.read(2), inp.read(), inp.read()]
        start_response("200 OK", [])
        return []

    handler = WSGIHandler(app, Config(threads=1))
    stream = post(None)
    stream.feed(b"one\ntwo three\ntail")
    stream.end()
    run(handler, lambda: handler(stream))
    assert seen["tell"] == 0
    assert seen["lines"] == [b"one\n", b"two ", b"th", b"ree\ntail", b""]


@pytest.mark.parametrize("body_length", [5000, None], ids=["content-length", "chunked"])
def test_a_body_beyond_the_memory_threshold_spills_to_a_file(
        body_length: int | None, monkeypatch: pytest.MonkeyPatch, spill_files: list[Any]):
    monkeypatch.setattr(wsgi_mod, "SPOOL_MEMORY", 1000)
    monkeypatch.setattr(wsgi_mod, "SPILL_WRITE", 300)
    body = bytes(range(250)) * 20  # 5000 bytes, fed in 250-byte chunks
    app = Recorder()
    handler = WSGIHandler(app, Config(threads=1))
    stream = post(body_length)

    async def main() -> None:
        task = asyncio.create_task(handler(stream))
        for i in range(0, len(body), 250):
            await stream.asked()
            stream.feed(body[i:i + 250])
        await stream.asked()
        assert not app.called.is_set()
        stream.end()
        await task

    run(handler, main)
    assert app.body == body
    assert app.environ["CONTENT_LENGTH"] == "5000"
    assert len(spill_files) == 1
    spill = spill_files[0]
    assert app.input is spill
    assert spill.closed  # closed (and so gone) once the call ended
    assert sum(spill.writes) == len(body)
    # Few, large writes: every write but the last gathers at least SPILL_WRITE bytes.
    assert all(size >= 300 for size in spill.writes[:-1])
    assert len(spill.writes) < len(body) // 250
    if body_length is not None:  # announced larger than memory: to the file from the start
        assert spill.writes[0] < 1000
    else:  # in memory until it passed SPOOL_MEMORY, then written out in one go
        assert spill.writes[0] > 1000


def test_a_client_leaving_mid_body_takes_no_thread_and_gets_no_answer(
        monkeypatch: pytest.MonkeyPatch, spill_files: list[Any]):
    monkeypatch.setattr(wsgi_mod, "SPOOL_MEMORY", 100)
    monkeypatch.setattr(wsgi_mod, "SPILL_WRITE", 100)
    app = Recorder()
    handler = WSGIHandler(app, Config(threads=1))
    stream = post(100_000)

    async def main() -> None:
        task = asyncio.create_task(handler(stream))
        await stream.asked()
        stream.feed(b"x" * 500)
        await stream.asked()
        stream.disconnect()
        await task

    run(handler, main)
    assert not app.called.is_set()
    assert handler.pool.threads == []  # no thread was ever started
    assert handler.free == handler.size
    assert stream.status is None and stream.body == b""  # nothing answered
    assert len(spill_files) == 1 and spill_files[0].closed  # its spill file is gone


def test_a_body_waiting_for_a_thread_is_closed_when_its_request_is_cancelled(
        monkeypatch: pytest.MonkeyPatch, spill_files: list[Any]):
    """The cancelled call stays in the pool's queue; the thread that reaches it runs no
    app for it and closes its body (the thread owns the body from the hand-over on)."""
    monkeypatch.setattr(wsgi_mod, "SPOOL_MEMORY", 10)
    gate = threading.Event()
    app = Recorder(gate)
    handler = WSGIHandler(app, Config(threads=1))
    busy = post(None)
    busy.feed(b"holds the thread")
    busy.end()
    waiting = post(None)
    waiting.feed(b"a body that waits for the thread")
    waiting.end()

    async def main() -> None:
        first = asyncio.create_task(handler(busy))
        await until(app.called)  # the only thread is taken
        second = asyncio.create_task(handler(waiting))
        while handler.queued < 1:  # buffered, now waiting for a thread
            await asyncio.sleep(0)
        assert len(spill_files) == 2 and not spill_files[1].closed
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        gate.set()
        await first

    run(handler, main)  # stops the pool: its thread has been through the queue
    assert all(f.closed for f in spill_files)
    assert handler.free == handler.size
    assert app.body == b"holds the thread"  # the last call the app saw: not the cancelled one
    assert not waiting.response_started


def test_the_body_is_closed_when_the_app_raises(monkeypatch: pytest.MonkeyPatch):
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen["input"] = environ["wsgi.input"]
        raise ValueError("app bug")

    monkeypatch.setattr(wsgi_mod.logger, "error", lambda *a, **k: None)
    handler = WSGIHandler(app, Config(threads=1))
    stream = post(3)
    stream.feed(b"abc")
    stream.end()
    run(handler, lambda: handler(stream))
    assert stream.status == 500
    assert seen["input"].closed


def test_a_disk_error_while_buffering_answers_500_without_a_thread(
        monkeypatch: pytest.MonkeyPatch):
    def no_disk(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(wsgi_mod.tempfile, "TemporaryFile", no_disk)
    monkeypatch.setattr(wsgi_mod.logger, "error", lambda *a, **k: None)
    app = Recorder()
    handler = WSGIHandler(app, Config(threads=1))
    stream = post(wsgi_mod.SPOOL_MEMORY + 1)
    run(handler, lambda: handler(stream))
    assert stream.status == 500 and stream.closes_after
    assert not app.called.is_set() and handler.pool.threads == []


# -- --wsgi-body stream: the app reads as the body arrives -----------------------------------


def test_stream_mode_calls_the_app_before_the_body_is_complete():
    gate = threading.Event()
    app = Recorder(gate)
    handler = WSGIHandler(app, Config(threads=1, wsgi_body="stream"))
    stream = post(10)

    async def main() -> None:
        task = asyncio.create_task(handler(stream))
        await until(app.called)  # called with none of the body sent
        assert stream.reads == 0
        assert handler.free == 0  # and it holds the thread while the client sends
        assert type(app.input).__name__ == "WSGIInput"
        gate.set()
        await stream.asked()  # the app's read reaches the socket
        stream.feed(b"abcde")
        await stream.asked()
        stream.feed(b"fghij")
        stream.end()
        await task

    run(handler, main)
    assert app.body == b"abcdefghij"
    assert app.environ["CONTENT_LENGTH"] == "10"  # the request's own header


def test_stream_mode_still_reads_a_chunked_body_before_taking_a_thread():
    app = Recorder()
    handler = WSGIHandler(app, Config(threads=1, wsgi_body="stream"))
    stream = post(None)

    async def main() -> None:
        task = asyncio.create_task(handler(stream))
        await stream.asked()
        stream.feed(b"abc")
        await stream.asked()
        assert not app.called.is_set() and handler.free == handler.size
        stream.end()
        await task

    run(handler, main)
    assert app.body == b"abc" and app.environ["CONTENT_LENGTH"] == "3"


# -- bounded response copies -----------------------------------------------------------------


def test_a_large_list_response_is_sent_item_by_item_without_a_joined_copy():
    big = [bytes([65 + i]) * (100 * 1024) for i in range(4)]  # 400 KiB in 4 items

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return big

    handler = WSGIHandler(app, Config(threads=1))
    stream = AskingStream()
    run(handler, lambda: handler(stream))
    sent = [data for data, _ in stream.sends]
    # The app's own objects reached the stream: no second copy of the body was made.
    assert len(sent) == len(big)
    assert all(s is b for s, b in zip(sent, big, strict=True))
    assert [more for _, more in stream.sends] == [True, True, True, False]
    assert bytes(stream.body) == b"".join(big)
    # The length a joined body would have told the stream is said up front.
    assert stream.header(b"content-length") == b"%d" % sum(map(len, big))
    assert stream.response_complete


def test_a_small_list_response_is_still_one_send():
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello", b", ", b"world"]

    handler = WSGIHandler(app, Config(threads=1))
    stream = AskingStream()
    run(handler, lambda: handler(stream))
    assert stream.sends == [(b"hello, world", False)]
    assert stream.header(b"content-length") is None  # the stream knows it from the one send


def test_a_large_list_after_write_is_not_joined_either():
    big = [b"x" * JOIN_MAX, b"y" * JOIN_MAX]  # too large to coalesce with anything

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"first;")
        return big

    handler = WSGIHandler(app, Config(threads=1))
    stream = AskingStream()
    run(handler, lambda: handler(stream))
    assert bytes(stream.body) == b"first;" + b"".join(big)
    assert any(data is big[0] for data, _ in stream.sends)
    assert any(data is big[1] for data, _ in stream.sends)


def test_the_pump_coalesces_queued_data_only_up_to_a_bound():
    async def main() -> None:
        stream = AskingStream()
        exchange = _Exchange(asyncio.get_running_loop(), stream)
        pieces = [bytes([97 + i % 26]) * (10 * 1024) for i in range(20)]  # 200 KiB queued
        large = b"L" * (JOIN_MAX + 1)
        exchange.items.extend([(_START, 200, [], False), *((_DATA, p) for p in pieces),
                               (_DATA, large), (_DATA, b"tail"), (_END,)])
        exchange.pending = sum(map(len, pieces)) + len(large) + 4
        await asyncio.wait_for(exchange.pump(), LONG)
        sent = [data for data, _ in stream.sends]
        assert bytes(stream.body) == b"".join(pieces) + large + b"tail"
        assert 1 < len(sent) < len(pieces)  # still coalesced...
        assert max(len(s) for s in sent if s is not large) <= JOIN_MAX  # ... but bounded
        assert any(s is large for s in sent)  # an item over the bound goes out as itself
        assert stream.sends[-1] == (b"tail", False)
        assert exchange.pending == 0

    asyncio.run(main())


def test_items_queued_together_still_go_out_in_one_send():
    async def main() -> None:
        stream = AskingStream()
        exchange = _Exchange(asyncio.get_running_loop(), stream)
        exchange.post((_START, 200, [], False), (_DATA, b"a"), size=1)
        exchange.post((_DATA, b"bb"), size=2)
        exchange.finish((_END,))
        await asyncio.wait_for(exchange.pump(), LONG)
        assert stream.sends == [(b"abb", False)]

    asyncio.run(main())


# -- a client that left while its request waited for a thread -------------------------------


def test_a_request_whose_client_left_before_a_thread_was_free_is_not_run(caplog):
    """With one thread busy, a POST whose body is in waits for the thread; its client
    leaves meanwhile. When the thread is free the app is not run for it (nobody is
    there to answer), the slot goes on to the next request, and one line says so."""
    entered = threading.Event()
    release = threading.Event()
    ran: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        ran.append(environ["PATH_INFO"])
        if environ["PATH_INFO"] == "/busy":
            entered.set()
            assert release.wait(LONG)
        environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]

    handler = WSGIHandler(app, Config(threads=1))
    caplog.set_level("INFO", logger="bivio.error")

    async def main() -> None:
        busy = FakeStream(path=b"/busy")
        first = asyncio.create_task(handler(busy))
        assert await asyncio.to_thread(entered.wait, LONG)
        gone = FakeStream("POST", b"/gone", body=b"payload")
        waiting = asyncio.create_task(handler(gone))
        while not handler.queued:  # its body is read; it waits for the thread
            await asyncio.sleep(0)
        gone.disconnect()
        after = FakeStream(path=b"/after")
        third = asyncio.create_task(handler(after))
        release.set()
        await asyncio.wait_for(asyncio.gather(first, waiting, third), LONG)
        assert ran == ["/busy", "/after"]  # never /gone
        assert gone.body == b"" and not gone.response_started
        assert bytes(after.body) == b"done"
        assert handler.free == handler.size

    try:
        asyncio.run(main())
    finally:
        threads = list(handler.pool.threads)
        handler.shutdown()
        for thread in threads:
            thread.join(LONG)
    assert any("left before a thread was free: POST /gone not run" in r.getMessage()
               for r in caplog.records)
