"""One real request per scenario before it is measured: does the server answer right?

A server that answers fast but wrong must not top the table, and a server that
cannot serve an app yet (bivio before WSGI or WebSocket support lands) is found
here, by trying, not by a list kept by hand.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import ssl
import subprocess


def http(port: int, method: str = "GET", path: str = "/", body: bytes = b"",
         version: str = "1.1", timeout: float = 10.0) -> tuple[int, bytes]:
    """Send one request on a new connection; return (status, body)."""
    head = f"{method} {path} HTTP/{version}\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    if body or method == "POST":
        head += f"Content-Length: {len(body)}\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        data = b""
        while True:
            chunk = sock.recv(262144)
            if not chunk:
                break
            data += chunk
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    lines = head_bytes.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        payload = _unchunk(payload)
    return status, payload


def curl(port: int, method: str = "GET", path: str = "/", body: bytes = b"",
         http2: bool = False, tls: bool = False, timeout: float = 10.0) -> tuple[int, str, bytes]:
    """One request through curl (HTTP/2: prior knowledge in cleartext, ALPN over TLS;
    the test certificate is not verified); return (status, HTTP version, body)."""
    if shutil.which("curl") is None:
        raise OSError("curl is not installed (apt-get install curl)")
    argv = ["curl", "-sS", "-k", "--max-time", str(timeout),
            "-o", "-", "-w", "\n%{http_code} %{http_version}"]
    if method not in ("GET", "POST"):
        argv += ["-X", method]
    if http2:
        argv.append("--http2" if tls else "--http2-prior-knowledge")
    else:
        argv.append("--http1.1")
    if body or method == "POST":
        argv += ["-H", "Content-Type: application/octet-stream", "--data-binary", "@-"]
    argv.append(f"{'https' if tls else 'http'}://127.0.0.1:{port}{path}")
    try:
        done = subprocess.run(argv, input=body, capture_output=True, timeout=timeout + 5)
    except subprocess.TimeoutExpired:
        raise OSError(f"curl did not finish in {timeout + 5:g} s") from None
    payload, _, tail = done.stdout.rpartition(b"\n")
    if done.returncode != 0:
        raise OSError(done.stderr.decode(errors="replace").strip() or f"curl {done.returncode}")
    status, _, version = tail.decode().partition(" ")
    return int(status), version, payload


def tls_version(port: int, timeout: float = 10.0) -> str:
    """The TLS version and suite a default OpenSSL client (as wrk is) negotiates."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw, \
            context.wrap_socket(raw) as sock:
        return f"{sock.version()} {(sock.cipher() or ('?',))[0]}"


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2:]
    return out


def ws_frame(payload: bytes, opcode: int = 2) -> bytes:
    """A masked client frame (payload < 64 KiB)."""
    mask = os.urandom(4)
    size = len(payload)
    head = bytes([0x80 | opcode])
    head += bytes([0x80 | size]) if size < 126 else bytes([0x80 | 126]) + size.to_bytes(2, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def ws_handshake(sock: socket.socket, path: str = "/") -> bytes:
    """Upgrade ``sock``; return bytes received after the 101 head (early frames)."""
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed during the WebSocket handshake: {data[:200]!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        status_line = head.split(b"\r\n")[0]
        raise ConnectionError(f"no WebSocket upgrade: {status_line!r}")
    return rest


def ws_echo(port: int, payload: bytes = b"x" * 64, timeout: float = 10.0) -> bytes:
    """Open a WebSocket, send one binary message, return the echoed payload."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        data = ws_handshake(sock)
        sock.sendall(ws_frame(payload))
        while len(data) < 2 or len(data) < 2 + (data[1] & 0x7F):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the echo")
            data += chunk
        return data[2:2 + (data[1] & 0x7F)]
