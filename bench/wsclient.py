"""WebSocket echo load: many connections, a window of messages in flight on each.

The client must not be the bottleneck, so it does almost nothing per message:
frames are pre-built and masked once, and since the server's echo of a
fixed-size message is a fixed-size frame, it counts echoes by bytes received
instead of parsing frames. Its own CPU time is reported next to the result.

    python -m bench.wsclient --port 8000 --connections 64 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import time

from .probe import ws_frame, ws_handshake


class EchoLoad(asyncio.Protocol):
    """One connection: keep ``window`` messages in flight, send one per echo seen."""

    def __init__(self, frame: bytes, echo_size: int, window: int, stats: dict) -> None:
        self.frame = frame
        self.echo_size = echo_size
        self.window = window
        self.stats = stats
        self.pending = 0  # bytes of a partly received echo
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        transport.write(self.frame * self.window)

    def data_received(self, data: bytes) -> None:
        total = self.pending + len(data)
        done, self.pending = divmod(total, self.echo_size)
        if done:
            self.stats["messages"] += done
            if self.stats["running"]:
                self.transport.write(self.frame * done)  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stats["running"]:
            self.stats["errors"] += 1


async def load(port: int, connections: int, seconds: float, size: int, window: int) -> dict:
    loop = asyncio.get_running_loop()
    payload = b"x" * size
    frame = ws_frame(payload)
    echo_size = 2 + (0 if size < 126 else 2) + size  # server frames are not masked
    stats = {"messages": 0, "errors": 0, "running": True}
    transports = []
    for _ in range(connections):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        early = ws_handshake(sock)
        if early:
            raise RuntimeError("unexpected data right after the WebSocket handshake")
        sock.setblocking(False)
        transport, _ = await loop.connect_accepted_socket(
            lambda: EchoLoad(frame, echo_size, window, stats), sock)
        transports.append(transport)
    await asyncio.sleep(min(1.0, seconds / 4))  # warm up
    start_count, start_time, start_cpu = stats["messages"], time.monotonic(), _cpu()
    await asyncio.sleep(seconds)
    messages = stats["messages"] - start_count
    elapsed = time.monotonic() - start_time
    cpu = _cpu() - start_cpu
    stats["running"] = False
    for transport in transports:
        transport.close()
    return {"messages": messages, "seconds": elapsed, "rate": messages / elapsed,
            "errors": stats["errors"], "client_cpu": cpu / elapsed}


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def main() -> None:
    parser = argparse.ArgumentParser(description="WebSocket echo load client")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--window", type=int, default=8)
    args = parser.parse_args()
    try:
        import uvloop
        run = uvloop.run
    except ImportError:
        run = asyncio.run
    result = run(load(args.port, args.connections, args.seconds, args.size, args.window))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
