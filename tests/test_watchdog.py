"""--loop-warn's watchdog without a process: when it logs, what it names, what it counts.

``LoopWatchdog.check(now)`` is the watchdog thread's whole decision; these tests
call it with made-up clock values (the loop's last stamp and "now"), so no test
waits for real time to pass. tests/e2e/test_loop_warn.py runs the real thing.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
from fakes import FakeStream

from bivio.core.config import Config
from bivio.core.context import ServerContext
from bivio.process.watchdog import LoopWatchdog, check_interval


def _watchdog(threshold: float = 0.2) -> LoopWatchdog:
    async def handler(stream):  # never called
        raise AssertionError

    ctx = ServerContext(Config.from_options({}, env={}), handler)
    watchdog = LoopWatchdog(ctx, threshold)
    watchdog._loop_thread = threading.get_ident()  # "the loop thread" is this one
    return watchdog


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "bivio.error" and r.levelno == logging.WARNING]


def test_a_stall_is_logged_once_then_its_end(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "bivio.error")
    watchdog = _watchdog(0.2)
    assert watchdog.interval == check_interval(0.2) == 0.05
    watchdog._stamp = 100.0
    watchdog.check(100.2)  # the timer due at 100.05 is only 0.15 s late
    assert _warnings(caplog) == []
    watchdog.check(100.3)  # 0.25 s late
    watchdog.check(100.6)
    watchdog.check(101.0)  # the same stall: no new line
    (blocked,) = _warnings(caplog)
    assert blocked.startswith("Event loop blocked for 0.25s (--loop-warn 0.2), outside any "
                              "request; the loop thread is at (most recent call last):\n")
    assert "in test_a_stall_is_logged_once_then_its_end" in blocked  # this thread's stack
    assert watchdog.ctx.loop_stalls == 1
    watchdog._stamp = 101.25  # the loop came back: its timer ran 1.2 s late
    watchdog.check(101.3)
    watchdog.check(101.35)
    assert _warnings(caplog)[1:] == ["Event loop came back after 1.20s blocked (serving -)"]
    watchdog.check(101.6)  # blocked again: a new stall
    assert len(_warnings(caplog)) == 3 and watchdog.ctx.loop_stalls == 2


def test_the_request_of_the_running_task(caplog: pytest.LogCaptureFixture) -> None:
    """The loop runs a handler Task when the watchdog looks: it names the Task's stream
    (through ``ctx.tasks``, or the handler's argument for a Task started eagerly)."""
    caplog.set_level(logging.WARNING, "bivio.error")
    watchdog = _watchdog()

    async def handler(stream):
        watchdog._stamp = 0.0  # as if the loop had been stuck since
        watchdog.check(10.0)

    async def main():
        watchdog._loop = asyncio.get_running_loop()
        watchdog.ctx.handler = handler
        task = watchdog.ctx.start_handler(FakeStream("POST", b"/items/7", b"q=1"))
        if task is not None:
            await task

    asyncio.run(main())
    (blocked,) = _warnings(caplog)
    assert ", serving POST /items/7; " in blocked
    # The stack starts at the Task's coroutine: none of the event loop's frames.
    assert blocked.split("\n")[1].endswith(", in handler")


def test_the_request_of_a_task_in_its_eager_first_step(caplog: pytest.LogCaptureFixture) -> None:
    """A Task started eagerly (Python >= 3.12) is in ``ctx.tasks`` only after its first
    step, and a compiled handler has no frame to find the stream in: the context says
    which stream is starting (``eager_stream``)."""
    caplog.set_level(logging.WARNING, "bivio.error")
    watchdog = _watchdog()

    async def main():
        watchdog._loop = asyncio.get_running_loop()
        watchdog.ctx.eager_stream = FakeStream("PUT", b"/eager")
        watchdog._stamp = 0.0
        watchdog.check(10.0)

    asyncio.run(main())
    assert ", serving PUT /eager; " in _warnings(caplog)[0]


def test_the_request_from_the_stack_without_a_task(caplog: pytest.LogCaptureFixture) -> None:
    """No current Task known (another loop, another Python): the outermost frame of the
    loop thread holding a ``stream`` names it."""
    caplog.set_level(logging.WARNING, "bivio.error")
    watchdog = _watchdog()

    def serve_one(stream):
        watchdog._stamp = 0.0
        watchdog.check(10.0)

    serve_one(FakeStream("DELETE", b"/x"))
    assert ", serving DELETE /x; " in _warnings(caplog)[0]


def test_off_costs_nothing() -> None:
    """--loop-warn 0: the server makes no watchdog (no timer, no thread)."""
    from bivio.process.server import Server

    async def app(scope, receive, send):
        pass

    assert Server(app, Config.from_options({"loop_warn": 0}, env={})).watchdog is None
    assert Server(app, Config.from_options({}, env={})).watchdog is not None


def test_start_and_stop() -> None:
    """Started on a loop, the timer stamps and the thread runs; stop ends both."""
    watchdog = _watchdog(0.2)

    async def main():
        watchdog.start(asyncio.get_running_loop())
        first = watchdog._stamp
        thread = watchdog._thread
        assert thread is not None and thread.is_alive() and thread.daemon
        while watchdog._stamp == first:  # the loop's timer stamps again
            await asyncio.sleep(0.01)
        watchdog.stop()
        assert not thread.is_alive() and watchdog._timer is None

    asyncio.run(asyncio.wait_for(main(), 30))
