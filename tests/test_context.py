"""ServerContext.start_handler: handlers run as real Tasks, counted while in flight.

What must hold on every Python: a handler sees ``asyncio.current_task()``
(anyio, hence Starlette and FastAPI, depend on it); a handler that suspends is
counted in ``ctx.tasks`` until it ends; context variables a handler sets never
leak to the next one; an error escaping the handler reaches the loop's
exception handler instead of vanishing.
"""

from __future__ import annotations

import asyncio
import contextvars

from bivio.core.config import Config
from bivio.core.context import ServerContext

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


def _ctx(handler) -> ServerContext:
    return ServerContext(Config.from_options({}), handler)


async def _settle(ctx: ServerContext) -> None:
    """Wait until every handler task ``ctx`` started has finished (and been counted out)."""
    while ctx.tasks:
        await asyncio.wait(set(ctx.tasks))
        await asyncio.sleep(0)  # the tasks' done callbacks run next


def test_handler_runs_inside_a_task() -> None:
    seen = []

    async def handler(stream):
        seen.append(asyncio.current_task() is not None)

    async def main():
        ctx = _ctx(handler)
        ctx.start_handler("a")
        await _settle(ctx)

    asyncio.run(main())
    assert seen == [True]


def test_context_variables_do_not_leak() -> None:
    seen = []

    async def handler(stream):
        seen.append(VAR.get())
        VAR.set(stream)

    async def main():
        ctx = _ctx(handler)
        ctx.start_handler("a")
        ctx.start_handler("b")
        await _settle(ctx)
        assert VAR.get() == "unset"
        assert not ctx.tasks

    asyncio.run(main())
    assert seen == ["unset", "unset"]


def test_suspended_handler_is_counted_until_done() -> None:
    release = entered = None

    async def handler(stream):
        entered.set()
        await release.wait()

    async def main():
        nonlocal release, entered
        release, entered = asyncio.Event(), asyncio.Event()
        ctx = _ctx(handler)
        task = ctx.start_handler("x")
        await entered.wait()  # the handler runs and is now suspended
        assert task is not None and task in ctx.tasks and ctx.in_flight == 1
        release.set()
        await task
        assert not ctx.tasks and ctx.in_flight == 0
        assert ctx.requests == 1

    asyncio.run(main())


def test_error_escaping_the_handler_goes_to_the_loop() -> None:
    reported = []

    async def handler(stream):
        raise RuntimeError("handler bug")

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, context: reported.append(context["exception"]))
        ctx = _ctx(handler)
        ctx.start_handler("x")
        await _settle(ctx)

    asyncio.run(main())
    assert [str(e) for e in reported] == ["handler bug"]
