"""The WSGI adapter's loop <-> thread hand-off (``_Exchange``) and WSGIHandler over a FakeStream.

No sockets: the loop side runs on a real event loop (``asyncio.run``), the app
side in a real thread, and they meet only through the exchange and the
in-memory stream of tests/fakes.py. Every step waits on an event; the timeouts
are upper bounds against hangs, never what a test measures.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeStream

from bivio.adapters import wsgi
from bivio.adapters.wsgi import (
    _DATA,
    _END,
    _START,
    _WHOLE,
    HIGH_WATER,
    LOW_WATER,
    ThreadPool,
    WSGIHandler,
    WSGIInput,
    _Exchange,
    _Wakeups,
)
from bivio.core.config import Config
from bivio.core.stream import ClientDisconnected, Headers

LONG = 10.0  # only against hangs


# -- helpers --------------------------------------------------------------------------------


class RefusingPool(ThreadPool):
    """A pool that cannot start a thread (the process is out of them)."""

    def submit(self, job: Callable[[], None], busy: int) -> None:
        raise RuntimeError("can't start new thread")


class RecordingStream(FakeStream):
    """A FakeStream that also records each ``send_body`` call and signals it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sends: list[tuple[bytes, bool]] = []
        self.sent = asyncio.Event()

    async def send_body(self, data: bytes, more: bool) -> None:
        await super().send_body(data, more)
        self.sends.append((data, more))
        self.sent.set()


class GatedStream(RecordingStream):
    """A client that does not read: ``send_body`` waits until the test opens ``gate``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def send_body(self, data: bytes, more: bool) -> None:
        self.entered.set()
        await self.gate.wait()
        await super().send_body(data, more)


class SteppedStream(RecordingStream):
    """Says each time the handler asks for the body, so the test feeds one chunk per ask."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asks: asyncio.Queue[None] = asyncio.Queue()

    async def receive_body(self) -> tuple[bytes, bool]:
        self.asks.put_nowait(None)
        return await super().receive_body()


async def feed_on_ask(stream: SteppedStream, *chunks: bytes, end: bool = True) -> None:
    """Answer each read of ``stream`` with the next chunk, then (``end``) with the end."""
    for chunk in [*chunks, None] if end else chunks:
        try:
            await asyncio.wait_for(stream.asks.get(), LONG)
        except asyncio.TimeoutError:  # (TimeoutError itself from Python 3.11)
            raise AssertionError("the handler never asked for (more of) the body") from None
        if chunk is None:
            stream.end()
        else:
            stream.feed(chunk)


class FailingFileStream(FakeStream):
    """``send_file`` fails with a real error (say, the file shrank under the server)."""

    async def send_file(self, fd: int, offset: int, count: int) -> None:
        raise RuntimeError("boom")


class BrokenHeadStream(FakeStream):
    """A protocol bug: ``start_response`` raises something other than ClientDisconnected."""

    async def start_response(self, status: int, headers: Headers, trailers: bool = False) -> None:
        raise TypeError("a bug below the adapter")


class WatchedExchange(_Exchange):
    """An exchange that says when its thread starts and stops waiting for the loop."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.waiting = threading.Event()  # the thread entered _wait
        self.waited = threading.Event()  # ... and left it (returned or raised)

    def _wait(self, ready: Callable[[], bool]) -> None:
        self.waiting.set()
        try:
            super()._wait(ready)
        finally:
            self.waited.set()


class AppThread:
    """Runs ``target`` in a thread, as a pool thread runs an app; keeps what it returned."""

    def __init__(self, target: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(target,), daemon=True)
        self.thread.start()

    def _run(self, target: Callable[[], Any]) -> None:
        try:
            self.result = target()
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    async def wait(self) -> None:
        assert await asyncio.to_thread(self.done.wait, LONG), "the app thread did not finish"


async def until(event: threading.Event) -> None:
    """Wait, from the loop, for an event set by a thread."""
    assert await asyncio.to_thread(event.wait, LONG), "the event was never set"


def stop(handler: WSGIHandler) -> None:
    """Shut the handler's pool down and join its threads."""
    threads = list(handler.pool.threads)
    handler.shutdown()
    for thread in threads:
        thread.join(LONG)
        assert not thread.is_alive()


def serve_one(app: Any, stream: FakeStream, config: Config | None = None,
              exchange_type: Callable[..., _Exchange] | None = None) -> WSGIHandler:
    """Run one request through a WSGIHandler, then stop its pool."""
    handler = WSGIHandler(app, config or Config(threads=2))
    if exchange_type is not None:
        handler.exchange_type = exchange_type
    try:
        asyncio.run(asyncio.wait_for(handler(stream), LONG))
    finally:
        stop(handler)
    return handler


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


# -- the exchange: posting and pumping ------------------------------------------------------


