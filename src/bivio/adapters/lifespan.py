"""The ASGI lifespan protocol: startup before serving, shutdown after draining.

``--lifespan auto`` treats an app that raises on the lifespan scope before it
received anything as one that does not use the protocol (Django's ASGI handler
raises ``ValueError`` on any scope but HTTP): one info line that says so, the
exception at debug, and serving goes on. An app that received
``lifespan.startup`` and then raised has a failed startup, whatever the mode:
the exception is logged with its traceback and the server does not start.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..core.logs import logger


class LifespanFailure(Exception):
    """Startup failed; the message is the app's own (or why it failed)."""


class Lifespan:
    def __init__(self, app: Any, mode: str) -> None:
        self.app = app
        self.mode = mode
        self.state: dict[str, Any] = {}
        self._receive_queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._startup_done = asyncio.Event()
        self._shutdown_done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._supported = True
        self._failure: str | None = None
        self._received = False  # the app has taken a message: it speaks lifespan

    async def startup(self) -> None:
        if self.mode == "off":
            return
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"},
                 "state": self.state}
        self._task = asyncio.get_running_loop().create_task(self._run(scope))
        await self._receive_queue.put({"type": "lifespan.startup"})
        await self._startup_done.wait()
        if self._failure is not None:
            raise LifespanFailure(self._failure)

    async def shutdown(self) -> None:
        if self.mode == "off" or not self._supported or self._task is None:
            return
        if self._task.done():
            return
        await self._receive_queue.put({"type": "lifespan.shutdown"})
        await self._shutdown_done.wait()
        if self._failure is not None:
            logger.error("Lifespan shutdown failed: %s", self._failure)

    async def _run(self, scope: dict[str, Any]) -> None:
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            if not self._startup_done.is_set() and self.mode == "auto" and not self._received:
                self._supported = False
                logger.info("The application does not handle the ASGI lifespan scope (normal "
                            "for Django): serving without startup and shutdown events")
                logger.debug("The lifespan scope raised before receiving a message: %s: %s",
                             type(exc).__name__, exc)
            elif isinstance(exc, asyncio.CancelledError):
                raise
            else:
                self._failure = f"{type(exc).__name__}: {exc}"
                when = "after" if self._startup_done.is_set() else "during"
                logger.error("Exception in the application's lifespan scope %s startup", when,
                             exc_info=exc)
        else:
            if not self._startup_done.is_set() and self.mode == "auto":
                self._supported = False
            elif not self._startup_done.is_set():
                self._failure = "the app returned from the lifespan scope before startup completed"
        finally:
            self._startup_done.set()
            self._shutdown_done.set()

    async def _receive(self) -> dict[str, Any]:
        message = await self._receive_queue.get()
        self._received = True
        return message

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self._startup_done.set()
        elif kind == "lifespan.startup.failed":
            self._failure = message.get("message") or "lifespan startup failed"
            self._startup_done.set()
        elif kind == "lifespan.shutdown.complete":
            self._shutdown_done.set()
        elif kind == "lifespan.shutdown.failed":
            self._failure = message.get("message") or "lifespan shutdown failed"
            self._shutdown_done.set()
        else:
            raise RuntimeError(f"unexpected ASGI message type {kind!r} in lifespan")
