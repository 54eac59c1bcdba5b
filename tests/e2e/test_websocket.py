"""WebSockets end to end: a real bivio process, the websockets client, wsproto and raw sockets.

The app is tests/apps/ws.py; what it observes on the server side is read back
from its ``/events`` HTTP route.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import time
import zlib

import httpx
import pytest
import websockets
from conftest import read_response
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Request,
    TextMessage,
)

APP = "tests.apps.ws:app"
UPGRADE = (b"GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def url(running, path: str = "/echo") -> str:
    return f"ws://127.0.0.1:{running.port}{path}"


def events(running) -> list[dict]:
    return httpx.get(f"{running.url}/events", timeout=10).json()


def wait_event(running, path: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in events(running) if e["path"] == path]
        if found:
            return found[-1]
        time.sleep(0.05)
    raise AssertionError(f"the app recorded nothing for {path}: {events(running)}")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


# -- raw frames, for what well-behaved clients refuse to send ---------------------------------

def frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0) -> bytes:
    mask = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def raw_handshake(running, path: str = "/record") -> socket.socket:
    sock = running.connect()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def read_close(sock: socket.socket) -> int:
    """Read frames until the server's close frame; return its code."""
    data = read_response(sock)
    pos = 0
    while pos + 2 <= len(data):
        opcode, length = data[pos] & 0x0F, data[pos + 1] & 0x7F
        pos += 2
        if length == 126:
            length = struct.unpack("!H", data[pos:pos + 2])[0]
            pos += 2
        elif length == 127:
            length = struct.unpack("!Q", data[pos:pos + 8])[0]
            pos += 8
        payload = data[pos:pos + length]
        pos += length
        if opcode == 8:
            return struct.unpack("!H", payload[:2])[0]
    raise AssertionError(f"no close frame in {data!r}")


# -- echo --------------------------------------------------------------------------------------

def test_echo_text_and_binary(serve):
    running = serve(APP)

    async def go():
        async with connect(url(running)) as ws:
            await ws.send("héllo wörld")
            assert await ws.recv() == "héllo wörld"
            await ws.send(b"\x00\x01\xff")
            assert await ws.recv() == b"\x00\x01\xff"
            await ws.send("")
            assert await ws.recv() == ""

    run(go())


def test_16_mib_fragmented_message(serve):
    running = serve(APP)
    payload = os.urandom(16 * 1024 * 1024)
    pieces = [payload[i:i + 1024 * 1024] for i in range(0, len(payload), 1024 * 1024)]

    async def go():
        # Exactly --ws-max-size (16 MiB by default), uncompressed to keep it quick:
        # test_max_size_is_the_decoded_size covers the limit with permessage-deflate.
        async with connect(url(running), max_size=None, compression=None) as ws:
            await ws.send(pieces)  # 16 fragments of 1 MiB
            assert await ws.recv() == payload
            text = "ü" * (8 * 1024 * 1024)  # 16 MiB of UTF-8 in 9 text fragments
            await ws.send([text[i:i + 1_000_000] for i in range(0, len(text), 1_000_000)])
            assert await ws.recv() == text

    run(go())


def test_text_fragments_split_inside_a_character(serve):
    running = serve(APP)
    text = "€uro" * 1000
    raw = text.encode()
    sock = raw_handshake(running, "/echo")
    # Fragment boundaries fall inside the 3-byte euro sign; a ping sits between fragments.
    sock.sendall(frame(1, raw[:1], fin=False) + frame(9, b"hi")
                 + frame(0, raw[1:2000], fin=False) + frame(0, raw[2000:]))
    # The echo first: a close frame read with the message would be answered at once,
    # before the app could echo (no data may follow a close).
    data = b""
    sock.settimeout(10)
    while raw not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    assert b"\x8a\x02hi" in data  # the pong, answered between fragments
    sock.sendall(frame(8, struct.pack("!H", 1000)))
    assert read_close(sock) == 1000


def test_compression_on_and_off(serve):
    on = serve(APP)
    off = serve(APP, "--no-ws-per-message-deflate")
    message = "compress me " * 5000

    async def go(running, compression):
        async with connect(url(running), compression=compression) as ws:
            await ws.send(message)
            assert await ws.recv() == message
            return ws.response.headers.get("Sec-WebSocket-Extensions")

    assert "permessage-deflate" in run(go(on, "deflate"))
    assert run(go(off, "deflate")) is None
    assert run(go(on, None)) is None


