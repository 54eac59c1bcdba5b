"""HTTP/1.1 end to end: keep-alive, pipelining, framing, 100-continue, HEAD,
HTTP/1.0, flow control both ways, and client disconnects.

Well-formed traffic goes through httpx (and curl); anything where the framing
on the wire matters goes through a raw socket and :class:`RawConn`. Waits are
generous upper bounds against hangs, never assertions about speed.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import socket
import subprocess
import time

import httpx
import pytest
from conftest import server_has_read

APP = "tests.apps.flow:app"
TIMEOUT = 10.0
LOOPS = ["uvloop", "asyncio"]


# -- a raw HTTP/1.1 client that keeps its buffer between responses ----------------------------


class Response:
    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]], raw_head: bytes):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.raw_head = raw_head
        self.body = b""
        self.trailers: list[tuple[str, str]] = []

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name.lower()]


class RawConn:
    """A socket plus a read buffer, so pipelined responses are not lost between reads."""

    def __init__(self, sock: socket.socket, timeout: float = TIMEOUT) -> None:
        self.sock = sock
        self.sock.settimeout(timeout)
        self.buf = bytearray()

    @classmethod
    def to(cls, server, timeout: float = TIMEOUT) -> RawConn:
        return cls(socket.create_connection(("127.0.0.1", server.port), timeout=timeout), timeout)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise EOFError(f"connection closed; buffered: {bytes(self.buf[:200])!r}")
        self.buf += data

    def read_until(self, sep: bytes) -> bytes:
        while True:
            idx = self.buf.find(sep)
            if idx >= 0:
                end = idx + len(sep)
                out = bytes(self.buf[:end])
                del self.buf[:end]
                return out
            self._fill()

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_to_eof(self) -> bytes:
        while True:
            try:
                self._fill()
            except EOFError:
                out = bytes(self.buf)
                self.buf.clear()
                return out

    def read_head(self) -> Response:
        raw = self.read_until(b"\r\n\r\n")
        lines = raw[:-4].decode("latin-1").split("\r\n")
        version, status, *reason = lines[0].split(" ", 2)
        assert version in ("HTTP/1.1", "HTTP/1.0"), lines[0]
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        return Response(int(status), reason[0] if reason else "", headers, raw)

    def read_response(self, head: bool = False) -> Response:
        """The next final response (1xx responses are returned too: check ``status``)."""
        resp = self.read_head()
        if head or resp.status < 200 or resp.status in (204, 304):
            return resp
        if resp.get("transfer-encoding") == "chunked":
            body = bytearray()
            while True:
                size = int(self.read_until(b"\r\n")[:-2].split(b";")[0], 16)
                if size == 0:
                    break
                body += self.read_exact(size)
                assert self.read_exact(2) == b"\r\n"
            while True:
                line = self.read_until(b"\r\n")[:-2].decode("latin-1")
                if not line:
                    break
                name, _, value = line.partition(":")
                resp.trailers.append((name.strip().lower(), value.strip()))
            resp.body = bytes(body)
        elif resp.get("content-length") is not None:
            resp.body = self.read_exact(int(resp.get("content-length")))
        else:
            resp.body = self.read_to_eof()
        return resp

    def closed_by_peer(self, timeout: float = TIMEOUT) -> bool:
        """True once the server closed the connection; False if it stays open ``timeout`` s."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.buf += data
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
        finally:
            self.sock.settimeout(TIMEOUT)

    def close(self) -> None:
        self.sock.close()


def get(path: str, version: str = "1.1", headers: str = "") -> bytes:
    host = "Host: test\r\n" if version == "1.1" else ""
    return f"GET {path} HTTP/{version}\r\n{host}{headers}\r\n".encode()


def post(path: str, body: bytes, headers: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n"
            f"{headers}\r\n").encode() + body


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def test_file(tmp_path):
    return str(tmp_path / "marker")


def start(serve, test_file: str, *args: str):
    # A short graceful timeout: a test that fails mid-request must not stall teardown.
    return serve(APP, "--timeout-graceful-shutdown", "2", *args,
                 env={"BIVIO_TEST_FILE": test_file})


def wait_for_file(path: str, timeout: float = TIMEOUT) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                text = f.read()
            if text:
                return text
        time.sleep(0.02)
    return None


# -- keep-alive ---------------------------------------------------------------------------


