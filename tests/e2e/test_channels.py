"""A Django Channels project (in-memory channel layer) served by bivio end to end."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

pytest.importorskip("channels")

APP = "tests.apps.channelsproj.asgi:application"


def test_channels_group_chat(serve):
    running = serve(APP)
    base = f"ws://127.0.0.1:{running.port}/ws/chat"

    async def go():
        async with connect(f"{base}/lobby/") as alice, connect(f"{base}/lobby/") as bob, \
                connect(f"{base}/other/") as carol:
            await alice.send("hello from alice")
            got_alice = json.loads(await alice.recv())
            got_bob = json.loads(await bob.recv())
            await carol.send("carol alone")
            got_carol = json.loads(await carol.recv())
            # carol's message was delivered before bob speaks: had it leaked into the
            # lobby, it would be bob's next message instead of his own.
            await bob.send("bob next")
            assert json.loads(await bob.recv())["text"] == "bob next"
            await bob.send(b"abc")
            reversed_bytes = await bob.recv()
            return got_alice, got_bob, got_carol, reversed_bytes

    alice, bob, carol, reversed_bytes = asyncio.run(asyncio.wait_for(go(), 60))
    assert alice == bob == {"room": "room-lobby", "text": "hello from alice"}
    assert carol == {"room": "room-other", "text": "carol alone"}
    assert reversed_bytes == b"cba"
    assert httpx.get(running.url + "/", timeout=10).text == "channels project over http"


def test_channels_consumer_close_before_accept_is_403(serve):
    running = serve(APP)

    async def go():
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"ws://127.0.0.1:{running.port}/ws/chat/forbidden/"):
                pass
        return info.value.response.status_code

    assert asyncio.run(asyncio.wait_for(go(), 60)) == 403


def test_channels_subprotocol(serve):
    running = serve(APP)

    async def go():
        async with connect(f"ws://127.0.0.1:{running.port}/ws/chat/p/",
                           subprotocols=["chat.v1", "chat.v0"]) as ws:
            return ws.subprotocol

    assert asyncio.run(asyncio.wait_for(go(), 60)) == "chat.v1"
