"""HTTP/2 attacks and malformed input over raw frames (tests/h2client.py in raw mode).

Every attack must end the attacking connection at a bounded cost (GOAWAY
``ENHANCE_YOUR_CALM`` for the floods, ``PROTOCOL_ERROR`` for what RFC 9113
calls malformed), must not reach the app (tests/apps/h2.py counts its calls),
and must leave everyone else served: a connection opened before the attack
still gets answers afterwards, and so does a new one. Waits are generous upper
bounds against hangs, never assertions about speed.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

import httpx
import pytest
from conftest import Running, read_until_close, start_bivio, statuses
from h2client import (
    COMPRESSION_ERROR,
    ENHANCE_YOUR_CALM,
    NO_ERROR,
    PREFACE,
    PROTOCOL_ERROR,
    GoAway,
    H2Client,
    continuation_flood,
    data,
    error_name,
    frame,
    header_block,
    headers,
    hpack_bomb_block,
    ping,
    priority,
    rapid_reset,
    request_block,
    request_frames,
    settings,
    window_update,
)

APP = "tests.apps.h2:app"
TIMEOUT = 10.0
FLOOD = 20_000  # frames: twenty times bivio's default budget of control frames


@pytest.fixture(scope="module")
def server() -> Iterator[Running]:
    running = start_bivio(APP)
    yield running
    running.stop()


def h2(running: Running, **kwargs) -> H2Client:
    return H2Client.connect("127.0.0.1", running.port, **kwargs)


def calls(running: Running) -> list[str]:
    return httpx.get(f"http://127.0.0.1:{running.port}/calls", timeout=TIMEOUT).json()


def rss(running: Running) -> int:
    """The server process's resident memory in bytes (Linux)."""
    with open(f"/proc/{running.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def bystander(server: Running) -> Iterator[H2Client]:
    """A well-behaved connection opened before the attack; it must be served after it."""
    with h2(server) as client:
        assert client.request("GET", "/").body == b"hello"
        yield client


def assert_served(server: Running, bystander: H2Client | None = None) -> None:
    if bystander is not None:
        response = bystander.request("GET", "/bystander")
        assert response.status == 200 and response.body == b"hello"
    with h2(server) as client:
        response = client.request("GET", "/")
        assert response.status == 200 and response.body == b"hello"
    assert httpx.get(server.url + "/", timeout=TIMEOUT).text == "hello"


def ended(goaway: GoAway, *codes: int) -> bool:
    """The connection ended with a GOAWAY with one of ``codes``, or closed without one."""
    return goaway.error_code in codes or (goaway.error_code is None and goaway.closed)


# -- floods of frames that carry no request ------------------------------------------------------


def _ping_flood(client: H2Client) -> Iterator[bytes]:
    return (ping(struct.pack("!Q", i)) for i in range(FLOOD))


def _settings_flood(client: H2Client) -> Iterator[bytes]:
    return (settings() for _ in range(FLOOD))


def _priority_flood(client: H2Client) -> Iterator[bytes]:
    first = client.new_stream_id()
    return (priority(first + 2 * i, depends_on=0, weight=i % 256) for i in range(FLOOD))


def _window_update_flood(client: H2Client) -> Iterator[bytes]:
    return (window_update(0, 1) for _ in range(FLOOD))


def _empty_data_flood(client: H2Client) -> Iterator[bytes]:
    sid = client.new_stream_id()
    yield headers(sid, request_block("POST", "/empty-data", authority=client.authority),
                  end_stream=False)
    for _ in range(FLOOD):
        yield data(sid, b"")


def _unknown_frame_flood(client: H2Client) -> Iterator[bytes]:
    return (frame(0xFA, 0, 0, b"x") for _ in range(FLOOD))


FLOODS: dict[str, Callable[[H2Client], Iterator[bytes]]] = {
    "ping": _ping_flood,
    "settings": _settings_flood,
    "priority": _priority_flood,
    "window-update": _window_update_flood,
    "empty-data": _empty_data_flood,
    "unknown-frames": _unknown_frame_flood,
}


@pytest.mark.parametrize("kind", list(FLOODS))
def test_control_frame_flood_gets_enhance_your_calm(server, bystander, kind):
    with h2(server) as attacker:
        attacker.flood(FLOODS[kind](attacker), timeout=20)
        goaway = attacker.read_until_goaway()
        assert goaway.error_code == ENHANCE_YOUR_CALM, goaway
        assert attacker.wait_closed(), "the server kept the flooding connection open"
    assert_served(server, bystander)


def test_ping_flood_answered_up_to_the_budget(server):
    """The budget is about 1,000 frames: far fewer PING ACKs than PINGs sent.

    h2 acknowledges every PING of a read by itself before the server counts them,
    so the overshoot is one read's worth (3,855 PINGs in 64 KiB), not more.
    """
    with h2(server) as attacker:
        attacker.flood(_ping_flood(attacker), timeout=20)
        assert attacker.read_until_goaway().error_code == ENHANCE_YOUR_CALM
        attacker.wait_closed()
        assert len(attacker.ping_acks) < FLOOD // 2, len(attacker.ping_acks)


def test_rapid_reset_gets_enhance_your_calm(server, bystander):
    with h2(server) as attacker:
        attacker.flood(rapid_reset(attacker.new_stream_id(), 5000, path="/rapid",
                                   authority=attacker.authority), timeout=20)
        goaway = attacker.read_until_goaway()
        assert goaway.error_code == ENHANCE_YOUR_CALM, goaway
        assert attacker.wait_closed()
    assert_served(server, bystander)
    assert calls(server).count("GET /rapid") < 5000


def test_resets_are_counted_beyond_completed_responses(serve):
    """The rapid-reset budget is resets of unfinished streams beyond the responses the
    client let complete: a client that also lets responses complete (a browser that
    navigates away now and then) is never cut off; one that only resets is."""
    running = serve(APP, "--h2-max-reset-streams", "20")
    with h2(running) as client:
        for _ in range(60):
            assert client.request("GET", "/").body == b"hello"
            sid = client.send_headers(client.request_headers("GET", "/slow?2"),
                                      end_stream=True)
            client.reset_stream(sid)
        assert client.request("GET", "/").status == 200
        assert client.goaway is None, client.goaway
    with h2(running) as client:
        try:
            for _ in range(60):
                sid = client.send_headers(client.request_headers("GET", "/slow?2"),
                                          end_stream=True)
                client.reset_stream(sid)
                client.poll()
                if client.goaway is not None or client.closed:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed while we were still resetting
        goaway = client.read_until_goaway()
        assert goaway.error_code == ENHANCE_YOUR_CALM, goaway


# -- header blocks: CONTINUATION flood, HPACK bomb ---------------------------------------------


@pytest.mark.parametrize("frame_size", [16384, 0], ids=["full-frames", "empty-frames"])
def test_continuation_flood_is_cut_off(server, bystander, frame_size):
    before = rss(server)
    with h2(server) as attacker:
        sent = attacker.flood(continuation_flood(attacker.new_stream_id(),
                                                 frame_size=frame_size), timeout=20)
        goaway = attacker.read_until_goaway()
        assert ended(goaway, PROTOCOL_ERROR, ENHANCE_YOUR_CALM), goaway
        attacker.wait_closed()
    # The server stopped it early: what got into the socket is kernel buffers plus at
    # most a bounded header block, nowhere near 20 s of loopback bandwidth.
    assert sent < 64 * 1024 * 1024, f"{sent} bytes of CONTINUATION were taken"
    assert rss(server) - before < 32 * 1024 * 1024
    assert_served(server, bystander)


def test_hpack_bomb(server, bystander):
    before = rss(server)
    with h2(server) as attacker:
        sid = attacker.new_stream_id()
        block = hpack_bomb_block(path="/bomb")
        assert len(block) < 20_000  # decodes to about 48 MB
        attacker.send_raw(request_frames(sid, block))
        goaway = attacker.read_until_goaway()
        assert ended(goaway, COMPRESSION_ERROR, PROTOCOL_ERROR, ENHANCE_YOUR_CALM), goaway
        attacker.wait_closed()
    assert rss(server) - before < 32 * 1024 * 1024
    assert "GET /bomb" not in calls(server)
    assert_served(server, bystander)


# -- streams over a connection's life ----------------------------------------------------------


def test_max_requests_ends_the_connection_gracefully(serve):
    running = serve(APP, "--h2-max-requests", "5")
    with h2(running) as client:
        ids = [client.send_headers(client.request_headers("GET", f"/life/{i}"), end_stream=True)
               for i in range(8)]
        goaway = client.read_until_goaway()
        assert goaway.error_code == NO_ERROR, goaway
        assert goaway.last_stream_id == ids[4]
        client.read_events(until=lambda c: all(c.streams[s].done for s in ids[:5]))
        for sid in ids[:5]:
            assert client.streams[sid].status == 200
            assert bytes(client.streams[sid].body) == b"hello"
        assert client.wait_closed(), "the connection stayed open after its last stream"
        for sid in ids[5:]:
            assert client.streams[sid].status is None  # refused: the client retries
    seen = calls(running)
    assert [f"GET /life/{i}" for i in range(5)] == [c for c in seen if c.startswith("GET /life")]
    with h2(running) as client:  # a new connection starts a new count
        assert client.request("GET", "/").status == 200


# -- RFC 9113 §8: malformed requests ----------------------------------------------------------


def _block(case: str, authority: str) -> bytes:
    path = f"/malformed/{case}"
    base = [(":method", "GET"), (":scheme", "http"), (":authority", authority), (":path", path)]
    return {
        "uppercase-name": header_block([*base, ("X-Upper", "1")]),
        "connection": header_block([*base, ("connection", "keep-alive")]),
        "keep-alive": header_block([*base, ("keep-alive", "timeout=5")]),
        "proxy-connection": header_block([*base, ("proxy-connection", "keep-alive")]),
        "transfer-encoding": header_block([*base, ("transfer-encoding", "chunked")]),
        "upgrade": header_block([*base, ("upgrade", "websocket")]),
        "te-not-trailers": header_block([*base, ("te", "gzip")]),
        "missing-path": header_block(base[:3]),
        "empty-path": header_block([*base[:3], (":path", "")]),
        "missing-method": header_block(base[1:]),
        "missing-scheme": header_block([base[0], *base[2:]]),
        "unknown-pseudo": header_block([*base, (":foo", "bar")]),
        "duplicate-path": header_block([*base, (":path", path + "/again")]),
        "duplicate-method": header_block([*base, (":method", "POST")]),
        "response-pseudo": header_block([*base, (":status", "200")]),
        "pseudo-after-regular": header_block([*base[:3], ("x-a", "1"), base[3]]),
        "protocol-on-get": header_block([*base, (":protocol", "websocket")]),
        "newline-in-value": header_block([*base, ("x-bad", "a\nb")]),
        "colon-in-name": header_block([*base, ("x:bad", "1")]),
        "space-in-name": header_block([*base, ("x bad", "1")]),
        "empty-name": header_block([*base, ("", "1")]),
    }[case]


MALFORMED = ["uppercase-name", "connection", "keep-alive", "proxy-connection",
             "transfer-encoding", "upgrade", "te-not-trailers", "missing-path", "empty-path",
             "missing-method", "missing-scheme", "unknown-pseudo", "duplicate-path",
             "duplicate-method", "response-pseudo", "pseudo-after-regular",
             "protocol-on-get", "newline-in-value", "colon-in-name", "space-in-name",
             "empty-name"]


def assert_protocol_error(client: H2Client, sid: int) -> None:
    client.read_frames(until=lambda c: c.stream(sid).done or c.goaway is not None or c.closed)
    stream = client.stream(sid)
    assert stream.status is None, f"answered {stream.status}: {bytes(stream.body)[:200]!r}"
    assert stream.reset == PROTOCOL_ERROR or (
        client.goaway is not None and client.goaway.error_code == PROTOCOL_ERROR), (
        f"reset {error_name(stream.reset)}, goaway {client.goaway}")


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_request_is_a_protocol_error(server, bystander, case):
    with h2(server) as attacker:
        sid = attacker.new_stream_id()
        attacker.send_raw(headers(sid, _block(case, attacker.authority)))
        assert_protocol_error(attacker, sid)
    assert not [c for c in calls(server) if f"/malformed/{case}" in c]
    assert_served(server, bystander)


def test_body_longer_than_content_length(server, bystander):
    with h2(server) as attacker:
        sid = attacker.new_stream_id()
        attacker.send_raw(headers(sid, request_block("POST", "/echo-cl",
                                                     authority=attacker.authority,
                                                     extra=[("content-length", "3")]),
                                  end_stream=False) + data(sid, b"abcdef", end_stream=True))
        assert_protocol_error(attacker, sid)
    assert_served(server, bystander)


def test_extended_connect_needs_the_websocket_protocol(server):
    """A CONNECT without ``:protocol`` (a proxy tunnel) is not served; nor is an
    extended CONNECT for another protocol."""
    with h2(server) as client:
        for pseudo in ([], [(":protocol", "connect-udp")]):
            sid = client.new_stream_id()
            fields = [(":method", "CONNECT"), (":authority", "example.test:443")]
            if pseudo:
                fields += [(":scheme", "http"), (":path", "/tunnel"), *pseudo]
            client.send_raw(headers(sid, header_block(fields), end_stream=False))
            client.read_frames(until=lambda c, sid=sid: c.stream(sid).done or
                               c.goaway is not None or c.closed)
            stream = client.stream(sid)
            assert stream.status != 200, stream
            assert (stream.status or 0) >= 400 or stream.reset is not None or \
                client.goaway is not None
    assert "ws /tunnel" not in calls(server)


# -- the preface -----------------------------------------------------------------------------


def frames_in(received: bytes) -> list[tuple[int, bytes]]:
    """(type, payload) of the HTTP/2 frames in ``received``."""
    out = []
    offset = 0
    while len(received) - offset >= 9:
        length = int.from_bytes(received[offset:offset + 3], "big")
        out.append((received[offset + 3], received[offset + 9:offset + 9 + length]))
        offset += 9 + length
    return out


@pytest.mark.parametrize("preface", [
    b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\n",  # then straight to the frames
    PREFACE[:-2] + b"\n\n",
], ids=["bad-magic", "truncated", "bare-newlines"])
def test_bad_preface_closes_the_connection(server, preface):
    with server.connect() as sock:
        sock.sendall(preface + settings() + ping())
        received, closed = read_until_close(sock)
    assert closed, "the connection stayed open after a bad preface"
    # Nothing, an HTTP/1.1 400 (the HTTP/1.1 side read it), or a GOAWAY PROTOCOL_ERROR.
    if received.startswith(b"HTTP/"):
        assert statuses(received) in ([400], [505]), received[:200]
    else:
        goaways = [payload for kind, payload in frames_in(received) if kind == 0x7]
        assert all(g[4:8] == struct.pack("!L", PROTOCOL_ERROR) for g in goaways), received
    assert_served(server)


def test_bad_preface_with_http_h2(serve):
    running = serve(APP, "--http", "h2")
    with h2(running, handshake=False) as attacker:
        attacker.send_raw(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + settings())
        goaway = attacker.read_until_goaway()
        assert ended(goaway, PROTOCOL_ERROR), goaway
        assert attacker.wait_closed()
    with h2(running) as client:
        assert client.request("GET", "/").status == 200


def test_a_first_frame_that_is_not_settings(server):
    """RFC 9113 §3.4: the preface's SETTINGS frame comes first; else PROTOCOL_ERROR."""
    with h2(server, handshake=False) as attacker:
        attacker.send_raw(PREFACE + ping() + settings())
        goaway = attacker.read_until_goaway()
        assert ended(goaway, PROTOCOL_ERROR), goaway
