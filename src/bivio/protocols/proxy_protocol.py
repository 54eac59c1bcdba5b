"""The PROXY protocol (HAProxy's, v1 text and v2 binary) in front of a connection.

``--proxy-protocol v1|v2|auto``: a load balancer that forwards TCP (HAProxy's
``send-proxy``/``send-proxy-v2``, AWS NLB, ...) writes one header before the
client's bytes, naming the client and the address it connected to. Two parts:

* :func:`parse_header`, sans-I/O: bytes in, a :class:`ProxyInfo` and the length
  of the header out (``None``: not enough bytes yet; :class:`ProxyHeaderError`:
  close the connection).
* :class:`ProxyProtocolFront`, the ``asyncio.Protocol`` the listener creates
  instead of the connection's own protocol when the option is on: it checks the
  peer against ``--forwarded-allow-ips``, buffers the first bytes until the
  header is whole (within ``--timeout-request-header``), then creates the real
  protocol (HTTP/1.1, which may hand over to HTTP/2), seeds it with the header's
  addresses (``proxied``) and gives it the transport and the bytes read past the
  header. With the option off the listener creates the real protocol directly:
  nothing of this runs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.context import ServerContext
from ..core.logs import logger

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the whole line, CRLF included (the spec's worst case, TCP6)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_MAX = 16 + 2048  # fixed part + addresses and TLVs; HAProxy sends far less
_MODES = ("v1", "v2", "auto")

Address = tuple[str, int]


class ProxyHeaderError(ValueError):
    """The bytes are not a PROXY header this listener accepts."""


@dataclass(frozen=True, slots=True)
class ProxyInfo:
    """What a header said. ``local``: use the real peer (v2 LOCAL, v1 UNKNOWN,
    an unspecified family), in which case ``client``/``server`` are ``None``;
    ``client``/``server`` are also ``None`` for a UNIX-socket (AF_UNIX) client."""

    version: int
    local: bool
    client: Address | None = None
    server: Address | None = None


def parse_header(data: bytes, mode: str = "auto") -> tuple[ProxyInfo, int] | None:
    """Parse the PROXY header at the start of ``data``.

    Returns ``(info, header length)``, or ``None`` when ``data`` is a valid
    beginning that needs more bytes. Raises :class:`ProxyHeaderError` as soon as
    the bytes cannot be a header of ``mode`` (``v1``, ``v2`` or ``auto``: the
    first byte tells them apart), so a client that sends HTTP is closed at once.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if not data:
        return None
    if mode != "v2" and data[0] == V1_PREFIX[0]:
        return _parse_v1(data)
    if mode != "v1" and data[0] == V2_SIGNATURE[0]:
        return _parse_v2(data)
    want = {"v1": "a v1 header", "v2": "a v2 header", "auto": "a PROXY header"}[mode]
    raise ProxyHeaderError(f"expected {want}, got {data[:16]!r}")


def _parse_v1(data: bytes) -> tuple[ProxyInfo, int] | None:
    n = min(len(data), len(V1_PREFIX))
    if data[:n] != V1_PREFIX[:n]:
        raise ProxyHeaderError(f"expected 'PROXY ', got {data[:16]!r}")
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError(f"v1 header longer than {V1_MAX} bytes")
        if b"\n" in data or b"\r" in data[:-1]:
            raise ProxyHeaderError("v1 header: bare CR or LF")
        return None
    parts = data[:end].split(b" ")
    if len(parts) >= 2 and parts[1] == b"UNKNOWN":
        return ProxyInfo(1, True), end + 2  # the rest of the line is to be ignored
    if len(parts) != 6:
        raise ProxyHeaderError(f"v1 header: expected 6 fields, got {data[:end]!r}")
    _, proto, src, dst, sport, dport = parts
    family = {b"TCP4": ipaddress.IPv4Address, b"TCP6": ipaddress.IPv6Address}.get(proto)
    if family is None:
        raise ProxyHeaderError(f"v1 header: unknown protocol {proto!r}")
    try:
        client = (str(family(src.decode("ascii"))), _port(sport))
        server = (str(family(dst.decode("ascii"))), _port(dport))
    except (ValueError, UnicodeDecodeError):
        raise ProxyHeaderError(f"v1 header: bad address in {data[:end]!r}") from None
    return ProxyInfo(1, False, client, server), end + 2


def _port(text: bytes) -> int:
    if not text.isdigit() or len(text) > 5 or (len(text) > 1 and text[0] == 0x30):
        raise ValueError(text)
    port = int(text)
    if port > 65535:
        raise ValueError(text)
    return port


