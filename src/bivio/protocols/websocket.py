"""WebSocket connections (RFC 6455) on websockets' sans-I/O ``ServerProtocol``.

This is a connection protocol, like :mod:`bivio.protocols.http1`: it knows
frames, close codes, keepalive pings, permessage-deflate, limits and timeouts,
and nothing about ASGI or HTTP framing. The protocol that carries the request
(HTTP/1.1's Upgrade today, HTTP/2's extended CONNECT later) parses it; an
adapter that wants to speak WebSocket asks its stream for a
:class:`WebSocket` (``stream.open_websocket()``, a
:class:`bivio.core.stream.WebSocketSession`), decides whether to accept, and
then exchanges whole messages through :meth:`WebSocket.receive`,
:meth:`WebSocket.send` and :meth:`WebSocket.close`.

A session runs over any :class:`bivio.core.stream.ByteChannel` (the
connection's transport on HTTP/1.1; one stream's DATA frames on HTTP/2) and
never writes HTTP: :meth:`WebSocket.accept` hands the handshake's response
headers to the stream's owner (``on_accept``), which answers in its own
framing (a 101 on HTTP/1.1, a 200 HEADERS frame on HTTP/2) and from then on
feeds the session the channel's bytes as an :class:`asyncio.Protocol`.

Why websockets' ``ServerProtocol`` rather than wsproto: both are sans-I/O and
correct, but websockets unmasks frames in C (``websockets.speedups``) and its
permessage-deflate is the one the most-used Python client ships, so the two
ends of the common case are tested against each other daily. Framing,
control frames, close-code validation, a frame-size limit and deflate are
the library's; what is ours is what a server adds around it:

- message assembly, with UTF-8 validated fragment by fragment (a bad text
  fragment fails the connection with 1007 before the message ends) and
  ``--ws-max-size`` counted on the decoded message (1009; see :func:`wire_limit`);
- backpressure both ways: reading pauses while ``--ws-max-queue`` messages
  (:data:`QUEUE_HIGH` by default) wait for the app, and :meth:`WebSocket.send`
  waits while the transport's write buffer is above its high-water mark;
- keepalive pings, the closing-handshake timeout and graceful shutdown (1012).

A close frame in the middle of a fragmented message ends the message and is
answered like any close (Autobahn 7.1.5 expects the client's 1000 echoed, not
1002): the unfinished message is dropped.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import os
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from websockets.datastructures import Headers as WSHeaders
from websockets.exceptions import InvalidHeader, ProtocolError
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import CloseCode, Frame, Opcode
from websockets.headers import parse_subprotocol
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from ..core.headers import check_headers
from ..core.logs import logger
from ..core.stream import ByteChannel, ClientDisconnected, Headers, WebSocketClosed
from .flow import WriteFlow

if TYPE_CHECKING:
    from ..core.config import Config
    from ..core.context import ServerContext

# The handshake headers the protocol sets; an app's own values for them are dropped.
_HANDSHAKE_HEADERS = frozenset({b"sec-websocket-protocol", b"sec-websocket-extensions",
                                b"sec-websocket-accept", b"upgrade", b"connection"})

CLOSE_TIMEOUT = 10.0  # seconds to wait for the peer's side of the closing handshake
QUEUE_HIGH = 16  # received messages buffered for the app before reading pauses (default)
QUEUE_LOW = 4  # ... and resumes once the app has caught up to this many (a quarter)
# Messages the app sends wait in the protocol until its task step ends (one write for
# all of them, see WebSocket.send), unless this many payload bytes are waiting.
WRITE_BATCH = 16 * 1024

_TEXT, _BINARY, _CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT
_CLOSE, _PONG = Opcode.CLOSE, Opcode.PONG
_OPEN, _CLOSING, _CLOSED = State.OPEN, State.CLOSING, State.CLOSED


def wire_limit(max_size: int) -> int:
    """The library's frame-size limit on a permessage-deflate connection.

    websockets checks each frame's *wire* length against the message budget
    before inflating it, and a deflated frame of incompressible data is a little
    longer than the data (stored blocks: 5 bytes per 128 to 64 KiB, by the
    client's zlib settings; fixed Huffman codes: about 5.5 %). The library gets
    this looser limit, which also bounds what it inflates (a deflate bomb stops
    here); bivio enforces ``max_size`` on the decoded message itself.
    """
    return max_size + max_size // 16 + 1024


class _ServerProtocol(ServerProtocol):
    """websockets' server protocol, with the subprotocol chosen by the app."""

    chosen: str | None = None
    max_decoded: int = 0  # --ws-max-size: the close reason of a 1009 names it

    def fail(self, code: int, reason: str = "") -> None:
        if code == CloseCode.MESSAGE_TOO_BIG:
            # The library's reason names its own (wire) limit; ours is the message's.
            reason = f"message larger than {self.max_decoded} bytes"
        super().fail(code, reason)

    def select_subprotocol(self, subprotocols):  # type: ignore[no-untyped-def,override]
        # The application decides (ASGI ``websocket.accept``), not a server list.
        return self.chosen

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is _CLOSE and self.current_size is not None:
            # A close frame ends an unfinished fragmented message: the close is
            # valid (control frames may interleave), the message is abandoned.
            self.current_size = None
        super().recv_frame(frame)


def deflate_factory() -> ServerPerMessageDeflateFactory:
    """permessage-deflate: 4 KiB window (as websockets' own server), memLevel 6, level 1.

    Chosen by measurement (``python -m bench.ws_deflate``; the table is in
    docs/websockets.md). Against memLevel 8 at zlib's default level 6, JSON-like
    text compresses about 2x faster (about 150 vs 75 MB/s of input) for 23 %
    instead of 19 % of its size, also with the 512-byte window a client may ask
    for (72 vs 33 MB/s: zlib rescans its whole hash table, 2^(memLevel+7)
    entries, at every window slide); incompressible bytes go about 0.7x as fast
    (49 vs 71 MB/s, still 1.4x memLevel 5). A compressor takes 48 KiB instead of
    144 KiB per connection. All 216 permessage-deflate Autobahn cases: 292 s
    instead of 368 s.
    """
    return ServerPerMessageDeflateFactory(
        server_max_window_bits=12, client_max_window_bits=12,
        compress_settings={"memLevel": 6, "level": 1},
    )


class WebSocket(WriteFlow):
    """One WebSocket connection, from the upgrade request to the closed socket.

    Created by the stream's protocol for a WebSocket request. Until
    :meth:`accept`, that protocol still owns the bytes (a denial is an ordinary
    HTTP response on the stream); :meth:`accept` calls ``on_accept(self,
    headers)``, which answers the handshake with ``headers`` and hands the
    channel over to this object, returning any bytes already read past the
    request (the client's first frames).
    """

    def __init__(
        self,
        config: Config,
        channel: ByteChannel,
        loop: asyncio.AbstractEventLoop,
        target: str,
        headers: Headers,
        on_accept: Callable[[WebSocket, Headers], bytes],
        handshake_headers: Headers | None = None,
    ) -> None:
        self.transport = channel
        self.loop = loop
        self._on_accept = on_accept
        # Set by the channel's owner on accept: told once the channel is gone.
        self.on_lost: Callable[[WebSocket], None] | None = None
        # The worker's context when this session owns a socket (HTTP/1.1): its bytes
        # are counted there. Over HTTP/2 the connection already counted them.
        self.counts: ServerContext | None = None
        self._ping_interval = config.ws_ping_interval
        self._queue_high = config.ws_max_queue  # --ws-max-queue, as websockets' max_queue
        self._queue_low = config.ws_max_queue // 4
        self._ping_timeout = config.ws_ping_timeout
        extensions = [deflate_factory()] if config.ws_per_message_deflate else None
        self._proto = _ServerProtocol(extensions=extensions, max_size=config.ws_max_size)
        self._max_size = self._proto.max_decoded = config.ws_max_size
        self._request = Request(
            target, WSHeaders([(n.decode("latin-1"), v.decode("latin-1"))
                               for n, v in (handshake_headers or headers)])
        )
        self.subprotocols: list[str] = []
        self.handshake_error: tuple[int, str] | None = None
        self._check_handshake(headers)
        self.accepted = False
        self._messages: deque[str | bytes] = deque()
        self._receiver: asyncio.Future[None] | None = None
        self._frag_text = False
        self._frag_parts: list[bytes] | list[str] = []
        self._frag_size = 0  # decoded bytes of the unfinished fragmented message
        self._decoder: codecs.IncrementalDecoder | None = None
        self._failed_code: int | None = None
        self._lost = False
        self._unsent = -1  # payload bytes sent by the app, not written yet (-1: none)
        self._reading_paused = True  # HTTP/1.1 paused reading at the upgrade
        self._init_write_flow(config.timeout_send)  # --timeout-send: see flow.py
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pong_timer: asyncio.TimerHandle | None = None
        self._ping_payload: bytes | None = None
        self._close_timer: asyncio.TimerHandle | None = None

    # -- opening handshake ---------------------------------------------------------------

    def _check_handshake(self, headers: Headers) -> None:
        """Validate the request now, so an invalid one never reaches the app."""
        response = self._proto.accept(self._request)
        if response.status_code != 101:
            self.handshake_error = (response.status_code, response.body.decode("utf-8", "replace"))
            return
        try:
            for name, value in headers:
                if name == b"sec-websocket-protocol":
                    self.subprotocols += parse_subprotocol(value.decode("latin-1"))
        except InvalidHeader as exc:
            self.handshake_error = (400, f"Invalid Sec-WebSocket-Protocol header: {exc}\n")

    async def accept(self, subprotocol: str | None, headers: Headers) -> None:
        """Answer the handshake (the app's subprotocol and headers) and start speaking WebSocket."""
        if self.accepted:
            raise RuntimeError("WebSocket already accepted")
        extra = [(n.lower(), v) for n, v in headers if n.lower() not in _HANDSHAKE_HEADERS]
        # The one validator (names are tokens, values free of controls), before the
        # handshake state changes: a refused accept leaves the session untouched, so
        # the app sees the ValueError and may deny, or accept again without the header.
        check_headers(extra)
        proto = self._proto
        proto.chosen = subprotocol
        response = proto.accept(self._request)
        if response.status_code != 101:  # pragma: no cover - validated in __init__
            raise RuntimeError("WebSocket handshake failed")
        # The server's Date and Server come with the stream's default headers.
        answer = [(name.lower().encode("latin-1"), value.encode("latin-1"))
                  for name, value in response.headers.raw_items()
                  if name.lower() not in ("date", "server")]
        if proto.extensions:  # permessage-deflate: the library counts wire bytes
            proto.max_message_size = wire_limit(self._max_size)
        proto.send_response(response)  # the state becomes OPEN (frames from now on)
        proto.data_to_send()  # its HTTP/1.1 serialisation: the stream's owner writes our answer
        # The request was parsed by the stream's protocol, not by this one, whose
        # parser still waits for one: restart it, now in the OPEN state, reading frames.
        proto.parser = proto.parse()
        next(proto.parser)
        # Writes the answer and switches the channel; ClientDisconnected if the client left.
        leftover = self._on_accept(self, answer + extra)
        self.accepted = True
        self._schedule_ping()
        if leftover:
            self.data_received(leftover)
        self._resume_reading()

    # -- asyncio.Protocol (after the switch) -----------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.counts is not None:
            self.counts.received_bytes += len(data)
        proto = self._proto
        proto.receive_data(data)
        for frame in proto.events_received():
            if self._failed_code is not None:
                break
            self._on_frame(frame)
        self._flush()
        if proto.state is not _OPEN:
            self._wake()  # closing: a waiting receive() must see it

    def eof_received(self) -> bool | None:
        self._proto.receive_eof()
        self._flush()
        self._wake()
        return None  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self.on_lost is not None:
            self.on_lost(self)
        for timer in (self._ping_timer, self._pong_timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        self._ping_timer = self._pong_timer = self._close_timer = None
        if self._proto.state is not _CLOSED:
            self._proto.receive_eof()
            self._proto.data_to_send()
        self.write_paused = False
        self._wake()
        self._release_writers()

    # -- frames to messages --------------------------------------------------------------

    def _on_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is _TEXT:
            if len(frame.data) > self._max_size:
                self._fail(1009, "")
                return
            if frame.fin:
                try:
                    self._deliver(bytes(frame.data).decode("utf-8"))
                except UnicodeDecodeError:
                    self._fail(1007, "invalid UTF-8 in a text message")
                return
            self._frag_text = True
            self._decoder = codecs.getincrementaldecoder("utf-8")()
            self._frag_parts = []
            self._frag_size = len(frame.data)
            self._append_text(frame.data, False)
        elif opcode is _BINARY:
            if len(frame.data) > self._max_size:
                self._fail(1009, "")
                return
            if frame.fin:
                self._deliver(bytes(frame.data))
                return
            self._frag_text = False
            self._frag_parts = [bytes(frame.data)]
            self._frag_size = len(frame.data)
        elif opcode is _CONT:
            self._frag_size += len(frame.data)
            if self._frag_size > self._max_size:
                self._fail(1009, "")
                return
            if self._frag_text:
                self._append_text(frame.data, frame.fin)
            else:
                self._frag_parts.append(bytes(frame.data))  # type: ignore[arg-type]
            if frame.fin and self._failed_code is None:
                parts, self._frag_parts = self._frag_parts, []
                self._deliver("".join(parts) if self._frag_text else b"".join(parts))  # type: ignore[arg-type]
                self._decoder = None
        elif opcode is _PONG:
            if self._ping_payload is not None and frame.data == self._ping_payload:
                self._ping_payload = None
                if self._pong_timer is not None:
                    self._pong_timer.cancel()
                    self._pong_timer = None
                self._schedule_ping()
        elif opcode is _CLOSE:
            self._frag_parts = []
            self._decoder = None
            self._wake()
        # PING: the protocol already queued the pong; _flush() writes it.

    def _append_text(self, data: bytes, final: bool) -> None:
        decoder = self._decoder
        assert decoder is not None
        try:
            text = decoder.decode(data, final)
        except UnicodeDecodeError:
            self._fail(1007, "invalid UTF-8 in a text message")
            return
        if text:
            self._frag_parts.append(text)  # type: ignore[arg-type]

    def _deliver(self, message: str | bytes) -> None:
        self._messages.append(message)
        self._wake()
        if len(self._messages) >= self._queue_high and self._proto.state is _OPEN:
            self._pause_reading()

    def _wake(self) -> None:
        fut = self._receiver
        if fut is not None and not fut.done():
            fut.set_result(None)

    # -- writing ---------------------------------------------------------------------------

    def _flush(self) -> None:
        """Write what the protocol produced; an empty chunk means: our side is done.

        Consecutive frames go out in one write (the app's messages of one task step).
        """
        self._unsent = -1
        chunks = self._proto.data_to_send()
        if chunks and not self._lost:
            if len(chunks) == 1 and chunks[0]:
                self.transport.write(chunks[0])
            else:
                self._write_chunks(chunks)
        if self._close_timer is None and not self._lost and self._proto.close_expected():
            self._close_timer = self.loop.call_later(CLOSE_TIMEOUT, self._on_close_timeout)

    def _write_chunks(self, chunks: list[bytes]) -> None:
        """Several chunks: small frames joined into one write, a large one on its own."""
        transport = self.transport
        run: list[bytes] = []
        for data in chunks:
            if self._lost:
                return
            if data and len(data) < WRITE_BATCH:
                run.append(data)
                continue
            if run:
                transport.write(b"".join(run) if len(run) > 1 else run[0])
                run = []
                if self._lost:
                    return
            if data:
                transport.write(data)
            else:
                self._half_close()
        if run and not self._lost:
            transport.write(b"".join(run) if len(run) > 1 else run[0])

    def _flush_later(self) -> None:
        """End of the task step that sent messages: write them (see :meth:`send`)."""
        if self._unsent >= 0:
            self._flush()

    def _half_close(self) -> None:
        """Server side of the closing handshake: FIN now, then wait for the client's."""
        self._resume_reading()  # the client's EOF must be seen
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:
            self.transport.close()
        if self._close_timer is None:
            self._close_timer = self.loop.call_later(CLOSE_TIMEOUT, self._on_close_timeout)

    def _on_close_timeout(self) -> None:
        self._close_timer = None
        if not self._lost:
            self.transport.abort()

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 7.1.7): close frame, FIN, discard the rest."""
        if self._failed_code is None and self._proto.state is _OPEN:
            self._failed_code = code
        self._frag_parts = []
        self._decoder = None
        self._proto.fail(code, reason)
        self._flush()
        self._wake()

    async def _drain(self) -> None:
        if not self._lost:
            await self.wait_writable()

    # -- the adapter's side ------------------------------------------------------------------

    @property
    def closed_code(self) -> tuple[int, str] | None:
        """(code, reason) the app should see once no more messages can come, else None."""
        proto = self._proto
        if proto.close_rcvd is not None:
            return proto.close_rcvd.code, proto.close_rcvd.reason
        if self._failed_code is not None:
            sent = proto.close_sent
            return self._failed_code, sent.reason if sent is not None else ""
        sent = proto.close_sent
        if sent is not None and proto.parser_exc is not None \
                and not isinstance(proto.parser_exc, EOFError):
            return sent.code, sent.reason  # the client broke the protocol (1002, 1009, ...)
        if self._lost or proto.state is _CLOSED:
            return 1006, ""
        return None

    def receive_nowait(self) -> str | bytes | None:
        """The next message if one is waiting, else None (then the adapter awaits receive())."""
        messages = self._messages
        if not messages:
            return None
        message = messages.popleft()
        if self._reading_paused and len(messages) <= self._queue_low:
            self._resume_reading()
        return message

    async def receive(self) -> str | bytes:
        """The next message; raises :class:`WebSocketClosed` once none can follow."""
        while True:
            message = self.receive_nowait()
            if message is not None:
                return message
            closed = self.closed_code
            if closed is not None:
                raise WebSocketClosed(*closed)
            if self._unsent >= 0:
                self._flush()  # the app waits: what it sent goes out now
            fut = self._receiver = self.loop.create_future()
            try:
                await fut
            finally:
                self._receiver = None

    async def send(self, data: str | bytes) -> None:
        """Send one message; waits while the client does not read (see :meth:`send_nowait`)."""
        if self.send_nowait(data):
            await self.wait_sent()

    def send_nowait(self, data: str | bytes) -> bool:
        """:meth:`send` without its wait: True when the caller must ``await wait_sent()``.

        The frame is written once the app's task step ends (a callback queued by
        the step's first send), so the messages of one step, such as the answers
        to a batch of messages read at once, leave in one write instead of one
        system call each. Anything else the protocol writes (a pong, a close)
        writes the waiting frames first, in order; :data:`WRITE_BATCH` payload
        bytes waiting, or a paused transport, write at once.
        """
        proto = self._proto
        if proto.state is not _OPEN or self._lost:
            raise ClientDisconnected("the WebSocket is closed")
        if isinstance(data, str):
            data = data.encode("utf-8")
            proto.send_text(data)
        else:
            proto.send_binary(data)
        unsent = self._unsent
        if unsent < 0:
            unsent = 0
            self.loop.call_soon(self._flush_later)
        unsent += len(data)
        self._unsent = unsent
        if unsent >= WRITE_BATCH or self.write_paused:
            self._flush()
        return self.write_paused

    async def wait_sent(self) -> None:
        """The wait of :meth:`send`: until the client reads again (or is gone)."""
        if self.write_paused:
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("WebSocket %s: send waits for the client to read", self._peer())
            await self._drain()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake (no-op if it already started)."""
        if self._proto.state is not _OPEN or self._lost:
            return
        if len(reason.encode("utf-8")) > 123:
            raise ValueError("a WebSocket close reason is at most 123 bytes of UTF-8")
        try:
            self._proto.send_close(code, reason)
        except ProtocolError as exc:
            raise ValueError(f"invalid WebSocket close code {code!r}: {exc}") from None
        self._flush()
        self._resume_reading()  # the client's close frame must get through

    def abort(self) -> None:
        if not self._lost:
            self.transport.abort()

    # -- keepalive -------------------------------------------------------------------------

    def _schedule_ping(self) -> None:
        if self._ping_interval > 0 and not self._lost:
            if self._ping_timer is not None:
                self._ping_timer.cancel()
            self._ping_timer = self.loop.call_later(self._ping_interval, self._send_ping)

    def _send_ping(self) -> None:
        self._ping_timer = None
        if self._lost or self._proto.state is not _OPEN:
            return
        payload = os.urandom(4)
        self._ping_payload = payload
        self._proto.send_ping(payload)
        self._flush()
        if self._ping_timeout > 0:
            self._pong_timer = self.loop.call_later(self._ping_timeout, self._on_pong_timeout)
        else:
            self._schedule_ping()

    def _on_pong_timeout(self) -> None:
        self._pong_timer = None
        if not self._lost and self._proto.state is _OPEN:
            self._fail(1011, "keepalive ping timeout")

    # -- flow control and shutdown ------------------------------------------------------------

    def _pause_reading(self) -> None:
        if not self._reading_paused and not self._lost:
            self._reading_paused = True
            self.transport.pause_reading()
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("WebSocket %s: %d messages wait for the app, reading paused",
                             self._peer(), len(self._messages))

    def _peer(self) -> str:
        """``host:port`` of the client for a debug line ("-" if the channel does not say)."""
        extra = getattr(self.transport, "get_extra_info", None)
        peer = extra("peername") if extra is not None else None
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "-"

    def _resume_reading(self) -> None:
        if self._reading_paused and not self._lost:
            self._reading_paused = False
            self.transport.resume_reading()

    def is_idle(self) -> bool:
        return self._lost

    @property
    def awaiting_first_request(self) -> bool:
        return False

    def pause_intake(self) -> None:
        """Intake pauses new HTTP requests; a WebSocket has none (see context.py)."""

    def resume_intake(self) -> None:
        """See :meth:`pause_intake`."""

    def shutdown(self) -> None:
        """Graceful shutdown: close with 1012 (service restart) after what was already sent."""
        if self.accepted and self._proto.state is _OPEN and not self._lost:
            self._proto.send_close(1012, "Service Restart")
            self._flush()
            self._resume_reading()

    def close_now(self) -> None:
        """Forced shutdown: close the socket without a closing handshake."""
        if not self._lost:
            if self._unsent >= 0:
                self._flush()  # what the app sent still goes out before the FIN
            self.transport.close()
