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


class _SelfEnding:
    """A handler that ends its own Task's bookkeeping (as the bound ASGI adapter does)."""

    ends_its_task = True

    def __init__(self) -> None:
        self.ctx: ServerContext | None = None
        self.ran = 0
        self.release: asyncio.Event | None = None
        self.left_in_finally: list[bool] = []

    async def __call__(self, stream):
        try:
            self.ran += 1
            if self.release is not None:
                await self.release.wait()
        finally:
            assert self.ctx is not None
            self.ctx.task_ended()
            self.left_in_finally.append(asyncio.current_task() not in self.ctx.tasks)


def test_a_handler_that_ends_its_task_gets_no_done_callback() -> None:
    """``ends_its_task``: the Task leaves ``ctx.tasks`` in the handler's ``finally``
    (:meth:`ServerContext.task_ended`), and no done callback is added to it; a handler
    without it gets the callback."""
    callbacks = []
    handler = _SelfEnding()

    async def plain(stream):
        await asyncio.sleep(0)

    async def main(loop_known: bool):
        callbacks.clear()
        ctx = _ctx(handler)
        handler.ctx = ctx
        if loop_known:
            ctx.loop = asyncio.get_running_loop()  # as the server sets it
        ctx._task_done_cb = callbacks.append  # the done callback, spied on
        handler.release = asyncio.Event()
        task = ctx.start_handler("x")
        await asyncio.sleep(0)
        assert task in ctx.tasks and ctx.in_flight == 1
        handler.release.set()
        await task
        assert not ctx.tasks and callbacks == []
        ctx.handler = plain
        task = ctx.start_handler("y")
        await task
        await asyncio.sleep(0)
        assert callbacks == [task]

    asyncio.run(main(True))
    asyncio.run(main(False))  # no loop in the context: current_task() finds the Task
    assert handler.left_in_finally == [True, True] and handler.ran == 2


def test_a_task_cancelled_before_its_handler_ran_is_forgotten() -> None:
    """A Task cancelled before its first step never runs its handler, so its handler
    cannot end it: :meth:`ServerContext.forget_when_done` (what the server's forced
    shutdown calls with each cancel) takes it out of ``ctx.tasks``."""
    handler = _SelfEnding()

    async def main():
        ctx = _ctx(handler)
        handler.ctx = ctx
        ctx.loop = asyncio.get_running_loop()
        handler.release = asyncio.Event()  # on 3.12+ the first step is eager: it waits here
        task = ctx.start_handler("x")
        assert task is not None and task in ctx.tasks
        task.cancel()
        ctx.forget_when_done(task)
        await asyncio.wait([task])
        await asyncio.sleep(0)
        assert task.cancelled() and not ctx.tasks

    asyncio.run(main())


def test_request_tasks_are_named() -> None:
    names = []

    async def handler(stream):
        names.append(asyncio.current_task().get_name())

    async def main():
        ctx = _ctx(handler)
        ctx.start_handler("a")
        await _settle(ctx)

    asyncio.run(main())
    assert names == ["bivio-request"]


def test_request_tasks_are_named_under_the_apps_task_factory() -> None:
    """An app's task factory (instrumentation) makes the Task; the name is still ours."""
    names, made = [], []

    async def handler(stream):
        names.append(asyncio.current_task().get_name())

    def factory(loop, coro, **kwargs):
        made.append(coro.__qualname__.rpartition(".")[2])
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def main():
        asyncio.get_running_loop().set_task_factory(factory)
        ctx = _ctx(handler)
        ctx.start_handler("a")
        await _settle(ctx)

    asyncio.run(main())
    assert made[0] == "handler"  # (asyncio.run's own clean-up Tasks follow)
    assert names == ["bivio-request"]


def test_error_escaping_a_handler_that_ends_its_task_still_goes_to_the_loop() -> None:
    """No done callback reports it: asyncio does, as for any Task whose error nobody
    retrieved, once the Task is gone (at once: nothing else holds it)."""
    reported = []

    class Failing(_SelfEnding):
        async def __call__(self, stream):
            try:
                raise RuntimeError("handler bug")
            finally:
                self.ctx.task_ended()

    handler = Failing()

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, context: reported.append(context["exception"]))
        ctx = _ctx(handler)
        handler.ctx = ctx
        ctx.loop = loop
        ctx.start_handler("x")
        for _ in range(3):
            await asyncio.sleep(0)
        assert not ctx.tasks

    asyncio.run(main())
    assert [str(e) for e in reported] == ["handler bug"]
