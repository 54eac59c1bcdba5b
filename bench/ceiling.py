"""The ceiling: uvloop + httptools answering fixed bytes, with no app at all.

Every bivio figure also reads as a share of this: it is what a Python I/O layer
on the same loop and parser can do when the server does nothing but parse and
write. It answers ``/`` (hello), ``/64k``, ``/post`` (the body is parsed and
dropped) and ``/sleep`` (a 10 ms timer), keeps HTTP/1.1 connections alive and
closes HTTP/1.0 ones, like a real server would.

    python -m bench.ceiling --port 8000
"""

from __future__ import annotations

import argparse
import asyncio
import socket

import httptools
import uvloop


def _response(body: bytes, close: bool = False) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n" % len(body)
    return head + (b"connection: close\r\n" if close else b"") + b"\r\n" + body


HELLO = _response(b"Hello, world!")
HELLO_CLOSE = _response(b"Hello, world!", close=True)
ANSWERS = {b"/": HELLO, b"/64k": _response(b"x" * 65536), b"/sleep": HELLO}


class Ceiling(asyncio.Protocol):
    """One connection: parse with httptools, write a fixed answer per request."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.size = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()  # type: ignore[union-attr]

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_body(self, body: bytes) -> None:
        self.size += len(body)

    def on_message_complete(self) -> None:
        transport = self.transport
        url, self.url = self.url, b""
        if not self.parser.should_keep_alive():
            transport.write(HELLO_CLOSE)  # type: ignore[union-attr]
            transport.close()  # type: ignore[union-attr]
            return
        if url == b"/post":
            size, self.size = self.size, 0
            transport.write(_response(b"%d" % size))  # type: ignore[union-attr]
        elif url == b"/sleep":
            self.loop.call_later(0.01, transport.write, HELLO)  # type: ignore[union-attr]
        else:
            transport.write(ANSWERS.get(url, HELLO))  # type: ignore[union-attr]


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    server = await loop.create_server(lambda: Ceiling(loop), sock=sock)
    print(f"ceiling serving on http://{host}:{sock.getsockname()[1]}", flush=True)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
