"""Write-side flow control shared by every connection protocol.

asyncio calls ``pause_writing``/``resume_writing`` when the transport's write
buffer crosses its high/low water marks. Senders (an ASGI app's ``send``, the
WSGI response pump, a WebSocket ``send``) wait in :meth:`WriteFlow.wait_writable`
while the buffer is full, so a client that does not read holds the app back
instead of growing bivio's memory. When the connection is lost every waiter is
released at once; the caller then checks its own "closed" state.
"""

from __future__ import annotations

import asyncio


class WriteFlow:
    """Mixin for an :class:`asyncio.Protocol`; call :meth:`_init_write_flow` in ``__init__``."""

    loop: asyncio.AbstractEventLoop
    write_paused: bool
    _drain_waiters: list[asyncio.Future[None]]

    def _init_write_flow(self) -> None:
        self.write_paused = False
        self._drain_waiters = []

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._release_writers()

    def _release_writers(self) -> None:
        """Wake every sender (the buffer drained, or the connection is gone)."""
        waiters, self._drain_waiters = self._drain_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait_writable(self) -> None:
        """Return once the write buffer is below its low-water mark (or the peer left)."""
        if self.write_paused:
            fut = self.loop.create_future()
            self._drain_waiters.append(fut)
            await fut