def _parse_v2(data: bytes) -> tuple[ProxyInfo, int] | None:
    n = min(len(data), len(V2_SIGNATURE))
    if data[:n] != V2_SIGNATURE[:n]:
        raise ProxyHeaderError(f"expected the v2 signature, got {data[:16]!r}")
    if len(data) < 16:
        return None
    ver_cmd, fam, length = struct.unpack_from("!BBH", data, 12)
    if ver_cmd >> 4 != 2:
        raise ProxyHeaderError(f"v2 header: version {ver_cmd >> 4}, expected 2")
    command = ver_cmd & 0x0F
    if command > 1:
        raise ProxyHeaderError(f"v2 header: unknown command {command}")
    if 16 + length > V2_MAX:
        raise ProxyHeaderError(f"v2 header: {16 + length} bytes, more than {V2_MAX}")
    if len(data) < 16 + length:
        return None
    total = 16 + length
    if command == 0:  # LOCAL: the proxy's own connection (health check): the real peer
        return ProxyInfo(2, True), total
    family, transport = fam >> 4, fam & 0x0F
    if family == 0:  # UNSPEC: the spec lets the receiver use the real peer
        return ProxyInfo(2, True), total
    if transport != 1:
        raise ProxyHeaderError(f"v2 header: transport {transport}, expected STREAM")
    body = data[16:total]
    if family == 1 and length >= 12:
        src, dst, sport, dport = struct.unpack_from("!4s4sHH", body)
        return ProxyInfo(2, False, (str(ipaddress.IPv4Address(src)), sport),
                         (str(ipaddress.IPv4Address(dst)), dport)), total
    if family == 2 and length >= 36:
        src, dst, sport, dport = struct.unpack_from("!16s16sHH", body)
        return ProxyInfo(2, False, (str(ipaddress.IPv6Address(src)), sport),
                         (str(ipaddress.IPv6Address(dst)), dport)), total
    if family == 3 and length >= 216:
        return ProxyInfo(2, False), total  # a UNIX-socket client: no address to give
    if family > 3:
        raise ProxyHeaderError(f"v2 header: unknown address family {family}")
    raise ProxyHeaderError(f"v2 header: {length} bytes too short for family {family}")


class ProxyProtocolFront(asyncio.Protocol):
    """Reads the PROXY header, then hands the transport to the real protocol.

    Counts as a connection of the worker while it waits (graceful shutdown and
    a second signal close it), and never once it has handed over.
    """

    def __init__(self, ctx: ServerContext, loop: asyncio.AbstractEventLoop,
                 factory: Callable[[], Any]) -> None:
        self.ctx = ctx
        self.loop = loop
        self.factory = factory
        self.mode: str = ctx.config.proxy_protocol
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self._buffer = b""
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peername = transport.get_extra_info("peername")
        host = str(peername[0]) if isinstance(peername, tuple) and peername else "unix:"
        self.peer = f"{host}:{peername[1]}" if isinstance(peername, tuple) else host
        if not self.ctx.config.is_allowed_proxy(host):
            logger.info("PROXY protocol: closing the connection from %s, which is not in "
                        "--forwarded-allow-ips", self.peer)
            self.ctx.limit_hit("proxy-protocol")
            transport.abort()  # type: ignore[attr-defined]
            return
        self.ctx.connections.add(self)
        timeout = self.ctx.config.timeout_request_header
        if timeout > 0:
            self._timer = self.loop.call_later(timeout, self._on_timeout)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        try:
            parsed = parse_header(buffer, self.mode)
        except ProxyHeaderError as exc:
            logger.info("PROXY protocol: closing the connection from %s: %s", self.peer, exc)
            self.ctx.limit_hit("proxy-protocol")
            self._close()
            return
        if parsed is None:
            self._buffer = buffer
            return
        info, used = parsed
        self._hand_over(info, buffer[used:])

    def eof_received(self) -> bool | None:
        logger.debug("PROXY protocol: %s closed before sending the header", self.peer)
        self._close()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._done()

    # -- what the worker asks of a connection (core.context.Connection) -------------------

    def is_idle(self) -> bool:
        return True

    @property
    def awaiting_first_request(self) -> bool:
        return False  # nothing to lose: shutdown does not wait for a header

    def pause_intake(self) -> None:
        pass  # the real protocol checks ctx.intake_paused when it starts

    def resume_intake(self) -> None:
        pass

    def shutdown(self) -> None:
        self._close()

    def close_now(self) -> None:
        self._close()

    # -- internals -----------------------------------------------------------------------

    def _hand_over(self, info: ProxyInfo, rest: bytes) -> None:
        transport = self.transport
        assert transport is not None
        self._done()
        proto = self.factory()
        if not info.local:
            proto.proxied = (info.client, info.server)
        transport.set_protocol(proto)
        proto.connection_made(transport)
        if rest and not transport.is_closing():
            proto.data_received(rest)

    def _on_timeout(self) -> None:
        self._timer = None
        logger.debug("PROXY protocol: no header from %s within %gs "
                     "(--timeout-request-header)", self.peer,
                     self.ctx.config.timeout_request_header)
        self._close()

    def _close(self) -> None:
        self._done()
        if self.transport is not None:
            self.transport.abort()

    def _done(self) -> None:
        self.ctx.connections.discard(self)
        self._buffer = b""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