def test_keep_alive_httpx_client_reuses_one_connection(serve, test_file):
    server = start(serve, test_file)
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        ports = set()
        for i in range(5):
            body = b"x" * (i * 1000)
            response = client.post("/info", content=body)
            assert response.status_code == 200
            info = response.json()
            assert info["length"] == len(body)
            assert info["sha256"] == sha(body)
            assert "close" not in response.headers.get("connection", "")
            ports.add(info["client"][1])
    assert len(ports) == 1  # one TCP connection served all five


def test_keep_alive_raw_socket_sequential_requests(serve, test_file):
    server = start(serve, test_file)
    conn = RawConn.to(server)
    ports = set()
    for i in range(4):
        if i % 2:
            conn.send(post("/info", b"body%d" % i))
        else:
            conn.send(get("/info"))
        resp = conn.read_response()
        assert resp.status == 200
        assert resp.get("connection") is None
        info = json.loads(resp.body)
        assert info["length"] == (5 if i % 2 else 0)
        ports.add(info["client"][1])
    assert ports == {conn.sock.getsockname()[1]}
    assert not conn.closed_by_peer(0.3)  # still open and idle
    conn.close()


# -- pipelining -------------------------------------------------------------------------------


def test_pipelined_requests_answered_in_order_slow_first(serve, test_file):
    server = start(serve, test_file)
    conn = RawConn.to(server)
    # The first handler sleeps; the second would be ready at once; order must hold.
    conn.send(get("/slow?0.5") + get("/pattern?10") + post("/info", b"hello")
              + get("/fourth") + get("/chunks"))
    first = conn.read_response()
    assert (first.status, first.body) == (200, b"slow done")
    second = conn.read_response()
    assert second.body == b"0123456789"
    third = conn.read_response()
    assert json.loads(third.body)["sha256"] == sha(b"hello")
    fourth = conn.read_response()
    assert fourth.body == b"/fourth"
    fifth = conn.read_response()
    assert fifth.get("transfer-encoding") == "chunked"
    assert fifth.body == b"part0;part1;part2;"
    assert not conn.closed_by_peer(0.3)
    conn.close()


def test_pipelining_many_requests_in_one_write(serve, test_file):
    server = start(serve, test_file)
    conn = RawConn.to(server)
    requests = b"".join(get(f"/p{i}") for i in range(30))
    conn.send(requests + get("/last", headers="Connection: close\r\n"))
    for i in range(30):
        resp = conn.read_response()
        assert (resp.status, resp.body) == (200, f"/p{i}".encode())
    last = conn.read_response()
    assert last.body == b"/last"
    assert last.get("connection") == "close"
    assert conn.closed_by_peer()


def test_pipelined_bodies_stay_with_their_requests(serve, test_file):
    server = start(serve, test_file)
    conn = RawConn.to(server)
    bodies = [os.urandom(n) for n in (10, 100_000, 0, 70_000, 3)]
    conn.send(b"".join(post("/info", b) for b in bodies))
    for body in bodies:
        info = json.loads(conn.read_response().body)
        assert (info["length"], info["sha256"]) == (len(body), sha(body))
    conn.close()


# -- request bodies ---------------------------------------------------------------------------


def test_content_length_body_httpx(serve, test_file):
    server = start(serve, test_file)
    body = os.urandom(3 * 1024 * 1024 + 17)
    response = httpx.post(server.url + "/info", content=body, timeout=TIMEOUT)
    info = response.json()
    assert (info["length"], info["sha256"]) == (len(body), sha(body))


