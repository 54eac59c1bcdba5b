"""Write-side flow control shared by every connection protocol.

asyncio calls ``pause_writing``/``resume_writing`` when the transport's write
buffer crosses its high/low water marks. Senders (an ASGI app's ``send``, the
WSGI response pump, a WebSocket ``send``) wait in :meth:`WriteFlow.wait_writable`
while the buffer is full, so a client that does not read holds the app back
instead of growing bivio's memory. When the connection is lost every waiter is
released at once; the caller then checks its own "closed" state.

``--timeout-send``: a client that reads nothing while the buffer stays above
its high-water mark (no ``resume_writing`` for that many seconds) is dropped:
the transport is aborted, every waiting sender is released and gets
:class:`~bivio.core.stream.ClientDisconnected` (which frees a WSGI thread
blocked on backpressure), and one info line names the client. The timer runs
only while writing is paused, so a response that is being read, however
slowly, never times out.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..core.logs import logger
from ..core.stream import ClientDisconnected
from ..core.streambase import StreamBase

# After an error answer: read and drop what the client still sends, at most this
# long and this much, then close (the client's EOF closes at once).
LINGER_SECONDS = 1.0
LINGER_BYTES = 1024 * 1024


class WriteFlow:
    """Mixin for an :class:`asyncio.Protocol`; call :meth:`_init_write_flow` in ``__init__``."""

    # Attributes (declared in flow.pxd when compiled): loop, transport, write_paused,
    # send_timed_out, _drain_waiters, _send_timeout, _send_timer, and counts (where a
    # dropped slow reader is counted: the worker's context; metrics), set by
    # _init_write_flow. No class-level annotations or defaults: compiled, this is an
    # extension type and they would shadow its slots.

    def _init_write_flow(self, send_timeout: float = 0.0) -> None:
        """``send_timeout``: drop the client after this long paused (--timeout-send; 0: never)."""
        self.write_paused = False
        self.send_timed_out = False
        self._drain_waiters = []
        self._send_timeout = send_timeout
        self._send_timer = None
        if not hasattr(self, "counts"):
            self.counts = None

    def pause_writing(self) -> None:
        self.write_paused = True
        if self._send_timeout > 0 and self._send_timer is None:
            self._send_timer = self.loop.call_later(self._send_timeout, self._on_send_timeout)

    def resume_writing(self) -> None:
        self.write_paused = False
        self._release_writers()

    def _release_writers(self) -> None:
        """Wake every sender (the buffer drained, or the connection is gone)."""
        timer = self._send_timer
        if timer is not None:
            self._send_timer = None
            timer.cancel()
        waiters, self._drain_waiters = self._drain_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _hand_over_write_flow(self, other: WriteFlow) -> None:
        """``other`` takes the transport over (``set_protocol``): it inherits a pause.

        Our own send timer stops: the new protocol gets the pause and, with it,
        its own ``--timeout-send`` clock, so a later ``resume_writing`` (which
        only the new protocol hears) cancels the right timer.
        """
        timer = self._send_timer
        if timer is not None:
            self._send_timer = None
            timer.cancel()
        if self.write_paused:
            other.pause_writing()

    def _on_send_timeout(self) -> None:
        self._send_timer = None
        if self.write_paused:
            self._drop_slow_reader()

    def _drop_slow_reader(self) -> None:
        """The client read nothing for ``--timeout-send`` seconds: abort the connection."""
        self.send_timed_out = True
        if self.counts is not None:
            self.counts.limit_hit("timeout-send")
        transport = self.transport
        logger.info("%s timed out reading the response (--timeout-send %g): connection dropped",
                    peer_name(transport), self._send_timeout)
        transport.abort()  # connection_lost then releases every waiting sender

    async def wait_writable(self) -> None:
        """Return once the write buffer is below its low-water mark (or the peer left).

        Raises :class:`ClientDisconnected` when the wait ended because
        ``--timeout-send`` dropped the client.
        """
        if self.write_paused:
            fut = self.loop.create_future()
            self._drain_waiters.append(fut)
            await fut
            if self.send_timed_out:
                raise ClientDisconnected("the client read nothing for --timeout-send seconds")


class StreamWaiters(StreamBase):
    """What a stream's reader and writers wait on (HTTP/1.1 and HTTP/2 streams).

    ``await self._wait()`` returns at the next ``self._wake()``: body data
    arrived, the body ended, a window opened, the response completed, the
    client left. Waiters re-check their condition after waking, so one wake
    for every event is enough. The subclass provides ``conn.loop`` and a
    ``_waiters`` list slot.
    """

    __slots__ = ("_waiters",)

    def _wake(self) -> None:
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    async def _wait(self) -> None:
        fut = self.conn.loop.create_future()
        self._waiters.append(fut)
        try:
            await fut
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)


def peer_name(transport: Any) -> str:
    """``host:port`` of the transport's peer, for a log line ("-" when unknown)."""
    try:
        peer = transport.get_extra_info("peername")
    except Exception:  # pragma: no cover - a transport that is already torn down
        peer = None
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = str(peer[0])
        return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
    return "-"


class Linger(WriteFlow, asyncio.Protocol):
    """The transport after an error answer (HTTP/1.1 4xx, HTTP/2 GOAWAY): drop input, then close.

    Bounded so no client can hold the connection: it closes on the client's
    EOF, once :data:`LINGER_BYTES` were dropped, or after
    :data:`LINGER_SECONDS`; a client that does not read the answer is dropped
    by ``--timeout-send`` as on any connection.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop,
                 send_timeout: float) -> None:
        self.transport = transport
        self.loop = loop
        self._init_write_flow(send_timeout)
        self._left = LINGER_BYTES
        self._timer = loop.call_later(LINGER_SECONDS, self._close)

    def data_received(self, data: bytes) -> None:
        self._left -= len(data)
        if self._left <= 0:
            self._close()

    def eof_received(self) -> bool | None:
        return None  # the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.cancel()
        self.write_paused = False
        self._release_writers()

    def _close(self) -> None:
        self._timer.cancel()
        self.transport.close()
