"""The PROXY protocol parser (sans-I/O), its asyncio front, and ``Forwarded`` (RFC 7239).

The parser: valid v1/v2 headers over IPv4 and IPv6, LOCAL and UNKNOWN (the
real peer), a header split across reads, malformed and oversized headers. The
front: an untrusted peer is closed before anything is read, a missing or bad
header closes the connection, and a good one hands the transport to HTTP/1.1
(and from there to HTTP/2) with the header's addresses as the stream's client
and server. ``--proxy-protocol`` with TLS is refused at start-up.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from fakes import FakeStream, FakeTransport

from bivio.core.config import Config, ConfigError
from bivio.core.context import ServerContext
from bivio.protocols.http1 import H1Connection
from bivio.protocols.proxy import apply_proxy_headers, forwarded_node, parse_forwarded
from bivio.protocols.proxy_protocol import (
    V1_MAX,
    V2_MAX,
    V2_SIGNATURE,
    ProxyHeaderError,
    ProxyInfo,
    ProxyProtocolFront,
    parse_header,
)

V1_TCP4 = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n"
V1_TCP6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 56324 8443\r\n"
REQUEST = b"GET /path HTTP/1.1\r\nhost: test\r\n\r\n"


def v2(command: int = 1, family: int = 1, transport: int = 1, body: bytes | None = None,
       version: int = 2) -> bytes:
    if body is None:
        if family == 1:
            body = struct.pack("!4s4sHH", ipaddress.IPv4Address("192.0.2.7").packed,
                               ipaddress.IPv4Address("198.51.100.1").packed, 56324, 443)
        elif family == 2:
            body = struct.pack("!16s16sHH", ipaddress.IPv6Address("2001:db8::7").packed,
                               ipaddress.IPv6Address("2001:db8::1").packed, 56324, 8443)
        else:
            body = b""
    return (V2_SIGNATURE + bytes([version << 4 | command, family << 4 | transport])
            + struct.pack("!H", len(body)) + body)


# -- the parser -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["v1", "auto"])
def test_v1_tcp4_and_tcp6(mode):
    assert parse_header(V1_TCP4 + REQUEST, mode) == (
        ProxyInfo(1, False, ("192.0.2.7", 56324), ("198.51.100.1", 443)), len(V1_TCP4))
    assert parse_header(V1_TCP6, mode) == (
        ProxyInfo(1, False, ("2001:db8::7", 56324), ("2001:db8::1", 8443)), len(V1_TCP6))


def test_v1_unknown_is_the_real_peer():
    line = b"PROXY UNKNOWN ffff:f...f:ffff 0 0\r\n"
    assert parse_header(line + REQUEST, "v1") == (ProxyInfo(1, True), len(line))
    assert parse_header(b"PROXY UNKNOWN\r\n", "v1") == (ProxyInfo(1, True), 15)


@pytest.mark.parametrize("mode", ["v2", "auto"])
def test_v2_tcp4_and_tcp6(mode):
    header = v2(family=1)
    assert parse_header(header + REQUEST, mode) == (
        ProxyInfo(2, False, ("192.0.2.7", 56324), ("198.51.100.1", 443)), len(header))
    header = v2(family=2)
    assert parse_header(header, mode) == (
        ProxyInfo(2, False, ("2001:db8::7", 56324), ("2001:db8::1", 8443)), len(header))


def test_v2_tlvs_are_skipped():
    tlvs = b"\x04\x00\x03abc" + b"\x05\x00\x01z"  # NOOP and UNIQUE_ID
    header = v2(body=struct.pack("!4s4sHH", bytes([10, 0, 0, 9]), bytes([10, 0, 0, 1]),
                                 1, 80) + tlvs)
    assert parse_header(header + b"GET", "v2") == (
        ProxyInfo(2, False, ("10.0.0.9", 1), ("10.0.0.1", 80)), len(header))


def test_v2_local_and_unspec_are_the_real_peer():
    assert parse_header(v2(command=0, family=0, transport=0), "v2") == (ProxyInfo(2, True), 16)
    # LOCAL ignores whatever address block follows.
    assert parse_header(v2(command=0), "v2") == (ProxyInfo(2, True), 28)
    assert parse_header(v2(family=0, transport=0, body=b"xx"), "v2") == (ProxyInfo(2, True), 18)


def test_v2_unix_has_no_address():
    assert parse_header(v2(family=3, body=bytes(216)), "v2") == (ProxyInfo(2, False), 232)


@pytest.mark.parametrize("header", [V1_TCP4, v2(family=1), v2(family=2)])
def test_split_across_reads(header):
    for cut in range(len(header)):
        assert parse_header(header[:cut], "auto") is None, cut
    assert parse_header(header, "auto") is not None


@pytest.mark.parametrize("data, mode", [
    (REQUEST, "v1"), (REQUEST, "v2"), (REQUEST, "auto"),
    (b"PRI * HTTP/2.0", "auto"), (b"\x16\x03\x01", "auto"),  # HTTP/2, TLS
    (b"POST / HTTP/1.1", "v1"),  # begins like PROXY: caught at the second byte
    (V1_TCP4, "v2"), (v2(), "v1"),
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n", "v1"),  # a field missing
    (b"PROXY TCP4 192.0.2.7  198.51.100.1 56324 443\r\n", "v1"),  # two spaces
    (b"PROXY TCP5 192.0.2.7 198.51.100.1 56324 443\r\n", "v1"),
    (b"PROXY TCP4 2001:db8::7 198.51.100.1 56324 443\r\n", "v1"),  # wrong family
    (b"PROXY TCP6 192.0.2.7 2001:db8::1 56324 443\r\n", "v1"),
    (b"PROXY TCP4 192.0.2.300 198.51.100.1 56324 443\r\n", "v1"),
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 443\r\n", "v1"),
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 -1 443\r\n", "v1"),
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 0443 443\r\n", "v1"),
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 1 443\n", "v1"),  # bare LF
    (b"PROXY TCP4 192.0.2.7\r198.51.100.1 1 443", "v1"),  # bare CR
    (b"PROXY " + b"A" * V1_MAX, "v1"),  # no CRLF within 107 bytes
    (v2(version=1), "v2"), (v2(command=2), "v2"),
    (v2(transport=2), "v2"),  # UDP
    (v2(family=4), "v2"),
    (v2(family=1, body=bytes(11)), "v2"),  # too short for two IPv4 addresses
    (v2(family=2, body=bytes(35)), "v2"),
    (V2_SIGNATURE[:5] + b"X", "v2"),
])
def test_malformed(data, mode):
    with pytest.raises(ProxyHeaderError):
        parse_header(data, mode)


def test_v1_line_of_the_maximum_length_is_fine():
    line = b"PROXY UNKNOWN " + b"x" * (V1_MAX - 16) + b"\r\n"
    assert len(line) == V1_MAX
    assert parse_header(line, "v1") == (ProxyInfo(1, True), V1_MAX)
    with pytest.raises(ProxyHeaderError, match="longer"):
        parse_header(b"PROXY UNKNOWN " + b"x" * (V1_MAX - 15) + b"\r\n", "v1")


def test_v2_length_is_bounded_before_the_bytes_arrive():
    fixed = V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", V2_MAX - 16)
    assert parse_header(fixed, "v2") is None  # the largest allowed: wait for it
    with pytest.raises(ProxyHeaderError, match="more than"):
        parse_header(V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", V2_MAX - 15), "v2")


# -- the front ----------------------------------------------------------------------------


def run(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return wrapper


async def settle(rounds: int = 20) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


def front(peer: str = "127.0.0.1", **options: Any) -> tuple[ServerContext, FakeTransport,
                                                              list[Any]]:
    """A front on a fake transport from ``peer``; the list collects the streams served."""
    seen: list[Any] = []

    async def handler(stream: Any) -> None:
        seen.append(stream)
        await stream.start_response(200, [(b"content-type", b"text/plain")])
        await stream.send_body(b"%s %s" % (str(stream.client).encode(),
                                           str(stream.server).encode()), False)

    options = {"proxy_protocol": "auto", "date_header": False, "server_header": False,
               **options}
    ctx = ServerContext(Config.from_options(options, env={}), handler)
    loop = asyncio.get_running_loop()
    t = FakeTransport(peer=(peer, 40000), sock=("127.0.0.1", 8000))
    t.connect(ProxyProtocolFront(ctx, loop, lambda: H1Connection(ctx, loop)))
    return ctx, t, seen


@pytest.mark.parametrize("header", [V1_TCP4, v2(family=1)])
@run
async def test_front_hands_over_with_the_header_addresses(header):
    ctx, t, seen = front()
    for i in range(0, len(header) - 1):  # split across reads
        t.feed(header[i:i + 1])
        assert not t.closed and isinstance(t.protocol, ProxyProtocolFront)
    t.feed(header[-1:] + REQUEST)
    await settle()
    assert isinstance(t.protocol, H1Connection)
    assert [(s.client, s.server) for s in seen] == [
        (("192.0.2.7", 56324), ("198.51.100.1", 443))]
    assert t.take().endswith(b"('192.0.2.7', 56324) ('198.51.100.1', 443)")
    assert not any(isinstance(c, ProxyProtocolFront) for c in ctx.connections)


@run
async def test_front_header_and_request_in_one_read():
    _, t, seen = front()
    t.feed(V1_TCP6 + REQUEST)
    await settle()
    assert seen and seen[0].client == ("2001:db8::7", 56324)
    assert seen[0].raw_path == b"/path"


@run
async def test_front_local_keeps_the_real_peer():
    _, t, seen = front()
    t.feed(v2(command=0) + REQUEST)
    await settle()
    assert [(s.client, s.server) for s in seen] == [(("127.0.0.1", 40000), ("127.0.0.1", 8000))]


@run
async def test_front_header_client_decides_trust_for_x_forwarded_for():
    """After a PROXY header the peer is the header's client: its X-Forwarded-For is
    not trusted unless that client is in --forwarded-allow-ips too."""
    _, t, seen = front()
    t.feed(V1_TCP4 + b"GET / HTTP/1.1\r\nhost: t\r\nx-forwarded-for: 203.0.113.9\r\n\r\n")
    await settle()
    assert seen[0].client == ("192.0.2.7", 56324)


@run
async def test_front_hands_over_to_http2_keeping_the_addresses():
    _, t, seen = front()
    t.feed(V1_TCP4 + b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    await settle()
    from bivio.protocols.http2 import H2Connection

    assert isinstance(t.protocol, H2Connection)
    assert (t.protocol.client, t.protocol.server) == (("192.0.2.7", 56324),
                                                        ("198.51.100.1", 443))


@run
async def test_front_before_http2_only():
    """``--http h2``: the front hands over to HTTP/2 directly."""
    from bivio.protocols.http2 import H2Connection

    ctx = ServerContext(Config.from_options({"proxy_protocol": "v2", "http": "h2"}, env={}),
                        None)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    t = FakeTransport(peer=("127.0.0.1", 40000))
    t.connect(ProxyProtocolFront(ctx, loop, lambda: H2Connection(ctx, loop)))
    t.feed(v2(family=2) + b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert isinstance(t.protocol, H2Connection) and not t.closed
    assert t.protocol.client == ("2001:db8::7", 56324)
    await settle()
    assert t.written  # the server's SETTINGS
    t.protocol.close_now()


@run
async def test_untrusted_peer_is_closed_before_reading(caplog):
    caplog.set_level(logging.INFO, "bivio.error")
    ctx, t, seen = front(peer="10.9.9.9")
    assert t.closed and t.aborted
    assert not ctx.connections
    assert "10.9.9.9:40000" in caplog.text and "forwarded-allow-ips" in caplog.text


@run
async def test_trust_ignores_proxy_headers_off():
    """--no-proxy-headers turns X-Forwarded-* off, not the PROXY protocol."""
    _, t, seen = front(proxy_headers=False)
    t.feed(V1_TCP4 + REQUEST)
    await settle()
    assert seen and seen[0].client == ("192.0.2.7", 56324)


@pytest.mark.parametrize("data", [REQUEST, b"PROXY TCP4 x\r\n", v2(version=1)])
@run
async def test_missing_or_bad_header_closes(data, caplog):
    caplog.set_level(logging.INFO, "bivio.error")
    ctx, t, seen = front()
    t.feed(data)
    await settle()
    assert t.closed and not t.written and not seen and not ctx.connections
    assert "127.0.0.1:40000" in caplog.text


@run
async def test_eof_before_the_header_closes():
    ctx, t, _ = front()
    t.feed(b"PROXY TC")
    t.feed_eof()
    assert t.closed and not ctx.connections


@run
async def test_header_timeout_closes():
    ctx, t, _ = front(timeout_request_header=0.01)
    t.feed(b"PROXY TCP4 ")
    assert ctx.connections  # waiting: the worker counts it (shutdown closes it)
    for _ in range(500):
        if t.closed:
            break
        await asyncio.sleep(0.01)
    assert t.closed and not ctx.connections


@run
async def test_shutdown_closes_a_front_waiting_for_its_header():
    ctx, t, _ = front()
    (conn,) = ctx.connections
    assert conn.is_idle() and not conn.awaiting_first_request
    conn.shutdown()
    assert t.closed and not ctx.connections


# -- configuration ------------------------------------------------------------------------


def test_option_values():
    assert Config().proxy_protocol == "off"
    assert Config.from_options({"proxy_protocol": "v2"}, env={}).proxy_protocol == "v2"
    with pytest.raises(ConfigError):
        Config.from_options({"proxy_protocol": "v3"}, env={})


def test_refused_with_tls():
    with pytest.raises(ConfigError, match="--proxy-protocol: not with --ssl-certfile"):
        Config.from_options({"proxy_protocol": "v1", "ssl_certfile": "cert.pem"}, env={})
    assert Config.from_options({"proxy_protocol": "off", "ssl_certfile": "c.pem"},
                               env={}).tls


@run
async def test_off_costs_nothing():
    """With the option off the listener's factory makes the connection itself."""
    from bivio.process.server import Server

    class Probe:
        def __init__(self, config: Config) -> None:
            self.config = config
            self.ctx = ServerContext(config, None)  # type: ignore[arg-type]

    loop = asyncio.get_running_loop()
    assert type(Server._protocol_factory(Probe(Config()), loop)()) is H1Connection
    front = Server._protocol_factory(Probe(Config(proxy_protocol="v1")), loop)()
    assert type(front) is ProxyProtocolFront
    assert type(front.factory()) is H1Connection


