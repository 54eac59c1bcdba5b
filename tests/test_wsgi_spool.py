"""The WSGI response spool: a client that does not read holds no thread (issue 13, item 4).

When a client stops reading a large response, the app thread writes the rest of
it to a temporary file (``--wsgi-response-buffer`` bytes at most) and finishes;
its ``close()`` runs and its slot goes back to the pool while the client has
read nothing. The loop then sends the spool, in order, as the client reads.

No sockets: a FakeStream whose ``send_body`` waits on an :class:`asyncio.Event`
plays the client that does not read. Every step waits on an event; the
timeouts are upper bounds against hangs, never what a test measures.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fakes import FakeStream

from bivio.adapters import wsgi as wsgi_mod
from bivio.adapters.wsgi import HIGH_WATER, WSGIHandler
from bivio.core.config import Config

LONG = 10.0  # only against hangs
CHUNK = 64 * 1024
MIB = 1024 * 1024


class StalledStream(FakeStream):
    """A client that reads nothing until the test lets it (:meth:`read`, :meth:`read_all`).

    ``send_body`` waits (as the protocol's waits for the client to read) until
    the client has room for more; once the client is gone it raises, as the
    real stream does when ``--timeout-send`` drops it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allowed = 0  # bytes the client reads before it stops again
        self.room = asyncio.Event()
        self.entered = asyncio.Event()
        self.progress = asyncio.Event()

    def read(self, count: int) -> None:
        self.allowed += count
        self.room.set()

    def read_all(self) -> None:
        self.read(1 << 62)

    def disconnect(self) -> None:
        super().disconnect()
        self.room.set()

    async def send_body(self, data: bytes, more: bool) -> None:
        self.entered.set()
        while len(self.body) >= self.allowed and not self.disconnected:
            self.room.clear()
            await self.room.wait()
        await super().send_body(data, more)
        self.progress.set()

    async def read_at_least(self, count: int) -> None:
        while len(self.body) < count:
            self.progress.clear()
            await asyncio.wait_for(self.progress.wait(), LONG)


def chunk(i: int) -> bytes:
    """Chunk ``i``: its index then filler, so the order of the body can be checked."""
    return i.to_bytes(4, "big") + bytes([i % 251]) * (CHUNK - 4)


def expected(total: int) -> bytes:
    return b"".join(chunk(i) for i in range(total // CHUNK))


class BigApp:
    """A generator response of ``total`` bytes in 64 KiB chunks; records how it ends."""

    def __init__(self, total: int = 4 * MIB) -> None:
        self.total = total
        self.closed = threading.Event()
        self.close_calls = 0
        self.produced = 0
        self.error: BaseException | None = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return _Body(self)


class _Body:
    def __init__(self, app: BigApp) -> None:
        self.app = app

    def __iter__(self) -> Iterator[bytes]:
        try:
            for i in range(self.app.total // CHUNK):
                yield chunk(i)
                self.app.produced += CHUNK
        except BaseException as exc:
            self.app.error = exc
            raise

    def close(self) -> None:
        self.app.close_calls += 1
        self.app.closed.set()


def list_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [chunk(i) for i in range(4 * MIB // CHUNK)]


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


@pytest.fixture
def spools(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every temporary file the adapter creates."""
    made: list[Any] = []
    real = wsgi_mod.tempfile.TemporaryFile

    def counting(*args: Any, **kwargs: Any) -> Any:
        f = real(*args, **kwargs)
        made.append(f)
        return f

    monkeypatch.setattr(wsgi_mod.tempfile, "TemporaryFile", counting)
    return made


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def until(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, LONG), "the event was never set"


def watch_slots(handler: WSGIHandler) -> asyncio.Event:
    """An event set each time the handler releases a slot (on the loop).

    Through the handler's ``exchange_type`` hook, which wraps each exchange's
    ``on_done`` (compiled, the handler's methods cannot be replaced)."""
    released = asyncio.Event()
    make = handler.exchange_type

    def exchange(loop: Any, stream: Any, spool_cap: int = 0, on_done: Any = None,
                 budget: Any = None) -> Any:
        def release() -> None:
            on_done()
            released.set()

        return make(loop, stream, spool_cap, release, budget)

    handler.exchange_type = exchange
    return released


def stop(handler: WSGIHandler) -> None:
    threads = list(handler.pool.threads)
    handler.shutdown()
    for thread in threads:
        thread.join(LONG)
        assert not thread.is_alive()


# -- the thread is freed while the client reads nothing --------------------------------------


def test_the_app_finishes_and_frees_its_slot_while_the_client_reads_nothing(spools):
    app = BigApp()
    handler = WSGIHandler(app, Config(threads=1))

    async def main() -> None:
        released = watch_slots(handler)
        stream = StalledStream()
        call = asyncio.create_task(handler(stream))
        await until(app.closed)  # the app produced everything and close() ran ...
        await asyncio.wait_for(released.wait(), LONG)
        assert handler.free == handler.size  # ... and its slot is back in the pool
        assert app.produced == app.total and app.error is None
        assert stream.body == b"" and not call.done()  # while the client has read nothing
        assert len(spools) == 1
        # The client reads: every byte, in order.
        stream.read_all()
        await asyncio.wait_for(call, LONG)
        assert bytes(stream.body) == expected(app.total)
        assert stream.response_complete and not stream.aborted
        assert spools[0].closed
        assert handler.free == handler.size and app.close_calls == 1

    try:
        asyncio.run(main())
    finally:
        stop(handler)


def test_a_second_request_on_the_freed_thread_is_served(spools):
    """With one thread, a request that comes while the slow reader's response is
    still unread is answered (here by a different app on the same handler pool)."""
    big = BigApp()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/big":
            return big(environ, start_response)
        return hello(environ, start_response)

    handler = WSGIHandler(app, Config(threads=1))

    async def main() -> None:
        slow = StalledStream(path=b"/big")
        call = asyncio.create_task(handler(slow))
        await until(big.closed)
        other = FakeStream(path=b"/")
        await asyncio.wait_for(handler(other), LONG)
        assert other.status == 200 and bytes(other.body) == b"hello"
        assert slow.body == b"" and not call.done()
        slow.read_all()
        await asyncio.wait_for(call, LONG)
        assert bytes(slow.body) == expected(big.total)

    try:
        asyncio.run(main())
    finally:
        stop(handler)


def test_a_large_list_response_is_spooled_too(spools):
    handler = WSGIHandler(list_app, Config(threads=1))

    async def main() -> None:
        released = watch_slots(handler)
        stream = StalledStream()
        call = asyncio.create_task(handler(stream))
        await asyncio.wait_for(released.wait(), LONG)
        assert handler.free == handler.size and stream.body == b"" and not call.done()
        assert len(spools) == 1
        stream.read_all()
        await asyncio.wait_for(call, LONG)
        assert bytes(stream.body) == expected(4 * MIB)
        assert stream.header(b"content-length") == b"%d" % (4 * MIB)
        assert spools[0].closed

    try:
        asyncio.run(main())
    finally:
        stop(handler)


# -- a client that leaves --------------------------------------------------------------------


def test_a_client_that_leaves_mid_spool_closes_the_file(spools):
    app = BigApp()
    handler = WSGIHandler(app, Config(threads=1))

    async def main() -> None:
        before = open_fds()
        stream = StalledStream()
        call = asyncio.create_task(handler(stream))
        await until(app.closed)
        assert open_fds() == before + 1  # the spool
        # A part goes out, then the client is dropped (as --timeout-send drops it).
        stream.read(HIGH_WATER + CHUNK)
        await stream.read_at_least(HIGH_WATER + CHUNK)
        stream.disconnect()
        await asyncio.wait_for(call, LONG)
        assert 0 < len(stream.body) < app.total
        assert bytes(stream.body) == expected(app.total)[:len(stream.body)]
        assert spools[0].closed and open_fds() == before
        # The app was done before the client left: it finished normally, closed once.
        assert app.error is None and app.close_calls == 1 and app.produced == app.total
        assert handler.free == handler.size

    try:
        asyncio.run(main())
    finally:
        stop(handler)


def test_a_client_that_leaves_while_the_app_still_spools_stops_the_app(spools):
    """The app is still producing when the client goes: its next yield raises the
    disconnect (as without a spool), close() runs, and the file is closed."""
    go_on = threading.Event()
    spooling = threading.Event()
    closed = threading.Event()
    seen: list[BaseException] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            try:
                for i in range(64):
                    if i == 32:
                        spooling.set()
                        go_on.wait(LONG)
                    yield chunk(i)
            except BaseException as exc:
                seen.append(exc)
                raise

        def close(self) -> None:
            closed.set()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        return Body()

    handler = WSGIHandler(app, Config(threads=1))

    async def main() -> None:
        released = watch_slots(handler)
        before = open_fds()
        stream = StalledStream()
        call = asyncio.create_task(handler(stream))
        await until(spooling)  # 2 MiB produced, most of it in the spool
        assert len(spools) == 1
        stream.disconnect()
        stream.read_all()
        go_on.set()
        await asyncio.wait_for(call, LONG)
        await until(closed)
        await asyncio.wait_for(released.wait(), LONG)
        assert handler.free == handler.size
        assert spools[0].closed and open_fds() == before
        assert seen and isinstance(seen[0], GeneratorExit | OSError)

    try:
        asyncio.run(main())
    finally:
        stop(handler)


# -- the cap, and the fast path ----------------------------------------------------------------


@pytest.mark.parametrize(("cap", "options"), [
    (0, {"wsgi_response_buffer": 0}),
    (MIB, {"wsgi_response_buffer": MIB}),
    (MIB, {"wsgi_spool_max": MIB}),  # the worker's cap, with the response's at 64 MiB
    (0, {"wsgi_spool_max": 0}),
], ids=["off", "1MiB", "worker-1MiB", "worker-off"])
def test_beyond_the_cap_the_thread_waits_for_the_client(spools, monkeypatch, cap, options):
    app = BigApp()
    handler = WSGIHandler(app, Config(threads=1, **options))
    blocked = threading.Event()

    class Exchange(wsgi_mod._Exchange):
        def _wait(self, ready: Callable[[], bool]) -> None:
            if self.spool_cap == 0:
                blocked.set()  # the thread waits for the client, spooling no more
            super()._wait(ready)

    handler.exchange_type = Exchange

    async def main() -> None:
        stream = StalledStream()
        call = asyncio.create_task(handler(stream))
        await until(blocked)
        assert not app.closed.is_set() and handler.free == 0
        # In memory: at most HIGH_WATER and a chunk; in the spool: at most the cap.
        assert app.produced <= HIGH_WATER + CHUNK + cap
        assert len(spools) == (1 if cap else 0)
        stream.read_all()
        await asyncio.wait_for(call, LONG)
        assert app.closed.is_set() and app.error is None
        assert bytes(stream.body) == expected(app.total)
        assert all(f.closed for f in spools)
        assert handler.spool_budget.left == handler.config.wsgi_spool_max  # given back

    try:
        asyncio.run(main())
    finally:
        stop(handler)


def test_the_worker_cap_is_shared_by_every_response(spools, monkeypatch):
    """Two slow readers, a worker cap of 1 MiB: the first response's spool takes it
    all, the second may not spool at all and its thread waits for its client; once
    the first spool is closed its bytes are the worker's again."""
    first, second = BigApp(), BigApp()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        return (first if environ["PATH_INFO"] == "/1" else second)(environ, start_response)

    handler = WSGIHandler(app, Config(threads=2, wsgi_spool_max=MIB))
    # Set when the response's thread waits for its client, spooling no more.
    waits = {b"/1": threading.Event(), b"/2": threading.Event()}

    class Exchange(wsgi_mod._Exchange):
        def _wait(self, ready: Callable[[], bool]) -> None:
            if self.spool_cap == 0:
                waits[self.stream.raw_path].set()
            super()._wait(ready)

    handler.exchange_type = Exchange

    async def main() -> None:
        one = StalledStream(path=b"/1")
        call_one = asyncio.create_task(handler(one))
        await until(waits[b"/1"])  # its spool hit the worker's cap
        assert len(spools) == 1 and handler.spool_budget.left < CHUNK
        two = StalledStream(path=b"/2")
        call_two = asyncio.create_task(handler(two))
        await until(waits[b"/2"])
        assert len(spools) == 1  # the second response made none
        assert not first.closed.is_set() and not second.closed.is_set()
        one.read_all()
        two.read_all()
        await asyncio.wait_for(asyncio.gather(call_one, call_two), LONG)
        assert bytes(one.body) == expected(first.total)
        assert bytes(two.body) == expected(second.total)
        assert spools[0].closed and handler.spool_budget.left == MIB

    try:
        asyncio.run(main())
    finally:
        stop(handler)


@pytest.mark.parametrize("size", [5, 200 * 1024, HIGH_WATER])
def test_a_small_response_never_makes_a_file(spools, size):
    """Even for a client that reads nothing: up to HIGH_WATER stays in memory."""

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        for i in range(0, size, 1000):
            yield b"x" * min(1000, size - i)

    handler = WSGIHandler(app, Config(threads=1))

    async def main() -> None:
        released = watch_slots(handler)
        stream = StalledStream()
        call = asyncio.create_task(handler(stream))
        await asyncio.wait_for(stream.entered.wait(), LONG)
        stream.read_all()
        await asyncio.wait_for(call, LONG)
        assert released.is_set()
        assert bytes(stream.body) == b"x" * size

    try:
        asyncio.run(main())
    finally:
        stop(handler)
    assert spools == []


def test_a_client_that_reads_gets_no_file(spools):
    handler = WSGIHandler(hello, Config(threads=1))
    stream = FakeStream()
    try:
        asyncio.run(asyncio.wait_for(handler(stream), LONG))
    finally:
        stop(handler)
    assert bytes(stream.body) == b"hello" and spools == []


def test_the_flag_reaches_the_handler():
    assert WSGIHandler(hello, Config(threads=1)).response_buffer == 64 * MIB
    assert Config.from_options({"wsgi_response_buffer": 0}, env={}).wsgi_response_buffer == 0
    env = {"BIVIO_WSGI_RESPONSE_BUFFER": "1024"}
    assert Config.from_options({}, env=env).wsgi_response_buffer == 1024
    assert WSGIHandler(hello, Config(threads=1)).spool_budget.left == 1024 * MIB
    env = {"BIVIO_WSGI_SPOOL_MAX": "4096"}
    assert Config.from_options({}, env=env).wsgi_spool_max == 4096


# -- the rule: a client that pushes back, not a clock ---------------------------------------------


def test_a_busy_loop_makes_no_spool_for_a_client_that_reads(spools, monkeypatch):
    """The loop is stuck (another request's work, a GC pause) while the app produces
    4 MiB for a client that takes everything it is given. The thread fills the queue
    and waits; it must not spool, however long the loop stays away: nothing says
    the client is slow. (A 50 ms grace spooled here.)"""
    app = BigApp()
    handler = WSGIHandler(app, Config(threads=1))
    decided = threading.Event()  # the thread waits without a deadline, or spooled
    real_file = wsgi_mod.tempfile.TemporaryFile

    class Exchange(wsgi_mod._Exchange):
        def _wait(self, ready: Callable[[], bool], *timeout: Any) -> Any:
            if not timeout:
                decided.set()
            return super()._wait(ready, *timeout)

    def spool_file(*args: Any, **kwargs: Any) -> Any:
        decided.set()
        return real_file(*args, **kwargs)

    handler.exchange_type = Exchange
    monkeypatch.setattr(wsgi_mod.tempfile, "TemporaryFile", spool_file)

    async def main() -> None:
        stream = FakeStream()  # takes every send at once: a client that reads
        call = asyncio.create_task(handler(stream))
        await asyncio.sleep(0)  # the handler submits the call; the pump waits for it
        assert decided.wait(LONG)  # blocks the loop itself: a loop that is busy
        await asyncio.wait_for(call, LONG)
        assert bytes(stream.body) == expected(app.total)
        assert app.close_calls == 1

    try:
        asyncio.run(main())
    finally:
        stop(handler)
    assert spools == []


# -- wsgi.file_wrapper: the file is sent from the loop -------------------------------------------


class StalledFileStream(StalledStream):
    """A client that reads none of a file response until the test lets it."""

    async def send_file(self, fd: int, offset: int, count: int) -> None:
        self.entered.set()
        while not self.allowed and not self.disconnected:
            self.room.clear()
            await self.room.wait()
        await super().send_file(fd, offset, count)


class FileApp:
    """``wsgi.file_wrapper`` over a real file; counts the wrapper's ``close()`` calls."""

    def __init__(self, path: Any) -> None:
        self.path = path
        self.closed = threading.Event()
        self.close_calls = 0
        self.thread: threading.Thread | None = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        f = open(self.path, "rb")  # noqa: SIM115 (closed through the wrapper)
        wrapper = environ["wsgi.file_wrapper"](f)
        self.thread = threading.current_thread()

        def close() -> None:
            self.close_calls += 1
            assert threading.current_thread() is self.thread  # in the app's thread
            f.close()
            self.closed.set()

        wrapper.close = close
        return wrapper


@pytest.fixture
def big_file(tmp_path: Any) -> Any:
    path = tmp_path / "big.bin"
    path.write_bytes(expected(4 * MIB))
    return path


def test_a_file_response_frees_its_thread_while_the_client_reads_nothing(big_file, spools):
    app = FileApp(big_file)

    def routed(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/file":
            return app(environ, start_response)
        return hello(environ, start_response)

    handler = WSGIHandler(routed, Config(threads=1))

    async def main() -> None:
        released = watch_slots(handler)
        before = open_fds()
        slow = StalledFileStream(path=b"/file")
        call = asyncio.create_task(handler(slow))
        await until(app.closed)  # close() ran in the app's thread, once ...
        await asyncio.wait_for(released.wait(), LONG)
        assert handler.free == handler.size  # ... and the thread is back in the pool
        assert slow.body == b"" and not call.done()  # while the client read nothing
        assert open_fds() == before + 1  # the loop's duplicate of the descriptor
        other = FakeStream(path=b"/")  # the one thread serves another request
        await asyncio.wait_for(handler(other), LONG)
        assert bytes(other.body) == b"hello"
        slow.read_all()
        await asyncio.wait_for(call, LONG)
        assert bytes(slow.body) == big_file.read_bytes()
        assert slow.header(b"content-length") == b"%d" % (4 * MIB)
        assert slow.response_complete and not slow.aborted
        assert open_fds() == before and app.close_calls == 1

    try:
        asyncio.run(main())
    finally:
        stop(handler)
    assert spools == []  # a file is sent from itself: no spool


def test_a_client_that_leaves_during_a_file_response_closes_the_descriptor(big_file):
    app = FileApp(big_file)
    handler = WSGIHandler(app, Config(threads=1))

    async def main() -> None:
        before = open_fds()
        slow = StalledFileStream()
        call = asyncio.create_task(handler(slow))
        await until(app.closed)
        await asyncio.wait_for(slow.entered.wait(), LONG)
        slow.disconnect()
        await asyncio.wait_for(call, LONG)
        assert open_fds() == before and app.close_calls == 1
        assert handler.free == handler.size

    try:
        asyncio.run(main())
    finally:
        stop(handler)


def test_a_file_response_for_a_client_already_gone_is_not_sent(big_file):
    """The client leaves before the thread hands the file over: nothing is handed,
    the duplicate descriptor is closed at once, close() still runs once."""
    app = FileApp(big_file)
    handler = WSGIHandler(app, Config(threads=1))
    stream = FakeStream()


    class Exchange(wsgi_mod._Exchange):
        def post_file(self, *args: Any) -> None:
            self.stream.disconnected = True  # the client left just now
            super().post_file(*args)

    handler.exchange_type = Exchange

    async def main() -> None:
        before = open_fds()
        await asyncio.wait_for(handler(stream), LONG)
        assert open_fds() == before and app.close_calls == 1 and stream.body == b""

    try:
        asyncio.run(main())
    finally:
        stop(handler)