def test_post_and_pump_carry_head_body_and_end():
    async def main() -> None:
        stream = RecordingStream()
        exchange = _Exchange(asyncio.get_running_loop(), stream)
        pump = asyncio.create_task(exchange.pump())

        def app() -> None:
            exchange.post((_START, 201, [(b"content-type", b"text/plain")], False),
                          (_DATA, b"hello "), size=6)
            exchange.post((_DATA, b"world"), size=5)
            exchange.finish((_END,))

        thread = AppThread(app)
        await asyncio.wait_for(pump, LONG)
        await thread.wait()
        assert thread.error is None
        assert stream.status == 201
        assert stream.response_headers == [(b"content-type", b"text/plain")]
        assert bytes(stream.body) == b"hello world"
        assert stream.response_complete and not stream.aborted and not stream.closes_after
        assert stream.sends[-1][1] is False  # the body ended
        assert all(more for _, more in stream.sends[:-1])
        assert exchange.pending == 0

    asyncio.run(main())


def test_data_items_queued_together_go_out_in_one_send():
    async def main() -> None:
        stream = RecordingStream()
        exchange = _Exchange(asyncio.get_running_loop(), stream)
        # Queued while the loop side is busy elsewhere (here: not started yet).
        exchange.post((_START, 200, [], False), (_DATA, b"a"), size=1)
        exchange.post((_DATA, b"bb"), size=2)
        exchange.post((_DATA, b"ccc"), size=3)
        exchange.finish((_END,))
        await asyncio.wait_for(exchange.pump(), LONG)
        # One send, and it is the last one: the END right behind it is folded in.
        assert stream.sends == [(b"abbccc", False)]
        assert stream.response_complete
        assert exchange.pending == 0

    asyncio.run(main())


def test_coalesced_data_without_the_end_leaves_the_body_open():
    async def main() -> None:
        stream = RecordingStream()
        exchange = _Exchange(asyncio.get_running_loop(), stream)
        exchange.post((_START, 200, [], False), (_DATA, b"a"), size=1)
        exchange.post((_DATA, b"b"), size=1)
        pump = asyncio.create_task(exchange.pump())
        await asyncio.wait_for(stream.sent.wait(), LONG)
        assert stream.sends == [(b"ab", True)]
        assert not stream.response_complete
        exchange.finish((_END,))
        await asyncio.wait_for(pump, LONG)
        assert stream.sends == [(b"ab", True), (b"", False)]
        assert stream.response_complete

    asyncio.run(main())


# -- the exchange: backpressure and a vanishing client ---------------------------------------


def test_thread_blocks_past_the_high_water_mark_and_resumes_once_sent():
    async def main() -> None:
        stream = GatedStream()
        exchange = WatchedExchange(asyncio.get_running_loop(), stream)
        pump = asyncio.create_task(exchange.pump())
        first = b"a" * LOW_WATER
        second = b"b" * (HIGH_WATER - LOW_WATER + 1)
        first_posted = threading.Event()

        def app() -> None:
            exchange.post((_START, 200, [], False), (_DATA, first), size=len(first))
            first_posted.set()
            exchange.post((_DATA, second), size=len(second))  # > HIGH_WATER pending: blocks
            exchange.finish((_END,))

        thread = AppThread(app)
        await until(exchange.waiting)
        # Nothing reached the client (the gate is shut), so the thread is held in
        # its second post; the first, below the mark, went through.
        assert first_posted.is_set()
        assert not thread.done.is_set()
        assert exchange.pending == len(first) + len(second) > HIGH_WATER
        stream.gate.set()  # the client reads
        await thread.wait()
        await asyncio.wait_for(pump, LONG)
        assert thread.error is None
        assert bytes(stream.body) == first + second
        assert stream.response_complete
        assert exchange.pending == 0

    asyncio.run(main())


def test_a_disconnect_makes_the_next_post_raise():
    async def main() -> None:
        stream = RecordingStream()
        exchange = _Exchange(asyncio.get_running_loop(), stream)
        pump = asyncio.create_task(exchange.pump())
        first_posted = threading.Event()
        go_on = threading.Event()

        def app() -> None:
            try:
                exchange.post((_START, 200, [], False), (_DATA, b"first"), size=5)
                first_posted.set()
                assert go_on.wait(LONG)
                exchange.post((_DATA, b"second"), size=6)
            finally:
                exchange.finish((_END,))

        thread = AppThread(app)
        await until(first_posted)
        stream.disconnect()
        go_on.set()
        await thread.wait()
        await asyncio.wait_for(pump, LONG)
        assert isinstance(thread.error, ClientDisconnected)
        assert b"second" not in stream.body

    asyncio.run(main())


def test_a_disconnect_frees_a_thread_held_by_backpressure():
    async def main() -> None:
        stream = GatedStream()
        exchange = WatchedExchange(asyncio.get_running_loop(), stream)
        pump = asyncio.create_task(exchange.pump())
        big = b"x" * (HIGH_WATER + 1)

        def app() -> None:
            try:
                exchange.post((_START, 200, [], False), (_DATA, big), size=len(big))
            finally:
                exchange.finish((_END,))

        thread = AppThread(app)
        await until(exchange.waiting)
        await asyncio.wait_for(stream.entered.wait(), LONG)
        stream.disconnect()
        stream.gate.set()  # the pending send now fails: the client is gone
        await thread.wait()
        await asyncio.wait_for(pump, LONG)
        assert isinstance(thread.error, ClientDisconnected)
        assert stream.body == b""

    asyncio.run(main())