# -- Forwarded (RFC 7239) -----------------------------------------------------------------


def test_parse_forwarded():
    assert parse_forwarded('for=192.0.2.43, For="[2001:db8:cafe::17]:4711";proto=https;'
                           'host=example.com, for=_hidden') == [
        {"for": "192.0.2.43"},
        {"for": "[2001:db8:cafe::17]:4711", "proto": "https", "host": "example.com"},
        {"for": "_hidden"}]
    assert parse_forwarded('for="a\\"b";by=x') == [{"for": 'a"b', "by": "x"}]
    assert parse_forwarded("for=1.2.3.4, garbage here") == [{"for": "1.2.3.4"}]
    assert parse_forwarded("") == []


@pytest.mark.parametrize("node, expected", [
    ("192.0.2.43", ("192.0.2.43", 0)),
    ("192.0.2.43:8080", ("192.0.2.43", 8080)),
    ("[2001:db8:cafe::17]:4711", ("2001:db8:cafe::17", 4711)),
    ("[2001:db8::1]", ("2001:db8::1", 0)),
    ("192.0.2.43:_port", ("192.0.2.43", 0)),
    ("2001:db8::1", None),  # IPv6 must be in brackets
    ("unknown", None), ("_hidden", None), ("", None),
    ("[2001:db8::1", None), ("192.0.2.43:99999", None), ("host.example", None),
])
def test_forwarded_node(node, expected):
    assert forwarded_node(node) == expected


