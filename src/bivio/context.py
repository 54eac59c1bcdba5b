"""State one worker shares between its connections.

Connection protocols read their settings and the pre-encoded default headers
from here, register themselves for graceful shutdown, and start request
handlers through :meth:`ServerContext.start_handler` so in-flight requests can
be counted (``--limit-concurrency``) and awaited on shutdown.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .config import Config

if TYPE_CHECKING:
    from .stream import Stream

Handler = Callable[["Stream"], Awaitable[None]]


class ServerContext:
    """Per-worker shared state; one instance per :class:`bivio.server.Server`."""

    def __init__(self, config: Config, handler: Handler) -> None:
        self.config = config
        self.handler = handler
        self.connections: set[Any] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.shutting_down = False
        self.server_header = b"server: bivio\r\n" if config.server_header else b""
        self.extra_headers = b"".join(n + b": " + v + b"\r\n" for n, v in config.extra_headers)
        self.date_header = b""
        self.default_headers = b""
        self._date_timer: asyncio.TimerHandle | None = None
        self.refresh_date()

    def refresh_date(self) -> None:
        """Re-encode the Date header; called once a second by the loop, not per request."""
        if self.config.date_header:
            self.date_header = b"date: " + email.utils.formatdate(usegmt=True).encode() + b"\r\n"
        self.default_headers = self.server_header + self.date_header + self.extra_headers

    def start_date_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        self.refresh_date()
        delay = 1.0 - (time.time() % 1.0)
        self._date_timer = loop.call_later(delay, self.start_date_timer, loop)

    def stop_date_timer(self) -> None:
        if self._date_timer is not None:
            self._date_timer.cancel()
            self._date_timer = None

    @property
    def in_flight(self) -> int:
        return len(self.tasks)

    def over_capacity(self) -> bool:
        limit = self.config.limit_concurrency
        return limit is not None and len(self.tasks) >= limit

    def start_handler(self, stream: Stream) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self.handler(stream))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task