# -- the exchange: reading the body ----------------------------------------------------------


def test_wsgi_input_pulls_the_body_through_the_exchange():
    async def main() -> None:
        stream = SteppedStream("POST", body_length=None)
        exchange = _Exchange(asyncio.get_running_loop(), stream)
        pump = asyncio.create_task(exchange.pump())

        def app() -> list[bytes]:
            try:
                inp = WSGIInput(exchange)
                got = [inp.read(3), inp.readline(), inp.readline(), inp.read(), inp.read()]
                body = b"".join(got)
                exchange.post((_START, 200, [], False), (_DATA, body), size=len(body))
                return got
            finally:
                exchange.finish((_END,))

        thread = AppThread(app)
        await feed_on_ask(stream, b"hello wo", b"rld\nline two\nta", b"il")
        await thread.wait()
        await asyncio.wait_for(pump, LONG)
        assert thread.error is None
        assert thread.result == [b"hel", b"lo world\n", b"line two\n", b"tail", b""]
        assert stream.reads == 4  # one hand-off per chunk, and one for the end
        assert bytes(stream.body) == b"hello world\nline two\ntail"

    asyncio.run(main())


def test_wsgi_input_raises_client_disconnected_mid_body():
    async def main() -> None:
        stream = SteppedStream("POST", body_length=100)
        exchange = _Exchange(asyncio.get_running_loop(), stream)
        pump = asyncio.create_task(exchange.pump())
        got: list[bytes] = []

        def app() -> None:
            try:
                inp = WSGIInput(exchange)
                got.append(inp.readline())
                inp.read()
            finally:
                exchange.finish((_END,))

        thread = AppThread(app)
        await feed_on_ask(stream, b"line\npart", end=False)
        await asyncio.wait_for(stream.asks.get(), LONG)  # the app wants more...
        stream.disconnect()  # ... and the client leaves instead
        await thread.wait()
        await asyncio.wait_for(pump, LONG)
        assert got == [b"line\n"]
        assert isinstance(thread.error, ClientDisconnected)

    asyncio.run(main())


# -- (a) a failed file send is the loop's to log ------------------------------------------------


def test_a_failed_file_send_is_logged_and_drops_the_response(tmp_path: Path, errors: Any):
    """The thread hands the file to the loop and does not wait for it (a slow reader
    would hold it): a send that fails is logged there, with the real error, and the
    response is dropped (the head went out); the wrapper is closed once."""
    path = tmp_path / "data.bin"
    path.write_bytes(b"x" * 1000)
    opened: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        f = path.open("rb")  # noqa: SIM115 (closed by bivio)
        opened.append(f)
        return environ["wsgi.file_wrapper"](f)

    stream = FailingFileStream()
    serve_one(app, stream)
    assert [r.getMessage() for r in errors()] == ["WSGI response could not be sent: boom"]
    assert stream.aborted
    assert opened[0].closed


# -- (b) the pool slot comes back whatever happens ------------------------------------------


def test_a_pump_that_raises_gives_its_slot_back():
    handler = WSGIHandler(hello, Config(threads=1))

    async def main() -> None:
        broken = BrokenHeadStream()
        with pytest.raises(TypeError):
            await asyncio.wait_for(handler(broken), LONG)
        assert handler.free == handler.size
        assert broken.aborted
        # The one thread's slot is free again: the next request is served.
        ok = FakeStream()
        await asyncio.wait_for(handler(ok), LONG)
        assert ok.status == 200 and bytes(ok.body) == b"hello"
        assert handler.free == handler.size

    try:
        asyncio.run(main())
    finally:
        stop(handler)


# -- (c) a thread outliving a cancelled request and its loop ----------------------------------


def test_a_thread_outliving_its_cancelled_request_never_calls_the_closed_loop(
        monkeypatch: pytest.MonkeyPatch):
    thread_errors: list[Any] = []
    monkeypatch.setattr(threading, "excepthook", thread_errors.append)
    entered = threading.Event()
    release = threading.Event()
    closed = threading.Event()

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"late"

        def close(self) -> None:
            closed.set()

    def app(environ: dict[str, Any], start_response: Any) -> Body:
        entered.set()
        assert release.wait(LONG)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()

    handler = WSGIHandler(app, Config(threads=1))
    stream = FakeStream()

    async def main() -> None:
        task = asyncio.create_task(handler(stream))
        await until(entered)
        task.cancel()  # forced shutdown: the app is still running
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())  # the loop is closed now
    threads = list(handler.pool.threads)
    assert len(threads) == 1
    release.set()
    assert closed.wait(LONG)  # close() still runs, in the app's thread
    stop(handler)
    assert not threads[0].is_alive()
    assert thread_errors == []
    assert stream.aborted and stream.body == b""
    assert handler.free == handler.size


# -- (c2) the loop's wake-ups, batched ----------------------------------------------------