def forwarded(headers: list[tuple[bytes, bytes]], **options: Any) -> FakeStream:
    stream = FakeStream(headers=headers)
    stream.client = ("127.0.0.1", 5000)
    stream.scheme = "http"
    apply_proxy_headers(stream, Config.from_options(options, env={}))
    return stream


def test_forwarded_sets_client_and_scheme():
    s = forwarded([(b"forwarded", b'for="[2001:db8::1]:4711";proto=https;host=evil')])
    assert (s.client, s.scheme) == (("2001:db8::1", 4711), "https")


def test_forwarded_walks_past_trusted_proxies_and_joins_lines():
    s = forwarded([(b"forwarded", b"for=198.51.100.9"),
                   (b"forwarded", b"for=10.0.0.2, for=10.0.0.3")],
                  forwarded_allow_ips="127.0.0.1,10.0.0.0/8")
    assert s.client == ("198.51.100.9", 0)
    s = forwarded([(b"forwarded", b"for=198.51.100.9, for=10.0.0.3")])  # 10/8 untrusted
    assert s.client == ("10.0.0.3", 0)


def test_forwarded_obfuscated_keeps_the_peer():
    s = forwarded([(b"forwarded", b"for=198.51.100.9, for=_hidden;proto=https")])
    assert (s.client, s.scheme) == (("127.0.0.1", 5000), "https")
    s = forwarded([(b"forwarded", b"for=unknown")])
    assert s.client == ("127.0.0.1", 5000)


