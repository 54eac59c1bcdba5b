"""Hold thousands of idle keep-alive connections open and weigh the server meanwhile.

Each connection makes one request (so the server has set it up fully), reads
the answer, and then sits idle while the server's resident memory is read.
"""

from __future__ import annotations

import resource
import socket
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def _read_answer(sock: socket.socket) -> bool:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return False
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
            while len(body) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    return False
                body += chunk
    return True


def hold(port: int, count: int, settle: float = 0.5) -> tuple[list[socket.socket], int]:
    """Open ``count`` connections, one request each; return the live ones and the failures."""
    raise_fd_limit(count + 256)
    socks: list[socket.socket] = []
    failed = 0
    batch = 200  # stay under the listen backlog
    for start in range(0, count, batch):
        opened = []
        for _ in range(min(batch, count - start)):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                sock.sendall(REQUEST)
                opened.append(sock)
            except OSError:
                failed += 1
        for sock in opened:
            try:
                ok = _read_answer(sock)
            except OSError:
                ok = False
            if ok:
                socks.append(sock)
            else:
                failed += 1
                sock.close()
    time.sleep(settle)
    return socks, failed


def release(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()