class ThreadsafeCalls:
    """A loop that records ``call_soon_threadsafe`` and runs nothing by itself."""

    def __init__(self, closed: bool = False) -> None:
        self.calls: list[Callable[[], None]] = []
        self.closed = closed
        self.reported: list[dict[str, Any]] = []

    def call_soon_threadsafe(self, callback: Callable[[], None]) -> None:
        if self.closed:
            raise RuntimeError("Event loop is closed")
        self.calls.append(callback)

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        self.reported.append(context)

    def run_one(self) -> None:
        self.calls.pop(0)()


class Waiter:
    """A future's ``set_result``, counted; ``then`` runs inside it (a post meanwhile)."""

    def __init__(self, then: Callable[[], None] | None = None,
                 fails: Exception | None = None) -> None:
        self.woken = 0
        self.then = then
        self.fails = fails

    def set_result(self, value: None) -> None:
        if self.fails is not None:
            raise self.fails
        self.woken += 1
        if self.then is not None:
            self.then()


def test_posts_made_before_the_loop_runs_take_one_call_and_wake_every_waiter():
    loop = ThreadsafeCalls()
    wakeups = _Wakeups(loop)
    waiters = [Waiter() for _ in range(3)]
    for waiter in waiters:
        wakeups.post(waiter)
    assert len(loop.calls) == 1
    loop.run_one()
    assert [w.woken for w in waiters] == [1, 1, 1]
    later = Waiter()
    wakeups.post(later)  # after the drain: a call of its own
    assert len(loop.calls) == 1
    loop.run_one()
    assert later.woken == 1


def test_a_post_during_the_drain_is_woken_by_the_next_drain_it_schedules():
    loop = ThreadsafeCalls()
    wakeups = _Wakeups(loop)
    late = Waiter()
    wakeups.post(Waiter(then=lambda: wakeups.post(late)))
    loop.run_one()
    assert late.woken == 0 and len(loop.calls) == 1  # not lost: scheduled
    loop.run_one()
    assert late.woken == 1 and loop.calls == []


def test_a_wake_up_that_fails_is_reported_and_the_others_still_happen():
    loop = ThreadsafeCalls()
    wakeups = _Wakeups(loop)
    first, broken, last = Waiter(), Waiter(fails=ValueError("boom")), Waiter()
    for waiter in (first, broken, last):
        wakeups.post(waiter)
    loop.run_one()
    assert first.woken == 1 and last.woken == 1
    assert [type(c["exception"]) for c in loop.reported] == [ValueError]


def test_a_closed_loop_refuses_every_post_not_only_the_first():
    loop = ThreadsafeCalls(closed=True)
    wakeups = _Wakeups(loop)
    for _ in range(2):  # the flag does not stay set: each post asks, each is refused
        with pytest.raises(RuntimeError):
            wakeups.post(Waiter())


# -- (d) wsgi.multiprocess ----------------------------------------------------------------


def test_multiprocess_comes_from_the_config():
    def environ_of(config: Config) -> dict[str, Any]:
        return WSGIHandler(hello, config).base_environ

    # A supervised worker: its own options have workers cleared, the supervisor marks it.
    assert environ_of(Config(threads=1, multiprocess=True))["wsgi.multiprocess"] is True
    assert environ_of(Config(threads=1))["wsgi.multiprocess"] is False
    assert environ_of(Config(threads=1, workers=2))["wsgi.multiprocess"] is True


# -- (e) Connection: close is the stream's business -----------------------------------------


def _closing_app(shape: str, path: Path) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Connection", "close")])
        if shape == "list":
            return [b"bye"]
        if shape == "empty":
            return []
        if shape == "generator":
            return iter([b"b", b"ye"])
        return environ["wsgi.file_wrapper"](path.open("rb"))  # noqa: SIM115 (closed by bivio)
    return app


@pytest.mark.parametrize("shape", ["list", "empty", "generator", "file"])
def test_connection_close_from_the_app_is_not_a_header(shape: str, tmp_path: Path):
    path = tmp_path / "bye.txt"
    path.write_bytes(b"bye")
    stream = FakeStream()
    serve_one(_closing_app(shape, path), stream)
    assert stream.status == 200
    assert bytes(stream.body) == (b"" if shape == "empty" else b"bye")
    assert stream.closes_after is True
    assert stream.header(b"connection") is None
    assert stream.response_complete and not stream.aborted


def test_an_app_error_answers_500_and_closes(errors: Any):
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise ValueError("app bug")

    stream = FakeStream()
    serve_one(app, stream)
    assert stream.status == 500
    assert stream.closes_after is True
    assert stream.header(b"connection") is None
    assert [str(r.exc_info[1]) for r in errors() if r.exc_info] == ["app bug"]


# -- (f) body framing comes from stream.body_length ------------------------------------------


def _recording_app(seen: dict[str, Any], stream: FakeStream) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen["reads_before_app"] = stream.reads
        seen["CONTENT_LENGTH"] = environ.get("CONTENT_LENGTH")
        seen["input"] = type(environ["wsgi.input"]).__name__
        body = environ["wsgi.input"].read()
        seen["body"] = body
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [body]
    return app


