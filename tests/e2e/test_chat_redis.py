"""The example's chat beyond one process: through a real Redis, across workers and instances.

The module starts its own ``redis-server`` on a free port (Debian's package,
installed by scripts/system-deps.sh) and two bivio processes sharing it: one
with ``--workers 2``, one single-process instance on another port. Every
chat message names the worker that sent it and the one that delivered it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from conftest import ROOT, Running, free_port, start_bivio

pytest.importorskip("channels_redis")
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

EXAMPLES = ROOT / "examples"



@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (scripts/system-deps.sh installs it as root)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path_factory.mktemp("redis"))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"redis-server did not start on port {port}")
        time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def instances(redis_url: str, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[tuple[Running, Running]]:
    base = tmp_path_factory.mktemp("chat")
    env = dict(os.environ, REDIS_URL=redis_url, EXAMPLE_DB_PATH=str(base / "db.sqlite3"),
               EXAMPLE_STATIC_ROOT=str(base / "static"))
    subprocess.run([sys.executable, str(EXAMPLES / "manage.py"), "migrate", "--noinput"],
                   env=env, check=True, capture_output=True, timeout=60)
    app = ("example.asgi:application", "--app-dir", "examples")
    workers = start_bivio(*app, "--workers", "2", env=env)
    single = start_bivio(*app, env=env)
    yield workers, single
    workers.stop()
    single.stop()


async def join(port: int) -> tuple[ClientConnection, int]:
    """Connect to the room; returns the socket and the pid of the worker that took it."""
    ws = await connect(f"ws://127.0.0.1:{port}/ws/chat/redis/", origin=f"http://127.0.0.1:{port}")
    welcome = json.loads(await ws.recv())
    assert welcome["layer"] == "RedisChannelLayer"
    return ws, welcome["worker"]


async def one_per_worker(port: int, tries: int = 40) -> dict[int, ClientConnection]:
    """Open connections until two different workers hold one each; close the rest.

    Which worker accepts a connection is the kernel's choice, so connect in
    concurrent batches (both workers wake) until both pids have been seen.
    """
    held: dict[int, ClientConnection] = {}
    extra: list[ClientConnection] = []
    for _ in range(tries // 4):
        for ws, pid in await asyncio.gather(*(join(port) for _ in range(4))):
            (extra.append(ws) if pid in held else held.__setitem__(pid, ws))
        if len(held) >= 2:
            break
    for ws in extra:
        await ws.close()
    return held


async def next_message(ws: ClientConnection) -> dict:
    while True:
        data = json.loads(await ws.recv())
        if data["type"] == "message":
            return data


def test_redis_layer_announced(instances):
    workers, single = instances
    assert "chat: Redis channel layer at 127.0.0.1" in single.output
    assert "in-memory" not in single.output + workers.output


def test_chat_across_two_workers(instances):
    workers, _ = instances

    async def go() -> tuple[list[int], list[dict]]:
        held = await one_per_worker(workers.port)
        pids = sorted(held)
        assert len(pids) == 2, f"all connections landed on one worker: {pids}"
        sender, receiver = held[pids[0]], held[pids[1]]
        await sender.send(json.dumps({"message": "across workers"}))
        got = [await next_message(receiver), await next_message(sender)]
        for ws in held.values():
            await ws.close()
        return pids, got

    pids, (to_receiver, to_sender) = asyncio.run(asyncio.wait_for(go(), 60))
    assert to_receiver["message"] == to_sender["message"] == "across workers"
    assert to_receiver["from_worker"] == pids[0]
    assert to_receiver["worker"] == pids[1]  # delivered by the other process


def test_chat_across_two_instances(instances):
    workers, single = instances

    async def go() -> tuple[dict, dict, int]:
        a, _ = await join(workers.port)
        b, pid_b = await join(single.port)
        await a.send(json.dumps({"message": "across instances"}))
        got_b = await next_message(b)
        await b.send(json.dumps({"message": "and back"}))
        got_a = [await next_message(a), await next_message(a)]
        await a.close()
        await b.close()
        return got_b, got_a[1], pid_b

    got_b, got_a, pid_b = asyncio.run(asyncio.wait_for(go(), 60))
    assert got_b["message"] == "across instances"
    assert got_b["worker"] == pid_b
    assert got_a["message"] == "and back"
    assert got_a["from_worker"] == pid_b
