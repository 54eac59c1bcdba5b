"""adapters.lifespan in-process: no lifespan support versus a failed startup."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bivio.adapters.lifespan import Lifespan, LifespanFailure


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch):
    """Every server-log record (setup_logging, run by other tests, stops propagation)."""
    monkeypatch.setattr(logging.getLogger("bivio.error"), "propagate", True)
    caplog.set_level(logging.DEBUG, logger="bivio.error")
    return caplog


async def raises_at_once(scope, receive, send):
    """Django's ASGIHandler: any scope but HTTP raises before receiving anything."""
    raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")


async def raises_after_startup(scope, receive, send):
    message = await receive()
    assert message["type"] == "lifespan.startup"
    raise RuntimeError("cannot reach the cache: code abc-987")


async def completes(scope, receive, send):
    while True:
        message = await receive()
        await send({"type": message["type"] + ".complete"})
        if message["type"] == "lifespan.shutdown":
            return


@pytest.mark.parametrize("mode", ["auto", "on"])
def test_raising_after_receiving_startup_is_a_failed_startup(mode, log):
    lifespan = Lifespan(raises_after_startup, mode)
    with pytest.raises(LifespanFailure, match="RuntimeError: cannot reach the cache: code abc-987"):
        asyncio.run(lifespan.startup())
    errors = [r for r in log.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None  # the traceback is logged
    assert "during startup" in errors[0].getMessage()


def test_raising_before_receiving_is_no_lifespan_support(log):
    lifespan = Lifespan(raises_at_once, "auto")

    async def main():
        await lifespan.startup()  # no LifespanFailure: serving goes on
        await lifespan.shutdown()  # and there is nothing to shut down

    asyncio.run(main())
    infos = [r.getMessage() for r in log.records if r.levelno == logging.INFO]
    assert infos == ["The application does not handle the ASGI lifespan scope (normal for "
                     "Django): serving without startup and shutdown events"]
    # Nothing that reads like an error: no warning or error, no traceback, no "unsupported".
    assert all(r.levelno < logging.WARNING and r.exc_info is None for r in log.records)
    assert not any("unsupported" in r.getMessage().lower() for r in log.records)
    # The exception itself is there for whoever looks at debug level.
    debug = [r.getMessage() for r in log.records if r.levelno == logging.DEBUG]
    assert any("ValueError: Django can only handle ASGI/HTTP" in m for m in debug), debug


def test_raising_before_receiving_with_lifespan_on_fails():
    with pytest.raises(LifespanFailure, match="ValueError"):
        asyncio.run(Lifespan(raises_at_once, "on").startup())


def test_a_complete_lifespan_runs_startup_and_shutdown(log):
    seen: list[str] = []

    async def app(scope, receive, send):
        seen.append(scope["type"])
        await completes(scope, receive, send)

    lifespan = Lifespan(app, "auto")

    async def main():
        await lifespan.startup()
        await lifespan.shutdown()

    asyncio.run(main())
    assert seen == ["lifespan"]
    assert not log.records