def test_subprotocol_negotiation_and_extra_headers(serve):
    running = serve(APP)

    async def go(offered):
        async with connect(url(running, "/subprotocol"), subprotocols=offered) as ws:
            return ws.subprotocol, await ws.recv(), ws.response.headers["x-chosen"]

    assert run(go(["foo", "superchat", "chat"])) == ("superchat", "superchat", "superchat")
    assert run(go(None)) == (None, "", "none")


def test_scope(serve):
    running = serve(APP, "--root-path", "/mnt")

    async def go():
        async with connect(url(running, "/scope%20x?a=1&b=%20"), subprotocols=["p1", "p2"],
                           additional_headers={"X-Custom": "yes"}) as ws:
            return json.loads(await ws.recv())

    scope = run(go())
    assert scope["type"] == "websocket"
    assert scope["asgi"]["version"] == "3.0"
    assert scope["asgi"]["spec_version"] == "2.4"
    assert scope["scheme"] == "ws"
    assert scope["http_version"] == "1.1"
    assert scope["path"] == "/mnt/scope x"
    assert scope["raw_path"] == "/mnt/scope%20x"
    assert scope["root_path"] == "/mnt"
    assert scope["query_string"] == "a=1&b=%20"
    assert scope["subprotocols"] == ["p1", "p2"]
    assert ["x-custom", "yes"] in scope["headers"]
    assert scope["client"][0] == "127.0.0.1"
    assert scope["server"] == ["127.0.0.1", running.port]
    assert scope["state"] == {"from_lifespan": "yes"}
    assert "websocket.http.response" in scope["extensions"]


# -- denial and handshake errors -----------------------------------------------------------------

def test_close_before_accept_is_403(serve):
    running = serve(APP)

    async def go():
        with pytest.raises(InvalidStatus) as info:
            async with connect(url(running, "/deny")):
                pass
        return info.value.response.status_code

    assert run(go()) == 403


def test_denial_response_extension(serve):
    running = serve(APP)

    async def go():
        with pytest.raises(InvalidStatus) as info:
            async with connect(url(running, "/deny-custom")):
                pass
        return info.value.response

    response = run(go())
    assert response.status_code == 418
    assert response.headers["x-denied"] == "yes"
    assert response.body == b"no teapots"


def test_invalid_handshake_gets_400_and_server_keeps_serving(serve):
    running = serve(APP)
    sock = running.connect()
    sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n")
    answer = read_response(sock)
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert b"Sec-WebSocket-Key" in answer
    sock = running.connect()
    sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n")
    assert read_response(sock).startswith(b"HTTP/1.1 400")

    async def go():
        async with connect(url(running)) as ws:
            await ws.send("still here")
            return await ws.recv()

    assert run(go()) == "still here"


def test_app_error_before_accept_is_500_after_accept_1011(serve):
    running = serve(APP)

    async def go():
        with pytest.raises(InvalidStatus) as info:
            async with connect(url(running, "/crash-early")):
                pass
        assert info.value.response.status_code == 500
        async with connect(url(running, "/crash")) as ws:
            await ws.send("trigger")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd.code

    assert run(go()) == 1011
    assert running.wait_for_output("boom after accept")


BAD_HEADER_NAMES = [b"bad name", b"bad\tname", b"bad:name", b"", b"x\r\ny", b"nul\x00",
                    b"del\x7f", b"caf\xc3\xa9", b"(paren)"]