def test_a_body_of_unknown_length_is_spooled_before_the_app_runs():
    # No content-length, no transfer-encoding header: only body_length=None says a body follows.
    stream = SteppedStream("POST", body_length=None)
    seen: dict[str, Any] = {}
    handler = WSGIHandler(_recording_app(seen, stream), Config(threads=1))

    async def main() -> None:
        task = asyncio.create_task(handler(stream))
        await feed_on_ask(stream, b"abc", b"defg")
        await asyncio.wait_for(task, LONG)

    try:
        asyncio.run(main())
    finally:
        stop(handler)
    assert seen["reads_before_app"] == 3  # read to the end first
    assert seen["CONTENT_LENGTH"] == "7"
    assert seen["input"] != "WSGIInput"  # the spool, not the socket
    assert seen["body"] == b"abcdefg"
    assert bytes(stream.body) == b"abcdefg"


def test_a_body_of_known_length_is_read_through_wsgi_input():
    # --wsgi-body stream; by default the body is read first (tests/test_wsgi_body.py).
    stream = SteppedStream("POST", body_length=7, headers=[(b"content-length", b"7")])
    seen: dict[str, Any] = {}
    handler = WSGIHandler(_recording_app(seen, stream), Config(threads=1, wsgi_body="stream"))

    async def main() -> None:
        task = asyncio.create_task(handler(stream))
        await feed_on_ask(stream, b"abc", b"defg")
        await asyncio.wait_for(task, LONG)

    try:
        asyncio.run(main())
    finally:
        stop(handler)
    assert seen["reads_before_app"] == 0  # pulled only as the app reads
    assert seen["CONTENT_LENGTH"] == "7"
    assert seen["input"] == "WSGIInput"
    assert seen["body"] == b"abcdefg"


@pytest.mark.parametrize("http_version", ["1.1", "2"])
def test_no_body_gives_an_empty_wsgi_input_without_reading(http_version: str):
    # HTTP/2 without content-length and without DATA: body_length=0, nothing to read.
    stream = FakeStream("POST", body_length=0, http_version=http_version)
    seen: dict[str, Any] = {}
    serve_one(_recording_app(seen, stream), stream)
    assert seen["body"] == b""
    assert seen["CONTENT_LENGTH"] is None
    assert seen["input"] == "WSGIInput"
    assert stream.reads == 0  # the loop was never asked for a body
    assert stream.status == 200


# -- one hand-off for a whole small response -------------------------------------------------


class CountingExchange(_Exchange):
    """An exchange that records the items of each post and finish, to count hand-offs."""

    __slots__ = ("posts",)

    def post(self, *items: tuple[Any, ...], size: int = 0) -> None:
        self.posts.append([item[0] for item in items])
        super().post(*items, size=size)

    def _finish(self, items: tuple[tuple[Any, ...], ...], final: bool, size: int) -> None:
        # finish() and the app thread's own end both come here.
        self.posts.append([item[0] for item in items])
        super()._finish(items, final, size)


def _count_posts() -> tuple[list[list[list[int]]], Callable[..., CountingExchange]]:
    """A handler's ``exchange_type`` that makes CountingExchanges, and the posts of each
    exchange made (through the handler's hook: compiled, the module cannot be patched)."""
    made: list[list[list[int]]] = []

    def exchange(*args: Any, **kwargs: Any) -> CountingExchange:
        ex = CountingExchange(*args, **kwargs)
        ex.posts = []
        made.append(ex.posts)
        return ex

    return made, exchange


class ListResponse:
    """Django's HttpResponse as WSGI sees it: iterating it iterates its own list."""

    def __init__(self, items: list[bytes]) -> None:
        self.items = items
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.items)

    def close(self) -> None:
        self.closed.set()


@pytest.mark.parametrize("shape", ["list", "tuple", "list-iterator"])
def test_a_small_complete_response_is_one_post_and_one_final_send(shape: str):
    made, counting = _count_posts()
    response = ListResponse([b"hel", b"lo"])

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        if shape == "list":
            return [b"hel", b"lo"]
        if shape == "tuple":
            return (b"hel", b"lo")
        return response

    stream = RecordingStream()
    serve_one(app, stream, exchange_type=counting)
    if shape == "list-iterator":
        # close() (the app's code) runs between the response and the end.
        assert made == [[[_WHOLE], [_END]]]
    else:  # nothing runs after it: the response goes with the end, one hand-off
        assert made == [[[_WHOLE, _END]]]
    assert stream.status == 200
    assert stream.sends == [(b"hello", False)]  # the stream knows the body's length
    assert stream.response_complete and not stream.aborted
    if shape == "list-iterator":
        assert response.closed.is_set()  # close() still called


def test_a_generator_still_goes_out_as_it_is_produced():
    made, counting = _count_posts()

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"first"
        yield b"second"

    stream = RecordingStream()
    serve_one(app, stream, exchange_type=counting)
    assert made[0][0] == [_START, _DATA]  # a generator's items are not held back
    assert bytes(stream.body) == b"firstsecond"
    assert stream.response_complete


def _complete(send: Any) -> None:
    """Run a fake send that never waits to its end, here."""
    try:
        send.send(None)
    except StopIteration:
        return
    raise AssertionError("the fake stream's send waited")