def test_x_forwarded_wins_over_forwarded():
    s = forwarded([(b"forwarded", b"for=198.51.100.9;proto=http"),
                   (b"x-forwarded-for", b"203.0.113.5"), (b"x-forwarded-proto", b"https")])
    assert (s.client, s.scheme) == (("203.0.113.5", 0), "https")
    # Each field on its own: Forwarded's proto when there is no X-Forwarded-Proto.
    s = forwarded([(b"forwarded", b"for=198.51.100.9;proto=https"),
                   (b"x-forwarded-for", b"203.0.113.5")])
    assert (s.client, s.scheme) == (("203.0.113.5", 0), "https")


def test_forwarded_proto_is_the_nearest_hops():
    s = forwarded([(b"forwarded", b"for=1.2.3.4;proto=https, for=5.6.7.8")])
    assert s.scheme == "http"


@pytest.mark.parametrize("peer, client", [("127.0.0.1", ("2001:db8::1", 4711)),
                                           ("192.0.2.1", ("192.0.2.1", 5))])
@run
async def test_forwarded_only_from_a_trusted_peer(peer, client):
    seen: list[Any] = []

    async def handler(stream: Any) -> None:
        seen.append(stream)
        await stream.start_response(204, [])
        await stream.send_body(b"", False)

    ctx = ServerContext(Config.from_options({}, env={}), handler)
    t = FakeTransport(peer=(peer, 5))
    t.connect(H1Connection(ctx))
    t.feed(b'GET / HTTP/1.1\r\nhost: t\r\nforwarded: for="[2001:db8::1]:4711";proto=https'
           b"\r\n\r\n")
    await settle()
    assert [s.client for s in seen] == [client]
    assert seen[0].scheme == ("https" if peer == "127.0.0.1" else "http")