def test_accept_header_names_must_be_tokens(serve):
    """An app's accept with a header name that is no token raises; no 101 goes out."""
    running = serve(APP)
    for name in BAD_HEADER_NAMES:
        sock = running.connect()
        sock.sendall(UPGRADE % (b"/bad-header?" + name.hex().encode()))
        answer = read_response(sock)
        head = answer.split(b"\r\n\r\n")[0]
        assert head.startswith(b"HTTP/1.1 500"), (name, answer)
        assert b"sec-websocket-accept" not in head.lower(), answer
        assert b": v\r\n" not in answer, answer  # the app's header was never written
        event = wait_event(running, "/bad-header")
        assert event["name"] == name.hex()
        assert event["error"] == f"ValueError: invalid response header name {name!r}"
    deadline = time.monotonic() + 10  # the log lines come through a pipe: wait for them
    while running.output.count("Exception in ASGI application") < len(BAD_HEADER_NAMES):
        assert time.monotonic() < deadline, running.output
        time.sleep(0.02)

    # The app that catches the error may accept again without the header.
    sock = running.connect()
    sock.sendall(UPGRADE % (b"/bad-header?" + b"bad name".hex().encode() + b"&retry"))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    assert b"x-retried: yes\r\n" in head and b"bad name" not in head
    sock.sendall(frame(1, b"after retry"))
    assert b"after retry" in sock.recv(100)

    async def go():  # the server keeps serving
        async with connect(url(running)) as ws:
            await ws.send("still here")
            return await ws.recv()

    assert run(go()) == "still here"


def test_ws_none_serves_upgrades_as_plain_http(serve):
    running = serve(APP, "--ws", "none")
    sock = running.connect()
    sock.sendall(UPGRADE % b"/echo")
    answer = read_response(sock)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert answer.endswith(b"plain http")


def test_wsgi_app_gets_upgrade_requests_as_plain_http(serve):
    running = serve("tests.apps.wsgi_apps:app")
    sock = running.connect()
    sock.sendall(UPGRADE % b"/")
    answer = read_response(sock)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert b"101" not in answer.split(b"\r\n")[0]


# -- closing ---------------------------------------------------------------------------------------

def test_server_initiated_close(serve):
    running = serve(APP)

    async def go():
        async with connect(url(running, "/server-close")) as ws:
            assert await ws.recv() == "bye"
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd.code, closed.value.rcvd.reason

    assert run(go()) == (4001, "done here")
    event = wait_event(running, "/server-close")
    assert event["type"] == "websocket.disconnect"
    assert event["code"] == 4001


def test_client_initiated_close(serve):
    running = serve(APP)

    async def go():
        ws = await connect(url(running, "/record"))
        await ws.send("one")
        assert await ws.recv() == "one"
        await ws.close(4002, "client is done")
        return ws.close_code

    assert run(go()) == 4002
    event = wait_event(running, "/record")
    assert (event["code"], event["reason"]) == (4002, "client is done")


def test_abrupt_disconnect_app_sees_1006(serve):
    running = serve(APP)
    sock = raw_handshake(running, "/record")
    sock.sendall(frame(1, b"ping me"))
    assert b"ping me" in sock.recv(100)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST, no close frame
    assert wait_event(running, "/record")["code"] == 1006


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        pytest.param([frame(1, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80")],
                     1007, id="invalid-utf8"),
        pytest.param([frame(1, b"\xce\xba\xe1", fin=False), frame(0, b"\xff\xfe", fin=True)],
                     1007, id="invalid-utf8-fragmented"),
        pytest.param([frame(1, b"hi", rsv=2)], 1002, id="reserved-bit"),
        pytest.param([frame(3, b"x")], 1002, id="reserved-opcode"),
        pytest.param([frame(0, b"x")], 1002, id="continuation-without-start"),
        pytest.param([frame(9, b"x" * 126)], 1002, id="control-frame-too-long"),
        pytest.param([frame(9, b"x", fin=False)], 1002, id="fragmented-control-frame"),
        pytest.param([frame(1, b"a", fin=False), frame(1, b"b")], 1002, id="text-inside-text"),
        pytest.param([frame(8, struct.pack("!H", 999))], 1002, id="invalid-close-code"),
    ],
)
def test_invalid_frames_get_the_right_close_code(serve, frames, code):
    running = serve(APP)
    sock = raw_handshake(running, "/record")
    sock.sendall(b"".join(frames))
    assert read_close(sock) == code
    assert wait_event(running, "/record")["code"] == code

    async def go():  # the server keeps serving
        async with connect(url(running)) as ws:
            await ws.send("ok")
            return await ws.recv()

    assert run(go()) == "ok"