class NowaitStream(RecordingStream):
    """A stream that also sends without a coroutine, as HTTP/1.1's does
    (``start_response_nowait``/``send_body_nowait``): the adapter's fast path."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sends_nowait = True
        self.nowait: list[str] = []

    def start_response_nowait(self, status: int, headers: Headers,
                              trailers: bool = False) -> None:
        self.nowait.append("start")
        _complete(self.start_response(status, headers, trailers))

    def send_body_nowait(self, data: bytes, more: bool) -> None:
        self.nowait.append("body")
        _complete(self.send_body(data, more))


@pytest.mark.parametrize("close", [False, True], ids=["keep-alive", "connection-close"])
def test_a_small_whole_response_goes_out_without_a_coroutine(close: bool):
    made, counting = _count_posts()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")]
                       + ([("Connection", "close")] if close else []))
        return [b"hel", b"lo"]

    stream = NowaitStream()
    handler = serve_one(app, stream, exchange_type=counting)
    assert made == [[[_WHOLE, _END]]]
    assert stream.nowait == ["start", "body"]  # no start_response/send_body coroutine
    assert stream.status == 200 and stream.sends == [(b"hello", False)]
    assert stream.response_complete and not stream.aborted
    assert stream.closes_after is close
    assert handler.free == handler.size


def test_a_small_whole_response_for_a_client_gone_is_not_sent():
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        stream.disconnect()  # the client leaves while the app runs
        start_response("200 OK", [])
        return [b"hello"]

    stream = NowaitStream()
    handler = serve_one(app, stream)
    # The head is refused (ClientDisconnected), so nothing else is tried.
    assert stream.nowait == ["start"] and stream.sends == [] and stream.status is None
    assert handler.free == handler.size


def test_a_list_iterator_with_a_bad_item_answers_500(errors: Any):
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        return ListResponse([b"ok", "not bytes"])  # type: ignore[list-item]

    stream = RecordingStream()
    serve_one(app, stream)
    assert stream.status == 500  # nothing went out before the bad item was seen
    assert any("sent str, not bytes" in r.getMessage() for r in errors())


def test_the_pump_waits_on_a_waiter_set_before_the_thread_starts():
    async def main() -> None:
        loop = asyncio.get_running_loop()
        stream = RecordingStream()
        exchange = _Exchange(loop, stream)
        exchange.waiter = first = loop.create_future()
        pump = asyncio.create_task(exchange.pump(first))
        await asyncio.sleep(0)
        assert not pump.done()

        def app() -> None:
            exchange.post((_WHOLE, 200, [], False, b"done"), size=4)
            exchange.finish((_END,), final=True)

        thread = AppThread(app)
        await asyncio.wait_for(pump, LONG)
        await thread.wait()
        assert thread.error is None
        assert stream.sends == [(b"done", False)]
        exchange.end_pump()
        assert exchange.pending == 0 and exchange.pump_done

    asyncio.run(main())


def test_whole_after_a_disconnect_sends_nothing():
    async def main() -> None:
        stream = RecordingStream()
        exchange = _Exchange(asyncio.get_running_loop(), stream)
        exchange.items.extend([(_WHOLE, 200, [], False, b"late"), (_END,)])
        exchange.pending = 4
        stream.disconnect()
        await asyncio.wait_for(exchange.pump(), LONG)
        assert stream.sends == []
        assert exchange.pending == 0

    asyncio.run(main())


# -- start_response and environ: the caches never change an answer --------------------------


def _start(headers: list[tuple[str, str]], status: str = "200 OK") -> Any:
    call = wsgi._Call(WSGIHandler(hello, Config(threads=1)), FakeStream(), None)  # type: ignore[arg-type]
    call.start_response(status, headers)
    return call


def test_a_cached_content_length_is_still_read_as_the_length():
    for _ in range(3):  # the first call fills the cache, the next ones hit it
        call = _start([("Content-Length", "12"), ("X-A", "b")])
        assert call.content_length == b"12"
        assert call.headers == [(b"content-length", b"12"), (b"x-a", b"b")]
    other = _start([("X-A", "b")])
    assert other.content_length is None


def test_a_cached_status_line_gives_the_same_code_and_bad_ones_still_fail():
    assert _start([], "404 Not Found").status == 404
    assert _start([], "404 Not Found").status == 404

    class Status(str):
        pass

    assert _start([], Status("201 Created")).status == 201
    for bad in ("99 Low", "200OK", "abc", b"200 OK", 200):
        with pytest.raises(wsgi.WSGIError):
            _start([], bad)  # type: ignore[arg-type]
        with pytest.raises(wsgi.WSGIError):
            _start([], bad)  # type: ignore[arg-type]  # twice: nothing was cached


def test_header_names_with_underscores_stay_dropped_once_other_names_are_cached():
    handler = WSGIHandler(hello, Config(threads=1))
    headers = [(b"x-auth-user", b"real"), (b"x-auth_user", b"spoof"),
               (b"content-type", b"text/plain"), (b"content-length", b"3")]
    for _ in range(2):
        env = handler.environ(FakeStream("POST", b"/caf%C3%A9", headers=headers, body=b"abc"))
        assert env["HTTP_X_AUTH_USER"] == "real"
        assert env["CONTENT_TYPE"] == "text/plain" and env["CONTENT_LENGTH"] == "3"
        assert env["PATH_INFO"] == "/caf\u00c3\u00a9"
        assert env["SERVER_PROTOCOL"] == "HTTP/1.1" and env["SERVER_PORT"] == "8000"
        assert env["wsgi.errors"] is not handler.environ(FakeStream())["wsgi.errors"]


# -- requests in line for a thread ------------------------------------------------------------


def test_requests_in_line_start_in_order_on_the_thread_that_frees():
    gate = threading.Event()
    order: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        order.append(environ["PATH_INFO"])
        if environ["PATH_INFO"] == "/first":
            gate.wait(LONG)
        start_response("200 OK", [])
        return [environ["PATH_INFO"].encode()]

    handler = WSGIHandler(app, Config(threads=1))

    async def main() -> None:
        streams = [RecordingStream(path=f"/{name}".encode())
                   for name in ("first", "second", "third")]
        tasks = [asyncio.create_task(handler(streams[0]))]
        while not order:
            await asyncio.sleep(0)
        tasks += [asyncio.create_task(handler(s)) for s in streams[1:]]
        while handler.queued < 2:
            await asyncio.sleep(0)
        gate.set()
        await asyncio.wait_for(asyncio.gather(*tasks), LONG)
        assert [bytes(s.body) for s in streams] == [b"/first", b"/second", b"/third"]
        assert handler.free == handler.size and not handler.queued

    try:
        asyncio.run(main())
    finally:
        stop(handler)
    assert order == ["/first", "/second", "/third"]


def test_a_thread_that_cannot_start_fails_its_request_and_frees_the_slot():
    """The pool cannot start a thread (the process is out of them): that request fails
    on the loop, its count comes back, and the next request is served."""
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    handler = WSGIHandler(app, Config(threads=1))
    real_pool = handler.pool

    async def main() -> None:
        handler.pool = RefusingPool(handler.size)
        refused = RecordingStream("POST", b"/refused", body=b"payload")
        with pytest.raises(RuntimeError, match="can't start new thread"):
            await asyncio.wait_for(handler(refused), LONG)
        assert handler.free == handler.size  # the slot it was given came back
        handler.pool = real_pool
        after = RecordingStream(path=b"/after")
        await asyncio.wait_for(handler(after), LONG)
        assert bytes(after.body) == b"ok"

    try:
        asyncio.run(main())
    finally:
        stop(handler)


def test_intake_pauses_only_past_the_queue_mark_and_resumes_at_half(
        monkeypatch: pytest.MonkeyPatch):
    """Calls queue behind the busy threads; intake pauses only once more than
    QUEUE_BEFORE_PAUSE wait (a flood), and resumes when the queue is down to half."""
    from bivio.core.context import ServerContext

    monkeypatch.setattr(wsgi, "QUEUE_BEFORE_PAUSE", 4)
    gate = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/hold":
            gate.wait(LONG)
        start_response("200 OK", [])
        return [b"ok"]

    handler = WSGIHandler(app, Config(threads=1))
    ctx = ServerContext(Config(), handler)
    handler.bind(ctx)
    paused: list[int] = []

    class Held:
        """A connection that held back: the resume reaches it."""

        def resume_intake(self) -> None:
            paused.append(handler.queued)  # how many still wait when intake resumes

    async def main() -> None:
        held = RecordingStream(path=b"/hold")
        tasks = [asyncio.create_task(handler(held))]
        streams = [RecordingStream(path=f"/{i}".encode()) for i in range(5)]
        for stream in streams[:4]:
            tasks.append(asyncio.create_task(handler(stream)))
        while handler.queued < 4:
            await asyncio.sleep(0)
        assert not ctx.intake_paused  # four waiting: not a flood yet
        tasks.append(asyncio.create_task(handler(streams[4])))
        while handler.queued < 5:
            await asyncio.sleep(0)
        assert ctx.intake_paused
        ctx.held.add(Held())  # type: ignore[arg-type]
        gate.set()
        await asyncio.wait_for(asyncio.gather(*tasks), LONG)
        assert not ctx.intake_paused and handler.free == handler.size
        assert all(bytes(s.body) == b"ok" for s in streams)

    try:
        asyncio.run(main())
    finally:
        stop(handler)
    assert paused and paused[0] <= 2  # resumed once the queue was down to half


# -- a request started without a Task (WSGIHandler.start_nowait) ----------------------------


def _context(app: Any, threads: int = 2) -> tuple[WSGIHandler, Any]:
    from bivio.core.context import ServerContext

    handler = WSGIHandler(app, Config(threads=threads))
    ctx = ServerContext(Config(), handler)
    handler.bind(ctx)
    return handler, ctx


def test_a_bodiless_request_runs_without_a_task_and_is_counted_while_it_runs():
    """The usual request (no body, a stream that sends without a coroutine) starts with no
    Task: the loop waits for the thread's answer on a future, counted in ``ctx.tasks``
    (--limit-concurrency, graceful shutdown) until the answer is out."""
    running, release = threading.Event(), threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        running.set()
        release.wait(LONG)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]

    handler, ctx = _context(app)

    async def main() -> None:
        stream = NowaitStream()
        started = ctx.start_handler(stream)
        assert started is not None and not isinstance(started, asyncio.Task)
        await until(running)
        assert ctx.tasks == {started: stream} and ctx.in_flight == 1
        assert asyncio.all_tasks() == {asyncio.current_task()}  # no Task for the request
        release.set()
        await asyncio.wait_for(stream.sent.wait(), LONG)
        assert stream.nowait == ["start", "body"] and stream.sends == [(b"hello", False)]
        assert stream.status == 200 and stream.response_complete and not stream.aborted
        assert ctx.tasks == {} and handler.free == handler.size

    try:
        asyncio.run(main())
    finally:
        stop(handler)


@pytest.mark.parametrize("shape", ["body", "coroutine-stream"])
def test_a_request_with_a_body_or_on_another_stream_takes_a_task(shape: str):
    handler, ctx = _context(hello)

    async def main() -> None:
        stream = (NowaitStream("POST", b"/", body=b"data") if shape == "body"
                  else RecordingStream())
        started = ctx.start_handler(stream)
        assert isinstance(started, asyncio.Task)
        await asyncio.wait_for(started, LONG)
        assert bytes(stream.body) == b"hello" and ctx.tasks == {}

    try:
        asyncio.run(main())
    finally:
        stop(handler)


def test_a_longer_response_goes_on_in_a_task_counted_in_the_futures_place():
    """Not the usual whole response (a generator, sent as it is produced): after the
    thread's first post a Task carries out the rest, and it is what ``ctx.tasks``
    counts from then on."""
    more = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"first "
        more.wait(LONG)
        yield b"second"

    handler, ctx = _context(app)

    async def main() -> None:
        stream = NowaitStream()
        started = ctx.start_handler(stream)
        await asyncio.wait_for(stream.sent.wait(), LONG)
        (task,) = ctx.tasks
        assert task is not started and isinstance(task, asyncio.Task)
        more.set()
        await asyncio.wait_for(task, LONG)
        assert bytes(stream.body) == b"first second" and stream.response_complete
        assert ctx.tasks == {} and handler.free == handler.size

    try:
        asyncio.run(main())
    finally:
        stop(handler)


def test_cancelling_a_request_without_a_task_gives_it_up():
    """A forced shutdown cancels what ``ctx.tasks`` holds: for a request without a Task,
    its future. The response is given up (the stream aborted), the app thread's next
    post raises ClientDisconnected, and its slot comes back."""
    running, release = threading.Event(), threading.Event()
    raised: list[BaseException] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        running.set()
        release.wait(LONG)
        try:
            start_response("200 OK", [])
            yield b"too late"
        except BaseException as exc:
            raised.append(exc)
            raise

    handler, ctx = _context(app)

    async def main() -> None:
        stream = NowaitStream()
        started = ctx.start_handler(stream)
        await until(running)
        started.cancel()
        # What a forced shutdown awaits; the future's own callback runs before gather's.
        await asyncio.gather(*ctx.tasks, return_exceptions=True)
        assert stream.aborted and ctx.tasks == {}
        release.set()
        while handler.free != handler.size:  # the thread ends, its slot comes back
            await asyncio.sleep(0.01)
        assert stream.sends == [] and stream.status is None

    try:
        asyncio.run(main())
    finally:
        stop(handler)


def test_calls_started_in_one_loop_iteration_go_to_the_pool_together_after_it():
    """Handed to the pool between the connections' reads, each woken thread would take
    the GIL whenever a read let go of it (futex calls, context switches): the calls
    started in one iteration are given to the pool at its end, in order."""
    handler, ctx = _context(hello)
    submitted: list[int] = []

    class RecordingPool(ThreadPool):
        def submit(self, job: Callable[[], None], busy: int) -> None:
            submitted.append(busy)
            super().submit(job, busy)

    handler.pool.shutdown()
    handler.pool = RecordingPool(handler.size)

    async def main() -> None:
        streams = [NowaitStream(path=f"/{i}".encode()) for i in range(3)]
        for stream in streams:
            ctx.start_handler(stream)
        assert submitted == [] and handler.busy == 3  # counted now, handed over later
        while ctx.tasks:
            await asyncio.sleep(0.01)
        assert submitted == [1, 2, 3]
        assert all(bytes(s.body) == b"hello" for s in streams)

    try:
        asyncio.run(main())
    finally:
        stop(handler)


def test_a_thread_that_cannot_start_gives_up_a_request_started_without_a_task(
        caplog: pytest.LogCaptureFixture):
    handler, ctx = _context(hello, threads=1)
    handler.pool = RefusingPool(handler.size)

    async def main() -> None:
        stream = NowaitStream()
        started = ctx.start_handler(stream)
        await asyncio.gather(started, return_exceptions=True)
        assert started.cancelled() and stream.aborted and stream.status is None
        assert ctx.tasks == {} and handler.free == handler.size

    try:
        asyncio.run(main())
    finally:
        stop(handler)
    assert "WSGI request not run: can't start new thread" in caplog.text