def test_chunked_request_body_raw(serve, test_file):
    server = start(serve, test_file)
    conn = RawConn.to(server)
    conn.send(b"POST /info HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
    parts = [b"hello ", b"chunked ", os.urandom(5000), b"world"]
    for part in parts:
        conn.send(b"%x\r\n" % len(part) + part + b"\r\n")
        assert server_has_read(conn.sock)  # one chunk per read, across reads
    conn.send(b"0\r\nx-request-trailer: yes\r\n\r\n")
    resp = conn.read_response()
    info = json.loads(resp.body)
    whole = b"".join(parts)
    assert (info["length"], info["sha256"]) == (len(whole), sha(whole))
    # The connection is still usable after a chunked body with trailers.
    conn.send(get("/after"))
    assert conn.read_response().body == b"/after"
    conn.close()


def test_chunked_request_body_httpx_generator(serve, test_file):
    server = start(serve, test_file)
    parts = [os.urandom(n) for n in (1, 65536, 200_000, 7)]

    def gen():
        yield from parts

    response = httpx.post(server.url + "/info", content=gen(), timeout=TIMEOUT)
    info = response.json()
    whole = b"".join(parts)
    assert (info["length"], info["sha256"]) == (len(whole), sha(whole))


# -- responses ---------------------------------------------------------------------------


def test_streamed_response_is_chunked_on_http11(serve, test_file):
    server = start(serve, test_file)
    conn = RawConn.to(server)
    conn.send(get("/chunks"))
    resp = conn.read_response()
    assert resp.get("transfer-encoding") == "chunked"
    assert resp.get("content-length") is None
    assert resp.body == b"part0;part1;part2;"
    # httpx agrees.
    assert httpx.get(server.url + "/chunks").text == "part0;part1;part2;"
    conn.close()


def test_single_body_response_gets_content_length(serve, test_file):
    server = start(serve, test_file)
    conn = RawConn.to(server)
    conn.send(get("/pattern?1000"))
    resp = conn.read_response()
    assert resp.get("content-length") == "1000"
    assert resp.get("transfer-encoding") is None
    assert len(resp.body) == 1000
    conn.close()


def test_head_sends_headers_but_no_body(serve, test_file):
    server = start(serve, test_file)
    conn = RawConn.to(server)
    # One HEAD for a fixed body, one for a streamed body, then a GET: if any body
    # byte had been sent for the HEADs, the GET's response would not parse.
    conn.send(b"HEAD /pattern?1000 HTTP/1.1\r\nHost: test\r\n\r\n")
    resp = conn.read_response(head=True)
    assert resp.status == 200
    conn.send(b"HEAD /chunks HTTP/1.1\r\nHost: test\r\n\r\n")
    resp = conn.read_response(head=True)
    assert resp.status == 200
    assert resp.get("content-type") == "text/plain"
    conn.send(get("/after-head"))
    resp = conn.read_response()
    assert resp.body == b"/after-head"
    assert not conn.buf
    conn.close()

    response = httpx.head(server.url + "/pattern?1000")
    assert response.status_code == 200
    assert response.content == b""


# -- connection management ---------------------------------------------------------------


def test_http10_without_keep_alive_closes(serve, test_file):
    server = start(serve, test_file)
    conn = RawConn.to(server)
    conn.send(get("/pattern?5", version="1.0"))
    resp = conn.read_response()
    assert resp.status == 200
    assert resp.body == b"01234"
    assert resp.get("connection") == "close"
    assert conn.closed_by_peer()


def test_http10_keep_alive_is_kept(serve, test_file):
    server = start(serve, test_file)
    conn = RawConn.to(server)
    for i in range(3):
        conn.send(get(f"/ka{i}", version="1.0", headers="Connection: keep-alive\r\n"))
        resp = conn.read_response()
        assert resp.body == f"/ka{i}".encode()
        assert resp.get("connection") == "keep-alive"
        assert resp.raw_head.startswith(b"HTTP/1.1 200 ")
    assert not conn.closed_by_peer(0.3)
    conn.close()


def test_http10_streamed_response_is_close_delimited(serve, test_file):
    server = start(serve, test_file)
    conn = RawConn.to(server)
    conn.send(get("/chunks", version="1.0", headers="Connection: keep-alive\r\n"))
    resp = conn.read_response()  # no length, not chunked: read to EOF
    assert resp.get("transfer-encoding") is None
    assert resp.get("connection") == "close"
    assert resp.body == b"part0;part1;part2;"


def test_client_connection_close_closes_after_response(serve, test_file):
    server = start(serve, test_file)
    conn = RawConn.to(server)
    conn.send(get("/bye", headers="Connection: close\r\n"))
    resp = conn.read_response()
    assert resp.body == b"/bye"
    assert resp.get("connection") == "close"
    assert conn.closed_by_peer()


def test_half_closed_client_still_gets_its_answers(serve, test_file):
    """EOF after whole requests: the app may learn the client left (receive() says
    http.disconnect), but an app that answers anyway is still heard, in order."""
    server = start(serve, test_file)
    conn = RawConn.to(server)
    conn.send(get("/slow?0.3") + post("/info", b"abc") + get("/third"))
    conn.sock.shutdown(socket.SHUT_WR)
    assert conn.read_response().body == b"slow done"
    assert json.loads(conn.read_response().body)["length"] == 3
    assert conn.read_response().body == b"/third"
    assert conn.closed_by_peer()


# -- Expect: 100-continue ------------------------------------------------------------------


def test_expect_continue_sent_when_app_reads(serve, test_file):
    server = start(serve, test_file)
    conn = RawConn.to(server)
    conn.send(b"POST /info HTTP/1.1\r\nHost: test\r\nContent-Length: 11\r\n"
              b"Expect: 100-continue\r\n\r\n")
    interim = conn.read_head()  # the body is withheld until this arrives
    assert interim.status == 100
    assert interim.raw_head == b"HTTP/1.1 100 Continue\r\n\r\n"
    conn.send(b"hello world")
    resp = conn.read_response()
    assert resp.status == 200
    assert json.loads(resp.body)["sha256"] == sha(b"hello world")
    # The connection carries on.
    conn.send(get("/next"))
    assert conn.read_response().body == b"/next"
    conn.close()


def test_expect_continue_not_sent_when_app_answers_without_reading(serve, test_file):
    server = start(serve, test_file)
    conn = RawConn.to(server)
    conn.send(b"POST /pattern?5 HTTP/1.1\r\nHost: test\r\nContent-Length: 11\r\n"
              b"Expect: 100-continue\r\n\r\n")
    resp = conn.read_response()
    assert resp.status == 200  # straight to the final response: no 100 first
    assert resp.body == b"01234"
    # The client may or may not send the body now: the connection cannot be reused.
    assert resp.get("connection") == "close"
    assert conn.closed_by_peer()
    assert b"100 Continue" not in conn.buf


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_expect_continue_with_curl(serve, test_file, tmp_path):
    server = start(serve, test_file)
    data = tmp_path / "upload.bin"
    payload = os.urandom(2 * 1024 * 1024)
    data.write_bytes(payload)
    result = subprocess.run(
        ["curl", "-sS", "-v", "--max-time", "20", "-H", "Expect: 100-continue",
         "--data-binary", f"@{data}", server.url + "/info"],
        capture_output=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert b"< HTTP/1.1 100 Continue" in result.stderr
    info = json.loads(result.stdout)
    assert (info["length"], info["sha256"]) == (len(payload), sha(payload))


# -- flow control: request bodies ----------------------------------------------------------


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _send_until_blocked(sock: socket.socket, data: memoryview) -> int:
    """Send without blocking until the socket stays unwritable for a while; return bytes sent."""
    sock.setblocking(False)
    sent = 0
    stuck = 0
    try:
        while sent < len(data) and stuck < 4:
            try:
                sent += sock.send(data[sent:sent + 256 * 1024])
                stuck = 0
            except BlockingIOError:
                _, writable, _ = select.select([], [sock], [], 0.25)
                if not writable:
                    stuck += 1
    finally:
        sock.setblocking(True)
        sock.settimeout(TIMEOUT)
    return sent


@pytest.mark.parametrize("loop", LOOPS)
def test_app_not_reading_stops_the_server_reading(serve, test_file, loop):
    server = start(serve, test_file, "--loop", loop)
    total = 50 * 1024 * 1024
    body = os.urandom(1024 * 1024) * 50
    rss_before = _rss_kib(server.proc.pid)
    conn = RawConn.to(server)
    conn.send(b"POST /hold HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % total)
    view = memoryview(body)
    sent = _send_until_blocked(conn.sock, view)
    # The client's sends block: only socket buffers (a few MiB) took bytes, not the server.
    assert sent < total // 2, f"the server took {sent} of {total} bytes nobody read"
    growth_mib = (_rss_kib(server.proc.pid) - rss_before) / 1024
    assert growth_mib < 20, f"server memory grew by {growth_mib:.1f} MiB"

    # Now the app reads: everything arrives, intact.
    open(test_file + ".go", "w").close()
    conn.sock.settimeout(60)
    conn.sock.sendall(view[sent:])
    resp = conn.read_response()
    info = json.loads(resp.body)
    assert (info["length"], info["sha256"]) == (total, sha(body))
    conn.close()


def test_app_reading_slowly_receives_every_byte(serve, test_file):
    server = start(serve, test_file)
    body = os.urandom(4 * 1024 * 1024)
    response = httpx.post(server.url + "/slow-read", content=body, timeout=60)
    info = response.json()
    assert (info["length"], info["sha256"]) == (len(body), sha(body))
    assert info["messages"] > 1


# -- flow control: responses ---------------------------------------------------------------

CHUNK = 64 * 1024


def pattern_chunk(i: int) -> bytes:
    """Same as tests.apps.flow.pattern_chunk."""
    return bytes([i % 251]) * (CHUNK - 4) + i.to_bytes(4, "big")


def _chunks_sent(server) -> int:
    return httpx.get(server.url + "/count", timeout=TIMEOUT).json()["chunks"]


def _wait_app_held(server, timeout: float = 60) -> int:
    """Wait until /big's send() is held back by the full write buffer; chunks sent by then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = httpx.get(server.url + "/count", timeout=TIMEOUT).json()
        if count["waiting"]:
            return count["chunks"]
        time.sleep(0.02)
    raise AssertionError(f"the app's send() was never held back: {count}")


@pytest.mark.parametrize("loop", LOOPS)
def test_app_send_waits_while_client_does_not_read(serve, test_file, loop):
    server = start(serve, test_file, "--loop", loop)
    mib = 200
    total_chunks = mib * 1024 * 1024 // CHUNK
    conn = RawConn.to(server, timeout=60)
    conn.send(get(f"/big?{mib}"))
    # We read nothing: the app's send() must be held back (the positive signal), with
    # at most the socket buffers' worth sent.
    held = _wait_app_held(server)
    assert 0 < held < total_chunks // 4, f"app sent {held}/{total_chunks} chunks unread"

    # Read it all: every byte in order.
    head = conn.read_head()
    assert head.status == 200
    length = int(head.get("content-length"))
    assert length == total_chunks * CHUNK
    expected = hashlib.sha256()
    for i in range(total_chunks):
        expected.update(pattern_chunk(i))
    got = hashlib.sha256()
    received = len(conn.buf)
    got.update(conn.buf)
    conn.buf.clear()
    buf = bytearray(1 << 20)
    while received < length:
        n = conn.sock.recv_into(buf)
        assert n, "connection closed early"
        got.update(memoryview(buf)[:n])
        received += n
    assert received == length
    assert got.hexdigest() == expected.hexdigest()
    assert _chunks_sent(server) == total_chunks
    conn.close()


# -- client disconnects ---------------------------------------------------------------------


@pytest.mark.parametrize("how", ["close", "reset"])
def test_disconnect_after_body_reaches_app_as_http_disconnect(serve, test_file, how):
    server = serve("tests.apps.basic:app", "--timeout-graceful-shutdown", "2",
                   env={"BIVIO_TEST_FILE": test_file})
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    sock.sendall(post("/wait-disconnect", b"hi"))
    # The app has read the body and waits in receive() (it says so in a file).
    assert wait_for_file(test_file + ".waiting") == "receive"
    assert not os.path.exists(test_file)  # nothing to report while the client is there
    if how == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()
    assert wait_for_file(test_file) == "http.disconnect"


def test_disconnect_during_body_reaches_app_as_http_disconnect(serve, test_file):
    server = start(serve, test_file)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    sock.sendall(b"POST /record HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n"
                 + b"x" * 100)
    assert server_has_read(sock)  # the head and part of the body are in: leave mid-body
    sock.close()
    types = wait_for_file(test_file)
    assert types is not None, "the app never learned that the client left"
    assert types.split()[-1] == "http.disconnect"
    assert set(types.split()[:-1]) <= {"http.request"}


def test_disconnect_while_streaming_raises_oserror_in_send(serve, test_file):
    server = start(serve, test_file)
    conn = RawConn.to(server)
    conn.send(get("/stream-forever"))
    resp = conn.read_head()
    assert resp.status == 200
    conn.read_exact(10_000)  # the stream is flowing
    conn.sock.close()
    assert wait_for_file(test_file) == "OSError:ClientDisconnected"


def test_disconnect_after_response_started_reaches_receive(serve, test_file):
    server = start(serve, test_file)
    conn = RawConn.to(server)
    conn.send(post("/watch-disconnect", b"abc"))
    assert conn.read_head().status == 200
    conn.read_until(b"started")  # sent just before the app's receive()
    assert httpx.get(server.url + "/other", timeout=TIMEOUT).status_code == 200  # the loop ran
    assert not os.path.exists(test_file)  # receive() waits while the client is there
    conn.sock.close()
    assert wait_for_file(test_file) == "http.disconnect"