def test_max_size_closes_with_1009(serve):
    running = serve(APP, "--ws-max-size", "1000")

    async def go():
        async with connect(url(running)) as ws:
            await ws.send("x" * 1000)
            assert await ws.recv() == "x" * 1000
            await ws.send("x" * 1001)
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd.code

    assert run(go()) == 1009


# -- --ws-max-size counts the decoded message ----------------------------------------------------

MAX = 256 * 1024  # --ws-max-size for the tests below


def json_like(size: int) -> str:
    """Compressible text of exactly ``size`` bytes (ASCII, so also ``size`` characters)."""
    unit = '{"id": 12345, "user": "bivio", "tags": ["ws", "asgi"], "ok": true}, '
    return (unit * (size // len(unit) + 1))[:size]


def deflate_handshake(running, path: str = "/record") -> socket.socket:
    """A raw handshake that negotiates permessage-deflate (both windows 12 bits)."""
    sock = running.connect()
    sock.sendall(UPGRADE.replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Extensions: "
                                 b"permessage-deflate; client_max_window_bits\r\n\r\n")
                 % path.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    assert b"permessage-deflate" in head and b"client_max_window_bits=12" in head, head
    return sock


def peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(x for x in status if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


@pytest.mark.parametrize("fragmented", [False, True], ids=["one-frame", "fragmented"])
@pytest.mark.parametrize("compression", ["deflate", None])
def test_max_size_is_the_decoded_size(serve, compression, fragmented):
    """Exactly --ws-max-size bytes pass, compressed or not; one byte more is 1009."""
    running = serve(APP, "--ws-max-size", str(MAX))

    async def exchange(message: str | bytes) -> tuple[int, str] | None:
        async with connect(url(running), compression=compression, max_size=None) as ws:
            assert ("permessage-deflate" in (ws.response.headers.get(
                "Sec-WebSocket-Extensions") or "")) == (compression is not None)
            if fragmented:
                await ws.send([message[i:i + 10_000] for i in range(0, len(message), 10_000)])
            else:
                await ws.send(message)
            try:
                echoed = await ws.recv()
            except ConnectionClosed as closed:
                assert closed.rcvd is not None
                return closed.rcvd.code, closed.rcvd.reason
            assert echoed == message
            return None

    too_big = (1009, f"message larger than {MAX} bytes")
    for size, expected in ((MAX, None), (MAX + 1, too_big)):
        assert run(exchange(json_like(size))) == expected, (size, "compressible text")
        assert run(exchange(os.urandom(size))) == expected, (size, "incompressible bytes")
    assert "Traceback" not in running.output


def test_max_size_uncompressed_frames_on_a_deflate_connection(serve):
    """A client may send a message uncompressed on a deflate connection: same limit."""
    running = serve(APP, "--ws-max-size", str(MAX))
    payload = os.urandom(MAX)
    sock = deflate_handshake(running, "/echo")
    sock.sendall(frame(2, payload[:1000], fin=False) + frame(0, payload[1000:]))
    echoed = b""
    sock.settimeout(10)
    while len(echoed) < MAX:  # the compressed echo: at least the payload's size on the wire
        chunk = sock.recv(1 << 20)
        assert chunk
        echoed += chunk
    sock.close()
    sock = deflate_handshake(running)
    sock.sendall(frame(2, payload + b"x"))
    assert read_close(sock) == 1009
    assert wait_event(running, "/record")["code"] == 1009


@pytest.mark.parametrize("fragmented", [False, True], ids=["one-frame", "fragmented"])
def test_deflate_bomb_is_refused_without_inflating_it(serve, fragmented):
    """256 MiB of zeros in ~300 KiB on the wire: 1009, and the server's memory stays flat."""
    running = serve(APP, "--ws-max-size", str(MAX))
    before = peak_rss(running.proc.pid)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -12)
    zeros = bytes(64 * 1024)
    pieces = [compressor.compress(zeros) + compressor.flush(zlib.Z_SYNC_FLUSH)
              for _ in range(4096)]
    pieces[-1] = pieces[-1][:-4]  # RFC 7692: the final 00 00 ff ff is not sent
    if fragmented:  # 4096 fragments of 64 KiB each once inflated
        frames = [frame(0, p, fin=False) for p in pieces[:-1]] + [frame(0, pieces[-1])]
        frames[0] = frame(2, pieces[0], fin=False, rsv=4)
        bomb = b"".join(frames)
    else:
        bomb = frame(2, b"".join(pieces), rsv=4)
    assert len(bomb) < 1 << 20
    sock = deflate_handshake(running)
    try:
        sock.sendall(bomb)
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused before the client finished sending
    assert read_close(sock) == 1009
    assert wait_event(running, "/record")["code"] == 1009
    grown = peak_rss(running.proc.pid) - before
    assert grown < 16 << 20, f"peak RSS grew by {grown >> 20} MiB"  # inflated: 256 MiB

    async def go():  # the server keeps serving
        async with connect(url(running)) as ws:
            await ws.send("ok")
            return await ws.recv()

    assert run(go()) == "ok"


def test_graceful_shutdown_closes_with_1012_after_in_flight_messages(serve):
    running = serve(APP)

    async def go():
        async with connect(url(running)) as ws:
            await ws.send("before")
            assert await ws.recv() == "before"
            running.signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.recv()
            return closed.value.rcvd.code

    assert run(go()) == 1012
    assert running.proc.wait(30) == 0


# -- keepalive -----------------------------------------------------------------------------------

def test_keepalive_ping_and_timeout(serve):
    """wsproto answers nothing on its own: the server pings, gets no pong, closes 1011."""
    running = serve(APP, "--ws-ping-interval", "0.2", "--ws-ping-timeout", "0.5")
    sock = running.connect()
    conn = WSConnection(ConnectionType.CLIENT)
    sock.sendall(conn.send(Request(host="localhost", target="/record")))
    seen: list[object] = []
    sock.settimeout(20)
    while not any(isinstance(e, CloseConnection) for e in seen):
        data = sock.recv(65536)
        if not data:
            break
        conn.receive_data(data)
        seen.extend(conn.events())
    assert any(isinstance(e, AcceptConnection) for e in seen)
    assert any(isinstance(e, Ping) for e in seen)
    close = next(e for e in seen if isinstance(e, CloseConnection))
    assert close.code == 1011


def test_keepalive_pong_keeps_the_connection(serve):
    """Answered pings keep the connection past --ws-ping-timeout.

    The server sends its next ping only once the last one's pong came back, so each
    new ping is the signal that the previous pong was taken; the exchange runs until
    the first ping is older than the timeout, which a pong that did not count would
    have ended with 1011.
    """
    running = serve(APP, "--ws-ping-interval", "0.1", "--ws-ping-timeout", "2")
    sock = running.connect()
    conn = WSConnection(ConnectionType.CLIENT)
    sock.sendall(conn.send(Request(host="localhost", target="/echo")))
    sock.settimeout(20)
    pings: list[bytes] = []
    echoed: list[str] = []
    first_ping = 0.0
    deadline = time.monotonic() + 30
    while len(pings) < 5 or time.monotonic() - first_ping < 3:
        assert time.monotonic() < deadline, (pings, echoed)
        data = sock.recv(65536)
        assert data, (pings, echoed)
        conn.receive_data(data)
        for event in conn.events():
            assert not isinstance(event, CloseConnection), (event, pings)
            if isinstance(event, Ping):
                if not pings:
                    first_ping = time.monotonic()
                pings.append(bytes(event.payload))
                sock.sendall(conn.send(event.response())
                             + conn.send(TextMessage(data=f"m{len(pings)}")))
            elif isinstance(event, TextMessage):
                echoed.append(event.data)
    assert len(set(pings)) == len(pings)  # a fresh payload every time
    assert echoed == [f"m{i}" for i in range(1, len(echoed) + 1)] and echoed
    sock.sendall(conn.send(CloseConnection(code=1000)))


# -- volume and flow control ---------------------------------------------------------------------

def test_10000_small_messages_each_way(serve):
    running = serve(APP)

    async def go():
        async with connect(url(running)) as ws:
            async def sender():
                for i in range(10_000):
                    await ws.send(f"m{i}")

            task = asyncio.create_task(sender())
            got = [await ws.recv() for _ in range(10_000)]
            await task
            return got

    assert run(go()) == [f"m{i}" for i in range(10_000)]


def test_wsproto_client_echo_and_fragments(serve):
    running = serve(APP)
    sock = running.connect()
    conn = WSConnection(ConnectionType.CLIENT)
    sock.sendall(conn.send(Request(host="localhost", target="/echo")))
    received: list[object] = []

    def pump(until) -> None:
        sock.settimeout(20)
        while not until():
            data = sock.recv(65536)
            assert data, received
            conn.receive_data(data)
            received.extend(conn.events())

    pump(lambda: any(isinstance(e, AcceptConnection) for e in received))
    sock.sendall(conn.send(TextMessage(data="wsproto ", message_finished=False))
                 + conn.send(TextMessage(data="says hi", message_finished=True))
                 + conn.send(BytesMessage(data=b"\x01" * 70000)))
    messages: list[Message] = []

    def two_messages() -> bool:
        messages[:] = []
        text, data = "", b""
        for e in received:
            if isinstance(e, TextMessage):
                text += e.data
                if e.message_finished:
                    messages.append(TextMessage(data=text))
            elif isinstance(e, BytesMessage):
                data += e.data
                if e.message_finished:
                    messages.append(BytesMessage(data=data))
        return len(messages) == 2

    pump(two_messages)
    assert messages[0].data == "wsproto says hi"
    assert messages[1].data == b"\x01" * 70000
    sock.sendall(conn.send(CloseConnection(code=1000)))
    pump(lambda: any(isinstance(e, CloseConnection) for e in received))


def test_reading_stops_while_the_app_does_not_receive(serve):
    running = serve(APP, "--log-level", "debug")
    chunk = b"s" * 65536
    total = 2000  # 125 MiB: far beyond every socket buffer

    async def go():
        async with connect(url(running, "/stall"), compression=None) as ws:
            sent = 0

            async def sender():
                nonlocal sent
                for _ in range(total):
                    await ws.send(chunk)
                    sent += 1

            task = asyncio.create_task(sender())
            # The server says when it stops reading (QUEUE_HIGH messages wait for the app);
            # from then on only the kernel's buffers take more, far from all 125 MiB.
            paused = await asyncio.to_thread(running.wait_for_output, "reading paused", 60)
            assert paused, running.output[-2000:]
            assert not task.done(), "the server read everything while the app read nothing"
            stuck_at = sent
            await asyncio.to_thread(httpx.get, f"{running.url}/release", timeout=10)
            await task
            await ws.send("done")
            count, size = json.loads(await ws.recv())
            return stuck_at, count, size

    stuck_at, count, size = run(go())
    assert stuck_at < total
    assert (count, size) == (total, total * len(chunk))


def test_send_waits_while_the_client_does_not_read(serve):
    running = serve(APP, "--log-level", "debug")
    sock = raw_handshake(running, "/flood")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    # Read nothing until the server says the app's send() waits for us: the socket
    # buffers hold a few MiB at most, so the app is then far from its 64 MiB.
    assert running.wait_for_output("send waits for the client to read", 60), \
        "the app's send() never waited for the client"
    assert wait_event(running, "/flood")["sent"] < 64
    # Now read it all: the app finishes.
    got = bytearray()
    sock.settimeout(20)
    while not got.endswith(b"\x81\x03end"):
        chunk = sock.recv(1 << 20)
        assert chunk, f"closed after {len(got)} bytes: {running.output[-1000:]}"
        got += chunk
    assert got.count(b"f" * 1024) >= 64 * 1024
    assert wait_event(running, "/flood")["sent"] == 64
    sock.close()


def test_messages_sent_in_one_step_arrive_while_the_app_waits_elsewhere(serve):
    """Sends are written together when the app's task step ends, not only when it next
    calls receive(): the app here waits on an event and never receives."""
    running = serve(APP)

    async def go():
        async with connect(url(running, "/burst")) as ws:
            assert [await ws.recv() for _ in range(3)] == ["one", "two", "three"]
            await asyncio.to_thread(httpx.get, f"{running.url}/release", timeout=10)
            with pytest.raises(websockets.ConnectionClosedOK):
                await ws.recv()

    run(go())


def test_websockets_version_has_sans_io_server():
    from websockets.server import ServerProtocol

    assert callable(ServerProtocol)
    assert int(websockets.__version__.split(".")[0]) >= 14
